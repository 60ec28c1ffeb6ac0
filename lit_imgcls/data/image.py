"""The image contract: the one way an image file, or an image a user hands over, becomes pixels.

Every route calls this module (``dataset pack``, the folder dataset, the packed loaders, FFCV writing, ``predict``,
``score``, ``dataset verify``/``inspect``), so one image gives the same pixels wherever it is read. The rules:

- **Formats**: JPEG (MPO too), PNG, GIF (first frame), BMP, WebP, TIFF. Anything else is "not an image": PIL
  would otherwise try every plugin it has, EPS (handed to Ghostscript) among them.
- **Size**: ``width * height`` is checked against ``max_pixels`` from the header, before a pixel is decoded
  (decompression bombs; PIL's own limit, :data:`MAX_PIXELS`, by default).
- **Completeness**: a file that does not decode to its end (truncated, corrupt) is refused, never half used.
- **Orientation**: the EXIF orientation tag is applied: pixels come out as a photo viewer shows them.
- **Colour**: out comes 8-bit RGB, (H, W, 3), or 8-bit grey, (H, W):

  ============================== =========================================================================
  source mode                    pixels
  ============================== =========================================================================
  ``RGB``, ``L``                 as they are
  ``1`` (bi-level)               0 and 255
  ``P`` (palette)                its palette's colours
  ``CMYK``, ``YCbCr``, ``LAB``   PIL's conversion to RGB
  ``I;16*``, ``I`` (16/32-bit)   read as 16-bit samples (``I`` clipped to 0..65535: PIL holds 16-bit PNGs
                                 in it), of which the high byte is kept (as PIL itself reads 48-bit RGB
                                 PNGs): a fixed scale, never stretched per image
  ``F`` (32-bit float)           values taken as 0..1, clipped, times 255, rounded
  alpha (``LA``, ``RGBA``,       composited on white (what a page shows behind a transparent logo)
  ``PA``, or a transparent
  colour in ``P``/``L``/``RGB``)
  ============================== =========================================================================

  Grey from colour is ITU-R 601-2 luma (PIL's ``"L"`` conversion); colour from grey repeats the value.
- **JPEG**: libjpeg-turbo with its accurate integer DCT and smooth upsampling, through simplejpeg when it is
  installed (faster) and PIL otherwise; both give the same pixels (``tests/test_image_contract.py`` checks it).

Failures are :class:`ImageDecodeError` (a ``ValueError``), whatever the decoder raised; the message says why.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np

MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit, made an error instead of a warning

DECODE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG covers MPO (phone photos)
FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"
_ORIENTATION = 0x0112  # the EXIF tag

try:  # optional accelerator; PIL decodes the same pixels when it is missing
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the install
    simplejpeg = None


class ImageDecodeError(ValueError):
    """Bytes that are not a usable image (not an image, damaged, too many pixels); the message says which.

    A ValueError, so code that already treats ValueError as "bad image" (the WebDataset sample decoder, predict)
    reports it with the sample's or the file's name.
    """


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raises :class:`ImageDecodeError` when a ``width`` x ``height`` image has more than ``max_pixels`` pixels."""
    if width * height > max_pixels:
        raise ImageDecodeError(f"too many pixels ({width} x {height} = {width * height}; the decompression-bomb "
                               f"guard allows {max_pixels}; `dataset pack` and `predict` take --max-pixels)")


