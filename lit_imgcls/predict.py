"""Prediction with a trained checkpoint: :class:`Classifier`, input expansion and preprocessing.

A checkpoint alone is enough: its ``lit_imgcls`` meta holds the recipe (network, dataset), class names, input
shape and mean/std, so images are prepared exactly as the validation data of that run was.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit_imgcls.errors import UsageError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
SMALL = 64  # as lit_imgcls.data.formats.packed.SMALL: packs of small same-size images are used as they are

# Raised by PIL and the decoders for files that are not (complete) images.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError, TypeError)

ImageLike = Any  # a path or URL (str, Path), encoded bytes, a PIL image, numpy HW/HWC, torch CHW


class ImageError(ValueError):
    """An input that is not a readable image; the message names it."""


@dataclass
class Source:
    """One image to predict: a name for the report and a way to get its bytes (or a failure found early)."""

    name: str
    read: Callable[[], Any] | None = None
    label: str | None = None  # the true class, for samples of a pack
    error: str | None = None


@dataclass
class Result:
    """Top-k (class, probability) of one input, or why it could not be predicted."""

    input: str
    predictions: list[tuple[str, float]] = field(default_factory=list)
    label: str | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------- preprocessing


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "s3://", "file://"))


def _read_location(location: str) -> bytes:
    from lit_imgcls.data.remote import read_bytes

    return read_bytes(location)


def preprocess_kind(meta: dict) -> str:
    """How the run's validation data was prepared: "folder" (torchvision resize + centre crop), "crop"
    (packed photos: libjpeg-turbo/OpenCV resize + centre crop) or "as_is" (images used at their size)."""
    recipe = meta.get("recipe") or {}
    dataset = str(recipe.get("dataset", ""))
    if dataset == "folder":
        return "folder"
    if dataset in ("wds", "ffcv"):
        return "as_is" if _small_pack(recipe, meta) else "crop"
    return "as_is"  # in-memory datasets (mnist, cifar10, arrays, plugins) feed images unresized


def _small_pack(recipe: dict, meta: dict) -> bool:
    """Whether PackedDataModule used the pack's images as they are; its rule needs the manifest, read when at hand."""
    location = recipe.get("data_train") or recipe.get("data_dir")
    if location and "://" not in str(location):
        try:
            from lit_imgcls.data.manifest import read_manifest

            manifest = read_manifest(location)
            size = manifest["splits"]["train"].get("image_size") or {"min": [0, 0], "max": [0, 0]}
            return size["min"] == size["max"] and max(size["max"]) <= SMALL
        except (UsageError, KeyError, TypeError, ValueError):
            pass
    # Without the manifest: a pack of photos with no image_shape trains at 224, so a small input means small images.
    return int(meta["image_shape"][1]) <= SMALL


def _resize_center_crop(arr: np.ndarray, size: int, crop_ratio: float = 0.875) -> np.ndarray:
    """fastdecode.resize_center_crop for an image already decoded (same arithmetic, same resizer)."""
    from lit_imgcls.data.fastdecode import center_crop_resized

    return center_crop_resized(np.ascontiguousarray(arr), size, crop_ratio)


def _trim_aspect(image):
    """The centre of a very long strip, MAX_ASPECT short sides long: resizing its short side to the crop size
    would otherwise make an image of billions of pixels, of which the centre crop keeps the middle only."""
    from lit_imgcls.data.fastdecode import MAX_ASPECT

    w, h = image.size
    if max(w, h) <= MAX_ASPECT * min(w, h):
        return image
    keep = MAX_ASPECT * min(w, h)
    x0, y0 = (w - min(w, keep)) // 2, (h - min(h, keep)) // 2
    return image.crop((x0, y0, x0 + min(w, keep), y0 + min(h, keep)))


