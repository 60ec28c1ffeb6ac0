"""`lit-imgcls export` (issue 18, item 1): ONNX and TorchScript files that score what their checkpoint scores.

Three networks: LeNet trained one epoch on a few hundred MNIST digits, and a timm ResNet (resnet10t) and the seed's
inception_bn_small with random weights. Each is exported in both formats with --check, loaded back with the
runtimes themselves (onnxruntime.InferenceSession, torch.jit.load: not through lit-imgcls), and compared with the
checkpoint's own probabilities on the same uint8 images at two batch sizes. A wrong normalisation in an exported
file fails --check-file with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ckpt_factory
from conftest import quick_args, run_cli
from lit_imgcls.cli import main

pytest.importorskip("onnxruntime")

# network -> (input shape, mean, std); the random-weight ones are checked on an .npz of MNIST digits made to shape
NETWORKS = {
    "lenet": ((1, 28, 28), [0.1307], [0.3081]),
    "resnet10t": ((3, 32, 32), [0.5] * 3, [0.25] * 3),
    "inception_bn_small": ((1, 28, 28), [0.1307], [0.3081]),
}


VAL = {"lenet": 256, "resnet10t": 64, "inception_bn_small": 64}  # validation images --check scores


def _npz(path: Path, arrays, shape, mean, std, train: int, val: int) -> Path:
    """MNIST digits as uint8 (N, H, W, C) of ``shape`` (padded and repeated to RGB 32 x 32 for the ResNet)."""
    c, h, w = shape

    def fit(x):
        x = np.pad(x, ((0, 0), ((h - 28) // 2,) * 2, ((w - 28) // 2,) * 2))
        return np.repeat(x[..., None], c, axis=3)

    np.savez(path, x_train=fit(arrays["train_images"][:train]), y_train=arrays["train_labels"][:train],
             x_val=fit(arrays["test_images"][:val]), y_val=arrays["test_labels"][:val],
             mean=np.array(mean, np.float32), std=np.array(std, np.float32))
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, mnist_arrays):
    """network -> a checkpoint whose recipe reads an .npz of validation digits (256 for LeNet, trained 1 epoch on
    320; 64 for the others, written as fit writes them with fresh weights, seeded)."""
    import torch

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("export")
    keys = set(mnist_arrays)
    assert {"train_images", "train_labels", "test_images", "test_labels"} <= keys, keys
    out = {}
    for network, (shape, mean, std) in NETWORKS.items():
        data = _npz(tmp / f"{network}.npz", mnist_arrays, shape, mean, std, train=320, val=VAL[network])
        if network == "lenet":
            assert main(["fit", *quick_args(tmp / "lenet", dataset="npz", data_train=data, batch_size=32)]) == 0
            out[network] = tmp / "lenet" / "model" / "mnist-0001.ckpt"
            continue
        ckpt = ckpt_factory.checkpoint(network, shape=shape)
        ckpt["lit_imgcls"]["recipe"].update(dataset="npz", data_train=str(data), batch_size=64)
        out[network] = ckpt_factory.write(tmp / network / f"{network}-0001.ckpt", ckpt)
    return out


def _uint8_batch(n: int, shape, seed: int) -> np.ndarray:
    c, h, w = shape
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _checkpoint_probs(ckpt: Path, images: np.ndarray) -> np.ndarray:
    """The checkpoint's probabilities as predict computes them (its module's normalisation and network)."""
    import torch

    from lit_imgcls.checkpoint_meta import load_module

    module, _ = load_module(ckpt)
    with torch.inference_mode():
        x = module.normalize(torch.from_numpy(images).permute(0, 3, 1, 2))
        return module.class_probs(x).numpy()


def _load_back(path: Path, fmt: str):
    """The file as its runtime loads it (not through lit-imgcls): (uint8 images -> probabilities, metadata,
    the input's name, type and shape)."""
    import torch

    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,), (outp,) = session.get_inputs(), session.get_outputs()
        return (lambda images: session.run([outp.name], {inp.name: images})[0],
                session.get_modelmeta().custom_metadata_map, (inp.name, inp.type, inp.shape))
    extra = {"class_names": "", "preprocessing": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)

    def run(images):
        with torch.inference_mode():
            return scripted(torch.from_numpy(images)).numpy()

    return run, extra, None


