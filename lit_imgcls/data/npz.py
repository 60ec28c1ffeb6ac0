"""A dataset in one ``.npz`` file of numpy arrays, held in memory (MXNet's NDArrayIter over saved arrays)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from lit_imgcls.data.arrays import ArrayDataModule
from lit_imgcls.errors import UsageError

REQUIRED = ("x_train", "y_train")
OPTIONAL = ("x_val", "y_val", "x_test", "y_test", "class_names", "mean", "std")


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``path``; object arrays are refused, so loading can never unpickle (run) anything."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"npz dataset file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UsageError(f"cannot read {p} as .npz arrays (object arrays are refused): {str(exc).splitlines()[0]}") from None
    missing = [k for k in REQUIRED if k not in arrays]
    unknown = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise UsageError(f"{p} must hold arrays {', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)}); "
                         f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(unknown) or 'none'}")
    return arrays


class NpzDataModule(ArrayDataModule):
    """Images and labels from a ``.npz`` file: ``x_train``, ``y_train``, optionally ``x_val``/``y_val``,
    ``x_test``/``y_test``, ``class_names`` (a string array) and per-channel ``mean``/``std`` of [0, 1] pixels.
    Images are uint8 (N, H, W) or (N, H, W, C).

    Args:
        data_train: the ``.npz`` file.
        batch_size: samples per batch on each device.
        seed: seed of the data order.
        channels_last: hand batches over in channels-last memory format.
        num_examples: train on the first N examples only.
        fused_steps: training batches handed over together, one optimizer step each.
        image_shape: "C,H,W" the network takes (default: the arrays' own); uint8 images are converted at setup.
        augment: the recipe's augmentation stages, run on each uint8 training image (default: none).
        sampler: the training order, "shuffle" or "balanced" (classes drawn equally often).
    """

    def __init__(
        self,
        data_train: str | None = None,
        batch_size: int = 128,
        seed: int = 0,
        channels_last: bool = False,
        num_examples: int | None = None,
        fused_steps: int = 1,
        image_shape: str | None = None,
        augment: list | None = None,
        sampler: str = "shuffle",
    ) -> None:
        if not data_train:
            raise UsageError("the npz dataset needs data_train: a .npz file with x_train and y_train arrays")
        arrays = read_npz(data_train)
        names = arrays.get("class_names")
        super().__init__(
            arrays["x_train"], arrays["y_train"], arrays.get("x_val"), arrays.get("y_val"), arrays.get("x_test"),
            arrays.get("y_test"), batch_size=batch_size, seed=seed, channels_last=channels_last,
            num_examples=num_examples, fused_steps=fused_steps,
            class_names=[str(n) for n in names] if names is not None else None,
            mean=arrays["mean"].tolist() if "mean" in arrays else None,
            std=arrays["std"].tolist() if "std" in arrays else None, image_shape=image_shape, augment=augment,
            sampler=sampler,
        )
