"""stages.workers: units in spawned processes come back in order, with the worker's setup and thread count; a unit's
error reaches the stage and stops the other workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stages.workers import run_units, state, worker_threads


def _setup(offset: int, tmp: str | None = None) -> dict:
    return {"offset": offset, "pid": os.getpid(), "tmp": tmp}


def _unit(x: int) -> tuple[int, int, int]:
    import torch

    if x == 3:  # fails once unit 4 is under way in the other worker
        while not os.path.exists(f"{state()['tmp']}/pid-4"):
            time.sleep(0.05)
        raise ValueError("unit 3 is bad")
    if x == 4:
        Path(f"{state()['tmp']}/pid-4.part").write_text(str(os.getpid()))
        os.replace(f"{state()['tmp']}/pid-4.part", f"{state()['tmp']}/pid-4")
        time.sleep(600)  # would hold the stage if the workers were left to finish their units
    return x + state()["offset"], torch.get_num_threads(), state()["pid"]


def test_worker_threads_share_the_stage_threads():
    assert [worker_threads(2, w) for w in (1, 2, 3)] == [2, 1, 1]
    assert worker_threads(8, 3) == 2 and worker_threads(0, 3) == 0  # 0: torch's default, kept


def test_units_come_back_in_order_from_set_up_workers():
    out = list(run_units(_unit, [0, 1, 2, 5, 6], workers=2, threads=1, seed=0, setup=_setup, setup_args=(10,)))
    assert [o[0] for o in out] == [10, 11, 12, 15, 16]
    assert {o[1] for o in out} == {1} and len({o[2] for o in out}) <= 2 and os.getpid() not in {o[2] for o in out}


def test_an_error_in_a_unit_is_raised_here_and_stops_the_others(tmp_path: Path):
    with pytest.raises(ValueError, match="unit 3 is bad"):
        list(run_units(_unit, [3, 4], workers=2, threads=1, seed=0, setup=_setup, setup_args=(0, str(tmp_path))))
    pid = int((tmp_path / "pid-4").read_text())
    with pytest.raises(ProcessLookupError):  # unit 4's worker was stopped, not waited for
        os.kill(pid, 0)
