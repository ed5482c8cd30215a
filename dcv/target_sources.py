"""Where the target task's rows come from, as registered entries: the toy world's new facts, SciKnowEval JSONL files
in a local directory, or the SciKnowEval file of the Hugging Face hub (read from the local cache).

    source = SOURCES["sciknoweval-hub"]
    train, eval_ = source.rows(TargetSpec(n_train=0, n_eval=200, location=None, subsets=None, chat=True), world=None,
                               seed=0)

`location` is each source's own: unused (toy), a directory (sciknoweval) or a hub dataset id (sciknoweval-hub;
None: `hicai-zju/SciKnowEval`). Malformed rows are DcvErrors naming file and line; a bad argument is a ValueError
naming the argument (`location`, `subsets`, `revision`, `n_train`: "location: ..."), which the stage turns into its params key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class TargetSpec:
    n_train: int
    n_eval: int
    location: str | None  # resolved: a directory is absolute
    subsets: list[str] | None
    chat: bool
    revision: str | None = None


@dataclass(frozen=True)
class TargetSource:
    name: str
    rows: Callable[[TargetSpec, object, int], tuple[list[dict], list[dict]]]  # (spec, world, seed) -> (train, eval)
    check: Callable[[TargetSpec], None]  # cheap checks of the arguments (ValueError), before anything is read
    toy: bool  # rows of the toy world (its entities, which pair kinds like entity_swap need)
    local: bool  # `location` is a local path (a relative one is relative to the params file)
    label: Callable[[TargetSpec], str]  # where the rows come from, for messages and metrics
    description: str


def _toy_rows(spec: TargetSpec, world, seed: int):
    from dcv.toy.target import make_rows

    try:
        return make_rows(world, spec.n_train, spec.n_eval)
    except ValueError as e:
        raise ValueError(f"n_train: {e}") from None


def _toy_check(spec: TargetSpec) -> None:
    for arg in ("location", "subsets", "revision"):
        if getattr(spec, arg) is not None:
            raise ValueError(f"{arg}: the toy target reads no files (leave it null)")


def _dir_rows(spec: TargetSpec, world, seed: int):
    from dcv.sciknoweval import load_split

    return load_split(Path(spec.location), spec.subsets, spec.n_eval, seed=seed, chat=spec.chat)


def _dir_check(spec: TargetSpec) -> None:
    if spec.revision is not None:
        raise ValueError("revision: a local directory has no revision (it is for the hub source, sciknoweval-hub)")
    if not spec.location:
        raise ValueError("location: a directory of SciKnowEval JSONL files is needed")
    d = Path(spec.location)
    if not d.is_dir():
        raise ValueError(f"location: directory not found: {spec.location}")
    for s in spec.subsets or []:
        if not (d / f"{s}.jsonl").is_file():
            raise ValueError(f"subsets: no file {s}.jsonl in {spec.location}")


def _hub_rows(spec: TargetSpec, world, seed: int):
    from dcv.sciknoweval import HUB_ID, load_hub_split

    return load_hub_split(spec.subsets, spec.n_eval, seed=seed, chat=spec.chat, repo_id=spec.location or HUB_ID,
                          revision=spec.revision)


def _hub_check(spec: TargetSpec) -> None:
    loc = spec.location
    if loc is not None and (loc.count("/") != 1 or loc.startswith("/") or Path(loc).is_dir()):
        raise ValueError(f"location: {loc!r} is not a hub dataset id (owner/name); a local directory is source "
                         f"sciknoweval")


def _hub_label(spec: TargetSpec) -> str:
    from dcv.sciknoweval import HUB_FILE, HUB_ID

    return f"{spec.location or HUB_ID}/{HUB_FILE}"


SOURCES: dict[str, TargetSource] = {s.name: s for s in (
    TargetSource("toy", _toy_rows, _toy_check, toy=True, local=False, label=lambda spec: "the toy target",
                 description="questions on the toy world's new facts (an entity's food, four options)"),
    TargetSource("sciknoweval", _dir_rows, _dir_check, toy=False, local=True, label=lambda spec: str(spec.location).rstrip("/"),
                 description="SciKnowEval rows from a local directory of <subset>.jsonl files (`path`)"),
    TargetSource("sciknoweval-hub", _hub_rows, _hub_check, toy=False, local=False, label=_hub_label,
                 description="SciKnowEval Chemistry L3 rows of the hub dataset (`path`: its id, null: "
                             "hicai-zju/SciKnowEval), from the local Hugging Face cache, grouped by details.task"),
)}
