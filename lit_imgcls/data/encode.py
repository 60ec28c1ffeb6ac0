"""Decoding and re-encoding one image for packing, robust to what real folders hold.

Every failure becomes a reason string (the pack report names the file and why), never an exception that stops
the pack: empty files, non-images, truncated or corrupt files, decompression bombs. Odd colour modes (grey,
CMYK, RGBA, 16-bit, palette) are converted to RGB; EXIF orientation is applied.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit, made an error instead of a warning


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


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits by the real range instead of clipping at 255
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        arr = (arr / (hi if hi > 0 else 1.0) * 255.0).round().astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


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
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return img


def _save(img, opts: EncodeOptions) -> bytes:
    buf = io.BytesIO()
    if opts.encoding == ".png":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=opts.quality)
    return buf.getvalue()


def encode_file(path: str, opts: EncodeOptions) -> Encoded:
    """Reads, checks and (unless passed through) re-encodes the image file at ``path``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        return Encoded(None, "", error=f"unreadable: {exc.strerror or exc}")
    if not raw:
        return Encoded(None, "", error="empty file")
    Image.MAX_IMAGE_PIXELS = opts.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            fmt = img.format
            img.load()  # decodes everything: a truncated file fails here, not in training
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return Encoded(None, "", error=f"too many pixels (decompression-bomb guard, limit {opts.max_pixels}): {exc}")
    except UnidentifiedImageError:
        return Encoded(None, "", error="not an image (no decoder recognises it)")
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return Encoded(None, "", error=f"corrupt image: {exc}")
    try:
        upright = img.getexif().get(0x0112, 1) in (None, 1)
        rotated = img if upright else ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        upright, rotated = True, img
    if (opts.pass_through and upright and not opts.resize and not opts.center_crop
            and fmt in ("JPEG", "PNG") and img.mode in ("RGB", "L")):
        return Encoded(raw, ".jpg" if fmt == "JPEG" else ".png", img.width, img.height)
    out = _shape(_to_rgb(rotated), opts)
    return Encoded(_save(out, opts), opts.encoding, out.width, out.height)


def encode_array(pixels: np.ndarray, opts: EncodeOptions) -> Encoded:
    """Encodes an (H, W) or (H, W, 3) uint8 array (built-in datasets)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(pixels), "L" if pixels.ndim == 2 else "RGB")
    img = _shape(img, opts)
    return Encoded(_save(img, opts), opts.encoding, img.width, img.height)


def decode(data: bytes, mode: str = "RGB"):
    """Bytes of a packed sample -> PIL image in ``mode``."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert(mode) if img.mode != mode else img
