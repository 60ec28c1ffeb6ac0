"""Errors that the CLI turns into one line on stderr: exit code 2 for bad input, 1 for a run that failed."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a recipe key, a flag, a name, a file.

    The CLI prints ``lit-imgcls: error: <message>`` and exits with code 2, without a traceback.
    """


class UnknownNameError(UsageError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """Two plugins claim the same name in one registry; a programming error, not user input."""


class RunFailed(RuntimeError):
    """A run that cannot go on for a reason outside this process (another worker stopped, a peer timed out).

    The CLI prints ``lit-imgcls: error: <message>`` and exits with code 1 at once, without a traceback and without
    waiting on a process group that can no longer finish.
    """


class RunStopped(Exception):
    """A run that stopped on request after saving a checkpoint; the CLI prints the line and exits with
    ``exit_code`` (128 + the signal: 143 for SIGTERM, 130 for Ctrl-C)."""

    def __init__(self, message: str, exit_code: int = 143) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def from_worker(exc: UsageError) -> UsageError:
    """A :class:`UsageError` raised in a DataLoader worker process, as the one line it said.

    PyTorch re-raises a worker's exception in the main process with the worker's traceback in its message; the
    user needs the last line only.
    """
    return UsageError(str(exc).strip().rsplit("UsageError: ", 1)[-1])
