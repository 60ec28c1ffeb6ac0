"""Reading a pack back: labels in storage order, a decoded sample, checksums (used by inspect and verify).

A shard that cannot be read is a :class:`UsageError` naming it and pointing at ``dataset verify``, not a
traceback from tarfile or FFCV.
"""

from __future__ import annotations

import contextlib
import tarfile
from pathlib import Path
from typing import Iterator

from lit_imgcls.data.download import file_digest
from lit_imgcls.data.encode import decode
from lit_imgcls.errors import UsageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, bytes, int]]:
    """(key, image bytes, label) for each sample of a shard, in storage order."""
    pending: dict[str, dict] = {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition("/")[-1].partition(".")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            entry = pending.setdefault(key, {})
            entry["cls" if ext == "cls" else "img"] = data
            if "cls" in entry and "img" in entry:
                del pending[key]
                yield key, entry["img"], int(entry["cls"])


@contextlib.contextmanager
def naming(rel: str, out: Path):
    """Turns any failure to read the pack file ``rel`` into one line naming it."""
    try:
        yield
    except (UsageError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - tarfile, FFCV and the decoders each raise their own types
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"cannot read {rel} of pack {out} ({detail}): run `lit-imgcls dataset verify {out}`") from None


def storage_labels(out: Path, manifest: dict, split: str) -> list[int]:
    """Labels of a split in the order they are stored (what a loader without shuffling would see)."""
    entry = manifest["splits"][split]
    if "wds" in entry:
        labels: list[int] = []
        for shard in entry["wds"]:
            with naming(f"wds/{shard['file']}", out), tarfile.open(out / "wds" / shard["file"], "r:") as tar:
                before = len(labels)
                for member in tar:
                    if member.name.endswith(".cls"):
                        labels.append(int(tar.extractfile(member).read()))  # type: ignore[union-attr]
                # tarfile stops quietly at a cut-short or damaged header: count what it found
                if len(labels) - before != shard["samples"]:
                    raise ValueError(f"{len(labels) - before} samples, the manifest says {shard['samples']}")
        return labels
    with naming(entry["ffcv"]["file"], out):
        from ffcv.reader import Reader

        reader = Reader(str(out / entry["ffcv"]["file"]))
        return [int(v) for v in reader.metadata["f1"]]


def first_sample(out: Path, manifest: dict, split: str):
    """(PIL image, label) of the first stored sample of a split."""
    entry = manifest["splits"][split]
    mode = "L" if manifest.get("channels") == 1 else "RGB"
    if "wds" in entry:
        if not entry["wds"]:
            return None
        with naming(f"wds/{entry['wds'][0]['file']}", out):
            for _, data, label in iter_tar_samples(out / "wds" / entry["wds"][0]["file"]):
                return decode(data, mode), label
        return None
    with naming(entry["ffcv"]["file"], out):
        from ffcv.fields.decoders import IntDecoder, SimpleRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from PIL import Image

        loader = Loader(str(out / entry["ffcv"]["file"]), batch_size=1, num_workers=1, order=OrderOption.SEQUENTIAL,
                        pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]}, drop_last=False)
        for images, labels in loader:
            return Image.fromarray(images[0].copy()), int(labels[0][0])
    return None


def shard_files(manifest: dict) -> list[tuple[str, dict]]:
    """(relative path, entry with sha256 and bytes) of every file the manifest lists."""
    files = []
    for entry in manifest["splits"].values():
        files += [(f"wds/{s['file']}", s) for s in entry.get("wds", [])]
        if "ffcv" in entry:
            files.append((entry["ffcv"]["file"], entry["ffcv"]))
    return files


def check_file(out: Path, rel: str, entry: dict) -> str | None:
    """None when the file is there with its recorded size and sha256, else what is wrong."""
    path = out / rel
    if not path.is_file():
        return f"{rel}: missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{rel}: {size} bytes, manifest says {entry['bytes']} (truncated or replaced)"
    try:
        digest = file_digest(path)
    except OSError as exc:
        return f"{rel}: unreadable ({exc.strerror or exc})"
    if digest != entry["sha256"]:
        return f"{rel}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}... (corrupt)"
    return None