class Preprocessor:
    """Turns one image (encoded bytes, PIL image, numpy or torch array) into the network's normalised CHW input.

    Args:
        image_shape: (C, H, W) of the network input.
        mean: per-channel mean of [0, 1] pixels.
        std: per-channel standard deviation.
        kind: "folder", "crop" or "as_is" (see :func:`preprocess_kind`).
    """

    def __init__(self, image_shape: Sequence[int], mean: Sequence[float], std: Sequence[float], kind: str) -> None:
        import torch

        self.c, self.h, self.w = (int(v) for v in image_shape)
        self.mode = "L" if self.c == 1 else "RGB"
        if len(mean) != self.c:  # the DataModules average the statistics when the channel count differs
            mean, std = (sum(mean) / len(mean),) * self.c, (sum(std) / len(std),) * self.c
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.kind = kind
        self._folder = None
        if kind == "folder":
            from lit_imgcls.data.folder import image_transforms

            self._folder = image_transforms(self.h, False, tuple(mean), tuple(std))

    def __call__(self, image: Any):
        """The normalised float tensor (C, H, W) for ``image``; :class:`ImageError` if it does not decode."""
        try:
            if isinstance(image, (bytes, bytearray)):
                if self.kind == "crop":
                    from lit_imgcls.data import fastdecode

                    return self._normalise(self._channels(fastdecode.resize_center_crop(bytes(image), self.h)))
                image = _open(bytes(image), exif=self.kind == "crop")
            image = _to_pil(image)
            if self.kind == "folder":
                return self._folder(_trim_aspect(image).convert(self.mode))
            if self.kind == "crop":
                arr = _resize_center_crop(np.asarray(image.convert("RGB")), self.h)
                return self._normalise(self._channels(arr))
            image = image.convert(self.mode) if image.mode != self.mode else image
            if image.size != (self.w, self.h):
                from PIL import Image

                image = image.resize((self.w, self.h), Image.BILINEAR)
            return self._normalise(np.asarray(image))
        except ImageError:
            raise
        except DECODE_ERRORS as exc:
            raise ImageError(f"not a readable image ({' '.join(str(exc).split()) or type(exc).__name__})") from None

    def _channels(self, arr: np.ndarray) -> np.ndarray:
        if self.c == 1 and arr.ndim == 3:
            from PIL import Image

            return np.asarray(Image.fromarray(arr).convert("L"))
        return arr

    def _normalise(self, arr: np.ndarray):
        import torch

        t = torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        # As the in-memory datasets do (to_float_images): scale to [0, 1], then normalise.
        return t.float().div_(255).sub_(self.mean).div_(self.std).contiguous()


def _open(data: bytes, exif: bool = False):
    """Untrusted bytes as a loaded PIL image, through the same guard as packing (formats, pixel limit): a failure
    is an ImageDecodeError, a ValueError that the caller reports as an unreadable image."""
    from PIL import ImageOps

    from lit_imgcls.data.encode import open_image

    img = open_image(data)
    # Packs store photos upright (pack applies EXIF rotation), so photos predicted with a pack-trained model are too.
    return ImageOps.exif_transpose(img) if exif else img


