"""Side-by-side processes for a stage's independent units of work on CPU (`common.workers`).

A small model on a few cores does not keep two threads busy: on the toy model one process with two threads ran a
GRPO step 1.4x faster than with one, while two one-thread processes together did 1.25x the work of the two-thread
one (docs/design.md, "Speed"). So a stage with many independent units (extract-circuits: one model each) may run
them in `workers` spawned processes, each with `worker_threads` threads. Every unit's result depends only on its
inputs and that thread count, never on which worker ran it or in what order, so outs stay byte-identical from run
to run. Workers are spawned (not forked: OpenMP and a forked torch do not mix) and get their state once, from an
initializer; results come back in the order of the units.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_state: dict = {}  # a worker's state, set by its initializer


def worker_threads(threads: int, workers: int) -> int:
    """Torch threads of each of `workers` processes sharing `threads` (0: torch's default, kept)."""
    return threads if threads == 0 or workers <= 1 else max(1, threads // workers)


def state() -> dict:
    """What this worker's initializer set up (see `run_units`)."""
    return _state


def _init(threads: int, seed: int, setup: Callable[..., dict], args: tuple) -> None:
    from stages.context import seed_everything

    seed_everything(seed, threads)
    _state.update(setup(*args))


def run_units(fn: Callable[[T], R], units: Iterable[T], workers: int, threads: int, seed: int,
              setup: Callable[..., dict], setup_args: tuple = ()) -> Iterator[R]:
    """`fn(unit)` for each unit in `workers` spawned processes (module-level functions only), each seeded with
    `seed` and `threads` torch threads and set up once by `setup(*setup_args)` (its dict: `state()`). Yields the
    results in the units' order; the first error raised by a unit is raised here, and the other units are cancelled."""
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                               initargs=(threads, seed, setup, setup_args))
    try:
        futures = [pool.submit(fn, u) for u in units]
        for f in futures:
            yield f.result()
    except BaseException:
        # An error or an interrupt: the workers stop now (their half-written units are in the stage's temporary
        # out, which is never taken for a result), not after the unit they are on.
        procs = list((pool._processes or {}).values())  # noqa: SLF001  (no public handle on the workers)
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()
        raise
    pool.shutdown()
