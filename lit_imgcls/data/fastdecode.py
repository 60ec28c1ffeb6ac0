"""Decode-and-crop for loader workers: libjpeg-turbo (simplejpeg) and OpenCV when present, PIL otherwise.

Outputs uint8 HWC arrays; :func:`collate` stacks them into one NHWC block and hands it over as an NCHW tensor in
channels-last layout (no transposing copy). Normalisation to float happens after the batch reaches the training
device (``ImageClassifier.on_after_batch_transfer``), which keeps worker work and inter-process traffic 4x smaller.

Bytes that are not a usable image raise :class:`~lit_imgcls.data.encode.ImageDecodeError` (a ValueError, so the
WebDataset sample decoder names the shard), never a decoder's own exception; the header's size is checked
against :data:`~lit_imgcls.data.encode.MAX_PIXELS` before anything is decoded.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from lit_imgcls.data.encode import ImageDecodeError, check_pixels, convert, open_image

try:  # optional accelerators; PIL does everything when they are missing
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the install
    simplejpeg = None
try:
    import cv2

    cv2.setNumThreads(1)  # one worker, one core: OpenCV's own threads would fight the other workers
except ImportError:  # pragma: no cover
    cv2 = None


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def decode_rgb(data: bytes, min_side: int = 0) -> np.ndarray:
    """HWC uint8 RGB; with ``min_side``, libjpeg-turbo may decode at 1/2, 1/4 or 1/8 scale while keeping the
    shorter side >= min_side (much less work for large photos)."""
    if simplejpeg is not None and _is_jpeg(data):
        try:
            return _decode_jpeg(data, min_side)
        except ImageDecodeError:
            raise
        except ValueError:
            pass  # damaged, or a layout TurboJPEG refuses (odd chroma subsampling): PIL decodes it or says why
    return np.asarray(convert(open_image(data), "RGB"))


def _decode_jpeg(data: bytes, min_side: int) -> np.ndarray:
    h, w, *_ = simplejpeg.decode_jpeg_header(data)
    check_pixels(w, h)  # libjpeg-turbo allocates what the header claims, up to 65535 x 65535 x 3 bytes
    # The fast integer IDCT and upsampling (as FFCV uses): ~20% faster, differences far below JPEG's own noise.
    if min_side and min(h, w) / min_side >= 2:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True,
                                      min_height=min_side * h // min(h, w), min_width=min_side * w // min(h, w))
    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    if cv2 is not None:
        # Bilinear is 4x faster than area averaging and alias-free up to a 2x reduction; beyond that, area.
        shrink = arr.shape[1] / width
        return cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink > 2 else cv2.INTER_LINEAR)
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((width, height), Image.BILINEAR))


def collate(samples: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(HWC image, label) pairs -> (uint8 N x C x H x W in channels-last layout, int64 labels), one copy."""
    images = np.stack([np.asarray(img) for img, _ in samples])
    if images.ndim == 3:  # grey: N x H x W
        images = images[..., None]
    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    return torch.from_numpy(images).permute(0, 3, 1, 2), labels


def random_resized_crop(data: bytes, size: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        flip: bool = True) -> np.ndarray:
    """Inception-style random-resized crop to size x size, then a random horizontal flip: uint8 HWC."""
    arr = decode_rgb(data)
    h, w = arr.shape[:2]
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
    out = _resize(arr[y0 : y0 + ch, x0 : x0 + cw], size, size)
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def resize_center_crop(data: bytes, size: int, crop_ratio: float = 0.875) -> np.ndarray:
    """Shorter side to size / crop_ratio, then the centre size x size: uint8 HWC (validation)."""
    return center_crop_resized(decode_rgb(data, min_side=round(size / crop_ratio)), size, crop_ratio)


# Longest side / shortest side beyond which only the middle of the long side is resized. The resized image grows
# with this ratio (a 5000 x 1 strip with its short side at 256 px is 1,280,000 x 256 px); below it nothing changes.
MAX_ASPECT = 16


def center_crop_resized(arr: np.ndarray, size: int, crop_ratio: float = 0.875) -> np.ndarray:
    """An already decoded HWC image: shorter side to size / crop_ratio, then the centre size x size."""
    short = round(size / crop_ratio)
    h, w = arr.shape[:2]
    if max(h, w) > MAX_ASPECT * min(h, w):
        # The centre crop spans at most the short side: a window MAX_ASPECT short sides long still holds it with
        # a wide margin (the result differs from resizing everything only by the rounding of the resized size).
        keep = MAX_ASPECT * min(h, w)
        arr = arr[(h - keep) // 2 : (h + keep) // 2] if h > w else arr[:, (w - keep) // 2 : (w + keep) // 2]
        h, w = arr.shape[:2]
    s = short / min(h, w)
    arr = _resize(np.ascontiguousarray(arr), max(size, round(w * s)), max(size, round(h * s)))
    h, w = arr.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return arr[y0 : y0 + size, x0 : x0 + size]


def as_is(data: bytes, mode: str) -> np.ndarray:
    """Small same-size images (MNIST, CIFAR): decoded unchanged, uint8 HW (grey) or HWC."""
    return np.asarray(convert(open_image(data), mode))
