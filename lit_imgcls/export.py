"""``export``: a checkpoint as one model file to serve without lit-imgcls (ONNX or TorchScript), and the check that
the file scores what the checkpoint scores.

The exported model is the trained network with the checkpoint's normalisation in front of it and a softmax after
it (of the logits divided by the checkpoint's temperature, for one ``score --calibrate`` wrote): it takes uint8
images (N, H, W, C) at the checkpoint's input size, any N, and gives class probabilities (N, classes). The normalisation is the trained module's own arithmetic on its own constants
(``ImageClassifier.normalize``: ``(x - 255 mean) / (255 std)`` in float32), so the network sees the numbers it saw
when the checkpoint was validated. Resizing and cropping to the input size stay the caller's: the checkpoint's
resize (OpenCV's area interpolation, or PIL's) has no exact equivalent among ONNX's or TorchScript's operators,
and an inexact one is the very drift between training and serving that the check exists to catch. The file's
metadata says how (:data:`META_KEYS`): the class names and the checkpoint's ``DataConfig`` (input size, crop mode
and share, interpolation, mean/std), as JSON, and the temperature (1 for an uncalibrated checkpoint).

ONNX goes through torch's exporter (``torch.onnx.export(dynamo=True)``: ``torch.export`` and onnxscript, the
default and the maintained path since torch 2.9; the TorchScript-based exporter is deprecated) and is run by
onnxruntime; TorchScript through ``torch.jit.trace``. The check (:func:`check`) runs ``score``'s own evaluation
(:func:`lit_imgcls.score.score`) and feeds each of its batches to the exported file too.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_imgcls.errors import UsageError

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}  # format -> the default file name's suffix
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"  # the ONNX graph's input and output
RECORD = ".lit-imgcls-exports"  # the folder's record of the files export wrote (lit_imgcls.owned_files)
# The metadata keys (ONNX metadata_props; TorchScript _extra_files), each a string.
META_KEYS = ("lit_imgcls_version", "class_names", "preprocessing", "input", "output", "temperature")
ONNX_MAX_BYTES = 2 * 1024**3 - 64 * 1024**2  # protobuf's 2 GiB bound on one ONNX file, less room for the graph
_TRACE_BATCH = 2  # the example batch traced; N stays dynamic (checked at two other sizes by the tests)


def _need(module: str) -> None:
    """Refuses in one line when the ``export`` extra is not installed (a plain ``pip install lit-imgcls``).

    Raises:
        UsageError: naming the install command.
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"ONNX export and checks need {module}: pip install 'lit-imgcls[export]' (onnx, onnxscript, "
                         "onnxruntime)")


def _network_class():
    import torch

    from lit_imgcls.evaluation import scaled_softmax

    class ExportedNetwork(torch.nn.Module):
        """uint8 images (N, H, W, C) -> class probabilities (N, classes): normalisation, network, softmax of the
        logits divided by ``temperature``.

        Args:
            net: the trained network (eval mode).
            pixel_mean, pixel_std: the trained module's (1, C, 1, 1) constants, 255 mean and 255 std.
            temperature: the checkpoint's temperature scaling T (1: none; a constant of the traced graph).
        """

        def __init__(self, net: torch.nn.Module, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                     temperature: float = 1.0) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("pixel_mean", pixel_mean.detach().clone().float())
            self.register_buffer("pixel_std", pixel_std.detach().clone().float())
            self.temperature = float(temperature)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float()
            return scaled_softmax(self.net((x - self.pixel_mean) / self.pixel_std), self.temperature)

    return ExportedNetwork


@contextlib.contextmanager
def _jit_quiet():
    """torch marks torch.jit.trace/save/load deprecated (FutureWarning, a note to developers): TorchScript is still
    the format a user asks ``export`` for, and these are the calls that make and read it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit\.(trace|save|load)")
        yield


def metadata(meta) -> dict[str, str]:
    """The metadata an exported file carries (:data:`META_KEYS`), from the checkpoint's CheckpointMeta."""
    from lit_imgcls import __version__

    c, h, w = meta.image_shape
    return {
        "lit_imgcls_version": __version__,
        "class_names": json.dumps(list(meta.class_names), ensure_ascii=False),
        "preprocessing": json.dumps(meta.data_config.to_dict()),
        "input": (f"{INPUT_NAME}: uint8 (N, {h}, {w}, {c}), N any: images already resized and cropped to {h} x {w} "
                  "as 'preprocessing' says (crop_mode, crop_pct, interpolation); the model normalises them itself "
                  "(mean, std)"),
        "output": (f"{OUTPUT_NAME}: float32 (N, {len(meta.class_names)}), softmax over class_names in their order"
                   + (f" of the logits divided by the temperature {meta.temperature!r} (temperature scaling)"
                      if meta.temperature != 1 else "")),
        "temperature": repr(meta.temperature),
    }