def _to_pil(image: Any):
    """A PIL image from a PIL image, a numpy HW/HWC array or a torch CHW tensor (uint8, or float in [0, 1])."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "detach") and hasattr(image, "permute"):  # a torch tensor, CHW
        t = image.detach().cpu()
        if t.ndim == 3:
            t = t.permute(1, 2, 0)
        image = t.numpy()
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ImageError(f"an image array must be HW, HWC (numpy) or CHW (torch) with 1, 3 or 4 channels, got shape {image.shape}")
        return Image.fromarray(arr)
    raise ImageError(f"cannot predict a {type(image).__name__}: give a path, URL, bytes, PIL image, numpy or torch array")


# --------------------------------------------------------------------------------------------- the classifier


class Classifier:
    """A trained checkpoint that names what is in images.

    Example::

        from lit_imgcls import Classifier

        clf = Classifier.load("model/mnist-0001.ckpt")
        clf.predict("digit.png", top_k=3)        # [("7", 0.98), ("1", 0.01), ("9", 0.004)]
        clf.predict([img_a, img_b])              # one such list per image

    Args:
        net: the trained network, in eval mode on ``device``.
        meta: the checkpoint's ``lit_imgcls`` meta (recipe, class_names, image_shape, mean, std).
        device: where the network runs.
    """

    def __init__(self, net, meta: dict, device: str = "cpu") -> None:
        self.net, self.meta, self.device = net, meta, device
        self.class_names: list[str] = [str(n) for n in meta["class_names"]]
        self.image_shape: tuple[int, int, int] = tuple(int(v) for v in meta["image_shape"])  # type: ignore[assignment]
        self.preprocess = Preprocessor(self.image_shape, meta.get("mean") or (0.0,), meta.get("std") or (1.0,),
                                       preprocess_kind(meta))

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu") -> Classifier:
        """Builds the network a checkpoint was trained with and loads its weights (``weights_only``: no code runs).

        Args:
            checkpoint: a ``PREFIX-NNNN.ckpt`` written by ``lit-imgcls fit``.
            device: "cpu", "cuda", "cuda:1", ...
        """
        import torch

        module, meta = load_module(checkpoint)
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise UsageError(f"bad device {device!r}: {exc}") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            raise UsageError(f"device {device} is not available here ({torch.cuda.device_count()} CUDA devices); use cpu")
        net = module.net.to(dev).eval()
        return cls(net, meta, str(dev))

    def probabilities(self, batch):
        """Softmax over the classes for a normalised (N, C, H, W) batch: an (N, classes) tensor on the CPU."""
        import torch

        with torch.inference_mode():
            return self.net(batch.to(self.device)).float().softmax(dim=1).cpu()

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
        tensors = []
        for i, item in enumerate(items):
            name = str(item) if isinstance(item, (str, Path)) else f"image {i}"
            try:
                if isinstance(item, (str, Path)):
                    item = _read_location(str(item))
                tensors.append(self.preprocess(item))
            except (ImageError, UsageError, *DECODE_ERRORS) as exc:
                raise ImageError(f"cannot read {name}: {exc}") from None
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(tensors), max(1, batch_size)):
            import torch

            out += self.top(self.probabilities(torch.stack(tensors[start : start + batch_size])), top_k)
        return out[0] if single else out

    def predict_sources(self, sources: Iterator[Source], top_k: int = 5, batch_size: int = 64,
                        progress: Callable[[int], None] | None = None) -> Iterator[Result]:
        """Results in input order; unreadable sources become results with ``error`` set, the rest are batched."""
        import torch

        pending: list[tuple[Source, Any, str | None]] = []  # (source, tensor or None, error)
        ready = 0

        def flush() -> Iterator[Result]:
            nonlocal pending, ready
            tensors = [t for _, t, _ in pending if t is not None]
            tops = iter(self.top(self.probabilities(torch.stack(tensors)), top_k)) if tensors else iter(())
            for src, t, err in pending:
                if t is None:
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


def load_module(checkpoint: str | Path, ckpt: dict | None = None):
    """The ImageClassifier of a checkpoint with its weights, and the checkpoint's meta (``ckpt``: already read)."""
    import dataclasses
    import types

    from lit_imgcls.engine import build_module
    from lit_imgcls.io import load_checkpoint

    ckpt = ckpt if ckpt is not None else load_checkpoint(checkpoint)
    meta = ckpt.get("lit_imgcls")
    needed = ("recipe", "class_names", "image_shape")
    if not isinstance(meta, dict) or any(k not in meta for k in needed):
        raise UsageError(f"checkpoint {checkpoint} has no lit-imgcls meta (recipe, class names, input shape): "
                         "it was not written by `lit-imgcls fit`")
    recipe = recipe_from_meta(meta)
    recipe.pretrained = None  # the checkpoint's weights replace any starting weights
    c, h, w = (int(v) for v in meta["image_shape"])
    shape_of_data = types.SimpleNamespace(
        num_classes=len(meta["class_names"]), class_names=list(meta["class_names"]), image_shape=(c, h, w),
        mean=list(meta.get("mean") or (0.0,)), std=list(meta.get("std") or (1.0,)),
    )
    module = build_module(dataclasses.replace(recipe, image_shape=f"{c},{h},{w}"), shape_of_data)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise UsageError(f"checkpoint {checkpoint} does not fit network {recipe.network}: {str(exc).splitlines()[0]}") from None
    module.meta = dict(meta)
    return module.eval(), meta


def recipe_from_meta(meta: dict):
    """The Recipe saved in a checkpoint; keys this version does not know (a newer writer) are dropped."""
    import dataclasses

    from lit_imgcls.recipe import Recipe

    known = {f.name for f in dataclasses.fields(Recipe)}
    return Recipe(**{k: v for k, v in dict(meta.get("recipe") or {}).items() if k in known})


# ------------------------------------------------------------------------------------------- input expansion


def expand_inputs(inputs: Sequence[str], split: str = "val") -> Iterator[Source]:
    """Sources for what a user names: image files, folders (recursive), globs, http(s)/s3 URLs, and packs (a
    folder with manifest.json, the manifest itself, or a URL ending in /manifest.json: every sample of ``split``).

    A name that matches nothing becomes a Source with ``error`` set, so the others are still predicted.
    """
    for text in inputs:
        if _is_url(text) and not text.startswith("file://"):
            if text.rstrip("/").endswith("/manifest.json"):
                yield from _pack_sources(text.rstrip("/")[: -len("/manifest.json")], split)
            else:
                yield Source(text, lambda t=text: _read_location(t))
            continue
        path = Path(text.removeprefix("file://")).expanduser()
        if path.is_dir() and (path / "manifest.json").is_file():
            yield from _pack_sources(str(path), split)
        elif path.is_file() and path.name == "manifest.json":
            yield from _pack_sources(str(path.parent), split)
        elif path.is_dir():
            yield from _folder_sources(path, text)
        elif path.is_file():
            yield _file_source(str(path), text)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                yield Source(text, error="no file matches this pattern")
            for match in matches:
                if os.path.isdir(match):
                    yield from _folder_sources(Path(match), match)
                elif os.path.isfile(match):
                    yield _file_source(match, match)
        else:
            yield Source(text, error="no such file or folder")


