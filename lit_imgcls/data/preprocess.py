"""Evaluation preprocessing as data: each DataModule states it, every checkpoint carries it, predict applies it.

:class:`DataConfig` plays the part of timm's ``pretrained_cfg`` / ``resolve_data_config``: input size, crop mode,
crop share, interpolation, mean and std. A DataModule's validation loader and ``predict`` both run
:class:`EvalTransform` built from the same config, so an image gives the network the same input on both routes;
nothing is guessed from a dataset's name, and a plugin DataModule gets the same treatment by stating its config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lit_imgcls.data import image
from lit_imgcls.data.transforms import INTERPOLATIONS, RESIZER, center_crop, squash
from lit_imgcls.errors import UsageError, quoted

CROP_MODES = ("center", "squash")
MAX_SIDE = 16384  # an input side beyond this is a damaged config, not a network input
MAX_CHANNELS = 64


@dataclass(frozen=True)
class DataConfig:
    """How an image becomes the network's evaluation input.

    Args:
        input_size: (C, H, W) of the network input; images from files have C 1 (grey) or 3 (RGB), in-memory
            arrays may have others.
        crop_mode: "center": the centred ``crop_pct`` of the shorter side, resized to H x W (photos);
            "squash": the whole image resized to H x W, unchanged when it already has that size (MNIST, CIFAR).
        crop_pct: share of the shorter side kept by the centre crop (0.875: resize to size / 0.875, crop size).
        interpolation: "bilinear", "area" or "auto" (see :func:`lit_imgcls.data.transforms.resize`).
        mean: per-channel mean of [0, 1] pixels, subtracted after scaling uint8 by 1/255.
        std: per-channel standard deviation, divided by.
        resizer: "opencv" or "pil": the library that resized the images this config was trained with.
    """

    input_size: tuple[int, int, int]
    crop_mode: str = "squash"
    crop_pct: float = 0.875
    interpolation: str = "area"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    resizer: str = field(default=RESIZER)

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def channels(self) -> int:
        return self.input_size[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, floats and strings: what a checkpoint stores (``weights_only`` loading reads it back)."""
        d = asdict(self)
        d["input_size"], d["mean"], d["std"] = list(self.input_size), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str, name: str = "data_config") -> "DataConfig":
        """The config a checkpoint stored; :class:`UsageError` naming ``where``, ``name`` (the stored field) and
        the bad value otherwise."""
        if not isinstance(data, dict):
            raise UsageError(f"{where}: {name} is a {type(data).__name__}, not a mapping")
        known = {"input_size", "crop_mode", "crop_pct", "interpolation", "mean", "std", "resizer"}
        kw = {k: v for k, v in data.items() if k in known}
        try:
            for key in ("input_size", "mean", "std"):
                if key in kw:
                    if not isinstance(kw[key], (list, tuple)):
                        raise ValueError(f"{key} is not a list")
                    kw[key] = tuple(kw[key])
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{where}: {name} is not usable ({exc})") from None

    def describe(self) -> str:
        c, h, w = self.input_size
        how = f"centre {self.crop_pct:g} crop" if self.crop_mode == "center" else "squash"
        return f"{c}x{h}x{w}, {how}, {self.interpolation}"


def _number(v: Any) -> bool:
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an integer beyond any float
        return False


def input_size_problem(size: Any, name: str = "input_size") -> str | None:
    """Why ``size`` cannot be a network input (C, H, W), or None: the one rule for every input shape (a
    DataConfig's ``input_size``, a recipe's ``image_shape``, a checkpoint's)."""
    if not (isinstance(size, tuple) and len(size) == 3 and all(isinstance(v, int) and not isinstance(v, bool)
                                                              for v in size)):
        return f"{name} must be three integers (C, H, W), got {quoted(size)}"
    c, h, w = size
    # H x W within the decompression-bomb bound too: a network input no image may be decoded to is a damaged or
    # crafted config, and building a network or a dataset for it could allocate without limit.
    if not (0 < c <= MAX_CHANNELS and 0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE and h * w <= image.MAX_PIXELS):
        return (f"{name} must be (C, H, W) with 1 <= C <= {MAX_CHANNELS}, 1 <= H, W <= {MAX_SIDE} and "
                f"H x W <= {image.MAX_PIXELS} pixels, got {quoted(size)}")
    return None


