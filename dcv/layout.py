"""Where everything lives in a dcv repository: one object owns every path and model id.

    data/prepared/{tokenizer,corpus,target,validation,probes,protection}/   stage prepare-data
    models/base/                                                            stage base
    models/<arm>/seed-<s>/checkpoints/step-<n>/                             stage <arm>, every checkpoint
    models/<arm>/seed-<s>/final/                                            the last checkpoint's weights
    circuits/<model id>/<capability>.json (+ .png)                          stage extract-circuits
    circuits/<model id>/study/<capability>.json                             stage extract-circuits (DBM masks)
    measurements/models.csv                                                 stage evaluate-forgetting
    measurements/circuits.csv                                               stage score-dcv
    metrics/<stage>.json, plots/<stage>/, reports/                          every stage

A model id is `base` or `<arm>/seed-<s>/step-<n>`; `ModelRef` carries it with the directory it names. Stages and
scoring ask a `Layout` for paths instead of spelling them out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dcv.errors import DcvError

BASE = "base"
_ID = re.compile(r"^([^/]+)/seed-(\d+)/step-(\d+)$")


@dataclass(frozen=True)
class ModelRef:
    """One model of the pipeline: the base (arm `base`, step 0) or one checkpoint of one seed of an arm."""

    id: str
    dir: Path
    arm: str = BASE
    seed: int | None = None
    step: int = 0
    final: bool = False

    @property
    def is_base(self) -> bool:
        return self.arm == BASE


def model_id(arm: str, seed: int, step: int) -> str:
    return f"{arm}/seed-{seed}/step-{step}"


def parse_model_id(mid: str) -> tuple[str, int | None, int]:
    """(arm, seed, step) of a model id; the base is (`base`, None, 0)."""
    if mid == BASE:
        return BASE, None, 0
    m = _ID.match(mid)
    if not m:
        raise ValueError(f"not a model id: {mid!r} (expected 'base' or '<arm>/seed-<s>/step-<n>')")
    return m[1], int(m[2]), int(m[3])


def _numbered(parent: Path, prefix: str) -> dict[int, Path]:
    """`<prefix>-<n>` subdirectories of `parent` by n, in order."""
    out = {}
    for p in Path(parent).glob(f"{prefix}-*"):
        m = re.fullmatch(rf"{prefix}-(\d+)", p.name)
        if m and p.is_dir():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class Layout:
    """The paths of one repository (`root`: the directory of its params file)."""

    root: Path

    # prepared data
    @property
    def data(self) -> Path:
        return self.root / "data" / "prepared"

    def prepared(self, name: str) -> Path:
        """data/prepared/<name>: tokenizer, corpus, target, validation, probes, protection."""
        return self.data / name

    def probe_file(self, split: str, capability: str) -> Path:
        return self.prepared(split) / f"{capability}.jsonl"

    def target_file(self, split: str) -> Path:
        return self.prepared("target") / f"{split}.jsonl"

    # models
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def base_model(self) -> Path:
        return self.models / BASE

    def arm_dir(self, arm: str) -> Path:
        return self.models / arm

    def seed_dir(self, arm: str, seed: int) -> Path:
        return self.arm_dir(arm) / f"seed-{seed}"

    def checkpoint_dir(self, arm: str, seed: int, step: int) -> Path:
        return self.seed_dir(arm, seed) / "checkpoints" / f"step-{step}"

    def final_dir(self, arm: str, seed: int) -> Path:
        return self.seed_dir(arm, seed) / "final"

    def checkpoints(self, arm: str, seed: int) -> dict[int, Path]:
        """Step -> checkpoint directory of one seed of an arm, in step order (empty when there are none)."""
        return _numbered(self.seed_dir(arm, seed) / "checkpoints", "step")

    def seeds(self, arm: str) -> list[int]:
        return list(_numbered(self.arm_dir(arm), "seed"))

    def base_ref(self) -> ModelRef:
        return ModelRef(BASE, self.base_model)

    def model_refs(self, arms: list[str], seeds: list[int]) -> list[ModelRef]:
        """The base, then every checkpoint (step > 0) of every arm and seed; each checked to exist.

        The last checkpoint of a seed is marked `final`."""
        if not (self.base_model / "config.json").is_file():
            raise DcvError(f"{self.base_model}: not a model directory (run stage base first)")
        out = [self.base_ref()]
        for arm in arms:
            for seed in seeds:
                steps = {s: d for s, d in self.checkpoints(arm, seed).items() if s > 0}
                if not steps:
                    raise DcvError(f"{self.seed_dir(arm, seed)}/checkpoints: no step-<n> checkpoints "
                                   f"(seed {seed} of arm {arm}; run stage {arm})")
                last = max(steps)
                out += [ModelRef(model_id(arm, seed, s), d, arm, seed, s, s == last) for s, d in steps.items()]
        return out

    # circuits, measurements, metrics
    @property
    def circuits(self) -> Path:
        return self.root / "circuits"

    def circuit_file(self, model: str, capability: str) -> Path:
        return self.circuits / model / f"{capability}.json"

    def study_mask_file(self, model: str, capability: str) -> Path:
        """The study's DBM head mask of a model on a capability (`circuits.study_capabilities`)."""
        return self.circuits / model / "study" / f"{capability}.json"

    def circuit_steps(self, arm: str, seed: int) -> list[int]:
        """Steps of one arm and seed that have a circuits directory, in order."""
        return list(_numbered(self.circuits / arm / f"seed-{seed}", "step"))

    @property
    def measurements(self) -> Path:
        return self.root / "measurements" / "models.csv"

    @property
    def circuit_scores(self) -> Path:
        return self.root / "measurements" / "circuits.csv"

    def metrics(self, stage: str) -> Path:
        return self.root / "metrics" / f"{stage}.json"

    def plots(self, stage: str) -> Path:
        return self.root / "plots" / stage

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def rel(self, path: Path) -> str:
        """`path` relative to the root when it lies inside it (as written into outputs), else as given."""
        p = Path(path)
        return str(p.relative_to(self.root)) if p.is_relative_to(self.root) else str(p)
