"""``score --calibrate``: temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML)
fitted on a checkpoint's validation split and stored in a new checkpoint beside it.

``score`` scores the checkpoint's raw probabilities (temperature 1), :func:`lit_imgcls.evaluation.fit_temperature`
finds the T minimising their negative log-likelihood, and :func:`write` stores T in a copy of the checkpoint's
meta: ``P-0003-calibrated.ckpt`` beside ``P-0003.ckpt`` (:func:`lit_imgcls.checkpoints.calibrated_path`), which is
never touched. ``predict``, ``score`` and ``export`` of the new file give softmax(logits / T)
(:func:`lit_imgcls.evaluation.scaled_softmax`); its top-1 is the original's.

A checkpoint that is already calibrated is fitted again on its raw probabilities: the new T replaces its T, never
compounds it (the result is the one its original checkpoint gives). The new file holds the weights and meta, not
the training state (optimizer, schedule, loader position): it is for predicting, scoring and exporting, not for
resuming. It is written atomically with its ``.sha256``, recorded in the folder's :data:`RECORD`
(:mod:`lit_imgcls.owned_files`), so a rerun replaces only a calibrated file lit-imgcls wrote there and nobody has
changed since, and nothing else of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_imgcls.errors import UsageError

RECORD = ".lit-imgcls-calibrated"  # the folder's record of the calibrated checkpoints written there
# What the calibrated checkpoint keeps of the original: the weights, the meta and Lightning's counters (for the
# record); the training state (optimizer, LR schedule, loops, raw weights beside EMA ones, position) is left out.
KEPT_KEYS = ("state_dict", "lit_imgcls", "epoch", "global_step", "pytorch-lightning_version")


@dataclass
class Calibration:
    """What ``score --calibrate`` fitted and wrote.

    Args:
        source: the checkpoint scored.
        path: the calibrated checkpoint written.
        temperature: the fitted T.
        previous: the source's own T (1.0: it was not calibrated).
        count: validation images the fit used.
        ece_before, ece_after: expected calibration error (15 bins) of the source's probabilities and of the
            calibrated ones, in [0, 1].
        nll_before, nll_after: their mean negative log-likelihood (nats).
        replaced: ``path`` held an earlier calibrated checkpoint lit-imgcls wrote, now replaced.
    """

    source: str
    path: Path
    temperature: float
    previous: float
    count: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    replaced: bool = False

    def report(self) -> str:
        """The lines ``score --calibrate`` prints."""
        from lit_imgcls.evaluation import ECE_BINS, TEMPERATURE_RANGE

        was = f" (replacing its temperature {self.previous:.4f}; fitted on its raw probabilities)" \
            if self.previous != 1 else ""
        lines = [f"calibration: temperature scaling on {self.count} validation images{was}",
                 f"temperature {self.temperature:.4f}",
                 f"ECE before {self.ece_before:.4f} -> after {self.ece_after:.4f} ({ECE_BINS} bins)",
                 f"NLL before {self.nll_before:.4f} -> after {self.nll_after:.4f}"]
        if self.temperature in TEMPERATURE_RANGE:
            lines.append(f"note: the fit stopped at the bound {self.temperature:g}: the model gets (almost) every "
                         "validation image right, or wrong, so no temperature is best; calibrate on more or harder "
                         "validation data")
        lines.append(f"calibrated checkpoint: {self.path}" + (" (replaced the one written before)" if self.replaced
                                                               else ""))
        return "\n".join(lines) + "\n"


def target(checkpoint: str, out: str | None) -> Path:
    """Where the calibrated checkpoint goes, refused before any scoring when it cannot be written there.

    Args:
        checkpoint: the checkpoint to calibrate (a local path or a URL).
        out: ``--calibrated-out``; default :func:`~lit_imgcls.checkpoints.calibrated_path` of ``checkpoint``
            beside it (in the current folder for a checkpoint at a URL).

    Raises:
        UsageError: an exported model (it has no place for the temperature); ``out`` at a URL, a folder, not
            named ``...-calibrated.ckpt``, the checkpoint itself, or a file (or its ``.sha256``) lit-imgcls did not
            write there (or one changed since).
    """
    from lit_imgcls.checkpoints import CALIBRATED_SUFFIX, calibrated_path, is_calibrated_name
    from lit_imgcls.export import exported_format
    from lit_imgcls.owned_files import check_owned
    from lit_imgcls.storage import basename, is_url, local, local_output

    if exported_format(checkpoint):
        raise UsageError(f"{checkpoint} is an exported model, which has no place for a temperature: calibrate its "
                         "checkpoint with score --calibrate, then export the calibrated checkpoint")
    if out is None:
        default = calibrated_path(checkpoint)
        out = basename(default) if is_url(checkpoint) else local(default)
    path = local_output(out, "--calibrated-out", "write it here, then copy it")
    if path.is_dir():
        raise UsageError(f"--calibrated-out {path} is a folder; give the file to write, like "
                         f"{path / ('model' + CALIBRATED_SUFFIX)}")
    if not is_calibrated_name(str(path)):
        raise UsageError(f"--calibrated-out {path}: a calibrated checkpoint's name ends in {CALIBRATED_SUFFIX} (so "
                         f"no run mistakes it for an epoch checkpoint of its own), like "
                         f"{path.with_name(Path(calibrated_path(path.name)).name)}")
    if not is_url(checkpoint) and Path(local(checkpoint)).exists() and path.exists() \
            and path.resolve() == Path(local(checkpoint)).resolve():
        raise UsageError(f"{checkpoint} is already a calibrated checkpoint, and the calibrated file would be written "
                         "over it: calibrate the checkpoint it was made from (the fit uses the raw probabilities "
                         "either way, so the result is the same), or give --calibrated-out OTHER-calibrated.ckpt")
    if path.parent.exists():
        check_owned(path.parent, [path.name, f"{path.name}.sha256"], RECORD, "give another --calibrated-out")
    return path


def fit(result, previous: float) -> tuple[float, dict[str, float]]:
    """The temperature of ``result`` (a ScoreResult of the raw probabilities, temperature 1) and the figures
    before (at the source's own temperature ``previous``) and after.

    Returns:
        (T, {"ece_before", "ece_after", "nll_before", "nll_after"}).

    Raises:
        UsageError: the split held no images.
    """
    from lit_imgcls.evaluation import apply_temperature, expected_calibration_error, fit_temperature, \
        negative_log_likelihood

    if result.labels is None or not len(result.labels):
        raise UsageError("score --calibrate needs validation images; this split has none")
    raw = result.probs
    before = raw if previous == 1 else apply_temperature(raw, previous)
    temperature = fit_temperature(result.labels, raw)
    after = apply_temperature(raw, temperature)
    figures = {"ece_before": expected_calibration_error(result.labels, before),
               "ece_after": expected_calibration_error(result.labels, after),
               "nll_before": negative_log_likelihood(result.labels, before),
               "nll_after": negative_log_likelihood(result.labels, after)}
    return temperature, figures


def run(result, checkpoint: str, path: Path) -> Calibration:
    """Fits T on ``result`` (``score``'s ScoreResult of ``checkpoint`` at temperature 1) and writes the calibrated
    checkpoint at ``path`` (from :func:`target`). ``result.probs`` becomes the checkpoint's own probabilities again
    (at its own temperature), as a plain ``score`` gives them.

    Raises:
        UsageError: no images; the source became unreadable, or the target is no longer ours (checked again: the
            folder may have changed while scoring).
    """
    from lit_imgcls.checkpoint_meta import read_meta
    from lit_imgcls.evaluation import ECE_BINS, apply_temperature
    from lit_imgcls.io import load_checkpoint

    ckpt = load_checkpoint(checkpoint)  # read again as data (weights_only); never written
    previous = read_meta(ckpt, checkpoint).temperature
    temperature, figures = fit(result, previous)
    record = {"dataset": result.dataset, "images": result.count, "tta_flip": bool(result.tta_flip),
              "bins": ECE_BINS, **figures}
    replaced = write(ckpt, checkpoint, path, temperature, record)
    if previous != 1:
        result.probs, result.temperature = apply_temperature(result.probs, previous), previous
    return Calibration(str(checkpoint), path, temperature, previous, result.count, replaced=replaced, **figures)


def write(ckpt: dict, checkpoint: str, path: Path, temperature: float, record: dict[str, Any]) -> bool:
    """The calibrated copy of ``ckpt`` (loaded from ``checkpoint``) at ``path``, with its ``.sha256``, recorded as
    ours; returns whether it replaced an earlier one.

    Args:
        temperature: T for the meta's ``temperature`` (within :data:`~lit_imgcls.evaluation.TEMPERATURE_RANGE`).
        record: how T was fitted, stored as the meta's ``calibration`` (plain numbers and strings).

    Raises:
        UsageError: see :func:`target`.
    """
    from lit_imgcls.io import checkpoint_bytes, checksum_line
    from lit_imgcls.owned_files import write_owned
    from lit_imgcls.storage import basename

    calibrated = {k: ckpt[k] for k in KEPT_KEYS if k in ckpt}
    calibrated["lit_imgcls"] = {**ckpt["lit_imgcls"], "temperature": float(temperature),
                                "calibration": {"from": basename(str(checkpoint)), **record}}
    data = checkpoint_bytes(calibrated)
    target(checkpoint, str(path))
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The checkpoint first, its checksum after: a rerun after an interruption finds both still recorded as ours.
    write_owned(path.parent, {path.name: bytes(data), f"{path.name}.sha256": checksum_line(data, path.name)}, RECORD,
                prune=False, elsewhere="give another --calibrated-out")
    return existed
