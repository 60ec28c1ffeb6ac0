"""The recipe's `augment` pipeline (issue 17, items 1 and 2): each stage does what it says, MXNet's flags add the
stages they name, bad stages are one line, the same seed gives the same pixels on the arrays and folder paths,
mixup's soft labels and loss, a resume with augmentation on is bit-exact, and a plugin stage arrives by entry point."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_imgcls.cli import main
from lit_imgcls.data.augment import BatchMix, Pipeline, StageContext, build_stage, sample_seed
from lit_imgcls.data.stages import PCA_EIGVAL, PCA_EIGVEC

from conftest import pythonpath_with, quick_args

CTX = StageContext((3, 16, 16), 4)


def _image(seed: int = 0, shape=(3, 16, 16)) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8))


def _run(stage: dict, image: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return Pipeline([stage], StageContext(tuple(image.shape), 4))(image, seed)


def test_mirror_flips_exactly_or_not_at_all():
    img = _image()
    assert torch.equal(_run({"name": "mirror", "p": 1.0}, img), img.flip(-1))
    assert torch.equal(_run({"name": "mirror", "p": 0.0}, img), img)
    flipped = sum(torch.equal(_run({"name": "mirror"}, img, s), img.flip(-1)) for s in range(40))
    assert 8 <= flipped <= 32  # p 0.5


def test_pad_crop_keeps_the_size_and_shifts_the_content():
    img = _image()
    padded = torch.nn.functional.pad(img, (4, 4, 4, 4))
    shifts = set()
    for s in range(20):
        out = _run({"name": "random_crop", "pad": 4}, img, s)
        assert out.shape == img.shape and out.dtype == torch.uint8
        found = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(out, padded[:, dy:dy + 16, dx:dx + 16])]
        assert len(found) == 1, s
        shifts.add(found[0])
    assert len(shifts) > 5 and (4, 4) in shifts or len(shifts) > 10  # random offsets, the unshifted one among them


def test_pca_noise_shifts_every_pixel_of_a_channel_alike_within_its_bound():
    img = torch.full((3, 8, 8), 128, dtype=torch.uint8)
    std = 0.1
    # each channel's offset is a sum of three N(0, std) draws times eigval * |eigvec|: 4 standard deviations bound it
    bound = [4 * std * math.sqrt(sum((PCA_EIGVEC[c][i] * PCA_EIGVAL[i]) ** 2 for i in range(3))) + 0.5 for c in range(3)]
    moved = 0
    for s in range(20):
        delta = _run({"name": "pca_noise", "std": std}, img, s).float() - 128
        per_channel = delta.flatten(1)
        assert torch.equal(per_channel.min(1).values, per_channel.max(1).values)  # one offset per channel
        for c in range(3):
            assert abs(float(per_channel[c, 0])) <= bound[c]
        moved += bool(delta.abs().sum() > 0)
    assert moved >= 15


def test_brightness_multiplies_by_a_factor_within_its_range():
    img = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    values = {int(_run({"name": "color_jitter", "brightness": 0.3}, img, s)[0, 0, 0]) for s in range(30)}
    assert min(values) >= 70 and max(values) <= 130 and len(values) > 10


def test_random_erasing_blanks_one_rectangle_of_the_asked_area():
    img = torch.full((3, 16, 16), 200, dtype=torch.uint8)
    out = _run({"name": "random_erasing", "p": 1.0, "area": [0.1, 0.2], "value": 0}, img)
    erased = (out == 0).all(0)
    rows, cols = erased.any(1).nonzero(), erased.any(0).nonzero()
    h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert int(erased.sum()) == h * w and 0.1 * 256 * 0.8 <= h * w <= 0.2 * 256 * 1.2
    assert ((out == 200).all(0) | erased).all()


@pytest.mark.parametrize("stage", [{"name": "rand_augment"}, {"name": "trivial_augment"},
                                   {"name": "auto_augment", "policy": "cifar10"}, {"name": "rotate", "degrees": 30},
                                   {"name": "shear", "ratio": 0.3}, {"name": "scale", "min": 0.7, "max": 1.3},
                                   {"name": "hsl", "h": 20, "s": 40, "l": 40},
                                   {"name": "random_resized_crop", "area": [0.3, 1.0]}])
def test_policy_and_geometry_stages_keep_the_image_and_depend_on_the_seed_only(stage):
    img = _image(3)
    outs = [_run(stage, img, s) for s in range(6)]
    assert all(o.shape == img.shape and o.dtype == torch.uint8 for o in outs)
    assert torch.equal(outs[0], _run(stage, img, 0))  # the seed fixes the draws
    assert sum(not torch.equal(o, img) for o in outs) >= 3
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    _run(stage, img, 0)
    assert torch.equal(torch.rand(1), before)  # the caller's generator is untouched


def test_grey_images_go_through_every_stage():
    img = _image(1, (1, 12, 12))
    for name in ("random_crop", "mirror", "rand_augment", "trivial_augment", "auto_augment", "pca_noise", "hsl",
                 "color_jitter", "random_erasing", "rotate"):
        assert _run({"name": name}, img).shape == (1, 12, 12), name


def test_mixup_soft_labels_sum_to_one_and_the_loss_is_the_soft_target_cross_entropy():
    x = torch.randn(7, 3, 8, 8)  # an odd batch
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    for stages in ([{"name": "mixup", "alpha": 0.4}], [{"name": "cutmix"}], [{"name": "mixup"}, {"name": "cutmix"}]):
        mix = BatchMix(stages, StageContext((3, 8, 8), 4), seed=3)
        mixed = 0
        for step in range(6):
            xm, soft = mix(x, y, step=step)
            assert soft.shape == (7, 4) and torch.allclose(soft.sum(1), torch.ones(7))
            # an image left whole (a cutmix box clipped to nothing) keeps its one-hot label
            same = torch.equal(xm, x)
            assert same == torch.allclose(soft, torch.nn.functional.one_hot(y, 4).float())
            mixed += not same
        assert mixed >= 4
        again = mix(x, y, step=5)
        assert torch.equal(again[0], xm) and torch.equal(again[1], soft)  # a resumed step mixes alike
        logits = torch.randn(7, 4)
        eps = 0.1
        want = -(((1 - eps) * soft + eps / 4) * logits.log_softmax(1)).sum(1).mean()
        assert torch.allclose(torch.nn.functional.cross_entropy(logits, soft, label_smoothing=eps), want)
    one = BatchMix([{"name": "mixup"}], StageContext((3, 8, 8), 4))(x[:1], y[:1], 0)
    assert torch.allclose(one[1].sum(1), torch.ones(1))  # a batch of one


@pytest.mark.slow
def test_the_same_pipeline_gives_the_same_pixels_on_the_arrays_folder_and_wds_paths(tmp_path, capsys):
    from lit_imgcls.data.arrays import ArrayDataModule
    from lit_imgcls.data.folder import FolderDataModule
    from lit_imgcls.data.formats.wds import WDSDataModule

    stages = [{"name": "random_crop", "pad": 2}, {"name": "mirror"}, {"name": "rand_augment"},
              {"name": "pca_noise"}, {"name": "random_erasing"}]
    images = np.random.RandomState(0).randint(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    for i, img in enumerate(images):  # one image per class: a label tells which image came out
        (tmp_path / f"c{i}").mkdir()
        Image.fromarray(img).save(tmp_path / f"c{i}" / "a.png")
    # a pack of the same files, lossless and in their order: sample n is the folder's image n
    assert main(["dataset", "pack", str(tmp_path), str(tmp_path / "pack"), "--format", "wds", "--encoding", ".png",
                 "--no-shuffle", "--train-ratio", "1", "--pass-through", "--num-workers", "1"]) == 0, capsys.readouterr().err
    for epoch in (0, 3):
        arrays = ArrayDataModule(images, np.arange(4), batch_size=4, seed=7, augment=stages)
        arrays.setup()
        a_loader = arrays.train_dataloader()
        a_loader.set_epoch(epoch)
        xa, ya = next(iter(a_loader))
        folder = FolderDataModule(data_train=str(tmp_path), batch_size=4, data_nthreads=0, image_shape="3,16,16",
                                  seed=7, augment=stages)
        f_loader = folder.train_dataloader()
        f_loader.sampler.set_epoch(epoch)
        xf, yf = next(iter(f_loader))
        assert xa.dtype == xf.dtype == torch.uint8
        assert torch.equal(xa[ya.argsort()], xf[yf.argsort()].contiguous())
        packed = WDSDataModule(data_train=str(tmp_path / "pack"), batch_size=4, data_nthreads=0,
                               image_shape="3,16,16", seed=7, augment=stages)
        w_loader = packed.train_dataloader()
        w_loader.set_epoch(epoch)
        xw, yw = next(iter(w_loader))
        # the stream's shuffle buffer may repeat a sample in this tiny pack: each one must have its image's pixels
        assert all(torch.equal(xw[k], xa[ya == yw[k]][0]) for k in range(len(yw)))
        assert not torch.equal(xa[ya.argsort()], torch.from_numpy(images).permute(0, 3, 1, 2))


def test_resumed_arrays_epoch_gives_the_same_augmented_batches():
    from lit_imgcls.data.arrays import TensorBatches

    x = torch.from_numpy(np.random.RandomState(0).randint(0, 256, (40, 1, 8, 8), dtype=np.uint8))
    pipeline = Pipeline([{"name": "random_crop", "pad": 2}, {"name": "trivial_augment"}], StageContext((1, 8, 8), 2))

    def loader():
        return TensorBatches(x, torch.arange(40) % 2, 8, shuffle=True, seed=4, drop_last=True, pipeline=pipeline)

    full = loader()
    full.set_epoch(2)
    want = [b[0] for b in full]
    resumed = loader()
    resumed.load_state_dict({"epoch": 2, "items": 2})
    resumed.set_epoch(2)
    got = [b[0] for b in resumed]
    assert len(got) == 3 and all(torch.equal(g, w) for g, w in zip(got, want[2:]))


def _tiny_npz(path: Path) -> Path:
    """256 training and 64 validation grey 16 x 16 images of 2 classes (a bright or a dark square)."""
    rng = np.random.RandomState(0)
    y = np.arange(320) % 2
    x = rng.randint(0, 60, (320, 16, 16)).astype(np.uint8)
    x[y == 1, 4:12, 4:12] += 150
    np.savez(path, x_train=x[:256], y_train=y[:256], x_val=x[256:], y_val=y[256:])
    return path


@pytest.mark.slow
def test_a_resume_mid_epoch_with_augmentation_on_ends_bit_exact(tmp_path, capsys, caplog):
    """One run saving every 3 steps; its epoch checkpoint removed, `--resume auto` continues from step 3 of 4
    and must end with the very same weights (mixup's soft labels split with the accumulated micro-batches)."""
    data = _tiny_npz(tmp_path / "tiny.npz")
    args = quick_args(tmp_path, dataset="npz", data_train=data, batch_size=32, save_every_steps=3, seed=5) + [
        "--augment", "[{name: random_crop, pad: 2}, rand_augment, {name: mixup, alpha: 0.4}, cutmix]",
        "--max-random-rotate-angle", "10", "--label-smoothing", "0.1", "--accumulate-grad-batches", "2"]
    assert main(["fit", *args]) == 0, capsys.readouterr().err
    from lit_imgcls.io import load_checkpoint

    final = tmp_path / "model/mnist-0001.ckpt"
    want = load_checkpoint(final)["state_dict"]
    for p in tmp_path.glob("model/mnist-0001.ckpt*"):
        p.unlink()
    assert main(["fit", *args, "--resume", "auto"]) == 0, capsys.readouterr().err
    # mid-epoch: 4 steps of 2 x 32 images, the step-3 checkpoint
    assert "resuming from" in caplog.text and "mnist-step-00000003.ckpt" in caplog.text
    got = load_checkpoint(final)["state_dict"]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("flags, stages", [
    (["--pad-size", "4", "--random-crop", "1", "--random-mirror", "1"], [{"name": "random_crop", "pad": 4}, {"name": "mirror"}]),
    (["--max-random-rotate-angle", "15", "--max-random-shear-ratio", "0.1", "--min-random-scale", "0.8"],
     [{"name": "rotate", "degrees": 15.0}, {"name": "shear", "ratio": 0.1}, {"name": "scale", "min": 0.8, "max": 1.0}]),
    (["--min-random-area", "0.3", "--max-random-aspect-ratio", "0.25"],
     [{"name": "random_resized_crop", "area": [0.3, 1.0], "ratio": [0.75, 1.25]}]),
    (["--max-random-h", "10", "--max-random-l", "20", "--brightness", "0.2", "--contrast", "0.1", "--pca-noise", "0.1",
      "--augment", "[trivial_augment]"],
     [{"name": "hsl", "h": 10.0, "l": 20.0}, {"name": "color_jitter", "brightness": 0.2, "contrast": 0.1},
      {"name": "pca_noise", "std": 0.1}, {"name": "trivial_augment"}]),
    (["--random-mirror", "0"], None),
])
def test_mxnet_flags_add_the_stages_they_name(flags, stages, capsys):
    import yaml

    assert main(["fit", "--dataset", "mnist", *flags, "--print-recipe"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["augment"] == stages
    assert "pad_size" not in printed and "random_mirror" not in printed  # folded into augment, not printed


@pytest.mark.parametrize("value, needles", [
    ("[{name: random_crp}]", ["augment stage 1: unknown augmentation stage 'random_crp'", "did you mean random_crop",
                              "choices: auto_augment"]),
    ("[mirror, {name: random_crop, pda: 2}]", ["augment stage 2 random_crop: unknown argument 'pda'; did you mean pad?",
                                               "arguments: pad, fill"]),
    ("[{name: rotate, degrees: -3}]", ["augment stage 1 rotate: degrees must be a number in [0, 360], got -3"]),
    ("[{name: auto_augment, policy: mnist}]", ["policy must be one of imagenet, cifar10, svhn"]),
    ("[{pad: 4}]", ["augment stage 1 must be a stage name or a mapping with a name"]),
    ("{name: rotate}", ["--augment must be a list"]),
    ("--random-mirror=2", ["random_mirror must be 0 (off) or 1 (on), got 2"]),
    ("--random-crop=3", ["random_crop must be 0 (off) or 1 (on), got 3"]),
])
def test_a_bad_stage_is_one_line_naming_it(value, needles, capsys, tmp_path):
    flags = [value] if value.startswith("--") else ["--augment", value]  # MXNet's switches take 0 or 1 only
    assert main(["fit", *quick_args(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lit-imgcls: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "runs").exists()


def test_stages_the_data_path_cannot_run_are_refused(tmp_path, capsys):
    from lit_imgcls.data.formats.ffcv import FFCVDataModule
    from lit_imgcls.errors import UsageError

    with pytest.raises(UsageError, match="not run by dataset ffcv.*--augment-device true.*--dataset wds"):
        FFCVDataModule(data_train=str(tmp_path / "none"), augment=[{"name": "mirror"}])
    # an npz of float images cannot take uint8 stages
    np.savez(tmp_path / "f.npz", x_train=np.zeros((8, 16, 16), np.float32), y_train=np.arange(8) % 2)
    assert main(["fit", *quick_args(tmp_path, dataset="npz", data_train=tmp_path / "f.npz", batch_size=4),
                 "--augment", "[mirror]"]) == 2
    assert "augment stages need uint8 images" in capsys.readouterr().err


PLUGIN = """
    def invert(ctx, strength=255):
        return lambda image: strength - image
"""

CHECK = """
import numpy as np, torch
from lit_imgcls.data.arrays import ArrayDataModule
from lit_imgcls.registry import augmentations
x = np.arange(4 * 16 * 16, dtype=np.int64).reshape(4, 16, 16).astype(np.uint8)
dm = ArrayDataModule(x, np.arange(4), batch_size=4, augment=[{"name": "invert"}])
dm.setup()
xb, yb = next(iter(dm.train_dataloader()))
assert torch.equal(xb[:, 0], 255 - torch.from_numpy(x)[yb]), "not inverted"
print(augmentations.origin("invert"))
from lit_imgcls.data.augment import check_stages
from lit_imgcls.errors import UsageError
try:  # its arguments are checked as the built-ins' are
    check_stages([{"name": "invert", "strenght": 3}])
except UsageError as exc:
    print(exc)
"""


@pytest.mark.slow  # a fresh interpreter importing torch and torchvision: 7-14 s on 2 busy cores
def test_a_plugin_stage_arrives_through_an_entry_point(tmp_path):
    import os
    import subprocess
    import sys

    from test_registry import _write_plugin

    site = tmp_path / "site"
    site.mkdir()
    _write_plugin(site, "acme_aug", "acme_aug", {"lit_imgcls.augmentations": {"invert": "acme_aug:invert"}}, PLUGIN)
    res = subprocess.run([sys.executable, "-c", CHECK], env={**os.environ, **pythonpath_with(site)}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    origin, refused = res.stdout.strip().splitlines()
    assert origin == "acme_aug (acme_aug:invert)"
    assert refused.startswith("augment stage 1 invert: unknown argument 'strenght'; did you mean strength?")


def test_saved_recipes_leave_out_the_unset_mxnet_shortcuts_and_read_back(tmp_path):
    """The shortcuts are resolved into ``augment`` stages: a printed or saved recipe names the stages, not 19 nulls,
    and the file reads back as the same recipe."""
    from lit_imgcls.cli import main
    from lit_imgcls.recipe import AUGMENT_FLAGS, Recipe, resolve_augment_flags

    recipe = resolve_augment_flags(Recipe(pad_size=4))
    text = recipe.to_yaml()
    assert not any(f"\n{key}:" in text for key in AUGMENT_FLAGS)
    assert recipe.augment and recipe.augment[0]["name"] == "random_crop"
    saved = tmp_path / "saved.yaml"
    saved.write_text(text)
    assert main(["fit", "--recipe", str(saved), "--print-recipe"]) in (0, None)
