"""Reading a pack back: labels in storage order, a decoded sample, checksums (used by inspect and verify).

A shard that cannot be read is a :class:`UsageError` naming it and pointing at ``dataset verify``, not a
traceback from tarfile or FFCV.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from lit_imgcls.data.download import file_digest
from lit_imgcls.data.image import open_image, to_rgb_or_grey
from lit_imgcls.errors import UsageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def iter_tar_samples(path: str | Path, num_classes: int, entry: dict | None = None) -> Iterator[tuple[str, bytes, int]]:
    """(key, image bytes, label) for each sample of a local shard that has both, in storage order; through the one
    shard reader, :func:`lit_imgcls.data.formats.tar_shards.iter_samples`. With the manifest's ``entry`` the shard
    is hashed as it is read and checked at its end (:class:`~lit_imgcls.errors.DamagedShard`).

    Raises:
        UsageError: a label outside ``[0, num_classes)`` (:func:`lit_imgcls.data.labels.parse_label`).
    """
    from lit_imgcls.data.formats.tar_shards import iter_samples
    from lit_imgcls.data.labels import parse_label
    from lit_imgcls.data.shard_check import finish, open_shard

    with open_shard(str(path), entry) as f:
        for key, sample in iter_samples(f):
            image = next((v for ext, v in sample.items() if ext != "cls"), None)
            if image is not None and "cls" in sample:
                yield key, image, parse_label(sample["cls"], num_classes, f"sample {key} of shard {path}")
        finish(f)


def beton_labels(out: Path, manifest: dict, split: str):
    """The checked labels (int64 array, storage order) of a split's ``.beton`` file
    (:func:`lit_imgcls.data.formats.beton.read_beton`): what must pass before FFCV opens it."""
    from lit_imgcls.data.formats.beton import read_beton

    entry = manifest["splits"][split]["ffcv"]
    return read_beton(out / entry["file"], len(manifest["class_names"]), entry["samples"],
                      f"{entry['file']} of pack {out}").labels


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
            with naming(f"wds/{shard['file']}", out):
                before = len(labels)
                labels += [label for _, _, label in
                           iter_tar_samples(out / "wds" / shard["file"], len(manifest["class_names"]), shard)]
                # tarfile stops quietly at a cut-short or damaged header: count what it found
                if len(labels) - before != shard["samples"]:
                    raise ValueError(f"{len(labels) - before} samples, the manifest says {shard['samples']}")
        return labels
    return beton_labels(out, manifest, split).tolist()  # read with numpy: no FFCV needed


def first_sample(out: Path, manifest: dict, split: str):
    """(PIL image, label) of the first stored sample of a split."""
    entry = manifest["splits"][split]
    mode = "L" if manifest.get("channels") == 1 else "RGB"
    if "wds" in entry:
        if not entry["wds"]:
            return None
        with naming(f"wds/{entry['wds'][0]['file']}", out):
            for _, data, label in iter_tar_samples(out / "wds" / entry["wds"][0]["file"], len(manifest["class_names"])):
                img = to_rgb_or_grey(open_image(data))
                return (img.convert(mode) if img.mode != mode else img), label
        return None
    beton_labels(out, manifest, split)
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


def split_digests(out: Path, manifest: dict, split: str) -> tuple[list[str], list[int], bytes]:
    """Keys, labels and the sha256 of each stored image (32 bytes each, concatenated) of a split's WebDataset
    shards, in storage order: one read of the shards, for packs whose manifest has no ``duplicates``.

    Raises:
        UsageError: a shard cannot be read, or holds another number of samples than the manifest says.
    """
    import hashlib

    keys: list[str] = []
    labels: list[int] = []
    digests = bytearray()
    for shard in manifest["splits"][split].get("wds", []):
        with naming(f"wds/{shard['file']}", out):
            before = len(keys)
            for key, data, label in iter_tar_samples(out / "wds" / shard["file"], len(manifest["class_names"]), shard):
                keys.append(key)
                labels.append(label)
                digests += hashlib.sha256(data).digest()
            # tarfile stops quietly at a cut-short or damaged header: count what it found
            if len(keys) - before != shard["samples"]:
                raise ValueError(f"{len(keys) - before} samples, the manifest says {shard['samples']}")
    return keys, labels, bytes(digests)


def duplicates_in_shards(out: Path, manifest: dict) -> tuple[dict, dict[str, list[int]]]:
    """What ``dataset pack`` records as ``duplicates`` (:func:`lit_imgcls.data.pack_report.summarise_duplicates`),
    found by hashing the image of every sample in the WebDataset shards, and each split's labels in storage order
    (read in the same pass). The pack must have WebDataset shards; samples have keys but no source paths.

    Raises:
        UsageError: a shard cannot be read (see :func:`split_digests`).
    """
    from lit_imgcls.data.pack_report import summarise_duplicates

    names = list(manifest["splits"])
    keys: list[str] = []
    codes: list[int] = []
    labels: list[int] = []
    digests = bytearray()
    per_split: dict[str, list[int]] = {}
    for code, split in enumerate(names):
        k, lbl, d = split_digests(out, manifest, split)
        keys += k
        labels += lbl
        codes += [code] * len(k)
        digests += d
        per_split[split] = lbl
    summary = summarise_duplicates(bytes(digests), codes, names, labels,
                                   lambda i: {"split": names[codes[i]], "key": keys[i], "label": labels[i]})
    return summary, per_split