def default_out(checkpoint: str, fmt: str) -> Path:
    """``CKPT-STEM.onnx`` / ``CKPT-STEM.torchscript.pt`` beside a local checkpoint; for one at a URL, in the
    current folder."""
    from lit_imgcls.storage import basename, is_url, local

    if is_url(str(checkpoint)):
        return Path(f"{Path(basename(str(checkpoint))).stem}{FORMATS[fmt]}")
    p = Path(local(str(checkpoint)))
    return p.with_name(f"{p.stem}{FORMATS[fmt]}")


def check_out(out: str | Path, overwrite: bool) -> Path:
    """Refuses, before any work, an ``out`` that exists (without ``overwrite``) or that is not a file ``export``
    wrote and nobody changed since (with it); returns it as a Path.

    Raises:
        UsageError: one line naming the file and what to do.
    """
    from lit_imgcls.owned_files import check_owned
    from lit_imgcls.storage import local_output

    out = local_output(out, "--out", "export here, then copy it")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give the file to write, like {out / 'model.onnx'}")
    if out.name == RECORD:  # the record's own name: refused by the ownership rule before "exists" is said
        check_owned(out.parent, [out.name], RECORD, "give another --out")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise UsageError(f"{out} exists; give --overwrite to replace it (only a file lit-imgcls exported there and "
                         "nobody changed since), or another --out")
    if out.parent.exists():
        check_owned(out.parent, [out.name], RECORD, "give another --out")
    return out


def build(checkpoint: str):
    """The checkpoint's network as an ``ExportedNetwork`` (eval mode, CPU) and its CheckpointMeta.

    Raises:
        UsageError: an unreadable or malformed checkpoint (loaded with ``weights_only``: nothing in it runs).
    """
    from lit_imgcls.checkpoint_meta import load_module

    module, meta = load_module(checkpoint)
    return _network_class()(module.net, module.pixel_mean, module.pixel_std, meta.temperature).eval(), meta


def to_bytes(model, meta, fmt: str) -> bytes:
    """``model`` (an ``ExportedNetwork``) as an ONNX or TorchScript file with :func:`metadata`, in memory.

    Raises:
        UsageError: weights too large for one ONNX file (2 GiB), or a network the exporter cannot express.
    """
    import io

    import torch

    c, h, w = meta.image_shape
    example = torch.zeros((_TRACE_BATCH, h, w, c), dtype=torch.uint8)
    props = metadata(meta)
    if fmt == "torchscript":
        with torch.no_grad(), _jit_quiet():
            traced = torch.jit.trace(model, example, check_trace=False)
            buf = io.BytesIO()
            torch.jit.save(traced, buf, _extra_files=props)
        return buf.getvalue()
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if size > ONNX_MAX_BYTES:
        raise UsageError(f"the network's weights take {size / 1024**3:.1f} GiB, more than one ONNX file holds "
                         "(2 GiB); use --format torchscript")
    _need("onnxscript")  # torch's exporter imports it (and onnx) itself, deep inside
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes about its own internals, not about this model
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch.export's many error types; the first line says which operator
        raise UsageError(f"the ONNX exporter cannot express this network ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}); try --format torchscript") from None
    program.model.metadata_props.update(props)
    return program.model_proto.SerializeToString()


def write(out: Path, data: bytes, overwrite: bool) -> Path:
    """``data`` at ``out``, atomically, recorded as ours in the folder's :data:`RECORD` (so a later
    ``--overwrite`` may replace it, and nothing else).

    Raises:
        UsageError: see :func:`check_out` (checked again: the folder may have changed while exporting).
    """
    from lit_imgcls.owned_files import write_owned

    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_owned(out.parent, {out.name: data}, RECORD, prune=False, elsewhere="give another --out")
    return out


def exported_format(path: str | Path) -> str | None:
    """"onnx" or "torchscript" for a local file that looks like an export (told by its content: a TorchScript
    archive holding export's ``class_names`` metadata; a protobuf starting with an ONNX model's first field, or a
    ``.onnx`` name), None for anything else (a checkpoint, a URL). ``predict`` and ``score`` ask it which way to go.
    """
    import zipfile

    from lit_imgcls.storage import is_url

    p = Path(path)
    if is_url(str(path)) or not p.is_file():
        return None
    try:
        with open(p, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):  # torch.save's checkpoints are zip archives too, without code or extra/
            with zipfile.ZipFile(p) as z:
                return "torchscript" if any(n.endswith("/extra/class_names") for n in z.namelist()) else None
    except (OSError, zipfile.BadZipFile):
        return None
    # An ONNX ModelProto starts with field 1 (ir_version, a varint: tag 0x08); a pickled checkpoint with 0x80.
    return "onnx" if head[:1] == b"\x08" or p.suffix.lower() == ".onnx" else None


