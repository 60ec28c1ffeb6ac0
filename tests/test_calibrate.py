"""`lit-imgcls score --calibrate` (issue 18, item 3): temperature scaling (Guo et al. 2017) fitted on the validation
split, stored in a new checkpoint beside the old one, which predict, score and export then use.

One LeNet trained one epoch on 320 MNIST digits (an .npz with 256 validation digits), calibrated once by a real
process; the tests read what that wrote, and compare the calibrated checkpoint's probabilities (score, predict,
the ONNX export) with the original's put through :func:`lit_imgcls.evaluation.apply_temperature`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import ckpt_factory
from conftest import quick_args, run_cli
from lit_imgcls.cli import main
from test_checkpoint_meta import _one_line_exit_2


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(returncode: int, err: str, *needles: str) -> str:
    line = _one_line_exit_2(returncode, err)
    assert line.startswith("lit-imgcls: error: ") and all(needle in line for needle in needles), line
    return line


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist_arrays):
    """A trained checkpoint and what one `score --calibrate` of it (a real process) printed and wrote."""
    tmp = tmp_path_factory.mktemp("calibrate")
    data = tmp / "digits.npz"
    np.savez(data, x_train=mnist_arrays["train_images"][:320, :, :, None], y_train=mnist_arrays["train_labels"][:320],
             x_val=mnist_arrays["test_images"][:256, :, :, None], y_val=mnist_arrays["test_labels"][:256],
             mean=np.array([0.1307], np.float32), std=np.array([0.3081], np.float32))
    assert main(["fit", *quick_args(tmp, dataset="npz", data_train=data, batch_size=32)]) == 0
    ckpt = tmp / "model" / "mnist-0001.ckpt"
    before = {p.name: _sha(p) for p in (ckpt, ckpt.with_name(ckpt.name + ".sha256"))}
    res = run_cli("score", "--checkpoint", str(ckpt), "--calibrate", "--threads", "2", cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"tmp": tmp, "data": data, "ckpt": ckpt, "before": before, "out": res.stdout,
            "calibrated": tmp / "model" / "mnist-0001-calibrated.ckpt"}


def _figures(out: str) -> dict[str, float]:
    t = re.search(r"^temperature (\S+)$", out, re.M)
    ece = re.search(r"^ECE before (\S+) -> after (\S+) \(15 bins\)$", out, re.M)
    nll = re.search(r"^NLL before (\S+) -> after (\S+)$", out, re.M)
    assert t and ece and nll, out
    return {"T": float(t[1]), "ece": (float(ece[1]), float(ece[2])), "nll": (float(nll[1]), float(nll[2]))}


def test_calibrate_writes_a_new_checkpoint_and_leaves_the_old_one(run):
    from lit_imgcls.checkpoint_meta import read_meta
    from lit_imgcls.io import load_checkpoint

    ckpt, new = run["ckpt"], run["calibrated"]
    assert {p.name: _sha(p) for p in (ckpt, ckpt.with_name(ckpt.name + ".sha256"))} == run["before"]
    assert f"calibrated checkpoint: {new}" in run["out"]
    figures = _figures(run["out"])
    assert figures["nll"][1] <= figures["nll"][0]  # what the fit minimises
    assert figures["ece"][1] <= figures["ece"][0]
    meta = read_meta(load_checkpoint(new), new)  # its .sha256 beside it is checked on load
    assert (new.parent / f"{new.name}.sha256").is_file()
    assert meta.temperature == pytest.approx(figures["T"], abs=5e-5) and meta.temperature != 1
    assert meta.raw["calibration"]["from"] == ckpt.name and meta.raw["calibration"]["images"] == 256
    assert set(load_checkpoint(new)) <= {"state_dict", "lit_imgcls", "epoch", "global_step", "pytorch-lightning_version"}
    record = json.loads((new.parent / ".lit-imgcls-calibrated").read_text())["files"]
    assert set(record) == {new.name, f"{new.name}.sha256"}


def test_runs_never_take_the_calibrated_file_for_their_own(run):
    """--load-epoch, --resume auto, --overwrite and the newest-checkpoint scans go by checkpoints.py's names."""
    from lit_imgcls.checkpoints import epoch_of, existing_epochs, newest_readable, saved_checkpoints

    prefix = str(run["tmp"] / "model" / "mnist")
    assert run["calibrated"].exists()
    assert saved_checkpoints(prefix) == [str(run["ckpt"])]
    assert existing_epochs(prefix) == [1] and newest_readable(prefix) == str(run["ckpt"])
    assert epoch_of(str(run["calibrated"]), prefix) is None and epoch_of(str(run["calibrated"]), None) is None


def test_score_of_the_calibrated_checkpoint(run, capsys):
    """Same images, same top-1 class for each; probabilities the original's at the temperature; ECE no higher."""
    from lit_imgcls.evaluation import apply_temperature, expected_calibration_error
    from lit_imgcls.score import report_data, score

    T = _figures(run["out"])["T"]
    old, new = score(str(run["ckpt"])), score(str(run["calibrated"]))
    assert (old.labels == new.labels).all() and old.top1 == new.top1
    assert (old.probs.argmax(1) == new.probs.argmax(1)).all()
    np.testing.assert_allclose(new.probs, apply_temperature(old.probs, new.temperature), atol=1e-5)
    assert new.temperature == pytest.approx(T, abs=5e-5) and old.temperature == 1
    assert report_data(new)["temperature"] == new.temperature  # the report's JSON says so too
    assert expected_calibration_error(new.labels, new.probs) <= expected_calibration_error(old.labels, old.probs)
    png = run["tmp"] / "c.png"
    assert main(["score", "--checkpoint", str(run["calibrated"]), "--top-k", "0", "--confusion-png", str(png)]) == 0
    assert f"calibrated (temperature {new.temperature:.4f})" in capsys.readouterr().out.splitlines()[0]


