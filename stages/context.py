"""What every stage does around its work: read params, open the MLflow run, fix seeds and threads."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from stages.params import Params, load_params, pick, section_hash


@dataclass
class StageContext:
    name: str
    params: Params
    params_path: Path
    root: Path
    run: object  # dcv.tracking.StageRun

    def path(self, rel: str) -> Path:
        return self.root / rel


def seed_everything(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@contextlib.contextmanager
def stage(name: str, params_path: str | Path, sections: list[str]) -> Iterator[StageContext]:
    """Validate params, then open the stage's MLflow run (failing before any compute), then yield."""
    from dcv.tracking import StageRun, git_commit

    params_path = Path(params_path)
    params = load_params(params_path)
    root = params_path.resolve().parent
    tags = {"dcv.stage": name, "git_commit": git_commit(root), "params_hash": section_hash(params, sections)}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    with StageRun(name, params.common.experiment, root, pick(params, sections), tags) as run:
        yield StageContext(name, params, params_path, root, run)
