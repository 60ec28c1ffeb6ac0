"""Writing WebDataset shards: plain POSIX tar files, one ``<key>.<ext>`` image and one ``<key>.cls`` label each."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lit_imgcls.errors import UsageError

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}


def parse_shard_size(text: str) -> tuple[int, int]:
    """``"10000"`` -> (10000 samples, no byte limit); ``"500MB"`` -> (no sample limit, 500,000,000 bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS or float(m.group(1)) <= 0:
        raise UsageError(f"shard_size must be a sample count like 10000 or a size like 500MB, got {text!r}")
    value, unit = float(m.group(1)), m.group(2).upper()
    if not unit:
        return int(value), 0
    return 0, int(value * _UNITS[unit])


@dataclass
class ShardInfo:
    file: str
    samples: int = 0
    bytes: int = 0
    sha256: str = ""


@dataclass
class SampleLocation:
    """Where one image's bytes sit inside a shard (read back to build FFCV files without holding images)."""

    shard: int
    offset: int
    size: int
    label: int


@dataclass
class TarShardWriter:
    """Writes ``{prefix}-{n:06d}.tar`` shards into ``folder``, starting a new one at the sample or byte limit.

    Each shard is written under a temporary name and renamed when complete, so a crash never leaves a shard
    that looks finished.
    """

    folder: Path
    prefix: str
    max_samples: int = 10000
    max_bytes: int = 0
    shards: list[ShardInfo] = field(default_factory=list)
    locations: list[SampleLocation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._hash = None

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        self._tmp = self.folder / f".{name}.tmp"
        self._file = open(self._tmp, "wb")
        self._hash = hashlib.sha256()
        self._tar = tarfile.open(fileobj=_Hashing(self._file, self._hash), mode="w", format=tarfile.USTAR_FORMAT)
        self.shards.append(ShardInfo(name))

    def _close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        info = self.shards[-1]
        info.bytes = self._tmp.stat().st_size
        info.sha256 = self._hash.hexdigest()
        os.replace(self._tmp, self.folder / info.file)
        self._tar = None

    def write(self, key: str, image: bytes, ext: str, label: int) -> None:
        info = self.shards[-1] if self._tar is not None else None
        if info is None or (self.max_samples and info.samples >= self.max_samples) or (
            self.max_bytes and info.samples and info.bytes + len(image) > self.max_bytes
        ):
            self._close()
            self._open()
            info = self.shards[-1]
        tar = self._tar
        self._add(f"{key}{ext}", image)
        data_offset = tar.offset - _padded(len(image))
        self._add(f"{key}.cls", str(label).encode())
        info.samples += 1
        info.bytes = tar.offset
        self.locations.append(SampleLocation(len(self.shards) - 1, data_offset, len(image), label))

    def _add(self, name: str, data: bytes) -> None:
        member = tarfile.TarInfo(name)
        member.size = len(data)
        member.mode = 0o644
        self._tar.addfile(member, io.BytesIO(data))

    def finish(self) -> list[ShardInfo]:
        self._close()
        return self.shards

    def abort(self) -> None:
        """Drops the shard being written (its temporary file goes); called while another error is raised."""
        if self._tar is not None:
            try:
                self._file.close()
            except OSError:  # its buffer meets the same full disk: the file is closed all the same, and goes
                pass
            self._tmp.unlink(missing_ok=True)
            self._tar = None


def _padded(n: int) -> int:
    return -(-n // 512) * 512


class _Hashing(io.RawIOBase):
    """A write-only file that hashes what passes through it (the shard's sha256 without reading it again)."""

    def __init__(self, f, h) -> None:
        self._f, self._h = f, h

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._h.update(b)
        return self._f.write(b)

    def tell(self) -> int:
        return self._f.tell()


def read_location(shard_path: str | Path, loc: SampleLocation) -> bytes:
    with open(shard_path, "rb") as f:
        f.seek(loc.offset)
        return f.read(loc.size)


def iter_samples(fileobj) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each sample of a shard read as a stream, in storage order.

    The one reader of packed shards outside training (``predict``, ``dataset inspect``/``verify``): a sample's
    files are adjacent (``<key>.jpg``, ``<key>.cls``), and extensions are lower-cased. Streaming mode reads
    remote shards (http, s3) without seeking. tarfile's own errors propagate for the caller to name the shard.
    """
    sample: dict[str, bytes] = {}
    key = None
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, _, ext = member.name.rpartition("/")[-1].partition(".")
            if k != key and key is not None:
                yield key, sample
                sample = {}
            key = k
            sample[ext.lower()] = tar.extractfile(member).read()  # type: ignore[union-attr]
    if key is not None:
        yield key, sample
