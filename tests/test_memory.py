"""dcv.memory: `batch_size: auto` takes the largest batch whose trial fits the free memory; off CUDA a fixed size.
The CUDA search runs against a memory whose free bytes and peaks the test sets (this machine has no GPU)."""

from __future__ import annotations

import pytest
import torch

from dcv.errors import DcvError
from dcv.memory import candidates, fit_batch


class Memory:
    """`free` bytes free; a trial of b items peaks at `per_item * b` and raises CUDA OOM above `oom_above`."""

    def __init__(self, free: int, per_item: int):
        self.free_bytes, self.per_item, self.used = free, per_item, 0

    def free(self) -> int:
        return self.free_bytes

    def start(self) -> None:
        self.used = 0

    def peak(self) -> int:
        return self.used


def trial_on(mem: Memory, oom_above: int, tried: list[int]):
    def trial(b: int) -> None:
        tried.append(b)
        if b > oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        mem.used = mem.per_item * b
    return trial


def test_candidates_are_the_largest_then_powers_of_two_below_it():
    assert candidates(64) == [64, 32, 16, 8, 4, 2, 1]
    assert candidates(300) == [300, 256, 128, 64, 32, 16, 8, 4, 2, 1]
    assert candidates(1) == [1]


def test_the_largest_batch_that_runs_and_peaks_below_the_share_of_free_memory():
    mem, tried = Memory(free=1000, per_item=10), []
    # 300 and 256 raise OOM; 128 runs but peaks at 1280 > 0.85 * 1000; 64 peaks at 640: taken
    assert fit_batch(trial_on(mem, 200, tried), 300, "cuda", 7, memory=mem) == 64
    assert tried == [300, 256, 128, 64]
    mem, tried = Memory(free=1000, per_item=20), []  # no OOM: 50 peaks at 1000 > 850, 32 at 640
    assert fit_batch(trial_on(mem, 10**6, tried), 50, "cuda", 7, memory=mem) == 32 and tried == [50, 32]


def test_other_errors_pass_through_and_nothing_fitting_is_one_line():
    mem = Memory(free=1000, per_item=10)

    def broken(b):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        fit_batch(broken, 8, "cuda", 7, memory=mem)
    with pytest.raises(DcvError, match="circuits.batch_size: auto: not even one item fits"):
        fit_batch(trial_on(mem, 0, []), 8, "cuda", 7, memory=mem, what="circuits.batch_size")


def test_off_cuda_auto_is_the_fixed_size_and_runs_no_trial():
    def never(b):
        raise AssertionError("a trial ran off CUDA")

    assert fit_batch(never, 300, torch.device("cpu"), 64) == 64
    assert fit_batch(never, 8, torch.device("cpu"), 64) == 8


def test_auto_is_accepted_by_every_batch_size_that_has_it_and_nonsense_is_not():
    from pydantic import ValidationError

    from dcv.circuits.config import CircuitsConfig
    from dcv.evaluation import MeasureConfig
    from dcv.lm_eval_bridge import LMEvalConfig

    for cls in (CircuitsConfig, MeasureConfig, LMEvalConfig):
        assert cls(batch_size="auto").batch_size == "auto" and cls(batch_size=4).batch_size == 4
        for bad in (0, "big", True, 2.5):
            with pytest.raises(ValidationError):
                cls(batch_size=bad)
