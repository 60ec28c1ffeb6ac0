"""Atomic file writes (temporary file in the same folder, fsync, rename) and safe, checksummed checkpoint reads.

Every checkpoint gets a ``.sha256`` file beside it (``sha256sum`` format, so ``sha256sum -c`` checks it too). The
rename makes a cut-short checkpoint impossible under its final name; the checksum also catches damage after
the write (a flipped bit on disk, a partial copy to another machine) that the zip structure may not reveal.

A checkpoint at a URL (``s3://...``; :mod:`lit_imgcls.storage`) is one object written whole or not at all, its
``.sha256`` object after it; it is read with one GET and checked against that object the same way.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from lit_imgcls.errors import UsageError, quoted


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it over ``path``.

    A crash or a full disk leaves the old file (or none), never a truncated one.
    """
    import signal

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    term = _TermRaises()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); the result should get the permissions of any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, _Terminated):
            term.restore()
            os.kill(os.getpid(), signal.SIGTERM)  # die of it as before, the temporary file gone
        raise
    finally:
        term.restore()


class _Terminated(BaseException):
    """SIGTERM arrived while :func:`atomic_write` had a temporary file open."""


class _TermRaises:
    """While alive, SIGTERM raises :class:`_Terminated` instead of killing the process at once, so that
    :func:`atomic_write` removes its temporary file first (``score``, ``export`` and the other short commands leave
    SIGTERM at its default, which skips every ``except`` and ``finally``). Only where SIGTERM has its default
    action, in the main thread: a handler of a run's own (Lightning's stop on SIGTERM, ``launch``'s) is kept."""

    def __init__(self) -> None:
        import signal
        import threading

        self.active = (threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        if self.active:
            signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum, frame) -> None:
        raise _Terminated()

    def restore(self) -> None:
        import signal

        if self.active:
            self.active = False
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_text(location: str, text: str) -> None:
    """``text`` (UTF-8) at a local path (:func:`atomic_write_text`) or a URL (one whole object)."""
    from lit_imgcls.storage import is_url, write_bytes

    if is_url(location):
        write_bytes(location, text.encode("utf-8"))
    else:
        atomic_write_text(location, text)


def exists(location: str | Path) -> bool:
    """A file at a local path, or an object at a URL."""
    from lit_imgcls.storage import exists as object_exists
    from lit_imgcls.storage import is_url

    return object_exists(str(location)) if is_url(str(location)) else os.path.isfile(location)


def remove_stale_temporaries(prefix: str) -> int:
    """Deletes the half-written temporary files a killed run left beside ``PREFIX-*`` files; returns how many.

    Only a process that died inside :func:`atomic_write` leaves one (kill -9, power loss): nothing else cleans up.
    """
    import glob

    from lit_imgcls.storage import is_url

    if is_url(prefix):
        return 0  # an object store shows an object only once it is whole: nothing half-written to find
    folder, base = os.path.split(os.path.abspath(prefix))
    removed = 0
    for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(base)}-*.tmp")):
        try:
            os.unlink(tmp)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def checksum_path(path: str | Path) -> Path:
    return Path(f"{path}.sha256")


def remove_checkpoint(path: str | Path) -> None:
    """Deletes a checkpoint and its checksum file (missing ones are fine)."""
    from lit_imgcls.storage import is_url, remove

    if is_url(str(path)):
        for p in (str(path), f"{path}.sha256"):
            remove(p)
        return
    for p in (Path(path), checksum_path(path)):
        p.unlink(missing_ok=True)


