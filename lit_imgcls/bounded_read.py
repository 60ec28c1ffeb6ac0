"""The one rule for reading a file a user names: regular files only, symlinks followed without loops, a size bound.

Every place that takes a path reads through here: ``predict`` inputs and the folder dataset (images), recipes,
hostfiles (``launch -H``), im2rec and CSV lists and their ``classes.txt``, pack manifests, MNIST IDX files, the
checksum file beside a checkpoint; and
http(s)/s3 downloads through :func:`bounded_stream`. The rule:

- **Regular files only.** A named pipe would wait for a writer for ever, a device (``/dev/zero``) could be read
  for ever, a socket cannot be read at all: the path is looked at with ``stat`` first and such a file is never
  opened. The file is then opened with ``O_NONBLOCK`` and looked at again, so a FIFO swapped in between cannot
  block the open either.
- **Symlinks** are followed as the system follows them; a loop is the kernel's ``ELOOP``, reported in one line.
- **A size bound per kind of file** (:data:`LIMITS`, bytes): a larger file is refused before it is read, and a
  file that grows while it is read (or a stream without end) is cut at the bound and refused.

Failures are :class:`ReadRefused` (a :class:`~lit_imgcls.errors.UsageError`, so the CLI prints one line and
exits 2) whose ``reason`` is the short why (``not a regular file (a FIFO)``) and whose message names the path.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO

from lit_imgcls.errors import UsageError
from lit_imgcls.stream_wrapper import StreamWrapper

MiB = 2**20
GiB = 2**30

# Bytes one file of each kind may hold. Generous for real data (an ImageNet train list is ~60 MB, a pack manifest
# of a million images a few MB, the largest photos tens of MB), small enough that a mistaken path cannot fill
# memory.
LIMITS: dict[str, int] = {
    "image": 512 * MiB,  # a file, or an http(s)/s3 image given to predict
    "recipe": 1 * MiB,  # YAML, before it is parsed
    "hostfile": 1 * MiB,
    "list": 2 * GiB,  # an im2rec .lst or a path,label .csv
    "class map": 64 * MiB,  # classes.txt beside a list
    "class weights": 1 * MiB,  # fit --class-weights FILE: one weight per class
    "manifest": 64 * MiB,  # a pack's manifest.json, local or remote
    "IDX file": 1 * GiB,  # MNIST images or labels, after gunzip
    "checksum file": 64 * 1024,  # the sha256sum line beside a checkpoint
    "download": 64 * GiB,  # a dataset archive or a shard whose size nobody stated
}

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket",
          stat.S_IFDIR: "a folder"}


class ReadRefused(UsageError):
    """A file or stream that is not read: not a regular file, unreadable, or over its size bound.

    Attributes:
        reason: the short why, without the path (``not a regular file (a FIFO)``, ``larger than 1 MiB ...``).
    """

    def __init__(self, kind: str, where: str | None = None, reason: str | None = None) -> None:
        if where is None or reason is None:  # rebuilt from its message alone (a DataLoader worker's, from_worker)
            self.kind, self.where, self.reason = "", "", kind
            super().__init__(kind)
            return
        self.kind, self.where, self.reason = kind, where, reason
        super().__init__(f"{kind} {where}: {reason}")


def size_text(n: int) -> str:
    """``n`` bytes as people write it (``1 MiB``, ``512 KiB``, ``300 bytes``)."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def limit_of(kind: str) -> int:
    """The size bound of ``kind`` in bytes (:data:`LIMITS`)."""
    return LIMITS[kind]


def _too_large(kind: str, limit: int, size: int | None = None) -> str:
    has = f" ({size_text(size)})" if size is not None else ""
    return f"larger than {size_text(limit)}{has}, the most lit-imgcls reads as a {kind}"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link that loops (or a chain of more than 40 links)"
    return f"unreadable: {exc.strerror or exc}"