class ExportedModel:
    """An exported file, loaded to run: ONNX through onnxruntime, TorchScript through ``torch.jit.load`` (a
    TorchScript file is a program: load only files you trust, such as your own exports).

    Args:
        path: the file.
        fmt: "onnx" or "torchscript".
        run: uint8 (N, H, W, C) numpy -> probabilities (N, classes) numpy float32.
        meta: its metadata (:data:`META_KEYS`).
    """

    def __init__(self, path: Path, fmt: str, run, meta: dict[str, str]) -> None:
        from lit_imgcls.data.preprocess import DataConfig

        self.path, self.format, self._run = path, fmt, run
        missing = [k for k in ("class_names", "preprocessing") if k not in meta]
        if missing:
            raise UsageError(f"{path} has no {' or '.join(missing)} in its metadata: it is not a model "
                             "`lit-imgcls export` wrote")
        try:
            names = json.loads(meta["class_names"])
            config = json.loads(meta["preprocessing"])
        except ValueError:
            raise UsageError(f"{path}: its metadata's class_names and preprocessing must be JSON") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UsageError(f"{path}: its metadata's class_names must be a list of strings")
        self.class_names: list[str] = names
        self.data_config = DataConfig.from_dict(config, str(path), name="preprocessing")
        self.temperature = _temperature(meta.get("temperature", "1.0"), path)

    @classmethod
    def load(cls, path: str | Path) -> ExportedModel:
        """The file at ``path``, its format told by its content (a TorchScript file is a zip archive).

        Raises:
            UsageError: no such file, or not a model ``lit-imgcls export`` wrote (one line).
        """
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"exported model not found: {path}")
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK"):
            return cls._torchscript(path)
        return cls._onnx(path)

    @classmethod
    def _onnx(cls, path: Path) -> ExportedModel:
        _need("onnxruntime")
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            raise UsageError(f"{path} is neither a TorchScript nor an ONNX model onnxruntime can load "
                             f"({' '.join(str(exc).split())[:200]})") from None
        meta = dict(session.get_modelmeta().custom_metadata_map)

        def run(images: np.ndarray) -> np.ndarray:
            return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]

        return cls(path, "onnx", run, meta)

    @classmethod
    def _torchscript(cls, path: Path) -> ExportedModel:
        import torch

        extra = dict.fromkeys(META_KEYS, "")
        try:
            with _jit_quiet():
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and others for a bad archive
            raise UsageError(f"{path} is not a TorchScript model torch can load "
                             f"({' '.join(str(exc).split())[:200]})") from None
        module.eval()

        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(images)).numpy()

        meta = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in extra.items() if v}
        return cls(path, "torchscript", run, meta)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes), float32, of uint8 images (N, H, W, C) at the input size.

        Raises:
            UsageError: the file gave probabilities that are not finite numbers in [0, 1] summing to 1 (a file
                damaged after export still loads when only its weights changed; its output then gives it away).
        """
        probs = np.asarray(self._run(np.ascontiguousarray(images, dtype=np.uint8)), dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != len(self.class_names):
            raise UsageError(f"{self.path} gave output of shape {probs.shape}, not (N, {len(self.class_names)}): "
                             "it is damaged; export it again")
        if probs.size and not (np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-3)):
            raise UsageError(f"{self.path} gave probabilities that are not finite or do not sum to 1: it is damaged "
                             "(its weights changed after export); export it again")
        return probs


def _temperature(text: str, path: Path) -> float:
    """The temperature in an export's metadata (files exported before it was recorded have none: 1). The graph
    holds it as a constant; this copy is what ``score`` reports.

    Raises:
        UsageError: not a number within :data:`~lit_imgcls.evaluation.TEMPERATURE_RANGE`.
    """
    from lit_imgcls.evaluation import temperature_problem
    from lit_imgcls.printable import printable

    try:
        value = float(text)
    except ValueError:
        value = None
    if (problem := temperature_problem(value)) is not None:
        raise UsageError(printable(f"{path}: its metadata's temperature must be {problem}, got {text[:40]!r}"))
    return float(value)


def as_uint8_images(x, datamodule) -> np.ndarray:
    """A batch as a loader delivered it, as the uint8 (N, H, W, C) an exported model takes.

    Packed and folder loaders deliver uint8 (N, C, H, W); in-memory arrays deliver floats they normalised with the
    DataModule's ``mean``/``std``, from uint8 pixels, which rounding recovers exactly.

    Raises:
        UsageError: float images that were not uint8 pixels (an .npz of float arrays).
    """
    import torch

    if x.dtype == torch.uint8:
        return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    c = x.shape[1]
    if getattr(datamodule, "mean", None) is None or getattr(datamodule, "std", None) is None:
        raise UsageError(f"dataset {type(datamodule).__name__} delivers float images without saying their mean/std; "
                         "an exported model takes uint8 images: check it on a pack or folder with --data-val")
    mean = torch.tensor(datamodule.mean, dtype=torch.float64).view(1, c, 1, 1)
    std = torch.tensor(datamodule.std, dtype=torch.float64).view(1, c, 1, 1)
    pixels = (x.detach().cpu().double() * std + mean) * 255
    rounded = pixels.round()
    if float((pixels - rounded).abs().max()) > 0.01 or float(rounded.min()) < 0 or float(rounded.max()) > 255:
        raise UsageError("the validation images are floats that are not 8-bit pixels (an .npz of float arrays?); an "
                         "exported model takes uint8 images: check it on uint8 data with --data-val")
    return rounded.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class CheckResult:
    """What :func:`check` measured: top-1 of the checkpoint and of the export on the same images, and the largest
    difference between their probabilities."""

    path: Path
    format: str
    count: int
    dataset: str
    top1_checkpoint: float
    top1_export: float
    max_prob_diff: float
    tol_top1: float  # percentage points
    tol_prob: float

    @property
    def top1_points(self) -> float:
        """|top-1 difference| in percentage points."""
        return abs(self.top1_export - self.top1_checkpoint) * 100

    @property
    def passed(self) -> bool:
        return self.top1_points <= self.tol_top1 and self.max_prob_diff <= self.tol_prob  # NaN fails both

    def line(self) -> str:
        return (f"check: {self.count} images of {self.dataset} (validation split): top-1 checkpoint "
                f"{self.top1_checkpoint:.6f}, {self.format} export {self.top1_export:.6f} (difference "
                f"{self.top1_points:.3f} points, tolerance {self.tol_top1:g}); largest probability difference "
                f"{self.max_prob_diff:.3g} (tolerance {self.tol_prob:g}): {'passed' if self.passed else 'FAILED'}")


def check(checkpoint: str, path: str | Path, overrides: dict[str, Any] | None = None, tol_top1: float = 0.1,
          tol_prob: float = 1e-4) -> CheckResult:
    """Scores the exported file at ``path`` and ``checkpoint`` on the same validation images (``score``'s data and
    loop; test-time flip averaging off, as the export has none).

    Args:
        checkpoint: the checkpoint the file was exported from.
        path: the exported file (ONNX or TorchScript).
        overrides: recipe keys for the data (``data_val``, ``dataset``, ``batch_size``).
        tol_top1: the largest top-1 difference that passes, in percentage points.
        tol_prob: the largest difference of any probability that passes.

    Raises:
        UsageError: a file that is not an export, or one of other classes than the checkpoint's; unusable data.
    """
    import torch

    from lit_imgcls.printable import printable
    from lit_imgcls.score import score

    model = ExportedModel.load(path)
    hits, worst = 0, 0.0

    def observe(x, y, probs, datamodule) -> None:
        nonlocal hits, worst
        if len(model.class_names) != probs.shape[1] or model.class_names != list(datamodule.class_names):
            raise UsageError(printable(f"{path} names other classes than checkpoint {checkpoint} "
                                       f"({len(model.class_names)} vs {probs.shape[1]}); was it exported from "
                                       "another checkpoint?"))
        theirs = torch.from_numpy(model.probabilities(as_uint8_images(x, datamodule)))
        hits += int((theirs.argmax(dim=1) == y.cpu()).sum())
        diff = float((theirs - probs.float().cpu()).abs().max()) if len(theirs) else 0.0
        if math.isnan(diff) or diff > worst:  # a NaN stays: it fails the check
            worst = diff

    result = score(checkpoint, {**(overrides or {}), "tta_flip": False}, top_k=0, observe=observe)
    return CheckResult(Path(path), model.format, result.count, result.dataset, result.top1, hits / result.count,
                       worst, tol_top1, tol_prob)
