"""``augment_device: true`` (issue 17, item 2): the recipe's per-image stages run in the training step on the whole
batch on the training device (kornia.augmentation; here the CPU). Each mapped stage's statistics on a batch, every
image drawing its own parameters, the same (seed, step) giving the same batch, host-only stages refused in one
line, and short fits on the in-memory and FFCV paths, a resume with it on ending bit-exact."""

from __future__ import annotations

import random

import pytest
import torch

from lit_imgcls.cli import main
from lit_imgcls.data.augment import DeviceAugment, StageContext, check_device_stages
from lit_imgcls.data.stages import PCA_EIGVAL, PCA_EIGVEC
from lit_imgcls.errors import UsageError

from conftest import quick_args
from test_augment import _tiny_npz

N, C, H, W = 64, 3, 16, 16


def _batch(n: int = N, c: int = C, seed: int = 0) -> torch.Tensor:
    """Float pixels in [0, 1] on the grey-level grid, as the module hands them to the stages."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, H, W), generator=g).float() / 255


def _run(stages, x: torch.Tensor, step: int = 3, seed: int = 1) -> torch.Tensor:
    return DeviceAugment(stages, StageContext(tuple(x.shape[1:]), 4), seed)(x.clone(), step)


def _distinct(out: torch.Tensor) -> int:
    return len({o.numpy().tobytes() for o in out})


def test_mirror_flips_about_p_of_the_images_and_leaves_the_rest():
    x = _batch(256)
    out = _run([{"name": "mirror", "p": 0.3}], x)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped ^ kept).all())  # each image exactly one or the other
    assert 0.2 < flipped.float().mean() < 0.4


def test_pad_crop_shifts_each_image_by_at_most_pad_and_fills_with_the_fill_value():
    x = _batch()
    out = _run([{"name": "random_crop", "pad": 3, "fill": 51}], x)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3), value=51 / 255)
    shifts = []
    for o, p in zip(out, padded):
        match = [(dy, dx) for dy in range(7) for dx in range(7) if torch.equal(o, p[:, dy:dy + H, dx:dx + W])]
        assert match, "not a crop of the padded image"
        shifts.append(match[0])
    assert len(set(shifts)) > 10  # each image its own place
    assert any(s != (3, 3) for s in shifts)


@pytest.mark.parametrize("stage", [{"name": "rotate", "degrees": 30}, {"name": "shear", "ratio": 0.3},
                                   {"name": "scale", "min": 0.6, "max": 0.9},
                                   {"name": "random_resized_crop", "area": [0.2, 0.6]},
                                   {"name": "hsl", "h": 30, "s": 60, "l": 60},
                                   {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
                                    "hue": 0.1}])
def test_geometry_and_colour_stages_keep_the_shape_and_draw_per_image(stage):
    """The same image N times in a batch: N different outputs, of the input's shape, within [0, 1]."""
    x = _batch(1).expand(N, -1, -1, -1).contiguous()
    out = _run([stage], x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert _distinct(out) > 8  # one draw per batch gives 1; nearest-pixel warps of 16 x 16 images often coincide


def test_rotation_fills_the_corners_with_the_fill_value():
    x = torch.ones(8, 1, H, W) * (200 / 255)
    out = _run([{"name": "rotate", "degrees": 45, "fill": 17}], x)
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    turned = (out != x).flatten(1).any(1)  # a draw near 0 degrees leaves every pixel
    assert turned.sum() >= 6
    values = set(torch.round(out[turned] * 255).unique().tolist())
    assert values <= {17.0, 200.0} and 17.0 in values
    assert bool((torch.round(corners[turned] * 255) == 17).any())


def test_brightness_multiplies_each_image_by_its_own_factor_in_range():
    x = _batch(N, seed=2) * 0.5  # room to brighten without clamping
    out = _run([{"name": "color_jitter", "brightness": 0.3}], x)
    per_image = []
    for o, i in zip(out, x):
        factors = o[i > 0.05] / i[i > 0.05]
        assert float(factors.max() - factors.min()) < 1e-3  # one factor for every pixel of an image
        per_image.append(float(factors.median()))
    per_image = torch.tensor(per_image)
    assert float(per_image.min()) >= 0.7 - 1e-4 and float(per_image.max()) <= 1.3 + 1e-4
    assert len(set(per_image.round(decimals=4).tolist())) > N * 0.9


def test_random_erasing_blanks_one_rectangle_of_the_asked_area_per_image():
    x = _batch() * 0.5 + 0.3  # no pixel equals the erase value
    out = _run([{"name": "random_erasing", "p": 1.0, "area": [0.1, 0.2], "value": 255}], x)
    erased = out == 1.0
    shares = erased.float().flatten(1).mean(1)
    assert bool((shares > 0.05).all()) and bool((shares < 0.3).all())
    assert torch.equal(out[~erased], x[~erased])
    assert _distinct(erased[:, 0]) > N * 0.8  # a rectangle of its own per image


def test_pca_noise_shifts_each_channel_of_an_image_alike_within_its_bound():
    x = _batch() * 0.5 + 0.25  # no clamping
    std = 0.1
    out = _run([{"name": "pca_noise", "std": std}], x)
    offset = (out - x) * 255
    per_channel = offset.flatten(2)
    assert torch.allclose(per_channel, per_channel[:, :, :1].expand_as(per_channel), atol=1e-3)
    bound = 4 * std * sum(abs(torch.tensor(PCA_EIGVEC)).max() * v for v in PCA_EIGVAL)
    assert float(offset.abs().max()) < bound
    assert _distinct(per_channel[:, :, 0].round(decimals=3)) == N


def test_the_same_seed_and_step_give_the_same_batch_and_leave_the_global_generators():
    stages = [{"name": "random_crop", "pad": 2}, "mirror", {"name": "rotate", "degrees": 10},
              {"name": "color_jitter", "brightness": 0.2, "contrast": 0.2}, "pca_noise", "random_erasing"]
    stages = [s if isinstance(s, dict) else {"name": s} for s in stages]
    x = _batch()
    torch.manual_seed(123)
    random.seed(123)
    before = torch.rand(1), random.random()
    torch.manual_seed(123)
    random.seed(123)
    a = _run(stages, x, step=7)
    assert (torch.rand(1), random.random()) == before  # the caller's draws are untouched
    assert torch.equal(a, _run(stages, x, step=7))
    assert not torch.equal(a, _run(stages, x, step=8))
    assert not torch.equal(a, _run(stages, x, step=7, seed=2))
    other_rank = DeviceAugment(stages, StageContext((C, H, W), 4), 1)(x.clone(), 7, rank=1)
    assert not torch.equal(a, other_rank)  # each process of a distributed run draws for its own images


@pytest.mark.parametrize("augment, needle", [
    ("[mirror, {name: rand_augment}]", "augment stage 2 rand_augment runs only on the host"),
    ("[trivial_augment]", "augment stage 1 trivial_augment runs only on the host"),
    ("[{name: auto_augment, policy: cifar10}]", "augment stage 1 auto_augment runs only on the host"),
    ("[{name: mixup}]", "augment names no per-image stage to run on the training device"),
])
def test_a_stage_without_a_device_form_is_refused_in_one_line(augment, needle, tmp_path, capsys):
    assert main(["fit", *quick_args(tmp_path), "--augment", augment, "--augment-device", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lit-imgcls: error: ") and needle in err, err
    assert "augment_device false" in err
    assert not (tmp_path / "runs").exists()


def test_a_plugin_factory_declares_its_device_form_by_attribute():
    from lit_imgcls.registry import augmentations

    def invert(ctx, strength=255):
        return lambda image: strength - image

    augmentations.register("invert_test_only", invert)
    try:
        with pytest.raises(UsageError, match="augment stage 1 invert_test_only runs only on the host"):
            check_device_stages([{"name": "invert_test_only"}])
        invert.device_form = lambda ctx, strength=255: (lambda x: strength / 255 - x)
        check_device_stages([{"name": "invert_test_only"}])
        x = _batch(4)
        assert torch.allclose(_run([{"name": "invert_test_only", "strength": 255}], x), 1 - x)
    finally:
        augmentations.unregister("invert_test_only")


def _weights(path):
    from lit_imgcls.io import load_checkpoint

    return load_checkpoint(path)["state_dict"]


def test_the_training_step_augments_the_uint8_batch_then_normalises_it():
    """The module leaves a training batch uint8 after the transfer, runs the stages on its pixels at the trainer's
    global step and normalises after (so fill 255 is white); a normalised float batch gets the same pixels, and
    validation batches are normalised at once, unaugmented."""
    import lightning as L

    from lit_imgcls.module import ImageClassifier

    aug = DeviceAugment([{"name": "random_crop", "pad": 2, "fill": 255}, {"name": "mirror"}],
                        StageContext((C, H, W), 4), 3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(C * H * W, 4))
    module = ImageClassifier(net, 4, mean=[0.5] * 3, std=[0.25] * 3, device_augment=aug)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module.trainer = trainer
    trainer.training = True
    x = (_batch(8) * 255).round().to(torch.uint8)
    y = torch.arange(8) % 4
    assert module.on_after_batch_transfer((x, y), 0)[0].dtype == torch.uint8
    got = module._augment_on_device(x)
    want = (aug(x.float() / 255, trainer.global_step, 0) - 0.5) / 0.25
    assert torch.allclose(got, want, atol=1e-5)
    assert float(got.max()) == pytest.approx(2.0)  # the padding: (1 - 0.5) / 0.25
    assert not torch.allclose(got, (x.float() / 255 - 0.5) / 0.25)
    assert torch.allclose(module._augment_on_device((x.float() / 255 - 0.5) / 0.25), want, atol=1e-4)
    trainer.validating = True
    assert torch.allclose(module.on_after_batch_transfer((x, y), 0)[0], (x.float() / 255 - 0.5) / 0.25, atol=1e-5)


@pytest.mark.slow  # two short fits on 256 images: ~8 s on 2 busy cores
def test_a_fit_with_augment_device_resumes_bit_exact(tmp_path, capsys, caplog):
    """In-memory uint8 images through the device stages and mixup, with accumulation: a run saving every 3 steps,
    its epoch checkpoint removed and resumed from step 3, ends with the very same weights."""
    data = _tiny_npz(tmp_path / "tiny.npz")
    args = quick_args(tmp_path, dataset="npz", data_train=data, batch_size=32, save_every_steps=3, seed=5) + [
        "--augment", "[{name: random_crop, pad: 2}, mirror, {name: rotate, degrees: 10}, pca_noise, "
                     "{name: mixup, alpha: 0.4}]", "--accumulate-grad-batches", "2", "--augment-device", "true"]
    assert main(["fit", *args]) == 0, capsys.readouterr().err
    final = tmp_path / "model/mnist-0001.ckpt"
    want = _weights(final)
    for p in tmp_path.glob("model/mnist-0001.ckpt*"):
        p.unlink()
    assert main(["fit", *args, "--resume", "auto"]) == 0, capsys.readouterr().err
    assert "mnist-step-00000003.ckpt" in caplog.text
    got = _weights(final)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("dataset", ["npz", "folder", "wds"])
def test_every_data_path_hands_the_device_uint8_images_at_the_input_size_unaugmented(dataset, tiny_pack, tmp_path):
    """With augment_device the engine gives the loaders the batch stages alone: each path delivers uint8 images
    of the input size with no augmentation of its own (the in-memory arrays too, which would else be floats)."""
    from lit_imgcls.engine import build_datamodule
    from lit_imgcls.recipe import Recipe

    source = {"npz": str(_tiny_npz(tmp_path / "tiny.npz")), "folder": str(tiny_pack.parent / "tree"),
              "wds": str(tiny_pack)}[dataset]
    recipe = Recipe(dataset=dataset, data_train=source, batch_size=2, data_nthreads=0, seed=1, augment_device=True,
                    augment=[{"name": "random_resized_crop"}, {"name": "mirror"}, {"name": "mixup"}])
    dm = build_datamodule(recipe)
    assert dm.augment_on_device and recipe.augment[0]["name"] == "random_resized_crop"  # the recipe is left as it was
    dm.setup("fit")
    loader = dm.train_dataloader()
    seen = []
    for epoch in (0, 1):  # the same pixels every epoch, in another order: no random draw left in the loader
        getattr(loader, "sampler", loader).set_epoch(epoch)
        images = []
        for x, _ in loader:
            assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == tuple(dm.image_shape)
            images += [image.numpy().tobytes() for image in x]
        seen.append(set(images))
    # the stream's shuffle buffer may repeat a sample of this tiny pack within an epoch
    assert seen[0] == seen[1] or dataset == "wds" and seen[0] & seen[1]


def test_ffcv_takes_per_image_stages_on_the_device(tiny_pack, tmp_path, capsys):
    """FFCV refuses per-image stages in its loader and names augment_device; with it, a fit from the FFCV pack
    runs them in the training step."""
    from lit_imgcls.data.formats.ffcv import FFCVDataModule

    with pytest.raises(UsageError, match="not run by dataset ffcv.*--augment-device true"):
        FFCVDataModule(data_train=str(tiny_pack), augment=[{"name": "mirror"}])
    args = quick_args(tmp_path, dataset="ffcv", data_train=tiny_pack, batch_size=2, network="mlp", data_nthreads=1)
    assert main(["fit", *args, "--augment", "[{name: random_crop, pad: 1}, mirror, pca_noise]",
                 "--augment-device", "true"]) == 0, capsys.readouterr().err
    assert (tmp_path / "model/mnist-0001.ckpt").exists()
