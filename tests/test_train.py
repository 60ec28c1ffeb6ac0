"""Training on real MNIST: checkpoints per epoch, exact resume, evaluation, in-memory arrays, corrupt checkpoints."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lit_imgcls.io import load_checkpoint

from conftest import REPO, quick_args, run_cli


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_two_epochs_equal_one_epoch_resumed(tmp_path):
    """A 2-epoch run and a 1-epoch run continued with --load-epoch 1 end with the same weights and optimizer."""
    common = dict(num_examples=2000, lr=0.1, lr_factor=0.9, lr_factor_epoch=0.5, seed=3)
    full = run_cli("fit", *quick_args(tmp_path / "a", num_epochs=2, **common), cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    first = run_cli("fit", *quick_args(tmp_path / "b", num_epochs=1, **common), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("fit", *quick_args(tmp_path / "b", num_epochs=2, load_epoch=1, **common), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(tmp_path / "a/model/mnist-0002.ckpt")
    b = load_checkpoint(tmp_path / "b/model/mnist-0002.ckpt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-5, atol=1e-6, msg=k)
    # optimizer momentum buffers and the LR schedule's position too
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(sa["momentum_buffer"], sb["momentum_buffer"], rtol=1e-5, atol=1e-6)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    # and the weights did change in the second epoch (the test would be empty otherwise)
    one = _weights(tmp_path / "b/model/mnist-0001.ckpt")
    assert not torch.equal(one["net.head.weight"], b["state_dict"]["net.head.weight"])


def test_fused_steps_train_exactly_as_single_batches(tmp_path):
    """K batches per Lightning batch (31 batches, K=5: the last item is partial) give the same run as K=1."""
    common = dict(num_examples=2000, num_epochs=2, lr=0.1, lr_factor=0.9, lr_factor_epoch=0.5, seed=3)
    runs = {}
    for k in (1, 5):
        res = run_cli("fit", *quick_args(tmp_path / str(k), fused_steps=k, **common), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        runs[k] = (load_checkpoint(tmp_path / f"{k}/model/mnist-0002.ckpt"), res.stdout)
    (a, out1), (b, out5) = runs[1], runs[5]
    assert a["global_step"] == b["global_step"] == 2 * (2000 // 64)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 62
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-5, atol=1e-6, msg=key)
    # Speedometer windows count optimizer steps either way
    assert "Epoch[1] Batch [20-30]" in out1
    assert re.search(r"Epoch\[1\] Batch \[\d+-30\]", out5), out5


def test_checkpoints_per_epoch_with_recipe_beside(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path, num_epochs=2, num_examples=640), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "model/mnist-0001.ckpt").is_file() and (tmp_path / "model/mnist-0002.ckpt").is_file()
    recipe = (tmp_path / "model/mnist-recipe.yaml").read_text()
    assert "num_examples: 640" in recipe
    assert re.search(r"checkpoint \S*model/mnist-0002\.ckpt", res.stdout)
    ckpt = load_checkpoint(tmp_path / "model/mnist-0002.ckpt")
    assert ckpt["lit_imgcls"]["class_names"] == [str(i) for i in range(10)]
    assert ckpt["lit_imgcls"]["recipe"]["network"] == "lenet"
    run = re.search(r"logs (\S+)", res.stdout).group(1)
    assert "num_examples: 640" in open(f"{run}/recipe.yaml").read()
    assert "train/samples_per_sec" in open(f"{run}/metrics.csv").readline()
    # no temporary files left behind by the atomic writes
    assert not [p for p in (tmp_path / "model").iterdir() if p.name.startswith(".")]


def test_validate_and_test_report_fits_accuracy(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    fit_acc = float(re.search(r"val top-1 accuracy ([0-9.]+)", res.stdout).group(1))
    assert fit_acc > 0.8  # 3,000 images, one epoch: it learned
    for command in ("validate", "test"):
        out = run_cli(command, *quick_args(tmp_path), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        key = "val/acc" if command == "validate" else "test/acc"
        got = float(re.search(rf"{key} ([0-9.]+)", out.stdout).group(1))
        assert got == pytest.approx(fit_acc, abs=1e-4)
        assert out.stdout.startswith("epoch 1:")


def test_load_epoch_that_is_missing_or_corrupt(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path, num_examples=640), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    missing = run_cli("fit", *quick_args(tmp_path, num_epochs=9, load_epoch=8), cwd=tmp_path)
    assert missing.returncode == 2 and "no checkpoint for epoch 8" in missing.stderr and "saved under this prefix: 1" in missing.stderr
    ckpt = tmp_path / "model/mnist-0001.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    for args in (("fit", *quick_args(tmp_path, num_epochs=2, load_epoch=1)), ("validate", *quick_args(tmp_path, load_epoch=1))):
        out = run_cli(*args, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "mnist-0001.ckpt is damaged: its sha256" in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_checkpoint_crafted_to_run_code_is_refused(tmp_path):
    res = run_cli("fit", *quick_args(tmp_path, num_examples=640), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    ckpt = load_checkpoint(tmp_path / "model/mnist-0001.ckpt")
    ckpt["evil"] = Evil()
    path = tmp_path / "model/mnist-0001.ckpt"
    torch.save(ckpt, path)
    out = run_cli("fit", *quick_args(tmp_path, num_epochs=2, load_epoch=1), cwd=tmp_path)
    assert out.returncode == 2 and "is damaged" in out.stderr  # the checksum file no longer matches
    # whoever can write the checkpoint can write its checksum too: then weights_only loading is the guard
    import hashlib

    (tmp_path / "model/mnist-0001.ckpt.sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    out = run_cli("fit", *quick_args(tmp_path, num_epochs=2, load_epoch=1), cwd=tmp_path)
    assert out.returncode == 2 and "holds Python objects" in out.stderr, out.stderr
    assert "weights_only" not in out.stderr  # PyTorch's advice to load it anyway is never passed on
    assert not marker.exists()


def test_fit_from_numpy_arrays_in_python(tmp_path, mnist_arrays):
    """MXNet's NDArrayIter: train straight from arrays held by the caller."""
    from lit_imgcls.data.arrays import ArrayDataModule
    from lit_imgcls.engine import fit
    from lit_imgcls.recipe import Recipe

    x, y = mnist_arrays["train_images"][:3000], mnist_arrays["train_labels"][:3000]
    xv, yv = mnist_arrays["test_images"][:1000], mnist_arrays["test_labels"][:1000]
    dm = ArrayDataModule(x, y, xv, yv, batch_size=64, class_names=[f"digit{i}" for i in range(10)])
    r = Recipe(network="lenet", dataset="mnist", num_epochs=1, lr=0.05, progress_bar=False, threads=2,
               run_dir=str(tmp_path / "runs"), model_prefix=str(tmp_path / "m"))
    res = fit(r, datamodule=dm)
    assert res.metrics["val/acc"] > 0.8
    assert load_checkpoint(res.checkpoint)["lit_imgcls"]["class_names"][3] == "digit3"
    assert isinstance(x, np.ndarray) and x.dtype == np.uint8  # the caller's arrays are untouched
    assert x.shape == (3000, 28, 28)


@pytest.mark.slow
def test_main_job_reaches_99_percent_on_real_mnist(tmp_path):
    """The README's main command: LeNet on all of MNIST to >= 99.0% top-1 on the official test set."""
    import shutil

    shutil.copy(REPO / "recipes/mnist.yaml", tmp_path / "mnist.yaml")
    res = run_cli("fit", "--recipe", "mnist.yaml", "--progress-bar", "false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    acc = float(re.search(r"val top-1 accuracy ([0-9.]+)", res.stdout).group(1))
    assert acc >= 0.99, res.stdout[-2000:]
    assert (tmp_path / "model/mnist-0002.ckpt").is_file()
    seconds = float(re.search(r"training ([0-9.]+) s", res.stdout).group(1))
    assert seconds > 0
