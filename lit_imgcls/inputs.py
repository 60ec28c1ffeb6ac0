"""What a user names for prediction (files, folders, globs, URLs, packs) as a stream of image sources.

Each :class:`Source` knows how to get its bytes; a name that matches nothing, or a folder without images, becomes
a source with ``error`` set, so the other inputs are still predicted. Folders follow the tree rules of
:mod:`lit_imgcls.data.classes` (hidden files and folders are not images); packs are read through the one shard
reader, :func:`lit_imgcls.data.formats.tar_shards.iter_samples`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_imgcls.data.classes import IMAGE_EXTS, is_hidden
from lit_imgcls.errors import UsageError


@dataclass
class Source:
    """One image to predict: a name for the report and a way to get its bytes (or a failure found early)."""

    name: str
    read: Callable[[], Any] | None = None
    label: str | None = None  # the true class, for samples of a pack
    error: str | None = None
    damaged: bool = False  # a whole shard of a pack failed its check; ``error`` names it

def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "s3://", "file://"))


def read_location(location: str) -> bytes:
    """The bytes at a path or URL (file://, http(s)://, s3://), at most the image size bound."""
    from lit_imgcls.data.remote import read_bytes

    return read_bytes(location, "image")


def expand_inputs(inputs: Sequence[str], split: str = "val") -> Iterator[Source]:
    """Sources for what a user names: image files, folders (recursive), globs, http(s)/s3 URLs, and packs (a
    folder with manifest.json, the manifest itself, or a URL ending in /manifest.json: every sample of ``split``).

    A name that matches nothing becomes a Source with ``error`` set, so the others are still predicted.
    """
    for text in inputs:
        if _is_url(text) and not text.startswith("file://"):
            if text.rstrip("/").endswith("/manifest.json"):
                yield from _pack_sources(text.rstrip("/")[: -len("/manifest.json")], split)
            else:
                yield Source(text, lambda t=text: read_location(t))
            continue
        path = Path(text.removeprefix("file://")).expanduser()
        if path.is_dir() and os.path.lexists(path / "manifest.json"):  # a FIFO there: the manifest reader says so
            yield from _pack_sources(str(path), split)
        elif path.is_file() and path.name == "manifest.json":
            yield from _pack_sources(str(path.parent), split)
        elif path.is_dir():
            yield from _folder_sources(path, text)
        elif os.path.lexists(path):  # a file, or a FIFO or dangling link: the reader says what is wrong with it
            yield _file_source(str(path), text)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                yield Source(text, error="no file matches this pattern")
            for match in matches:
                if os.path.isdir(match):
                    yield from _folder_sources(Path(match), match)
                else:
                    yield _file_source(match, match)
        else:
            yield Source(text, error="no such file or folder")


def _file_source(path: str, name: str) -> Source:
    from lit_imgcls.data.image import read_file

    return Source(name, lambda p=path: read_file(p))


def _folder_sources(folder: Path, name: str) -> Iterator[Source]:
    found = False
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTS) and not is_hidden(f):
                found = True
                yield _file_source(os.path.join(root, f), os.path.join(root, f))
    if not found:
        yield Source(name, error=f"folder has no images ({', '.join(IMAGE_EXTS)})")


def _pack_sources(location: str, split: str) -> Iterator[Source]:
    from lit_imgcls.data.formats.packed import load_pack_manifest
    from lit_imgcls.data.formats.tar_shards import iter_samples
    from lit_imgcls.data.formats.wds import IMAGE_KEYS, shard_urls
    from lit_imgcls.data.shard_check import verified_shard
    from lit_imgcls.errors import DamagedShard

    manifest = load_pack_manifest(location)
    splits = manifest["splits"]
    if not splits.get(split, {}).get("count"):
        have = ", ".join(s for s, v in splits.items() if v.get("count")) or "none"
        raise UsageError(f"pack {location} has no {split!r} samples (splits with samples: {have}); "
                         "choose one with --split")
    if "wds" not in splits[split]:
        raise UsageError(f"pack {location} has no WebDataset shards (only {', '.join(manifest['formats'])}); "
                         "predict reads wds shards: re-pack with --format wds or both")
    names = list(manifest["class_names"])
    for url, entry in zip(shard_urls(location, manifest, split), splits[split]["wds"]):
        # Each shard is checked whole (sha256, size) before any of its samples is predicted: a damaged one is
        # one failed input named by its shard, and the other shards are still predicted.
        try:
            stream = verified_shard(url, entry)
        except DamagedShard as exc:
            yield Source(url, error=str(exc), damaged=True)
            continue
        except OSError as exc:
            raise UsageError(f"cannot open shard {url}: {exc}") from None
        with stream:
            for key, sample in iter_samples(stream):
                yield _pack_sample(location, key, sample, names, IMAGE_KEYS, url)


def _pack_sample(location: str, key: str, sample: dict[str, bytes], names: list[str], image_keys,
                 shard: str) -> Source:
    name = f"{location.rstrip('/')}:{key}"
    label = None
    if "cls" in sample:
        from lit_imgcls.data.labels import parse_label

        label = names[parse_label(sample["cls"], len(names), f"sample {key} of shard {shard}")]
    ext = next((e for e in image_keys if e in sample), None)
    if ext is None:
        return Source(name, label=label, error="sample has no image in its shard")
    return Source(name, lambda d=sample[ext]: d, label=label)