def _open(data: bytes, max_pixels: int):
    """``data`` opened (header parsed, nothing decoded) and its size checked."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("empty file")
    if Image.MAX_IMAGE_PIXELS and max_pixels > Image.MAX_IMAGE_PIXELS:
        # PIL refuses twice its own limit at open, before check_pixels could allow a larger --max-pixels.
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # Between PIL's limit and twice it PIL only warns; check_pixels decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
    except Image.DecompressionBombError as exc:
        # PIL's text quotes PIL's limit (twice MAX_IMAGE_PIXELS), not the one this run applies: say ours.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else _one_line(exc)
        raise ImageDecodeError(f"too many pixels ({size}; the decompression-bomb guard allows {max_pixels}; "
                               "`dataset pack` and `predict` take --max-pixels)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image (not a {FORMAT_NAMES} file)") from None
    except MemoryError:
        raise  # the machine is out of memory: not the image's fault, and not to be reported as such
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise OSError, SyntaxError, struct.error... on damage
        raise ImageDecodeError(f"corrupt image: {_one_line(exc)}") from None
    check_pixels(img.width, img.height, max_pixels)
    return img


def _load(img) -> None:
    try:
        img.load()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - as _open
        raise ImageDecodeError(f"corrupt image: {_one_line(exc)}") from None


def open_image(data: bytes, max_pixels: int = MAX_PIXELS):
    """``data`` decoded into a loaded PIL image in its own mode (no orientation or colour rule applied yet);
    :class:`ImageDecodeError` when it is not a usable image. Callers that want pixels use :func:`decode`."""
    img = _open(data, max_pixels)
    _load(img)
    return img


def check_complete(data: bytes, max_pixels: int = MAX_PIXELS) -> None:
    """Raises :class:`ImageDecodeError` unless ``data`` decodes to its end; cheaper than :func:`decode`.

    A JPEG is decoded at 1/8 scale (libjpeg still reads every byte of it, so a truncated file fails), about 1 ms
    for a 500 x 375 photo; other formats are decoded in full.
    """
    img = _open(data, max_pixels)
    if img.format == "JPEG":
        img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
    _load(img)


def upright(img):
    """``img`` turned as its EXIF orientation tag says (a broken EXIF block leaves it as it is)."""
    from PIL import ImageOps

    try:
        if img.getexif().get(_ORIENTATION, 1) in (None, 1):
            return img
        return ImageOps.exif_transpose(img)
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not lose an otherwise good image
        return img


def _has_alpha(img) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def to_rgb_or_grey(img):
    """A loaded PIL image, upright, in mode ``"RGB"`` or ``"L"`` by the colour rules of this module."""
    from PIL import Image

    img = upright(img)
    try:
        if img.mode in ("RGB", "L"):
            if "transparency" not in img.info:
                return img
        if img.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N and 32-bit I
            arr = np.asarray(img).astype(np.int64)
            return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
        if img.mode == "F":
            arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
            return Image.fromarray(np.rint(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8), "L")
        if img.mode == "1":
            return img.convert("L")
        if _has_alpha(img):
            grey = img.mode in ("LA", "La", "L")
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            out = Image.alpha_composite(white, rgba).convert("RGB")
            return out.convert("L") if grey else out
        return img.convert("RGB")
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL's converters raise many types for modes they cannot convert
        raise ImageDecodeError(f"cannot convert a {img.mode} image to RGB: {_one_line(exc)}") from None


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) grey, (H, W, 1) or (H, W, 3) RGB uint8 pixels as ``channels`` (1: (H, W) luma; 3: (H, W, 3))."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"pixels must be (H, W), (H, W, 1) or (H, W, 3), got shape {pixels.shape}")
    if channels == 1:
        if pixels.ndim == 2:
            return pixels
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(pixels), "RGB").convert("L"))
    if channels == 3:
        if pixels.ndim == 3:
            return pixels
        return np.repeat(pixels[:, :, None], 3, axis=2)
    raise ValueError(f"images have 1 or 3 channels, not {channels}")


def pil_to_array(img, channels: int = 3) -> np.ndarray:
    """A PIL image (any mode) as uint8 pixels by the contract: (H, W) for 1 channel, (H, W, 3) for 3."""
    return to_channels(np.asarray(to_rgb_or_grey(img)), channels)


def _exif_rotated(data: bytes) -> bool:
    """Whether a JPEG's EXIF block turns it; only JPEGs with an EXIF block pay for PIL's header parse."""
    head = data[:65536]
    if b"Exif\x00\x00" not in head:
        return False
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data), formats=("JPEG",)).getexif().get(_ORIENTATION, 1) not in (None, 1)
    except Exception:  # noqa: BLE001 - unreadable header: the PIL path decides what it is
        return True


def decode(data: bytes, channels: int = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> uint8 pixels by the contract: (H, W) for ``channels`` 1, (H, W, 3) for 3.

    Args:
        data: the file's bytes.
        channels: 1 (grey) or 3 (RGB).
        max_pixels: refuse larger images (checked from the header, before decoding).

    Always at full resolution: libjpeg-turbo's reduced-scale decoding would be faster for photos much larger than
    the network input, but would give other pixels than the same image stored losslessly (a PNG pack).

    Raises:
        ImageDecodeError: not an image, damaged, truncated, or too many pixels.
    """
    if simplejpeg is not None and data[:3] == b"\xff\xd8\xff" and not _exif_rotated(data):
        try:
            return _decode_jpeg(data, channels, max_pixels)
        except ImageDecodeError:
            raise
        except ValueError:
            pass  # damaged, or a layout TurboJPEG refuses (CMYK, odd sampling): PIL decodes it or says why
    return pil_to_array(open_image(data, max_pixels), channels)


def _decode_jpeg(data: bytes, channels: int, max_pixels: int) -> np.ndarray:
    h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    check_pixels(w, h, max_pixels)  # libjpeg-turbo allocates what the header claims, up to 65535 x 65535 x 3
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        # CMYK and YCCK: TurboJPEG's conversion to RGB differs from PIL's by a level here and there
        raise ValueError(f"{colorspace} JPEG: decoded by PIL")
    # Accurate DCT and smooth upsampling: the pixels PIL gives (fastdct would be ~5% faster, and differ).
    if colorspace == "Gray":
        return to_channels(simplejpeg.decode_jpeg(data, colorspace="GRAY")[:, :, 0], channels)
    return to_channels(simplejpeg.decode_jpeg(data, colorspace="RGB"), channels)


def read_file(path: str | Path) -> bytes:
    """The bytes of an image file; anything else (a FIFO, a device or socket, a folder, a dangling link or a link
    loop, a file without read permission or gone meanwhile, one over the image size bound) is an
    :class:`ImageDecodeError` saying why.

    The rule is :func:`lit_imgcls.bounded_read.read_regular`'s (kind ``"image"``): special files are never opened.
    """
    from lit_imgcls.bounded_read import ReadRefused, read_regular

    try:
        return read_regular(path, "image")
    except ReadRefused as exc:
        raise ImageDecodeError(exc.reason) from None


def load(path: str | Path, channels: int = 3, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`decode` of the file at ``path``."""
    return decode(read_file(path), channels, max_pixels)
