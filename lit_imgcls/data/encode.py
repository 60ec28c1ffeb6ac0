"""Decoding and re-encoding one image for packing, robust to what real folders hold.

Every failure becomes a reason string (the pack report names the file and why), never an exception that stops
the pack: empty files, non-images, truncated or corrupt files, decompression bombs. Odd colour modes (grey,
CMYK, RGBA, 16-bit, palette) are converted to RGB; EXIF orientation is applied.

:func:`open_image` is the one way lit-imgcls turns untrusted bytes into pixels with PIL (pack, verify, the
loaders, FFCV writing): a fixed set of formats, a pixel limit checked before any pixel is decoded, and one error
type, :class:`ImageDecodeError`, whatever PIL's plugins raise.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit, made an error instead of a warning

# What packs, pack sources and predict inputs hold. Image.open would otherwise try every plugin PIL has, among
# them EPS (handed to Ghostscript, an external interpreter) and rarely used, rarely hardened parsers.
DECODE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG covers MPO (phone photos)
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"


class ImageDecodeError(ValueError):
    """Bytes that are not a usable image (not an image, damaged, too many pixels); the message says which.

    A ValueError, so code that already treats ValueError as "bad image" (the WebDataset sample decoder, predict)
    reports it with the sample's or the file's name.
    """


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    if width * height > max_pixels:
        raise ImageDecodeError(f"too many pixels ({width} x {height} = {width * height}; the decompression-bomb "
                               f"guard allows {max_pixels}, see --max-pixels)")


def open_image(data: bytes, max_pixels: int = MAX_PIXELS):
    """``data`` decoded into a loaded PIL image; :class:`ImageDecodeError` when it is not a usable image.

    The size in the header is checked against ``max_pixels`` before decoding, so a small file claiming a huge
    image costs nothing; a truncated file fails here (``load``), not later where it is used.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("empty file")
    if Image.MAX_IMAGE_PIXELS and max_pixels > Image.MAX_IMAGE_PIXELS:
        # PIL refuses twice its own limit at open, before the check below could allow a larger --max-pixels.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Between PIL's limit and twice it PIL only warns; check_pixels decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
            check_pixels(img.width, img.height, max_pixels)
            img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels ({_one_line(exc)})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image (not a {FORMAT_NAMES} file)") from None
    except MemoryError:
        raise  # the machine is out of memory: not the image's fault, and not to be reported as such
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise OSError, SyntaxError, struct.error, IndexError... on damage
        raise ImageDecodeError(f"corrupt image: {_one_line(exc)}") from None
    return img


def convert(img, mode: str):
    """``img`` in ``mode``; a colour mode PIL cannot convert is an :class:`ImageDecodeError`."""
    if img.mode == mode:
        return img
    try:
        return img.convert(mode)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - as open_image: PIL's converters raise many types
        raise ImageDecodeError(f"cannot convert a {img.mode} image to {mode}: {_one_line(exc)}") from None


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
    return convert(img, "RGB")


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
    """Reads, checks and (unless passed through) re-encodes the image file at ``path``."""
    from PIL import ImageOps

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        return Encoded(None, "", error=f"unreadable: {exc.strerror or exc}")
    try:
        img = open_image(raw, opts.max_pixels)  # decodes everything: a truncated file fails here, not in training
    except ImageDecodeError as exc:
        return Encoded(None, "", error=str(exc))
    fmt = img.format
    try:
        upright = img.getexif().get(0x0112, 1) in (None, 1)
        rotated = img if upright else ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not lose an otherwise good image
        upright, rotated = True, img
    if (opts.pass_through and upright and not opts.resize and not opts.center_crop
            and fmt in ("JPEG", "PNG") and img.mode in ("RGB", "L")):
        return Encoded(raw, ".jpg" if fmt == "JPEG" else ".png", img.width, img.height)
    try:
        out = _shape(_to_rgb(rotated), opts)
        return Encoded(_save(out, opts), opts.encoding, out.width, out.height)
    except ImageDecodeError as exc:
        return Encoded(None, "", error=str(exc))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one odd file (a colour mode PIL cannot save, say) must not stop the pack
        return Encoded(None, "", error=f"cannot re-encode a {img.mode} {fmt} image: {_one_line(exc)}")


def encode_array(pixels: np.ndarray, opts: EncodeOptions) -> Encoded:
    """Encodes an (H, W) or (H, W, 3) uint8 array (built-in datasets)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(pixels), "L" if pixels.ndim == 2 else "RGB")
    img = _shape(img, opts)
    return Encoded(_save(img, opts), opts.encoding, img.width, img.height)


def decode(data: bytes, mode: str = "RGB"):
    """Bytes of a packed sample -> PIL image in ``mode``; :class:`ImageDecodeError` if they are not one."""
    return convert(open_image(data), mode)
