"""Errors that the CLI turns into one line on stderr: exit code 2 for bad input, 1 for a run that failed."""

from __future__ import annotations

import errno

# The errors of a write that free space or permissions cure (a full disk, a quota, a read-only mount): a run or a
# pack that meets one ends with one line saying what is intact; anything else is a bug and keeps its traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO)


class UsageError(Exception):
    """Bad input from the user: a recipe key, a flag, a name, a file.

    The CLI prints ``lit-imgcls: error: <message>`` and exits with code 2, without a traceback.

    Args:
        key: the recipe key the message is about, when it is about one (``recipe.validate`` sets it): the CLI then
            names the recipe file the value came from.
    """

    def __init__(self, *args: object, key: str | None = None) -> None:
        super().__init__(*args)
        self.key = key


class UnknownNameError(UsageError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class DamagedShard(UsageError):
    """A file of a pack whose bytes differ from its manifest (sha256 or size), found while a loader reads it.

    The message names the file; like any bad input, one line and exit 2 (``predict`` reports it and exits 1).
    ``str()`` is that line even after webdataset appends its stream and URL to ``args``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.line = message

    def __str__(self) -> str:
        return self.line


class DuplicateNameError(ValueError):
    """Two plugins claim the same name in one registry; a programming error, not user input."""


class RunFailed(RuntimeError):
    """A run that cannot go on for a reason outside this process (another worker stopped, a peer timed out).

    The CLI prints ``lit-imgcls: error: <message>`` and exits with code 1 at once, without a traceback and without
    waiting on a process group that can no longer finish.
    """

    exit_code = 1


class RemoteUnavailable(RunFailed):
    """Storage reached by URL (``s3://``, ``gs://``, ...) that still fails after its client's own retries: a
    connection refused or reset, 5xx answers, throttling. One line naming the object, exit 1; ``str()`` stays
    that line after webdataset appends its stream and URL to ``args``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.line = message

    def __str__(self) -> str:
        return self.line


class NonFiniteLoss(RunFailed):
    """Training produced a NaN or infinite loss: the run stops at that step, before the update, and saves nothing
    after it. The CLI exits with code 3, so scripts can tell divergence from other failures.

    Args:
        step: optimizer steps taken before the one whose loss was not finite (``trainer.global_step``).
        epoch: the epoch of that step (0-based).
        lr: the learning rate of the first parameter group at that step.
        loss: the loss value (nan, inf or -inf).
    """

    exit_code = 3

    def __init__(self, step: int, epoch: int, lr: float, loss: float, checkpoint: str | None = None,
                 tensor: str | None = None) -> None:
        self.step, self.epoch, self.lr, self.loss, self.checkpoint = step, epoch, lr, loss, checkpoint
        self.tensor = tensor  # set when a weight, not the loss, was found non-finite (before a checkpoint save)
        super().__init__(self._text())

    def _text(self) -> str:
        saved = (f"last good checkpoint {self.checkpoint} (resume from it with a lower --lr)"
                 if self.checkpoint else "no checkpoint was saved before it")
        what = (f"weight {self.tensor} held NaN or infinity after step {self.step}" if self.tensor else
                f"the training loss became {self.loss} at step {self.step + 1}")
        return (f"{what} (epoch {self.epoch}, lr {self.lr:.6g}): the run stopped there and wrote no checkpoint "
                f"after it; {saved}")

    def with_checkpoint(self, checkpoint: str | None) -> "NonFiniteLoss":
        """The same stop, naming the newest checkpoint that holds good weights."""
        return NonFiniteLoss(self.step, self.epoch, self.lr, self.loss, checkpoint, self.tensor)


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
    text = str(exc).strip()
    for name in (f"{type(exc).__name__}: ", "UsageError: "):
        if name in text:
            return type(exc)(text.rsplit(name, 1)[-1])
    return exc


def quoted(value: object, limit: int = 60) -> str:
    """``value`` for an error message: its ``repr`` (quotes, control characters escaped), a string cut to its first
    ``limit`` characters and its length (``'aaaa...' (5,000 characters)``), so one bad value cannot flood the line.
    An integer too long for ``str()`` (over 4300 digits: a crafted file's), alone or inside a container, is named
    by what it is instead.
    """
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} {'characters' if isinstance(value, str) else 'bytes'})"
    try:
        text = repr(value)
    except ValueError:  # int -> str refuses more than 4300 digits, also inside a container
        return ("an integer of over 4300 digits" if isinstance(value, int)
                else f"a {type(value).__name__} holding an integer of over 4300 digits")
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(text):,} characters)"
