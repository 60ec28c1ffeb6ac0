"""Downloads with a checksum, written atomically into a cache folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from lit_imgcls.errors import UsageError


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache(name: str) -> Path:
    root = os.environ.get("LIT_IMGCLS_CACHE") or Path.home() / ".cache" / "lit-imgcls"
    return Path(root) / name


def fetch(url: str, dest: str | Path, algo: str | None = None, expected: str | None = None,
          limit: int | None = None) -> Path:
    """Copies ``url`` (a path or any URL :func:`remote.open_url` reads) to ``dest`` through a temporary file,
    hashing as it goes; a digest other than ``expected`` is refused. An interrupted copy never looks complete.
    More than ``limit`` bytes (default: the ``"download"`` bound of :mod:`lit_imgcls.bounded_read`) is refused."""
    from lit_imgcls.data.remote import open_url

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.new(algo) if algo else None
    try:
        with os.fdopen(fd, "wb") as out, open_url(url, limit=limit) as src:
            while chunk := src.read(1 << 20):
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
        if digest is not None and expected and digest.hexdigest() != expected:
            raise UsageError(f"{url} fails its {algo} check (got {digest.hexdigest()[:12]}..., expected "
                             f"{expected[:12]}...): corrupt in storage or in transit")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def download(url: str, dest: str | Path, md5: str | None = None) -> Path:
    """A dataset file from its official URL, checked against the md5 its authors publish when given."""
    return fetch(url, dest, "md5" if md5 else None, md5)
