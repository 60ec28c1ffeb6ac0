"""Prediction with a trained checkpoint: :class:`Classifier`.

A checkpoint alone is enough: its meta (:mod:`lit_imgcls.checkpoint_meta`) holds the network's recipe, the
class names and the evaluation preprocessing (:class:`~lit_imgcls.data.preprocess.DataConfig`), and every image
goes through the image contract and :class:`~lit_imgcls.data.preprocess.EvalTransform` exactly as the run's
validation data did; normalisation is the trained module's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_imgcls.errors import UsageError
from lit_imgcls.inputs import Source, read_location
from lit_imgcls.predictions import Result
from lit_imgcls.printable import warn

ImageLike = Any  # a path or URL (str, Path), encoded bytes, a PIL image, numpy HW/HWC, torch CHW

# Raised by PIL and the decoders for files that are not (complete) images.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError, TypeError)


class ImageError(ValueError):
    """An input that is not a readable image; the message names it."""


def _pixels(image: Any) -> Any:
    """Encoded bytes as they are (the transform decodes them); anything else as uint8 pixels by the contract."""
    from PIL import Image

    from lit_imgcls.data.image import pil_to_array

    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, Image.Image):
        return pil_to_array(image, 3)
    if hasattr(image, "detach") and hasattr(image, "permute"):  # a torch tensor, CHW
        t = image.detach().cpu()
        image = (t.permute(1, 2, 0) if t.ndim == 3 else t).numpy()
    if isinstance(image, np.ndarray):
        arr = _as_uint8(image)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
            raise ImageError("an image array must be HW, HWC (numpy) or CHW (torch) with 1 to 4 channels, "
                             f"got shape {image.shape}")
        # Grey + alpha and RGBA arrays are composited on white, as such files are.
        return pil_to_array(Image.fromarray(arr, "LA" if arr.ndim == 3 and arr.shape[2] == 2 else None), 3)
    raise ImageError(f"cannot predict a {type(image).__name__}: give a path, URL, bytes, PIL image, numpy or torch "
                     "array")


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    """An image array's samples as 8 bits, by the contract's rules for files: uint8 as is, uint16 its high byte,
    bool 0/255, floats taken as 0..1; any other type, or floats outside 0..1, is an :class:`ImageError` rather
    than a guess (an int64 array of 0..255 and a float array of 0..255 would otherwise both read as white)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = (float(np.min(arr)), float(np.max(arr))) if arr.size else (0.0, 0.0)
        if not (0.0 <= lo and hi <= 1.0):  # NaN fails this too
            raise ImageError(f"a float image array must hold values in [0, 1], this one holds {lo:g} to {hi:g}: "
                             "divide by 255, or give uint8")
        return np.rint(arr.astype(np.float64) * 255).astype(np.uint8)
    raise ImageError(f"an image array of {arr.dtype} is ambiguous: give uint8 (0..255), uint16 (its high byte is "
                     "kept, as for 16-bit files) or float in [0, 1]")