@pytest.mark.parametrize("network", [
    "lenet", pytest.param("resnet10t", marks=pytest.mark.slow), pytest.param("inception_bn_small", marks=pytest.mark.slow)])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_export_scores_what_the_checkpoint_scores(checkpoints, network, fmt, capsys):
    ckpt = checkpoints[network]
    shape = NETWORKS[network][0]
    assert main(["export", "--checkpoint", str(ckpt), "--format", fmt, "--check"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"check: {VAL[network]} images of npz" in out and out.rstrip().endswith("passed"), out
    path = ckpt.with_name(ckpt.stem + {"onnx": ".onnx", "torchscript": ".torchscript.pt"}[fmt])
    run, meta, signature = _load_back(path, fmt)
    if signature is not None:
        name, kind, dims = signature
        assert (name, kind, dims[1:]) == ("images", "tensor(uint8)", [shape[1], shape[2], shape[0]])
        assert isinstance(dims[0], str)  # a dynamic batch
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    pre = json.loads(meta["preprocessing"])
    assert pre["input_size"] == list(shape) and pre["mean"] == pytest.approx(NETWORKS[network][1])
    for n, seed in ((1, 0), (7, 1)):
        images = _uint8_batch(n, shape, seed)
        want, got = _checkpoint_probs(ckpt, images), run(images)
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        assert (got.argmax(1) == want.argmax(1)).all()
    # recorded as export's, so --overwrite may replace it and nothing else
    assert path.name in json.loads((ckpt.parent / ".lit-imgcls-exports").read_text())["files"]


def _exported(ckpt: Path, fmt: str) -> Path:
    """The file export writes by default for ``ckpt``, written now if an earlier test did not (a -k selection)."""
    path = ckpt.with_name(ckpt.stem + {"onnx": ".onnx", "torchscript": ".torchscript.pt"}[fmt])
    if not path.exists():
        assert main(["export", "--checkpoint", str(ckpt), "--format", fmt]) == 0
    return path


def test_predict_and_score_take_the_exported_file(checkpoints, tmp_path, capsys):
    """Both formats predict what the checkpoint predicts (images prepared by the file's own metadata) and score
    its top-1 on the same data (named on the command line: an export holds no recipe)."""
    from PIL import Image

    ckpt = checkpoints["lenet"]
    data = ckpt.parents[2] / "lenet.npz"
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, digit in enumerate(np.load(data)["x_val"][:4, :, :, 0]):
        Image.fromarray(digit).resize((40, 40)).save(folder / f"{i}.png")  # resized by predict to 28 x 28

    def predictions(model: Path):
        assert main(["predict", "--checkpoint", str(model), "--format", "json", "--top-k", "3", str(folder)]) == 0
        return {r["input"]: r["predictions"] for r in json.loads(capsys.readouterr().out)}

    def top1(model: Path, *extra: str) -> str:
        assert main(["score", "--checkpoint", str(model), "--top-k", "0", "--confusion-png",
                     str(tmp_path / "c.png"), *extra]) == 0, capsys.readouterr().err
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("top-1"))

    files = {fmt: _exported(ckpt, fmt) for fmt in ("onnx", "torchscript")}
    capsys.readouterr()
    want, want_top1 = predictions(ckpt), top1(ckpt)
    for fmt in ("onnx", "torchscript"):
        got = predictions(files[fmt])
        assert got.keys() == want.keys()
        for name, preds in got.items():
            assert [p["class"] for p in preds] == [p["class"] for p in want[name]]
            assert [p["probability"] for p in preds] == pytest.approx([p["probability"] for p in want[name]], abs=1e-5)
        assert top1(files[fmt], "--dataset", "npz", "--data-train", str(data)) == want_top1
    assert main(["score", "--checkpoint", str(files["onnx"]), "--dataset", "npz", "--data-train", str(data),
                 "--print-recipe"]) == 0
    assert "image_shape: 1,28,28" in capsys.readouterr().out  # the file's input, beside the data named here
    assert main(["score", "--checkpoint", str(files["onnx"])]) == 2
    _one_line(capsys, "holds no recipe", "--dataset")
    assert main(["predict", "--checkpoint", str(files["onnx"]), "--gpus", "0", str(folder)]) == 2
    _one_line(capsys, "runs on the CPU", "--gpus")


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lit-imgcls: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_a_wrong_mean_in_the_exported_file_fails_the_check(checkpoints, tmp_path, capsys):
    """The deliberately wrong preprocessing: each format's normalisation constant for the mean is shifted by
    20 grey levels in a copy of the file; --check-file then fails in one line (exit 2) after printing the figures."""
    import onnx
    import torch
    from onnx import numpy_helper

    ckpt = checkpoints["lenet"]
    onnx_file, ts_file = _exported(ckpt, "onnx"), _exported(ckpt, "torchscript")
    model = onnx.load(str(onnx_file))
    (mean,) = [t for t in model.graph.initializer if "pixel_mean" in t.name]
    mean.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(mean) + 20, mean.name))
    bad_onnx = tmp_path / "bad.onnx"
    onnx.save(model, str(bad_onnx))
    extra = {"class_names": "", "preprocessing": ""}
    scripted = torch.jit.load(str(ts_file), _extra_files=extra)
    scripted.pixel_mean += 20
    bad_ts = tmp_path / "bad.torchscript.pt"
    torch.jit.save(scripted, str(bad_ts), _extra_files=extra)
    for bad in (bad_onnx, bad_ts):
        assert main(["export", "--checkpoint", str(ckpt), "--check-file", str(bad)]) == 2
        out = capsys.readouterr()
        assert "FAILED" in out.out and "largest probability difference" in out.out, out.out
        err = out.err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("lit-imgcls: error: export check failed"), err
    # the untouched file still passes, with a tighter top-1 tolerance than the default
    assert main(["export", "--checkpoint", str(ckpt), "--check-file", str(onnx_file), "--tol-top1", "0"]) == 0
    assert "passed" in capsys.readouterr().out


