"""One process at a time: the lock file every writer of a shared output takes (a pack folder, a model prefix).

A :class:`ProcessLock` is a POSIX record lock (``fcntl.lockf``) on a small file holding the holder's pid. The
kernel owns the lock, not the file: it belongs to the one process that took it (processes it forks do not hold
it) and goes when that process goes, however it dies (kill -9 included), so a lock file a dead process left is
free to take. A released lock removes its file, in every ending its holder reaches (success, refusal, error), so a
finished run leaves nothing behind. The file is removed while still locked; a process that opened it just before
finds, once it holds its lock, that the name now points elsewhere, and starts again (:meth:`ProcessLock.acquire`).

Only a regular file of ours is ever opened: a link or a special file under the lock's name is refused, so a lock
can never truncate or write into a file someone else put there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from lit_imgcls.errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, so no protection against two writers at once
    fcntl = None


class ProcessLock:
    """``path``, locked by the process that writes what it guards.

    Args:
        path: the lock file (made if missing; its folder must exist).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Takes the lock without waiting.

        Returns:
            True once held; False when another process holds it (:meth:`holder` names it).

        Raises:
            OSError: the file cannot be made or opened (a read-only folder); ``EEXIST`` when something other than
                a regular file has the lock's name.
        """
        for _ in range(10):
            # O_NOFOLLOW and O_NONBLOCK: a link put in the lock's place is not followed (its target is not ours to
            # truncate), a named pipe does not block the open; the fstat below refuses anything not a plain file.
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EOPNOTSUPP):  # a link, folder, socket
                    raise self._not_ours() from None
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise self._not_ours()
            if fcntl is not None:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another process holds it
                    os.close(fd)
                    return False
                except OSError:
                    pass  # a file system without locks (ENOLCK): go on unprotected rather than refuse to work
            if self._still_the_file(fd):
                break
            # The holder removed the file between our open and our lock: that lock guards nothing; again.
            os.close(fd)
        else:
            raise OSError(errno.EAGAIN, f"its lock file {self.path.name} keeps being replaced", str(self.path))
        before = os.pread(fd, 32, 0).strip()
        if before and not before.isdigit():  # a file of someone else's under our name: not ours to overwrite
            os.close(fd)
            raise self._not_ours()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:  # a full disk: the lock holds all the same, only its holder goes unnamed ("?")
            pass
        self._fd = fd
        return True

    def _not_ours(self) -> OSError:
        return OSError(errno.EEXIST, f"{self.path.name} there is not a lock file lit-imgcls wrote (a link, a folder, a "
                       "special file or someone's own file has its name); move it away", str(self.path))

    def _still_the_file(self, fd: int) -> bool:
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

    def holder(self) -> str:
        """The pid the lock file names (its holder's), or ``?`` when it cannot be read."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return "?"
        try:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
        except OSError:
            return "?"
        finally:
            os.close(fd)
        return text if text.isdigit() else "?"

    def release(self) -> None:
        """Removes the lock file and drops the lock (removed first, while still held: see the module's doc).
        Does nothing when not held."""
        if self._fd is None:
            return
        try:
            if self._still_the_file(self._fd):
                self.path.unlink()
        except OSError:
            pass  # a folder that went read-only meanwhile: the file stays, unlocked, free for the next one
        os.close(self._fd)  # closing drops the POSIX lock
        self._fd = None

    def __enter__(self) -> ProcessLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def holding(path: str | os.PathLike, busy: Callable[[str], str], unwritable: Callable[[str], str]) -> Iterator[ProcessLock]:
    """Within: ``path``'s lock is held by this process, and released (its file removed) however the block ends.

    Args:
        path: the lock file.
        busy: the message when another process holds it, from that process's pid (``?`` when unknown).
        unwritable: the message when the lock file cannot be made, from the reason (``strerror``).

    Raises:
        UsageError: with ``busy``'s or ``unwritable``'s message.
    """
    lock = ProcessLock(path)
    try:
        held = lock.acquire()
    except OSError as exc:
        raise UsageError(unwritable(exc.strerror or str(exc))) from None
    if not held:
        raise UsageError(busy(lock.holder()))
    try:
        yield lock
    finally:
        lock.release()