def _problem(cfg: DataConfig) -> str | None:
    problem = input_size_problem(cfg.input_size)
    if problem:
        return problem
    c = cfg.input_size[0]
    if cfg.crop_mode not in CROP_MODES:
        return f"crop_mode must be one of {', '.join(CROP_MODES)}, got {quoted(cfg.crop_mode)}"
    if not (_number(cfg.crop_pct) and 0 < cfg.crop_pct <= 1):
        return f"crop_pct must lie in (0, 1], got {quoted(cfg.crop_pct)}"
    if cfg.interpolation not in INTERPOLATIONS:
        return f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {quoted(cfg.interpolation)}"
    for key in ("mean", "std"):
        v = getattr(cfg, key)
        if not (isinstance(v, tuple) and len(v) == c and all(_number(x) for x in v)):
            return f"{key} must be {c} finite numbers (one per channel), got {quoted(v)}"
    if not all(x > 0 for x in cfg.std):
        return f"std must be positive, got {quoted(cfg.std)}"
    if cfg.resizer not in ("opencv", "pil"):
        return f"resizer must be opencv or pil, got {quoted(cfg.resizer)}"
    return None


def per_channel(values, channels: int) -> tuple[float, ...]:
    """Mean or std statistics for ``channels`` channels: as given, or averaged and repeated when the count differs
    (an RGB statistic for a grey network, a grey one for an RGB network)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    return (sum(values) / len(values),) * channels


class EvalTransform:
    """Image bytes or decoded pixels -> the uint8 (H, W, C) evaluation input that a :class:`DataConfig` describes.

    Picklable (loader worker processes run it). Bytes are decoded by the image contract
    (:func:`lit_imgcls.data.image.decode`).

    Raises:
        ImageDecodeError: bytes that are not a usable image.
    """

    def __init__(self, config: DataConfig, max_pixels: int = image.MAX_PIXELS) -> None:
        self.config, self.max_pixels = config, max_pixels

    def __call__(self, data: bytes | np.ndarray) -> np.ndarray:
        cfg = self.config
        c, h, w = cfg.input_size
        if isinstance(data, (bytes, bytearray, memoryview)):
            pixels = image.decode(bytes(data), c, self.max_pixels)
        else:
            pixels = image.to_channels(np.asarray(data), c)
        if cfg.crop_mode == "center":
            out = center_crop(pixels, h, w, cfg.crop_pct, cfg.interpolation)
        else:
            out = squash(pixels, h, w, cfg.interpolation)
        return out[:, :, None] if out.ndim == 2 else out


def conform_images(images: np.ndarray, input_size: tuple[int, int, int], interpolation: str = "area") -> np.ndarray:
    """In-memory uint8 images, (N, H, W) or (N, H, W, C), as (N, H', W', C') for ``input_size`` (C', H', W').

    Each image goes through the same rules as :class:`EvalTransform` in "squash" mode (channels by the image
    contract, then the whole image resized), so a network trained on arrays sees what ``predict`` gives it.
    Arrays that already have the size and channels come back unchanged (no copy).
    """
    c, h, w = input_size
    grey = images.ndim == 3
    have_c = 1 if grey else images.shape[3]
    if images.shape[1:3] == (h, w) and have_c == c:
        return images if not grey else images[..., None]
    out = np.empty((len(images), h, w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        if not grey and have_c == 1:
            img = img[:, :, 0]
        px = squash(image.to_channels(np.ascontiguousarray(img), c), h, w, interpolation)
        out[i] = px[:, :, None] if px.ndim == 2 else px
    return out
