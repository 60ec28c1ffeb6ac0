"""Downloads with a checksum, written atomically into a cache folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
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


def download(url: str, dest: str | Path, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Fetches ``url`` to ``dest`` through a temporary file, so an interrupted download never looks complete."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
        if md5 and file_digest(tmp, "md5") != md5:
            raise UsageError(f"download of {url} is corrupt: md5 differs from {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