def _digits(run, n: int = 16) -> list[np.ndarray]:
    return list(np.load(run["data"])["x_val"][:n])


def test_predict_uses_the_temperature(run):
    from lit_imgcls.classifier import Classifier
    from lit_imgcls.evaluation import apply_temperature

    old, new = Classifier.load(run["ckpt"]), Classifier.load(run["calibrated"])
    pixels = [old.preprocess(d) for d in _digits(run)]
    p_old, p_new = old.probabilities(pixels).numpy(), new.probabilities(pixels).numpy()
    assert (p_old.argmax(1) == p_new.argmax(1)).all()
    assert np.abs(p_old - p_new).max() > 1e-3  # calibrated: other confidences
    np.testing.assert_allclose(p_new, apply_temperature(p_old, new.meta.temperature), atol=1e-5)


def test_export_of_the_calibrated_checkpoint_matches_it(run, capsys):
    """--check compares the export with the calibrated checkpoint; the file's probabilities are predict's."""
    pytest.importorskip("onnxruntime")
    from lit_imgcls.classifier import Classifier
    from lit_imgcls.export import ExportedModel

    new = run["calibrated"]
    assert main(["export", "--checkpoint", str(new), "--format", "onnx", "--check"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.rstrip().endswith("passed")
    model = ExportedModel.load(new.with_name(new.stem + ".onnx"))
    clf = Classifier.load(new)
    assert model.temperature == clf.meta.temperature != 1
    pixels = [clf.preprocess(d) for d in _digits(run)]
    np.testing.assert_allclose(model.probabilities(np.stack(pixels)), clf.probabilities(pixels).numpy(), atol=1e-5)


def test_a_crafted_temperature_in_an_exported_file_is_one_line(run, tmp_path):
    """The export's metadata copy of T (what score reports; the graph holds its own): checked as a checkpoint's."""
    onnx = pytest.importorskip("onnx")
    from lit_imgcls.errors import UsageError
    from lit_imgcls.export import ExportedModel

    new = run["calibrated"]
    path = new.with_name(new.stem + ".onnx")
    if not path.exists():  # a -k selection without the export test
        assert main(["export", "--checkpoint", str(new), "--format", "onnx"]) == 0
    model = onnx.load(str(path))
    next(p for p in model.metadata_props if p.key == "temperature").value = "nan"
    onnx.save(model, str(tmp_path / "crafted.onnx"))
    with pytest.raises(UsageError, match=r"crafted\.onnx: its metadata's temperature must be a number in"):
        ExportedModel.load(tmp_path / "crafted.onnx")


def test_calibrating_again_replaces_the_temperature(run, capsys):
    """A calibrated checkpoint is fitted on its raw probabilities: the same T as its original's, not T squared.
    By default it would be written over itself, which is refused."""
    new = run["calibrated"]
    assert main(["score", "--checkpoint", str(new), "--calibrate"]) == 2
    _one_line(2, capsys.readouterr().err, "already a calibrated checkpoint", "--calibrated-out")
    again = run["tmp"] / "again" / "twice-calibrated.ckpt"
    assert main(["score", "--checkpoint", str(new), "--calibrate", "--calibrated-out", str(again)]) == 0
    out = capsys.readouterr().out
    assert "replacing its temperature" in out
    assert _figures(out)["T"] == pytest.approx(_figures(run["out"])["T"], abs=2e-3)


def test_a_file_lit_imgcls_did_not_write_is_never_replaced(run, tmp_path):
    """A foreign file (or a calibrated file edited since) at the target: refused before scoring, left as it is."""
    folder = tmp_path / "model"
    folder.mkdir()
    ckpt = Path(shutil.copy(run["ckpt"], folder / "mnist-0001.ckpt"))
    target = folder / "mnist-0001-calibrated.ckpt"
    target.write_text("my notes\n")
    res = run_cli("score", "--checkpoint", str(ckpt), "--calibrate", cwd=tmp_path)
    _one_line(res.returncode, res.stderr, str(target), "not a file lit-imgcls wrote")
    assert target.read_text() == "my notes\n" and "score:" not in res.stdout
    assert main(["score", "--checkpoint", str(ckpt), "--calibrate", "--calibrated-out", str(folder / "x.ckpt")]) == 2


@pytest.mark.parametrize("value", [-1.0, 0.0, math.nan, math.inf, 1e-300, 1000.0, "2.0", True, [1.5]])
def test_a_crafted_temperature_is_one_line(tmp_path, capsys, value):
    ckpt = ckpt_factory.checkpoint("mlp")
    ckpt["lit_imgcls"]["temperature"] = value
    path = ckpt_factory.write(tmp_path / "crafted-calibrated.ckpt", ckpt)
    digit = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
    assert main(["predict", "--checkpoint", str(path), str(digit), "--threads", "1"]) == 2
    _one_line(2, capsys.readouterr().err, f"checkpoint {path}: temperature must be a number in [0.05, 20]")


def test_a_crafted_temperature_is_refused_by_export_in_a_real_process(tmp_path):
    ckpt = ckpt_factory.checkpoint("mlp")
    ckpt["lit_imgcls"]["temperature"] = float("nan")
    path = ckpt_factory.write(tmp_path / "nan-calibrated.ckpt", ckpt)
    res = run_cli("export", "--checkpoint", str(path), "--format", "torchscript", cwd=tmp_path)
    _one_line(res.returncode, res.stderr, "temperature must be", "nan")
    assert not list(tmp_path.glob("*.pt"))
