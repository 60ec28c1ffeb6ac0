"""Progressive resizing and training below the test resolution (issue 17 item 3: FFCV's min_res/max_res/start_ramp/
end_ramp), and the linear LR schedule of recipes/imagenet.yaml: values by hand, a real fit whose network sees the
scheduled sizes, the refusals, and an exact resume (in-process, tiny data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lit_imgcls.recipe import Recipe
from lit_imgcls.schedules import ResolutionSchedule

N_TRAIN = 96


def test_ffcv_rn50_88_epoch_ramp_by_hand():
    """rn50_88_epochs.yaml: 160 -> 192 over epochs 65-76. The line reaches 176 (half way to the next multiple of 32)
    between epochs 70 (174.5 -> 160) and 71 (177.5 -> 192)."""
    r = ResolutionSchedule(160, 192, 65, 76)
    assert [r(e) for e in (0, 64, 65, 66, 70)] == [160] * 5
    assert [r(e) for e in (71, 75, 76, 87, 500)] == [192] * 5
    assert r.sides(88) == [160, 192]


def test_ramp_rounds_to_the_nearest_multiple_of_32_ties_to_even_and_stays_within_its_ends():
    # 128 -> 256 over epochs 0-8: the line is 128 + 16 e; e = 1: 144 = 4.5 x 32 -> 4 x 32 (even), e = 3: 176 = 5.5
    # x 32 -> 6 x 32, e = 5: 208 = 6.5 x 32 -> 6 x 32, e = 7: 240 = 7.5 x 32 -> 8 x 32 (numpy's round, as FFCV's)
    r = ResolutionSchedule(128, 256, 0, 8)
    assert [r(e) for e in range(10)] == [128, 128, 160, 192, 192, 192, 224, 256, 256, 256]
    # 16 -> 28 px images: 19 rounds to 32, kept at max_res; epoch 0 (= start_ramp) is min_res exactly
    assert [ResolutionSchedule(16, 28, 0, 4)(e) for e in range(5)] == [16, 28, 28, 28, 28]
    assert ResolutionSchedule(100, 100)(3) == 100  # constant: training below the test side, no ramp
    assert ResolutionSchedule.scale(16, 28, 56) == (16, 32)  # the shorter side, aspect ratio kept
    assert ResolutionSchedule(16, 16).size(0, 28, 28) == (16, 16)


class _Sizes:
    """The (epoch, (H, W)) of every batch a module's network sees in training, and the (H, W) of its other forward
    passes (validation; the size check before training), from a forward pre-hook."""

    def __init__(self, module) -> None:
        self.module = module
        self.train: list[tuple[int, tuple[int, int]]] = []
        self.other: set[tuple[int, int]] = set()
        module.net.register_forward_pre_hook(self._hook)

    def _hook(self, net, args) -> None:
        size = tuple(args[0].shape[-2:])
        if net.training:
            self.train.append((self.module.trainer.current_epoch, size))
        else:
            self.other.add(size)


def _data(batch_size: int = 32):
    from lit_imgcls.data.arrays import ArrayDataModule

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (N_TRAIN + 32, 28, 28), dtype=np.uint8)
    y = np.arange(N_TRAIN + 32) % 3
    return ArrayDataModule(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], batch_size=batch_size)


def _recipe(tmp: Path, **changes) -> Recipe:
    base = dict(network="test_resnet", dataset="mnist", lr=0.05, mom=0.9, wd=0.0, batch_size=32, num_epochs=2,
                lr_schedule="constant", threads=1, progress_bar=False, disp_batches=100, run_dir=str(tmp / "runs"),
                data_nthreads=0, seed=5, min_res=16, max_res=28, start_ramp=0, end_ramp=1)
    base.update(changes)
    return Recipe(**base)


@pytest.mark.parametrize("device_stages", [False, True], ids=["plain", "augment_device"])
def test_a_fit_trains_each_epoch_at_its_scheduled_size_and_validates_at_the_input_size(tmp_path, capsys, monkeypatch,
                                                                                         device_stages):
    """With augment_device too: its stages run at the input size (a 2-pixel shift of 28 x 28 images), then the
    batch is resized."""
    from lit_imgcls import engine

    seen: list[_Sizes] = []
    build = engine.build_module

    def build_and_watch(recipe, spec, *rest):  # the module fit builds, with a hook on its network (nothing replaced)
        module = build(recipe, spec, *rest)
        seen.append(_Sizes(module))
        return module

    monkeypatch.setattr(engine, "build_module", build_and_watch)
    dm = _data()
    stages = dict(augment=[{"name": "random_crop", "pad": 2}, "mirror"], augment_device=True) if device_stages else {}
    if device_stages:
        dm.augment_on_device = True  # what build_datamodule sets for a recipe's own dataset
    result = engine.fit(_recipe(tmp_path, **stages), datamodule=dm)
    steps = N_TRAIN // 32
    # epoch 0 (= start_ramp) at min_res 16, epoch 1 (= end_ramp) at max_res 28: the 28 px batches as they came
    assert seen[0].train == [(0, (16, 16))] * steps + [(1, (28, 28))] * steps
    # validation at the input size; the check before training ran the network once at 16 too
    assert seen[0].other == {(16, 16), (28, 28)}
    assert result.steps == 2 * steps
    out = capsys.readouterr().out
    assert out.count("Train-resolution=") == 2, out
    assert "Epoch[0] Train-resolution=16x16" in out and "Epoch[1] Train-resolution=28x28" in out


def test_resume_with_progressive_resizing_is_bit_exact(tmp_path):
    from lit_imgcls.engine import fit
    from lit_imgcls.io import load_checkpoint

    def run(folder: str, **changes):
        return fit(_recipe(tmp_path / folder, model_prefix=str(tmp_path / folder / "m"), **changes),
                   datamodule=_data())

    straight = run("a")
    run("b", num_epochs=1, end_ramp=1)
    resumed = run("b", load_epoch=1)
    a, b = load_checkpoint(straight.checkpoint)["state_dict"], load_checkpoint(resumed.checkpoint)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _main(capsys, *argv: str) -> tuple[int, str]:
    from lit_imgcls.cli import main

    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flags, says", [
    (["--min-res", "192", "--max-res", "160", "--start-ramp", "1", "--end-ramp", "2"],
     "min_res 192 exceeds max_res 160: the training side grows from min_res to max_res (FFCV's 160 -> 192)"),
    (["--min-res", "16", "--max-res", "24", "--start-ramp", "2", "--end-ramp", "1"],
     "start_ramp 2 is after end_ramp 1: the ramp from min_res to max_res starts at start_ramp and ends at end_ramp"),
    (["--min-res", "0"], "min_res must be a side in pixels in [1, 16384] (unset: image_shape's), got 0"),
    (["--max-res", "20000"], "max_res must be a side in pixels in [1, 16384] (unset: image_shape's), got 20000"),
    (["--min-res", "16", "--max-res", "24", "--start-ramp", "-1", "--end-ramp", "1"],
     "start_ramp must be an epoch >= 0 (0-based, as FFCV's), got -1"),
    (["--min-res", "16", "--max-res", "24", "--start-ramp", "0"],
     "start_ramp and end_ramp go together (the epochs where the training side leaves min_res and reaches max_res); "
     "got start_ramp 0, end_ramp None"),
    (["--min-res", "16", "--max-res", "24"], "min_res 16 and max_res 24 differ: give --start-ramp and --end-ramp"),
    (["--start-ramp", "0", "--end-ramp", "1"], "start_ramp and end_ramp are set (0, 1) but min_res and max_res are not"),
    (["--min-res", "16", "--max-res", "16", "--start-ramp", "0", "--end-ramp", "1"],
     "start_ramp and end_ramp are set (0, 1) but min_res and max_res are both 16: there is no ramp"),
    # max_res unset: the image's 28 px side, known once the data is (then min_res 32 exceeds it)
    (["--min-res", "32"], "min_res 32 exceeds max_res 28 (max_res unset: the image_shape side 28)"),
    # lenet's and mlp's linear layers are sized for 28 x 28: refused before anything is written
    (["--network", "lenet", "--min-res", "16", "--max-res", "16"], "network lenet cannot train at 16x16 px"),
    (["--network", "mlp", "--min-res", "16", "--max-res", "28", "--start-ramp", "0", "--end-ramp", "1"],
     "network mlp cannot train at 16x16 px (min_res 16, max_res 28; its input is 28x28)"),
])
def test_bad_resolution_settings_are_one_line_and_exit_2(tmp_path, capsys, flags, says):
    code, err = _main(capsys, "fit", "--network", "test_resnet", "--num-epochs", "2", "--num-examples", "64",
                      "--batch-size", "32", "--run-dir", str(tmp_path / "runs"), "--model-prefix",
                      str(tmp_path / "m"), *flags)
    assert code == 2 and err.startswith(f"lit-imgcls: error: {says}") and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())  # refused before anything was written
