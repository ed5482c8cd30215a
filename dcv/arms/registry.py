"""The registry of fine-tuning arms: an arm is a named entry (its params schema and its trainer).

Stages, scoring, the report and the figures iterate over the arms a pipeline lists; adding an arm is one module
that calls `register`, one params section and one dvc.yaml stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dcv.arms.config import ArmConfig


@dataclass
class TrainJob:
    """Everything one seed of an arm trains with; `train` returns the trained model."""

    model: object  # the base model, loaded fresh for this seed (the Trainer places it on the device)
    tok: object
    rows: list[dict]  # target train rows (`dcv.arms.data`)
    cfg: ArmConfig
    seed: int
    device: object  # torch.device
    scratch: Path  # the Trainer's output_dir: outside every DVC out
    callback: object  # dcv.arms.train.CheckpointCallback
    on_samples: Callable[[list[dict]], None] | None = None  # sampled completions for the tracking table
    inputs: dict = field(default_factory=dict)  # the extra inputs the arm declares (`Arm.inputs`)


@dataclass(frozen=True)
class Arm:
    name: str  # the arm's stage name, params section and directory under models/
    config: type[ArmConfig]
    train: Callable[[TrainJob], object]
    describe: Callable[[ArmConfig], str]  # one line for the report's setup table
    color: str = ""  # matplotlib colour of the arm in figures ("" = the next free one)
    inputs: tuple[str, ...] = ()  # prepared probe splits it reads besides the target (e.g. "protection")
    # once per arm, before its seeds train: (base model, tok, cfg, inputs) -> a dict passed to every seed as
    # inputs["prepared"] and written to the arm's metrics (e.g. the protected heads)
    prepare: Callable[[object, object, ArmConfig, dict], dict] | None = None


REGISTRY: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
    if arm.name in REGISTRY:
        raise ValueError(f"arm {arm.name!r} is registered twice")
    REGISTRY[arm.name] = arm
    return arm
