"""A run never reports success it did not have (issue 13 item 1): a NaN loss stops the run at once with exit code 3
and no checkpoint after it; weights that are not finite are refused wherever they are loaded; zero training steps
is an error; the final line says what happened."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch

from conftest import quick_args, run_cli


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_diverging_resume_stops_at_once_keeps_the_good_checkpoint_and_exits_3(tmp_path):
    good = run_cli("fit", *quick_args(tmp_path, num_examples=640, save_period=1), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert re.search(r"^final: val top-1 accuracy 0\.\d{4} \| trained epoch 1 of 1 \(10 steps\) \|", good.stdout, re.M)
    ckpt = tmp_path / "model/mnist-0001.ckpt"
    before = _sha(ckpt)
    bad = run_cli("fit", *quick_args(tmp_path, num_examples=640, num_epochs=3, lr=1e6, load_epoch=1), cwd=tmp_path)
    assert bad.returncode == 3, (bad.returncode, bad.stderr[-2000:])
    errors = [line for line in bad.stderr.splitlines() if line.startswith("lit-imgcls: error:")]
    assert len(errors) == 1 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert re.search(r"the training loss became (nan|inf|-inf) at step \d+ \(epoch 1, lr 1e\+06\)", errors[0]), errors
    assert f"last good checkpoint {ckpt}" in errors[0]
    assert "final:" not in bad.stdout
    assert _sha(ckpt) == before  # not overwritten
    assert sorted(p.name for p in (tmp_path / "model").glob("*.ckpt")) == ["mnist-0001.ckpt"]
    events = sorted((tmp_path / "runs").rglob("events.jsonl"))[-1].read_text()  # the second run's folder
    assert '"status": "failed"' in events.splitlines()[-1] and "NonFiniteLoss" in events.splitlines()[-1]


def test_a_run_diverging_from_the_start_names_no_checkpoint(tmp_path):
    bad = run_cli("fit", *quick_args(tmp_path, num_examples=640, lr=1e9), cwd=tmp_path)
    assert bad.returncode == 3 and "no checkpoint was saved before it" in bad.stderr, bad.stderr[-1500:]
    assert not list((tmp_path / "model").glob("*.ckpt"))


@pytest.mark.slow
def test_two_workers_stop_together_on_one_workers_nan(tmp_path):
    """Both workers see the verdict of either (a reduced flag): neither waits alone in the gradient all-reduce."""
    res = run_cli("fit", *quick_args(tmp_path, num_examples=640, lr=1e9, num_processes=2, threads=1,
                                     data_nthreads=0), cwd=tmp_path, timeout=300)
    assert res.returncode == 3, (res.returncode, res.stderr[-2000:])
    assert "the training loss became" in res.stderr


def _nan_checkpoint(tmp_path):
    from lit_imgcls.io import load_checkpoint, save_checkpoint

    good = run_cli("fit", *quick_args(tmp_path, num_examples=320), cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    state = load_checkpoint(tmp_path / "model/mnist-0001.ckpt")
    name = next(k for k in state["state_dict"] if k.endswith("weight"))
    state["state_dict"][name][0].fill_(float("nan"))
    path = tmp_path / "diverged.ckpt"
    save_checkpoint(state, path)
    return path, name


def test_weights_that_are_not_finite_are_refused_by_every_loader(tmp_path):
    from PIL import Image

    path, name = _nan_checkpoint(tmp_path)
    Image.new("L", (28, 28), 0).save(tmp_path / "digit.png")
    runs = {
        "predict": run_cli("predict", "--checkpoint", str(path), str(tmp_path / "digit.png"), cwd=tmp_path),
        "pretrained": run_cli("fit", *quick_args(tmp_path / "ft", num_examples=320, pretrained=path), cwd=tmp_path),
    }
    for what, res in runs.items():
        assert res.returncode == 2, (what, res.stderr[-1500:])
        line = res.stderr.strip().splitlines()[-1]
        assert "not finite numbers" in line and name.removeprefix("net.") in line and "Traceback" not in res.stderr, (what, line)
    assert "nan" not in runs["predict"].stdout


def test_zero_training_steps_is_an_error(tmp_path):
    """A DataModule whose training loader yields nothing (here a plugin-style one, without class counts)."""
    import lightning as L

    from lit_imgcls.engine import fit
    from lit_imgcls.errors import UsageError
    from lit_imgcls.recipe import Recipe

    class NoBatches(L.LightningDataModule):
        class_names = ["a", "b"]
        image_shape = (1, 8, 8)
        mean, std = (0.5,), (0.5,)

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8),
                                                                               torch.zeros(0, dtype=torch.long)))

    recipe = Recipe(network="mlp", num_epochs=1, progress_bar=False, run_dir=str(tmp_path / "runs"), threads=1)
    with pytest.raises(UsageError, match="took no training step"):
        fit(recipe, datamodule=NoBatches())