def verify_checksum(path: str | Path) -> None:
    """Raises :class:`UsageError` when ``path`` has a checksum file that its bytes do not match."""
    from lit_imgcls.bounded_read import ReadRefused, read_text
    from lit_imgcls.data.download import file_digest

    side = checksum_path(path)
    if not os.path.lexists(side):
        return  # written before checksums, or the run died between the checkpoint's rename and its checksum's
    try:  # a regular file of a line (a FIFO in its place would block the load)
        expected = read_text(side, "checksum file").split()[0].lower()
    except IndexError:
        return
    except ReadRefused as exc:
        raise UsageError(f"cannot read {side}: {exc.reason}") from None
    actual = file_digest(path)
    if actual != expected:
        raise UsageError(f"checkpoint {path} is damaged: its sha256 {actual[:12]}... differs from {side.name} ({expected[:12]}...)")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Reads a checkpoint with ``weights_only=True``: tensors and plain data only, no code runs.

    The checksum file beside it, when there is one, is checked first.
    """
    import torch

    from lit_imgcls.storage import is_url, local

    path = local(path) if isinstance(path, str) else path
    if is_url(str(path)):
        source: Any = io.BytesIO(_read_url_checkpoint(str(path)))
    else:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"checkpoint not found: {path}")
        verify_checksum(path)
        source = path
    ckpt = load_tensors(source, str(path), map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UsageError(f"checkpoint {path} holds no state_dict: not a lit-imgcls checkpoint")
    return ckpt


def load_tensors(source: Any, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(source, weights_only=True)``: tensors and plain data, no code from the file runs.

    Args:
        source: a local path or a binary file object (read from its current position).
        what: the file in words for messages (``checkpoint runs/a-0001.ckpt``).
        map_location: as torch.load's.

    Raises:
        UsageError: one line saying what the file is instead: not a PyTorch file at all (a recipe given as a
            checkpoint), a damaged one, or one holding Python objects besides tensors. PyTorch's own message
            advises ``weights_only=False`` (running the file's code); lit-imgcls never loads a file that way, so
            that advice is never passed on.
    """
    import pickle

    import torch

    head = _file_head(source)
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the file is what is wrong
        text = str(exc)
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch writes a zip; older torch a pickle
            kind = "text" if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "binary data"
            start = f", it starts with {quoted(head[:24].decode('latin-1'))}" if head else ", it is empty"
            raise UsageError(f"{what} is not a checkpoint: not a PyTorch file at all ({kind}{start})") from None
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            obj = f" ({found.group(1)})" if found else ""
            raise UsageError(f"{what} holds Python objects{obj} besides tensors and plain data: lit-imgcls reads "
                             "only tensors and plain data and runs no code from a file, so it cannot use it; save "
                             "the weights alone (torch.save(model.state_dict(), path))") from None
        # torch's first sentence says what failed ("PytorchStreamReader failed reading zip archive: ..."); the
        # rest is advice for its own developers.
        first = " ".join((text.strip().splitlines() or [type(exc).__name__])[0].split()).split(". ")[0]
        raise UsageError(f"{what} is damaged or not a lit-imgcls checkpoint: {first}") from None


def _file_head(source: Any, size: int = 64) -> bytes:
    """The first ``size`` bytes of a path or a seekable file object, its position kept; b"" when unreadable."""
    try:
        if hasattr(source, "read"):
            at = source.tell()
            head = source.read(size)
            source.seek(at)
            return head
        with open(source, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _read_url_checkpoint(url: str) -> bytes:
    """The bytes of the checkpoint object at ``url``, checked against its ``.sha256`` object when there is one."""
    import hashlib

    from lit_imgcls.storage import read_bytes

    data = read_bytes(url, missing_ok=True)
    if data is None:
        raise UsageError(f"checkpoint not found: {url}")
    side = read_bytes(f"{url}.sha256", limit=4096, missing_ok=True)
    if side is not None:  # none: the run stopped between the checkpoint's write and its checksum's
        try:
            expected = side.decode("utf-8").split()[0].lower()
        except (UnicodeDecodeError, IndexError):
            raise UsageError(f"cannot read {url}.sha256: not a sha256sum line") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise UsageError(f"checkpoint {url} is damaged: its sha256 {actual[:12]}... differs from "
                             f"{url.rpartition('/')[2]}.sha256 ({expected[:12]}...)")
    return data


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Writes ``checkpoint`` atomically (at a URL: one whole object), then its checksum file."""
    data = checkpoint_bytes(checkpoint)
    from lit_imgcls.storage import is_url, remove, write_bytes

    if is_url(str(path)):
        url = str(path)
        remove(f"{url}.sha256")  # as below: never a stale checksum beside a new object
        write_bytes(url, data)
        write_bytes(f"{url}.sha256", checksum_line(data, url.rpartition('/')[2]).encode())
        return
    # An old checksum must not outlive the file it describes: a crash right after the rename below would
    # otherwise make the new, good checkpoint look damaged.
    checksum_path(path).unlink(missing_ok=True)
    atomic_write(path, lambda f: f.write(data))
    atomic_write_text(checksum_path(path), checksum_line(data, Path(path).name))


def checkpoint_bytes(checkpoint: dict[str, Any]) -> memoryview:
    """``checkpoint`` as ``torch.save`` writes it, in memory: serialised first, as Lightning does, because torch's
    zip writer turns a failed write into an opaque RuntimeError, while a plain write of bytes reports "No space
    left on device" as an OSError with its errno."""
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getbuffer()


def checksum_line(data: bytes | memoryview, name: str) -> str:
    """The ``.sha256`` file's text for ``data`` stored as ``name`` (``sha256sum`` format)."""
    import hashlib

    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def _atomic_checkpoint_io() -> type:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoint IO that writes atomically with a checksum and never unpickles code when reading."""

        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
            save_checkpoint(checkpoint, path)

        def remove_checkpoint(self, path) -> None:
            remove_checkpoint(path)

        def load_checkpoint(self, path, map_location: Any = None, weights_only: Optional[bool] = None) -> dict[str, Any]:
            return load_checkpoint(path, map_location or "cpu")

    AtomicCheckpointIO.__module__ = __name__
    return AtomicCheckpointIO


def __getattr__(name: str):
    # Built on first use: importing Lightning costs ~4 s, and the writers here (dataset pack, plot) need none of it.
    if name == "AtomicCheckpointIO":
        cls = globals()[name] = _atomic_checkpoint_io()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
