"""Errors that are the user's to fix (exit code 2), and the interruption by a signal (exit code 128 + signal)."""

from __future__ import annotations

import signal


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
