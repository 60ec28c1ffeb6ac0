"""Every byte of a pack that a loader reads is checked against the pack's manifest (sha256 and size) when it is read.

- WebDataset shards (local, cached, ``http(s)://``, ``s3://``) are read through :func:`open_shard`, which hashes
  them as they stream (no second read) and compares at the shard's end: the run stops there, naming the shard.
- FFCV ``.beton`` files are memory-mapped, not streamed: :func:`check_whole_file` hashes each once per process
  when the loader opens it (about 1 s of CPU per GB, docs/BENCHMARKS.md).
- ``predict`` reads a shard through :func:`verified_shard`: the whole shard is checked before any of its samples
  is handed out, so a damaged shard contributes nothing but its name.

A mismatch raises :class:`~lit_imgcls.errors.DamagedShard` (one line, exit 2 for a run).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path
from typing import IO

from lit_imgcls.errors import DamagedShard

VERIFY_HINT = "run `lit-imgcls dataset verify` on the pack"


class ShardReader(io.RawIOBase):
    """A read-only binary stream over a shard that hashes what passes and checks it against the manifest.

    Reaching the end (a read returning ``b""``) or :meth:`finish` compares the byte count and sha256 with
    ``entry``; reading past the manifest's size stops at once. Either raises :class:`DamagedShard` naming ``name``.

    Args:
        raw: the shard's bytes (a file, an HTTP response, an fsspec file); closed with this stream.
        name: the shard as the user knows it (path or URL), for the message.
        entry: the manifest's entry: ``{"sha256": hex str, "bytes": int}``.
    """

    def __init__(self, raw: IO[bytes], name: str, entry: dict) -> None:
        super().__init__()
        self.raw, self.name = raw, name
        self.want_sha, self.want_bytes = str(entry["sha256"]), int(entry["bytes"])
        self.seen = 0
        self.checked = False
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.checked:
            return b""
        left = self.want_bytes - self.seen
        # One byte more than the manifest allows is enough to know the shard is too long: never read an endless
        # stream to its end.
        want = left + 1 if size is None or size < 0 else min(size, left + 1)
        data = self.raw.read(want) if want > 0 else b""
        if not data and want > 0:
            self._check_end()
            return b""
        self.seen += len(data)
        if self.seen > self.want_bytes:
            raise DamagedShard(f"shard {self.name} is longer than the {self.want_bytes} bytes its manifest says: it "
                               f"was replaced or is damaged; {VERIFY_HINT}")
        self._hash.update(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        """Reads what the consumer left (a tar file's end padding) and checks the whole shard."""
        while not self.checked:
            self.read(1 << 20)

    def _check_end(self) -> None:
        self.checked = True
        if self.seen != self.want_bytes:
            raise DamagedShard(f"shard {self.name} ends after {self.seen} of its {self.want_bytes} bytes: it is "
                               f"truncated; {VERIFY_HINT}")
        got = self._hash.hexdigest()
        if got != self.want_sha:
            raise DamagedShard(f"shard {self.name} fails its sha256 check (got {got[:12]}..., the manifest says "
                               f"{self.want_sha[:12]}...): it is damaged; {VERIFY_HINT}")

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            super().close()


def open_shard(url: str, entry: dict | None, cache: str | Path | None = None) -> IO[bytes]:
    """The shard at ``url`` (a path, ``file://``, ``http(s)://`` or ``s3://``) as a checked stream.

    With ``cache``, a remote shard is read from its local copy (:func:`~lit_imgcls.data.remote.cached_copy`),
    which is hashed again as it is read. Without a manifest ``entry`` (no sha256 to compare) the plain stream.

    Raises:
        DamagedShard: while reading, when the bytes differ from ``entry``.
        UsageError: the shard cannot be opened or downloaded.
    """
    from lit_imgcls.data.remote import cached_copy, is_remote, open_url

    if entry is None:
        return open_url(url)
    source = url
    if cache and is_remote(url):
        source = str(cached_copy(url, cache, entry["sha256"], entry["bytes"]))
    return ShardReader(open_url(source), url, entry)


def finish(stream) -> None:
    """Checks the rest of a stream from :func:`open_shard` (a no-op for an unchecked one)."""
    if isinstance(stream, ShardReader):
        stream.finish()


def verified_shard(url: str, entry: dict, cache: str | Path | None = None) -> IO[bytes]:
    """The shard's bytes in a seekable temporary file (memory up to 32 MiB, then disk), checked whole before it
    is returned: a reader never sees a sample of a damaged shard.

    Raises:
        DamagedShard: the shard differs from ``entry``.
    """
    out = tempfile.SpooledTemporaryFile(max_size=32 << 20)  # noqa: SIM115 - handed to the caller, who closes it
    try:
        with open_shard(url, entry, cache) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
            finish(src)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


_checked: dict[tuple, None] = {}


def check_whole_file(path: str | Path, entry: dict, name: str | None = None) -> None:
    """Hashes a file that is read by memory mapping (FFCV's ``.beton``) once per process and file version
    (path, size, modification time, inode), before a loader maps it.

    Raises:
        DamagedShard: missing, another size, or another sha256 than ``entry`` says.
    """
    from lit_imgcls.data.pack_check import check_file

    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        st = None
    key = (str(path.resolve()), entry["sha256"], st and (st.st_size, st.st_mtime_ns, st.st_ino))
    if st is not None and key in _checked:
        return
    problem = check_file(path.parent, path.name, entry)
    if problem is not None:
        raise DamagedShard(f"{name or path}: {problem.split(': ', 1)[-1]}; {VERIFY_HINT}")
    _checked[key] = None