def test_bad_inputs_are_one_line_and_nothing_is_replaced(checkpoints, tmp_path, capsys):
    ckpt = str(checkpoints["lenet"])
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"a user's own file")
    cases = [
        (["--checkpoint", str(tmp_path / "none.ckpt"), "--format", "onnx"], ("checkpoint not found",)),
        (["--checkpoint", ckpt, "--format", "tflite"], ("--format", "onnx", "torchscript")),
        (["--checkpoint", ckpt], ("--format onnx or --format torchscript",)),
        (["--format", "onnx"], ("--checkpoint",)),
        (["--checkpoint", ckpt, "--format", "onnx", "--out", str(mine)], ("exists", "--overwrite")),
        (["--checkpoint", ckpt, "--format", "onnx", "--out", str(mine), "--overwrite"], ("not a file lit-imgcls wrote",)),
        (["--checkpoint", ckpt, "--check-file", str(mine)], ("neither a TorchScript nor an ONNX model",)),
        (["--checkpoint", ckpt, "--check-file", ckpt], ("not a TorchScript model",)),
        (["--checkpoint", ckpt, "--check-file", str(tmp_path / "gone.onnx")], ("exported model not found",)),
        (["--checkpoint", ckpt, "--format", "onnx", "--tol-prob", "-1"], ("--tol-prob",)),
        (["--checkpoint", ckpt, "--format", "onnx", "--out", "s3://bucket/m.onnx"], ("local file",)),
        (["--checkpoint", ckpt, "--format", "onnx", "--out", str(tmp_path)], ("is a folder",)),
        # the check's data flags are refused before the file is written (it was written, then the check refused)
        (["--checkpoint", ckpt, "--format", "onnx", "--check", "--out", str(tmp_path / "typo.onnx"), "--data-val",
          str(tmp_path / "nothere")], ("data_val does not exist",)),
    ]
    for args, needles in cases:
        assert main(["export", *args]) == 2, args
        _one_line(capsys, *needles)
    assert mine.read_bytes() == b"a user's own file" and not (tmp_path / "typo.onnx").exists()
    # a file export wrote is replaced with --overwrite, and refused without it
    ours = tmp_path / "ours.torchscript.pt"
    assert main(["export", "--checkpoint", ckpt, "--format", "torchscript", "--out", str(ours)]) == 0
    assert main(["export", "--checkpoint", ckpt, "--format", "torchscript", "--out", str(ours)]) == 2
    _one_line(capsys, "exists")
    assert main(["export", "--checkpoint", ckpt, "--format", "torchscript", "--out", str(ours), "--overwrite"]) == 0
    # ... unless it was changed since
    ours.write_bytes(ours.read_bytes() + b"\0")
    assert main(["export", "--checkpoint", ckpt, "--format", "torchscript", "--out", str(ours), "--overwrite"]) == 2
    _one_line(capsys, "was changed since")
    # the folder's own record of what export wrote is never an --out: it would hold the model and lose the record
    record = tmp_path / ".lit-imgcls-exports"
    before = record.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(record), *extra]) == 2
        _one_line(capsys, "record")
    assert record.read_bytes() == before
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(fresh / ".lit-imgcls-exports")]) == 2
    _one_line(capsys, "record")
    assert not list(fresh.iterdir())


def test_an_export_damaged_in_its_weights_is_refused_not_scored(checkpoints, tmp_path, capsys):
    """Bytes overwritten in the middle of an ONNX file land in its weights: onnxruntime still loads it, and it
    gave NaN for every class while predict and score exited 0. Its output now gives it away, in one line."""
    good = _exported(checkpoints["lenet"], "onnx")
    bad = tmp_path / "damaged.onnx"
    blob = bytearray(good.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 64] = b"\xff" * 64  # 0xffffffff is a float32 NaN
    bad.write_bytes(bytes(blob))
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(bad), str(image)]) == 2
    _one_line(capsys, "damaged")
    assert main(["predict", "--checkpoint", str(good), str(image)]) == 0


def test_a_missing_checkpoint_in_a_real_process(tmp_path):
    res = run_cli("export", "--checkpoint", str(tmp_path / "none.ckpt"), "--format", "onnx", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"lit-imgcls: error: checkpoint not found: {tmp_path / 'none.ckpt'}"], res.stderr
    assert not list(tmp_path.iterdir())
