"""Geometry on decoded uint8 pixels, (H, W) or (H, W, C): crops, resizes, flips, and batching.

OpenCV resizes when it is installed (it is with FFCV, so every ``[all]`` install has it) and PIL otherwise; the
checkpoint records which (:class:`~lit_imgcls.data.preprocess.DataConfig`), and prediction without OpenCV warns
that its pixels differ slightly from training's. Images stay uint8 until they reach the training device
(``ImageClassifier.on_after_batch_transfer`` normalises them there): 4x less data between processes and to a GPU.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

try:
    import cv2

    cv2.setNumThreads(1)  # one loader worker, one core: OpenCV's own threads would fight the other workers
except ImportError:  # pragma: no cover - depends on the install
    cv2 = None

INTERPOLATIONS = ("bilinear", "area", "auto")
RESIZER = "opencv" if cv2 is not None else "pil"


def resize(pixels: np.ndarray, width: int, height: int, interpolation: str = "auto") -> np.ndarray:
    """``pixels`` resized to ``width`` x ``height``.

    Args:
        pixels: uint8 (H, W) or (H, W, C).
        width: output width in pixels.
        height: output height in pixels.
        interpolation: "bilinear"; "area" (pixel-area averaging, alias-free when shrinking: FFCV's choice);
            "auto": bilinear up to a 2x reduction (alias-free there, 4x faster than area), area beyond.
    """
    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    if interpolation == "auto":
        interpolation = "area" if max(w / width, h / height) > 2 else "bilinear"
    if cv2 is not None:
        flag = cv2.INTER_AREA if interpolation == "area" else cv2.INTER_LINEAR
        out = cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=flag)
        return out if out.ndim == pixels.ndim else out[:, :, None]  # OpenCV drops a single channel axis
    from PIL import Image

    squeeze = pixels.ndim == 3 and pixels.shape[2] == 1
    img = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0] if squeeze else pixels))
    out = np.asarray(img.resize((width, height), Image.BOX if interpolation == "area" else Image.BILINEAR))
    return out[:, :, None] if squeeze else out


def center_crop_box(h: int, w: int, out_h: int, out_w: int, crop_pct: float) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centred crop that :func:`center_crop` resizes to ``out_h`` x ``out_w``.

    For a square output it is FFCV's ``CenterCropRGBImageDecoder`` box (a square of ``int(crop_pct * shorter
    side)``), so FFCV-trained checkpoints are evaluated on the same region; otherwise the largest box of the
    output's aspect ratio, scaled by ``crop_pct``.
    """
    if out_h == out_w:
        ch = cw = max(1, int(crop_pct * min(h, w)))
    else:
        scale = min(h / out_h, w / out_w) * crop_pct
        ch, cw = max(1, min(h, int(out_h * scale))), max(1, min(w, int(out_w * scale)))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_crop(pixels: np.ndarray, out_h: int, out_w: int, crop_pct: float = 0.875,
                interpolation: str = "auto") -> np.ndarray:
    """The centred ``crop_pct`` of the shorter side (see :func:`center_crop_box`), resized to ``out_h`` x ``out_w``
    (timm's and torchvision's validation transform: resize to size / crop_pct, then crop size)."""
    top, left, ch, cw = center_crop_box(pixels.shape[0], pixels.shape[1], out_h, out_w, crop_pct)
    return resize(pixels[top : top + ch, left : left + cw], out_w, out_h, interpolation)


def squash(pixels: np.ndarray, out_h: int, out_w: int, interpolation: str = "area") -> np.ndarray:
    """The whole image resized to ``out_h`` x ``out_w`` (aspect ratio not kept); unchanged when already that size."""
    return resize(pixels, out_w, out_h, interpolation)


def random_resized_crop(pixels: np.ndarray, out_h: int, out_w: int, rng: random.Random,
                        scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        flip: bool = True, interpolation: str = "auto") -> np.ndarray:
    """Inception-style random-resized crop (torchvision's ``RandomResizedCrop`` sampling) to ``out_h`` x ``out_w``,
    then a horizontal flip with probability 0.5; the draws come from ``rng`` only, so a seeded ``rng`` repeats them."""
    h, w = pixels.shape[:2]
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            break
    else:  # fall back to the whole image's centre square
        cw = ch = min(h, w)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
    out = resize(pixels[y0 : y0 + ch, x0 : x0 + cw], out_w, out_h, interpolation)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 (H, W) or (H, W, C) image, label) pairs -> (uint8 (N, C, H, W) in channels-last memory, int64 (N,)).

    One copy (the stack); the NCHW view of the NHWC block is what channels-last networks want.
    """
    images = np.stack([np.asarray(img) for img, _ in samples])
    if images.ndim == 3:  # grey: N x H x W
        images = images[..., None]
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    return torch.from_numpy(images).permute(0, 3, 1, 2), labels
