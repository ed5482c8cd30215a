"""Batch sizes chosen from the memory a CUDA device has free, for params that say `batch_size: auto`.

`fit_batch` runs the caller's heaviest pass (a trial on real inputs) at the largest batch first and halves it on
CUDA out-of-memory until one fits within a share of the memory that was free. Off CUDA `auto` is a fixed size:
CPU memory is rarely the limit there, and a fixed size keeps the outs byte-identical on every run. On CUDA the
choice depends on the free memory at the stage's start, so two runs of one machine agree while nothing else
holds its memory; the size chosen is in the stage's metrics.
"""

from __future__ import annotations

from typing import Annotated, Callable, Literal, Union

from pydantic import BeforeValidator

from dcv.errors import DcvError

AUTO = "auto"


def batch_size_type(largest: int):
    """The type of a params field `batch_size`: an integer from 1 to `largest`, or `auto`."""

    def check(v):
        if v == AUTO or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= largest):
            return v
        raise ValueError(f"must be 'auto' or an integer from 1 to {largest}")

    return Annotated[Union[int, Literal["auto"]], BeforeValidator(check)]


def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


class CudaMemory:
    """The free memory of one CUDA device and the peak a trial allocates above what was allocated before it."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device

    def free(self) -> int:
        self.torch.cuda.empty_cache()
        return self.torch.cuda.mem_get_info(self.device)[0]

    def start(self) -> None:
        self.torch.cuda.reset_peak_memory_stats(self.device)
        self._before = self.torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        return self.torch.cuda.max_memory_allocated(self.device) - self._before


def candidates(largest: int) -> list[int]:
    """largest, then the powers of two below it, down to 1."""
    out, b = [largest], 1 << (max(largest, 1).bit_length() - 1)
    if b == largest:
        b //= 2
    while b >= 1:
        out.append(b)
        b //= 2
    return out


def fit_batch(trial: Callable[[int], object], largest: int, device, fallback: int, share: float = 0.85,
              memory=None, what: str = "batch_size") -> int:
    """The largest batch in `candidates(largest)` whose `trial(b)` runs without CUDA out-of-memory and peaks below
    `share` of the memory free before it; `min(fallback, largest)` off CUDA. `memory`: a CudaMemory-like object
    (default: the device's own)."""
    if getattr(device, "type", str(device)) != "cuda" and memory is None:
        return max(1, min(fallback, largest))
    memory = memory or CudaMemory(device)
    for b in candidates(largest):
        free = memory.free()
        memory.start()
        try:
            trial(b)
        except Exception as e:  # noqa: BLE001
            if not is_oom(e):
                raise
            continue
        if memory.peak() <= share * free:
            return b
    raise DcvError(f"{what}: auto: not even one item fits the free memory of {device}")