class Classifier:
    """A trained checkpoint that names what is in images.

    Example::

        from lit_imgcls import Classifier

        clf = Classifier.load("model/mnist-0001.ckpt")
        clf.predict("digit.png", top_k=3)        # [("7", 0.98), ("1", 0.01), ("9", 0.004)]
        clf.predict([img_a, img_b])              # one such list per image

    Args:
        module: the trained ImageClassifier, in eval mode on ``device``.
        meta: the checkpoint's :class:`~lit_imgcls.checkpoint_meta.CheckpointMeta`.
        device: where the network runs.
        max_pixels: larger images are refused (decompression-bomb guard), in pixels.
    """

    def __init__(self, module, meta, device: str = "cpu", max_pixels: int | None = None) -> None:
        from lit_imgcls.data.image import MAX_PIXELS
        from lit_imgcls.data.preprocess import EvalTransform
        from lit_imgcls.data.transforms import RESIZER

        self.module, self.meta, self.device = module, meta, device
        self.class_names: list[str] = list(meta.class_names)
        self.image_shape: tuple[int, int, int] = meta.image_shape
        self.transform = EvalTransform(meta.data_config, max_pixels or MAX_PIXELS)
        if meta.data_config.resizer != RESIZER:
            warn(f"this checkpoint was trained with images resized by {meta.data_config.resizer}, which is not "
                 f"installed here; resizing with {RESIZER} gives slightly different pixels "
                 "(pip install opencv-python-headless)")

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu", max_pixels: int | None = None) -> Classifier:
        """Builds the network a checkpoint was trained with and loads its weights (``weights_only``: no code runs).

        Args:
            checkpoint: a ``PREFIX-NNNN.ckpt`` written by ``lit-imgcls fit``, or a file ``lit-imgcls export`` wrote
                (ONNX or TorchScript: an :class:`ExportedClassifier`, on the CPU).
            device: "cpu", "cuda", "cuda:1", ...
            max_pixels: refuse images with more pixels (default: PIL's decompression-bomb limit, 89,478,485).

        Raises:
            UsageError: an unreadable or malformed checkpoint, or a device that is not here.
        """
        import torch

        from lit_imgcls.checkpoint_meta import load_module
        from lit_imgcls.export import exported_format

        if exported_format(checkpoint):
            return ExportedClassifier.load_exported(checkpoint, device, max_pixels)
        module, meta = load_module(checkpoint)
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise UsageError(f"bad device {device!r}: {exc}") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            raise UsageError(f"device {device} is not available here ({torch.cuda.device_count()} CUDA devices); "
                             "use cpu")
        return cls(module.to(dev).eval(), meta, str(dev), max_pixels)

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """One image as the uint8 (H, W, C) network input; :class:`ImageError` if it is not a usable image."""
        try:
            return self.transform(_pixels(image))
        except ImageError:
            raise
        except DECODE_ERRORS as exc:
            from lit_imgcls.data.image import ImageDecodeError

            if isinstance(exc, ImageDecodeError):  # already says what is wrong: "not an image (...)", "empty file"
                raise ImageError(" ".join(str(exc).split())) from None
            raise ImageError(f"not a readable image ({' '.join(str(exc).split()) or type(exc).__name__})") from None

    def probabilities(self, pixels: Sequence[np.ndarray]):
        """Softmax over the classes for preprocessed images: an (N, classes) float32 tensor on the CPU; of the
        logits divided by the checkpoint's temperature when ``score --calibrate`` wrote it (no flip averaging)."""
        import torch

        from lit_imgcls.data.transforms import collate
        from lit_imgcls.evaluation import scaled_softmax

        x, _ = collate([(p, 0) for p in pixels])
        with torch.inference_mode():
            x = self.module.normalize(x.to(self.device))
            return scaled_softmax(self.module(x).float(), self.meta.temperature).cpu()

    def top(self, probs, top_k: int) -> list[list[tuple[str, float]]]:
        """The ``top_k`` (class name, probability) pairs of each row of ``probs``, most likely first."""
        k = max(1, min(int(top_k), len(self.class_names)))
        values, indices = probs.topk(k, dim=1)
        return [[(self.class_names[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist())]
                for vs, ix in zip(values, indices)]

    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, batch_size: int = 64):
        """Top-k classes of one image, or of each image of a list.

        Args:
            images: a path or URL (str/Path), encoded bytes, a PIL image, a numpy HW/HWC uint8 array, a torch CHW
                tensor (uint8, or float in [0, 1]); or a list of these.
            top_k: how many classes per image.
            batch_size: images per forward pass.

        Returns:
            For one image, a list of (class_name, probability), most likely first; for a list, one such list per
            image. An unreadable image raises :class:`ImageError` naming it.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        pixels = []
        for i, item in enumerate(items):
            name = str(item) if isinstance(item, (str, Path)) else f"image {i}"
            try:
                if isinstance(item, (str, Path)):
                    item = read_location(str(item))
                pixels.append(self.preprocess(item))
            except (ImageError, UsageError, *DECODE_ERRORS) as exc:
                raise ImageError(f"cannot read {name}: {exc}") from None
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(pixels), max(1, batch_size)):
            out += self.top(self.probabilities(pixels[start : start + batch_size]), top_k)
        return out[0] if single else out

    def predict_sources(self, sources: Iterator[Source], top_k: int = 5, batch_size: int = 64,
                        progress: Callable[[int], None] | None = None) -> Iterator[Result]:
        """Results in input order; unreadable sources become results with ``error`` set, the rest are batched."""
        pending: list[tuple[Source, Any, str | None]] = []  # (source, pixels or None, error)
        ready = 0

        def flush() -> Iterator[Result]:
            nonlocal pending, ready
            good = [px for _, px, _ in pending if px is not None]
            tops = iter(self.top(self.probabilities(good), top_k)) if good else iter(())
            for src, px, err in pending:
                if px is None:
                    yield Result(src.name, label=src.label, error=err)
                else:
                    yield Result(src.name, next(tops), label=src.label)
            if progress:
                progress(len(pending))
            pending, ready = [], 0

        for src in sources:
            if src.error is not None:
                pending.append((src, None, src.error))
                continue
            try:
                data = src.read() if src.read else None
                pending.append((src, self.preprocess(data), None))
                ready += 1
            except (ImageError, UsageError, *DECODE_ERRORS) as exc:
                pending.append((src, None, " ".join(str(exc).split()) or type(exc).__name__))
            if ready >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


class ExportedClassifier(Classifier):
    """A file ``lit-imgcls export`` wrote, used as :class:`Classifier` is: images prepared by the file's own
    ``preprocessing`` metadata (the checkpoint's DataConfig), probabilities from the file itself (onnxruntime, or
    TorchScript), on the CPU.

    Args:
        model: the loaded file (:class:`lit_imgcls.export.ExportedModel`).
        max_pixels: larger images are refused (decompression-bomb guard), in pixels.
    """

    def __init__(self, model, max_pixels: int | None = None) -> None:
        from lit_imgcls.checkpoint_meta import CheckpointMeta

        self.model = model
        super().__init__(None, CheckpointMeta({}, list(model.class_names), model.data_config, {}), "cpu", max_pixels)

    @classmethod
    def load_exported(cls, path: str | Path, device: str = "cpu", max_pixels: int | None = None) -> ExportedClassifier:
        """Loads an exported file (see :class:`lit_imgcls.export.ExportedModel`).

        Raises:
            UsageError: not an export, or a device other than the CPU.
        """
        from lit_imgcls.export import ExportedModel

        if str(device) != "cpu":
            raise UsageError(f"{path} is an exported model, which lit-imgcls runs on the CPU: leave --gpus out "
                             f"(device {device}), or predict with its checkpoint")
        return cls(ExportedModel.load(path), max_pixels)

    def probabilities(self, pixels: Sequence[np.ndarray]):
        """Softmax over the classes for preprocessed images (H, W, C): an (N, classes) float32 tensor."""
        import torch

        images = np.stack([p if p.ndim == 3 else p[:, :, None] for p in pixels])
        return torch.from_numpy(np.array(self.model.probabilities(images), dtype=np.float32))
