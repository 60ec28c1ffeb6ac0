"""Optimisation features of issue 17 item 3: gradient clipping and EMA of the weights (in-process, tiny data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_imgcls.recipe import Recipe

N_TRAIN = 64


def _data(batch_size: int = 16, n_train: int = N_TRAIN):
    from lit_imgcls.data.arrays import ArrayDataModule

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_train + 32, 8, 8), dtype=np.uint8)
    y = np.arange(n_train + 32) % 3
    return ArrayDataModule(x[:n_train], y[:n_train], x[n_train:], y[n_train:], batch_size=batch_size)


def _recipe(tmp: Path, **changes) -> Recipe:
    base = dict(network="mlp", dataset="mnist", lr=0.1, mom=0.0, wd=0.0, batch_size=16, num_epochs=1,
                lr_schedule="constant", threads=1, progress_bar=False, disp_batches=1, run_dir=str(tmp / "runs"),
                data_nthreads=0, seed=3)
    base.update(changes)
    return Recipe(**base)


class _Record:
    """Copies of the network's weights after every training item (after the optimizer step and the EMA's)."""

    def __new__(cls):
        import lightning as L

        class Record(L.Callback):
            def __init__(self):
                self.weights: list[dict[str, torch.Tensor]] = []

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.weights.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

        return Record()


def _train(recipe: Recipe, steps: int, callbacks=()):
    """Builds the module as `fit` does and takes ``steps`` optimizer steps; returns the module."""
    import lightning as L

    from lit_imgcls.engine import DataSpec, build_module
    from lit_imgcls.recipe import validate

    validate(recipe)
    L.seed_everything(recipe.seed, verbose=False)
    dm = _data(recipe.batch_size)
    module = build_module(recipe, DataSpec.of(dm))
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=list(callbacks))
    trainer.fit(module, datamodule=dm)
    return module


def _grads(module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in module.net.parameters()]


def _norm(grads) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def test_clip_gradient_by_norm_scales_the_step_gradients_to_the_bound(tmp_path):
    free = _grads(_train(_recipe(tmp_path, lr=10.0), 1))
    bound = 0.01
    assert _norm(free) > 10 * bound  # so that the clip has something to do
    clipped = _grads(_train(_recipe(tmp_path, lr=10.0, clip_gradient=bound), 1))
    assert _norm(clipped) <= bound * (1 + 1e-5)
    scale = bound / _norm(free)  # torch's clip_grad_norm_: every gradient times the same factor
    for g, c in zip(free, clipped):
        torch.testing.assert_close(c, g * scale, rtol=1e-4, atol=1e-8)


def test_clip_gradient_by_value_clamps_each_element(tmp_path):
    free = _grads(_train(_recipe(tmp_path, lr=10.0), 1))
    bound = 1e-3
    assert max(float(g.abs().max()) for g in free) > 10 * bound
    clipped = _grads(_train(_recipe(tmp_path, lr=10.0, clip_gradient=bound, clip_gradient_algorithm="value"), 1))
    for g, c in zip(free, clipped):
        assert float(c.abs().max()) <= float(torch.tensor(bound))  # the bound as a float32, as the gradients
        torch.testing.assert_close(c, g.clamp(-bound, bound))


def test_ema_weights_are_the_hand_computed_average_of_each_steps_weights(tmp_path):
    decay, steps = 0.8, 4
    record = _Record()
    module = _train(_recipe(tmp_path, ema_decay=decay), steps, [record])
    assert len(record.weights) == steps and module._ema.steps == steps
    expected = dict(record.weights[0])  # the first update copies the weights
    for w in record.weights[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w[k] if w[k].is_floating_point() else w[k]
                    for k in expected}
    got = module._ema.model.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7)
    # and they are not the trained weights themselves
    assert not all(torch.equal(got[k], v) for k, v in record.weights[-1].items())


def _fit(recipe: Recipe):
    from lit_imgcls.engine import fit

    return fit(recipe, datamodule=_data(recipe.batch_size))


def test_ema_checkpoints_hold_the_ema_weights_and_resume_exactly(tmp_path):
    from lit_imgcls.io import load_checkpoint
    from lit_imgcls.training_options import EMA_KEY, RAW_WEIGHTS_KEY

    ema = dict(ema_decay=0.9, num_epochs=2, mom=0.9)
    straight = _fit(_recipe(tmp_path / "a", model_prefix=str(tmp_path / "a" / "m"), **ema))
    _fit(_recipe(tmp_path / "b", model_prefix=str(tmp_path / "b" / "m"), **{**ema, "num_epochs": 1}))
    first = load_checkpoint(str(tmp_path / "b" / "m-0001.ckpt"))
    assert first["lit_imgcls"]["weights"] == "ema"
    assert first[EMA_KEY]["n_averaged"] == N_TRAIN // 16  # one update per optimizer step
    net = [k for k in first["state_dict"] if k.startswith("net.")]
    assert any(not torch.equal(first["state_dict"][k], first[RAW_WEIGHTS_KEY][k]) for k in net)
    resumed = _fit(_recipe(tmp_path / "b", model_prefix=str(tmp_path / "b" / "m"), load_epoch=1, **ema))
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert b[EMA_KEY] == a[EMA_KEY] == {"decay": 0.9, "n_averaged": 2 * N_TRAIN // 16}
    for key in ("state_dict", RAW_WEIGHTS_KEY):  # the EMA and the trained weights, bit for bit
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


@pytest.mark.parametrize("flags, says", [
    (["--clip-gradient", "-1"], "clip_gradient must be >= 0 (0 = off), got -1.0"),
    (["--clip-gradient-algorithm", "max"], "--clip-gradient-algorithm must be one of norm, value, got 'max'"),
    (["--ema-decay", "1"], "ema_decay must be in [0, 1) (0 = off; 0.999 is usual), got 1.0"),
    (["--ema-decay", "-0.5"], "ema_decay must be in [0, 1) (0 = off; 0.999 is usual), got -0.5"),
    (["--accumulate-grad-batches", "0"], "accumulate_grad_batches must be a positive integer (1 = off), got 0"),
    # DDP would sync only each step's first micro-batch (once per forward of its wrapper)
    (["--accumulate-grad-batches", "2", "--num-processes", "2", "--num-examples", "256"],
     "accumulate_grad_batches 2 works on one worker (or kv_store dist_async), not with 2 synchronous workers "
     "(kv_store device): they already share the batch; use accumulate_grad_batches 1, or a larger batch_size"),
])
def test_bad_optimisation_values_are_one_line_and_exit_2(tmp_path, capsys, flags, says):
    from lit_imgcls.cli import main

    try:
        code = main(["fit", "--network", "mlp", "--num-epochs", "1", "--run-dir", str(tmp_path / "runs"), *flags])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"lit-imgcls: error: {says}\n"
    assert not (tmp_path / "runs").exists()


def test_fit_validate_score_and_predict_say_they_use_the_ema_weights(tmp_path, capsys, mnist_arrays):
    from PIL import Image

    from lit_imgcls.cli import main

    prefix = str(tmp_path / "m")
    common = ["--network", "mlp", "--dataset", "mnist", "--num-examples", "256", "--batch-size", "64",
              "--threads", "1", "--progress-bar", "false", "--model-prefix", prefix]
    assert main(["fit", *common, "--num-epochs", "1", "--ema-decay", "0.9", "--run-dir", str(tmp_path / "runs")]) == 0
    assert "val top-1 accuracy" in (out := capsys.readouterr().out) and "(EMA weights)" in out, out
    assert main(["validate", *common, "--ema-decay", "0.9"]) in (0, None)
    assert capsys.readouterr().out.rstrip().endswith("m-0001.ckpt (EMA weights)")
    assert main(["score", "--checkpoint", f"{prefix}-0001.ckpt", "--num-examples", "256"]) in (0, None)
    assert ", EMA weights" in capsys.readouterr().out.splitlines()[0]
    Image.fromarray(mnist_arrays["test_images"][0]).save(tmp_path / "digit.png")
    assert main(["predict", "--checkpoint", f"{prefix}-0001.ckpt", str(tmp_path / "digit.png")]) in (0, None)
    assert "predicting with the checkpoint's EMA weights (it was trained with ema_decay 0.9)" in capsys.readouterr().err


def test_accumulating_two_batches_of_16_trains_as_one_batch_of_32(tmp_path):
    """mlp (no BatchNorm, whose statistics would differ per micro-batch); steps stay optimizer steps."""
    import csv

    from lit_imgcls.engine import fit
    from lit_imgcls.io import load_checkpoint

    runs = {}
    for name, batch, parts in (("one", 32, 1), ("two", 16, 2)):
        recipe = _recipe(tmp_path / name, batch_size=batch, accumulate_grad_batches=parts, mom=0.9,
                         model_prefix=str(tmp_path / name / "m"), save_every_steps=1)
        dm = _data(batch)
        runs[name] = fit(recipe, datamodule=dm)
        assert dm.batch_size == batch  # the caller's DataModule as it was
    one, two = (load_checkpoint(runs[k].checkpoint)["state_dict"] for k in ("one", "two"))
    assert runs["two"].steps == runs["one"].steps == N_TRAIN // 32
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    # Speedometer rows and step checkpoints at optimizer steps 1 and 2, not at micro-batches 1-4
    with open(Path(runs["two"].run_dir) / "metrics.csv", newline="") as f:
        assert sorted({int(r["step"]) for r in csv.DictReader(f) if r.get("train/samples_per_sec")}) == [1, 2]
    # (the epoch's last step has its epoch checkpoint instead)
    assert [p.name for p in (tmp_path / "two").glob("m-step-*.ckpt")] == ["m-step-00000001.ckpt"]


def test_tta_flip_scores_the_mean_of_the_image_and_its_mirror(tmp_path, capsys, mnist_arrays):
    from lit_imgcls.checkpoint_meta import load_module
    from lit_imgcls.cli import main
    from lit_imgcls.engine import build_datamodule, evaluate
    from lit_imgcls.io import load_checkpoint

    prefix = str(tmp_path / "m")
    np.savez(tmp_path / "digits.npz", x_train=mnist_arrays["train_images"][:256],
             y_train=mnist_arrays["train_labels"][:256], x_val=mnist_arrays["test_images"][:200],
             y_val=mnist_arrays["test_labels"][:200])
    args = dict(network="mlp", dataset="npz", data_train=str(tmp_path / "digits.npz"), batch_size=64, threads=1,
                progress_bar=False, model_prefix=prefix, run_dir=str(tmp_path / "runs"), num_epochs=1)
    assert main(["fit", *[f"--{k.replace('_', '-')}={v}" for k, v in args.items()]]) == 0
    ckpt = f"{prefix}-0001.ckpt"
    # by hand: both passes of every validation image, their softmax averaged
    module, _ = load_module(ckpt, load_checkpoint(ckpt))
    dm = build_datamodule(Recipe(**args))
    dm.setup("validate")
    probs, plain, labels = [], [], []
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            x = module.normalize(x)
            p = module.net(x).softmax(1)
            probs.append((p + module.net(x.flip(-1)).softmax(1)) / 2)
            plain.append(p)
            labels.append(y)
    probs, plain, labels = torch.cat(probs), torch.cat(plain), torch.cat(labels)
    acc = float((probs.argmax(1) == labels).float().mean())
    loss = float(torch.nn.functional.nll_loss(probs.log(), labels))
    assert acc != float((plain.argmax(1) == labels).float().mean())  # the mirror changes the answer here

    capsys.readouterr()
    result = evaluate(Recipe(**args, tta_flip=True), "validate")
    assert result.tta_flip
    assert result.metrics["val/acc"] == pytest.approx(acc, abs=1e-6)
    assert result.metrics["val/loss"] == pytest.approx(loss, rel=1e-5)
    module.evaluation = type(module.evaluation)(tta_flip=True)
    torch.testing.assert_close(module.class_probs(module.normalize(next(iter(dm.val_dataloader()))[0])),
                               probs[: len(next(iter(dm.val_dataloader()))[1])])
    assert main(["score", "--checkpoint", ckpt, "--tta-flip", "true"]) in (0, None)
    out = capsys.readouterr().out
    assert "test-time flip averaging" in out.splitlines()[0]
    assert f"top-1 accuracy {acc:.6f}" in out
    assert main(["validate", *[f"--{k.replace('_', '-')}={v}" for k, v in args.items()], "--tta-flip", "true"]) in (0, None)
    assert capsys.readouterr().out.rstrip().endswith("m-0001.ckpt (test-time flip averaging)")


def test_tta_flip_on_images_one_pixel_wide_is_refused(tmp_path, capsys):
    from lit_imgcls.cli import main

    code = main(["fit", "--network", "mlp", "--image-shape", "1,28,1", "--tta-flip", "true",
                 "--run-dir", str(tmp_path / "runs")])
    assert code == 2
    assert capsys.readouterr().err == ("lit-imgcls: error: tta_flip mirrors images left to right, but image_shape "
                                       "1,28,1 is 1 pixel wide: leave tta_flip false\n")


def test_compile_reaches_torch_compile_and_keeps_the_checkpoint_keys(tmp_path):
    """The flag, not the compilation (tens of seconds on this CPU; docs/BENCHMARKS.md measures what it gives):
    fit's start compiles the network in place, so the state_dict keys are the uncompiled network's."""
    from lit_imgcls.checkpoint_meta import load_weights
    from lit_imgcls.engine import DataSpec, build_module

    dm = _data()
    plain = build_module(_recipe(tmp_path), DataSpec.of(dm))
    compiled = build_module(_recipe(tmp_path, compile=True), DataSpec.of(dm))
    assert compiled.optim.compile and not plain.optim.compile
    compiled.compile_net()
    plain.compile_net()
    assert compiled.net._compiled_call_impl is not None  # nn.Module.compile(): torch.compile of its __call__
    assert plain.net._compiled_call_impl is None
    state = compiled.state_dict()
    assert list(state) == list(plain.state_dict()) and not any("_orig_mod" in k for k in state)
    load_weights(plain, state, "compiled", "mlp", "mlp", "")  # what predict, validate and score do
    for k, v in state.items():
        assert torch.equal(plain.state_dict()[k], v)
