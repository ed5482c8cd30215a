"""Where the prior-capability probe pairs come from, as registered entries: the toy world's capabilities (pairs of
the world's held-out facts, for its word-level tokenizer) or the templates (IOI, greater-than, capitals, induction,
arithmetic, MCQA for any Hugging Face tokenizer, filtered to single-token answers and equal-length corruptions).

    source = SOURCES["templates"]
    sets, counts = source.build(tok, world, ["ioi", "mcqa"], {"validation": 100, "probes": 64}, seed=0)

`sets`: capability -> split -> [ProbePair], splits disjoint and drawn in the order of `sizes`; `counts`:
capability -> {candidates, kept, dropped: {reason: n}} where the source filters its candidates for the tokenizer
(None for the toy world, whose pairs are single tokens of its own vocabulary by construction). Errors are
ValueErrors about the arguments (the stage names the params keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dcv.probe_pair import ProbePair

Sets = dict[str, dict[str, list[ProbePair]]]


@dataclass(frozen=True)
class ProbeSource:
    name: str
    capabilities: Callable[[], list[str]]  # the capability names it can build, sorted
    build: Callable[..., tuple[Sets, dict | None]]  # (tok, world, names, sizes, seed) -> (sets, counts)
    any_tokenizer: bool  # True: builds for any Hugging Face tokenizer; False: only for the toy world's own
    description: str


def _toy_names() -> list[str]:
    from dcv.toy.capabilities import REGISTRY

    return sorted(REGISTRY)


def _toy_build(tok, world, names: list[str], sizes: dict[str, int], seed: int) -> tuple[Sets, None]:
    from dcv.toy.corpus import build_probe_sets

    return build_probe_sets(world, names, sizes), None


def _template_names() -> list[str]:
    from dcv.templates import REGISTRY

    return sorted(REGISTRY)


def _template_build(tok, world, names: list[str], sizes: dict[str, int], seed: int) -> tuple[Sets, dict]:
    from dcv.templates import build_probe_sets

    return build_probe_sets(tok, names, sizes, seed)


SOURCES: dict[str, ProbeSource] = {s.name: s for s in (
    ProbeSource("toy", _toy_names, _toy_build, any_tokenizer=False,
                description="the toy world's capabilities (held-out facts of the world the toy base was trained on)"),
    ProbeSource("templates", _template_names, _template_build, any_tokenizer=True,
                description="templates for a real tokenizer (single-token answers, equal-length corruptions)"),
)}


def source(name: str) -> ProbeSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown probe source {name!r}; one of {sorted(SOURCES)}") from None