def special_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is not a regular file (``a FIFO``, ``a device``...), else None."""
    if stat.S_ISREG(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def open_regular(path: str | os.PathLike, kind: str) -> IO[bytes]:
    """``path`` opened for binary reading if it is a regular file, else :class:`ReadRefused` (never opened).

    The caller bounds what it reads (:func:`read_regular` does); the size on disk is checked against
    ``LIMITS[kind]`` here.
    """
    where = os.fspath(path)
    limit = LIMITS[kind]
    try:
        special = special_kind(os.stat(where).st_mode)  # follows links; ELOOP for a loop
    except OSError as exc:
        raise ReadRefused(kind, where, _os_reason(exc)) from None
    if special:
        raise ReadRefused(kind, where, f"not a regular file ({special})")
    try:
        fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ReadRefused(kind, where, _os_reason(exc)) from None
    try:
        st = os.fstat(fd)
        special = special_kind(st.st_mode)  # swapped for a FIFO since the stat above
        if special:
            raise ReadRefused(kind, where, f"not a regular file ({special})")
        if st.st_size > limit:
            raise ReadRefused(kind, where, _too_large(kind, limit, st.st_size))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, kind: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``LIMITS[kind]`` of them.

    Raises:
        ReadRefused: not a regular file (FIFO, device, socket, folder), missing, a symlink loop, unreadable, or
            larger than the bound (also when it grew past it while being read).
    """
    with open_regular(path, kind) as f:
        try:
            data = f.read(LIMITS[kind] + 1)
        except OSError as exc:
            raise ReadRefused(kind, os.fspath(path), _os_reason(exc)) from None
    if len(data) > LIMITS[kind]:
        raise ReadRefused(kind, os.fspath(path), _too_large(kind, LIMITS[kind]))
    return data


def read_text(path: str | os.PathLike, kind: str) -> str:
    """:func:`read_regular` decoded as UTF-8; a file that is not UTF-8 is :class:`ReadRefused` naming the byte."""
    data = read_regular(path, kind)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadRefused(kind, os.fspath(path), f"not UTF-8 text (byte {data[exc.start]:#04x} at offset "
                                                 f"{exc.start})") from None


class BoundedStream(StreamWrapper):
    """A binary stream that refuses to give more than ``limit`` bytes: reading past it raises :class:`ReadRefused`.

    Wraps what :func:`lit_imgcls.data.remote.open_url` opens (an http response, an fsspec file), so a server
    that streams without end costs at most ``limit`` bytes and then one line.
    """

    def __init__(self, raw: IO[bytes], limit: int, kind: str, where: str) -> None:
        super().__init__(raw)
        self.limit, self.kind, self.where, self.count = limit, kind, where, 0

    def read(self, n: int = -1) -> bytes:
        left = self.limit - self.count
        want = left + 1 if n is None or n < 0 else min(n, left + 1)
        if n is None or n < 0:  # read to the end, but never more than the bound (+1 byte to see it exceeded)
            chunks = []
            while want > 0:
                chunk = self.raw.read(min(want, 8 * MiB))
                if not chunk:
                    break
                chunks.append(chunk)
                want -= len(chunk)
            data = b"".join(chunks)
        else:
            data = self.raw.read(want) if want > 0 else b""
        self.count += len(data)
        if self.count > self.limit:
            raise ReadRefused(self.kind, self.where, f"{_too_large(self.kind, self.limit)}: the download was cut "
                                                     "there")
        return data


def bounded_stream(raw: IO[bytes], kind: str, where: str, limit: int | None = None) -> BoundedStream:
    """``raw`` cut at ``limit`` bytes (default ``LIMITS[kind]``)."""
    return BoundedStream(raw, LIMITS[kind] if limit is None else limit, kind, where)


__all__ = ["LIMITS", "ReadRefused", "BoundedStream", "bounded_stream", "limit_of", "open_regular", "read_regular",
           "read_text", "size_text", "special_kind"]
