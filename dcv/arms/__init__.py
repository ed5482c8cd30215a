"""The fine-tuning arms (SFT and RL with TRL) and the layout of what they write.

Layout under an arm's directory (`models/<arm>/`), one subdirectory per seed of `common.seeds`:

    models/<arm>/seed-<s>/checkpoints/step-<n>/   full model directories (dcv.models.save_model), every
                                                  `save_every` optimizer steps and at the last step
    models/<arm>/seed-<s>/final/                  the model after `max_steps`

Downstream stages find them with `seed_dirs`, `checkpoint_dirs` and `final_dir`. Nothing in this package knows
about DVC or params.yaml: the stages pass configs in.
"""

from __future__ import annotations

import re
from pathlib import Path

ARMS = ("sft", "rl")


def seed_dir(arm_dir: Path, seed: int) -> Path:
    return Path(arm_dir) / f"seed-{seed}"


def final_dir(arm_dir: Path, seed: int) -> Path:
    return seed_dir(arm_dir, seed) / "final"


def checkpoint_dir(arm_dir: Path, seed: int, step: int) -> Path:
    return seed_dir(arm_dir, seed) / "checkpoints" / f"step-{step}"


def seed_dirs(arm_dir: Path) -> dict[int, Path]:
    """Seed -> directory, for every `seed-<s>` under an arm's directory."""
    out = {}
    for p in Path(arm_dir).glob("seed-*"):
        m = re.fullmatch(r"seed-(\d+)", p.name)
        if m and p.is_dir():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def checkpoint_dirs(arm_dir: Path, seed: int) -> dict[int, Path]:
    """Step -> checkpoint directory of one seed, in step order."""
    out = {}
    for p in (seed_dir(arm_dir, seed) / "checkpoints").glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", p.name)
        if m and p.is_dir():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))