def _file_source(path: str, name: str) -> Source:
    return Source(name, lambda p=path: Path(p).read_bytes())


def _folder_sources(folder: Path, name: str) -> Iterator[Source]:
    found = False
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTS):
                found = True
                yield _file_source(os.path.join(root, f), os.path.join(root, f))
    if not found:
        yield Source(name, error=f"folder has no images ({', '.join(IMAGE_EXTS)})")


def _pack_sources(location: str, split: str) -> Iterator[Source]:
    from lit_imgcls.data.formats.packed import load_pack_manifest
    from lit_imgcls.data.formats.wds import IMAGE_KEYS, shard_urls
    from lit_imgcls.data.remote import open_url

    manifest = load_pack_manifest(location)
    splits = manifest["splits"]
    if not splits.get(split, {}).get("count"):
        have = ", ".join(s for s, v in splits.items() if v.get("count")) or "none"
        raise UsageError(f"pack {location} has no {split!r} samples (splits with samples: {have}); choose one with --split")
    if "wds" not in splits[split]:
        raise UsageError(f"pack {location} has no WebDataset shards (only {', '.join(manifest['formats'])}); "
                         "predict reads wds shards: re-pack with --format wds or both")
    names = list(manifest["class_names"])
    for url in shard_urls(location, manifest, split):
        try:
            stream = open_url(url)
        except OSError as exc:
            raise UsageError(f"cannot open shard {url}: {exc}") from None
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            sample: dict[str, bytes] = {}
            key = None
            # Streamed in storage order: a sample's files are adjacent (<key>.png, <key>.cls).
            for member in tar:
                if not member.isfile():
                    continue
                k, _, ext = member.name.rpartition("/")[-1].partition(".")
                if k != key and key is not None:
                    yield _pack_sample(location, key, sample, names, IMAGE_KEYS)
                    sample = {}
                key = k
                sample[ext.lower()] = tar.extractfile(member).read()  # type: ignore[union-attr]
            if key is not None:
                yield _pack_sample(location, key, sample, names, IMAGE_KEYS)


def _pack_sample(location: str, key: str, sample: dict[str, bytes], names: list[str], image_keys) -> Source:
    name = f"{location.rstrip('/')}:{key}"
    label = None
    if "cls" in sample:
        i = int(sample["cls"])
        label = names[i] if 0 <= i < len(names) else str(i)
    ext = next((e for e in image_keys if e in sample), None)
    if ext is None:
        return Source(name, label=label, error="sample has no image in its shard")
    return Source(name, lambda d=sample[ext]: d, label=label)


# ------------------------------------------------------------------------------------------------ formatting


def format_table(results: list[Result]) -> str:
    """One aligned row per input: the input, then "class probability" for each of the top k."""
    if not results:
        return ""
    width = max(len(r.input) for r in results)
    cw = max([len(c) for r in results for c, _ in r.predictions] or [1])
    lines = []
    for r in results:
        if r.error is not None:
            lines.append(f"{r.input:<{width}}  error: {r.error}")
        else:
            cells = "  ".join(f"{c:>{cw}} {p:6.4f}" for c, p in r.predictions)
            lines.append(f"{r.input:<{width}}  {cells}")
    return "\n".join(lines) + "\n"


def format_json(results: list[Result]) -> str:
    import json

    docs = []
    for r in results:
        doc: dict[str, Any] = {"input": r.input}
        if r.label is not None:
            doc["label"] = r.label
        if r.error is not None:
            doc["error"] = r.error
        doc["predictions"] = [{"class": c, "probability": p} for c, p in r.predictions]
        docs.append(doc)
    return json.dumps(docs, indent=1) + "\n"


def format_csv(results: list[Result]) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["input", "rank", "class", "probability"])
    for r in results:
        for rank, (c, p) in enumerate(r.predictions, 1):
            writer.writerow([r.input, rank, c, f"{p:.6g}"])
    return buf.getvalue()


FORMATS: dict[str, Callable[[list[Result]], str]] = {"table": format_table, "json": format_json, "csv": format_csv}
