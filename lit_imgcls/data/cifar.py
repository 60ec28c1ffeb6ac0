"""CIFAR-10 from the official python tarball (``cifar-10-python.tar.gz``), read without executing its pickles."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from lit_imgcls.data.arrays import CardDataModule
from lit_imgcls.data.cards import load_card
from lit_imgcls.data.download import default_cache, download
from lit_imgcls.data.safe_pickle import load_data_pickle
from lit_imgcls.errors import UsageError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"


def _decode_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    d = load_data_pickle(raw, where)
    if not isinstance(d, dict):
        raise UsageError(f"{where}: expected a dict batch")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    data, labels = d.get("data"), d.get("labels", d.get("fine_labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise UsageError(f"{where}: a CIFAR batch needs 'data' and 'labels'")
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UsageError(f"{where}: data must be N x 3072 with N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32).astype(np.uint8), np.asarray(labels, dtype=np.int64)


def _read_members(root: Path) -> dict[str, bytes]:
    """The batch files from the tarball or its extracted folder."""
    card = load_card("cifar10")["sources"]
    wanted = {*TRAIN_BATCHES, TEST_BATCH, "batches.meta"}
    for folder in (root / card["folder"], root):
        if all((folder / name).is_file() for name in TRAIN_BATCHES + [TEST_BATCH]):
            return {name: (folder / name).read_bytes() for name in wanted if (folder / name).is_file()}
    tar_path = root / card["tarball"] if root.is_dir() else root
    if not tar_path.is_file():
        raise FileNotFoundError(tar_path)
    out = {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    out[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"cannot read CIFAR-10 tarball {tar_path}: {exc}") from exc
    missing = sorted(set(TRAIN_BATCHES + [TEST_BATCH]) - set(out))
    if missing:
        raise UsageError(f"{tar_path} lacks {', '.join(missing)}: not the CIFAR-10 python tarball")
    return out


def load_cifar10(data_dir: str | Path | None = None, data_url: str | None = None) -> dict[str, np.ndarray]:
    """Train and test arrays (N, 3, 32, 32) uint8 with labels; downloads the tarball when it is not there."""
    card = load_card("cifar10")["sources"]
    root = Path(data_dir).expanduser() if data_dir else default_cache("cifar10")
    try:
        members = _read_members(root)
    except FileNotFoundError:
        target = (root if root.suffix != ".gz" else root.parent) / card["tarball"]
        errors = []
        for url in [data_url] if data_url else card["urls"]:
            try:
                download(url, target, md5=None if data_url else card["md5"])
                break
            except (OSError, UsageError) as exc:
                errors.append(f"{url}: {exc}")
        else:
            raise UsageError(f"CIFAR-10 not found in {root} and no download worked ({'; '.join(errors)})") from None
        members = _read_members(target.parent)
    parts = [_decode_batch(members[name], name) for name in TRAIN_BATCHES]
    x_test, y_test = _decode_batch(members[TEST_BATCH], TEST_BATCH)
    return {
        "train_images": np.concatenate([p[0] for p in parts]),
        "train_labels": np.concatenate([p[1] for p in parts]),
        "test_images": x_test,
        "test_labels": y_test,
    }


class CIFAR10DataModule(CardDataModule):
    """CIFAR-10 in memory, with pad-4 random crops and flips for training.

    Args:
        data_dir: folder with ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/`` (downloaded there if missing).
        data_url: URL of the tarball, instead of the card's.
        batch_size: samples per batch on each device.
        seed: seed of the data order and augmentation.
        channels_last: hand batches over in channels-last memory format.
        num_examples: train on the first N examples only.
        fused_steps: training batches handed over together, one optimizer step each.
        image_shape: "C,H,W" the network takes (default: the card's); images are converted once at setup.
    """

    card = "cifar10"
    augment_train = "crop_flip"

    @staticmethod
    def creates_data_dir(data_url: str | None) -> bool:
        """A missing ``data_dir`` is where the tarball is downloaded to (the recipe's ``data/cifar10``)."""
        return True

    def read(self) -> tuple[dict, str]:
        return load_cifar10(self.data_dir, self.data_url), f"the python batches in {self.data_dir or 'the cache'}"
