"""Errors that are the user's to fix (exit code 2), and the interruption by a signal (exit code 128 + signal)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class DcvError(Exception):
    """A bad input (params, data file, model dir): the message names the file and the key or line."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the process was: a KeyboardInterrupt, so everything that cleans up after
    Ctrl-C (temporary outputs removed, the MLflow run marked KILLED) does so for SIGTERM too."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


_deferred = {"depth": 0, "signum": None}


def interrupt(signum: int) -> None:
    """Raise `Interrupted` now, or, inside `uninterruptible()`, when that section ends (the signal handler's body)."""
    if _deferred["depth"]:
        _deferred["signum"] = int(signum)
        return
    raise Interrupted(signum)


@contextmanager
def uninterruptible() -> Iterator[None]:
    """A section a signal must not cut in half (a write to the MLflow store: an interrupted SQLite transaction left
    the run RUNNING, its end refused): `interrupt` defers to the section's end and raises there."""
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        if _deferred["depth"] == 0 and _deferred["signum"] is not None:
            signum, _deferred["signum"] = _deferred["signum"], None
            raise Interrupted(signum)
