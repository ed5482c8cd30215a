"""What every stage does around its work: read params (the declared keys only), open the MLflow run, fix seeds
and threads, and finish (metrics file, final metrics, artifacts)."""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from dcv.layout import Layout
from stages.params import UNTRACKED, View, load_params, section_hash, view


@dataclass
class StageContext:
    name: str
    params: View  # only the keys the stage declares
    params_path: Path
    root: Path
    run: object  # dcv.tracking.StageRun
    layout: Layout

    def path(self, rel: str | Path) -> Path:
        return self.root / rel

    def finish(self, metrics: dict, t0: float, out: Path, artifacts: Sequence[tuple[Path, str | None]] = (),
               final: Callable[[dict], dict] | None = None) -> dict:
        """How every stage ends: `wall_s` since `t0`, the metrics written to `out` (NaN as null, atomically), the
        run's final metrics (`final(metrics)` where some keys are too big for MLflow), then the artifacts
        ((path, artifact dir) pairs) and the metrics file itself. Returns what was written."""
        from dcv import io

        metrics["wall_s"] = round(time.perf_counter() - t0, 2)
        metrics = io.json_safe(metrics)
        io.write_json(out, metrics)
        self.run.log_final(metrics if final is None else final(metrics))
        for path, name in artifacts:
            self.run.log_artifacts(path, name)
        self.run.log_artifacts(out)
        return metrics


def seed_everything(seed: int, threads: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every torch.empty with NaN; TRL's chunked log-prob kernel allocates a
    # 4096 x 32768 scratch tile per call, so the fill alone cost ~0.4 s per GRPO step on the toy model. Nothing here
    # reads uninitialised memory, so results do not change (tested: byte-identical checkpoints).
    torch.utils.deterministic.fill_uninitialized_memory = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (`accelerate launch` sets RANK), or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def stage_params(params_path: str | Path, name: str, keys: list[str]) -> tuple[View, Path]:
    """The validated params of a stage as a view of its declared keys, and the repository root; the tracking store
    is checked too (without writing to it), and that no live process runs the same stage in this repository."""
    from dcv.tracking import check_store, refuse_concurrent

    params_path = Path(params_path)
    params, root = load_params(params_path), params_path.resolve().parent
    if is_main_process():  # before the stage reads its inputs: fail at once
        check_store(root)
        refuse_concurrent(name, params.common.experiment, root)
    return view(params, keys + UNTRACKED, name), root


@contextlib.contextmanager
def stage(name: str, params_path: str | Path, keys: list[str]) -> Iterator[StageContext]:
    """Validate params, then open the stage's MLflow run (failing before any compute), then yield.
    Under a distributed launch only rank 0 opens a run; the other ranks get a `NullRun`."""
    from dcv.tracking import NullRun, StageRun, git_commit

    params, root = stage_params(params_path, name, keys)
    tags = {"dcv.stage": name, "git_commit": git_commit(root), "params_hash": section_hash(params.dump())}
    if os.environ.get("DCV_LAUNCHED"):  # set by the arms when they rerun themselves under `accelerate launch`
        tags["launcher"] = f"accelerate/{os.environ.get('WORLD_SIZE', '1')}"
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    run_cls = StageRun if is_main_process() else (lambda *a: NullRun())
    with run_cls(name, params.common.experiment, root, params.dump(), tags) as run:
        yield StageContext(name, params, Path(params_path), root, run, Layout(root))
