"""Re-encoding one image for packing, robust to what real folders hold.

Pixels come from the image contract (:mod:`lit_imgcls.data.image`: formats, size limit, EXIF orientation, colour
modes), so a packed image holds exactly what every other route would read from the original file. Every failure
becomes a reason string (the pack report names the file and why), never an exception that stops the pack: empty
files, non-images, truncated or corrupt files, decompression bombs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from lit_imgcls.data.image import MAX_PIXELS, ImageDecodeError, open_image, read_file, to_rgb_or_grey


@dataclass
class EncodeOptions:
    resize: int = 0  # shorter side, 0 keeps the size
    center_crop: bool = False
    quality: int = 95
    pass_through: bool = False
    encoding: str = ".jpg"  # .jpg or .png
    max_pixels: int = MAX_PIXELS


@dataclass
class Encoded:
    data: bytes | None
    ext: str
    width: int = 0
    height: int = 0
    error: str | None = None


def _shape(img, opts: EncodeOptions):
    from PIL import Image

    if opts.center_crop:
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if opts.resize:
        w, h = img.size
        scale = opts.resize / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        # A thin strip grows with its short side: 5000 x 1 px at --resize 256 would be 1,280,000 x 256 px.
        if size[0] * size[1] > opts.max_pixels:
            raise ImageDecodeError(f"a {w} x {h} image resized to a {opts.resize} px shorter side has more than "
                                   f"--max-pixels {opts.max_pixels} pixels (use --center-crop)")
        img = img.resize(size, Image.BILINEAR)
    return img


def _save(img, opts: EncodeOptions) -> bytes:
    buf = io.BytesIO()
    if opts.encoding == ".png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=opts.quality)
    return buf.getvalue()


def encode_file(path: str, opts: EncodeOptions) -> Encoded:
    """Reads, checks and (unless passed through) re-encodes the image file at ``path``.

    Re-encoded images are stored in the contract's colours (grey stays grey, everything else RGB) and upright.
    """
    try:
        raw = read_file(path)
        img = open_image(raw, opts.max_pixels)  # decodes everything: a truncated file fails here, not in training
    except ImageDecodeError as exc:
        return Encoded(None, "", error=str(exc))
    fmt = img.format
    try:
        out = to_rgb_or_grey(img)
    except ImageDecodeError as exc:
        return Encoded(None, "", error=str(exc))
    # Original bytes that every reader turns into exactly these pixels: kept as they are.
    if (opts.pass_through and out is img and not opts.resize and not opts.center_crop and fmt in ("JPEG", "PNG")):
        return Encoded(raw, ".jpg" if fmt == "JPEG" else ".png", img.width, img.height)
    try:
        out = _shape(out, opts)
        return Encoded(_save(out, opts), opts.encoding, out.width, out.height)
    except ImageDecodeError as exc:
        return Encoded(None, "", error=str(exc))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop the pack
        return Encoded(None, "", error=f"cannot re-encode a {img.mode} {fmt} image: {' '.join(str(exc).split())}")


def encode_array(pixels: np.ndarray, opts: EncodeOptions) -> Encoded:
    """Encodes an (H, W) or (H, W, 3) uint8 array (built-in datasets)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(pixels), "L" if pixels.ndim == 2 else "RGB")
    img = _shape(img, opts)
    return Encoded(_save(img, opts), opts.encoding, img.width, img.height)
