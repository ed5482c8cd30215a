"""Side-by-side processes for a stage's independent units of work on CPU (`common.workers`): the seeds of an arm.

A small model on a few cores does not keep two threads busy while it trains: on the toy model (2-core Intel Xeon)
one GRPO process ran 50 steps in 21 s with one thread and 15 s with two, while three one-thread processes side by
side ran 50 steps each in 34 s, 1.32 times the work of the two-thread process in the same time. (Circuit extraction
does use two threads, 1.78 times faster than one, and three one-thread processes measured no faster: it stays in
one process.) Each unit's result depends only on its inputs and its thread count, never on which worker ran it or
in what order, so outs stay byte-identical from run to run. Workers are spawned (not forked: OpenMP and a forked
torch do not mix), so the program that starts them must guard its entry point (`if __name__ == "__main__"`, as
the `dcv` command does); they get their state once, from an initializer; results come back in the units' order.
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
