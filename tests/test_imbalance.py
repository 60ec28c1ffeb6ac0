"""Imbalanced classes (issue 18, item 4): ``--class-weights auto|FILE`` and ``--sampler balanced``.

A 10:1 MNIST pair (4 common, 9 rare) trains in real processes and is scored by ``lit-imgcls score``; the loaders'
balanced draws are read directly, on every data path, with the resume pattern of test_loader_resume.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from test_loader_resume import _assert_same, _epoch, _resumed

from lit_imgcls.data.balance import (SKEW_HINT_RATIO, balanced_draws, inverse_frequency, read_class_weights,
                                     resolve_class_weights, skew_hint)
from lit_imgcls.errors import UsageError

COMMON, RARE = 4, 9  # MNIST digits that LeNet confuses when one of them is rare
FIT = ["--dataset", "npz", "--network", "lenet", "--batch-size", "32", "--num-epochs", "1", "--lr", "0.05",
       "--lr-schedule", "constant", "--threads", "2", "--progress-bar", "false", "--seed", "0"]


@pytest.fixture(scope="module")
def skewed_npz(mnist_arrays, tmp_path_factory) -> Path:
    """640 fours and 64 nines to train on (10:1), 200 of each to validate on, as an npz data set."""
    def pick(x, y, digit, n):
        return x[np.flatnonzero(y == digit)[:n]]

    a = mnist_arrays
    x = np.concatenate([pick(a["train_images"], a["train_labels"], COMMON, 640),
                        pick(a["train_images"], a["train_labels"], RARE, 64)])
    y = np.array([0] * 640 + [1] * 64)
    order = np.random.default_rng(0).permutation(len(x))
    xv = np.concatenate([pick(a["test_images"], a["test_labels"], d, 200) for d in (COMMON, RARE)])
    path = tmp_path_factory.mktemp("skewed") / "skewed.npz"
    np.savez(path, x_train=x[order], y_train=y[order], x_val=xv, y_val=np.array([0] * 200 + [1] * 200),
             class_names=np.array(["common", "rare"]))
    return path


def _rare_recall(ckpt: Path) -> float:
    """The rare class's recall on the 200 + 200 validation images, as ``lit-imgcls score`` reports it (its
    per-class accuracy), measured in this process (a subprocess per checkpoint would double the test's time)."""
    from lit_imgcls.score import report, score

    result = score(str(ckpt))
    assert re.search(r"^\s*rare\s+200\s+\d+\s+[0-9.]+\s*$", report(result), re.M)
    return float(result.per_class_accuracy[1])


@pytest.mark.slow
def test_balanced_sampler_raises_the_rare_class_recall(skewed_npz, tmp_path):
    """Same seed, same epoch and steps: the default order leaves the rare class almost never predicted (0.0 at
    the time of writing), the balanced draw finds it (0.98)."""
    recall = {}
    for sampler in ("shuffle", "balanced"):
        prefix = tmp_path / "model" / sampler
        res = run_cli("fit", *FIT, "--data-train", str(skewed_npz), "--sampler", sampler,
                      "--run-dir", str(tmp_path / "runs"), "--model-prefix", str(prefix))
        assert res.returncode == 0, res.stderr
        assert "(22 steps)" in res.stdout  # the epoch keeps its length: 704 // 32
        recall[sampler] = _rare_recall(Path(f"{prefix}-0001.ckpt"))
    assert recall["shuffle"] < 0.3 and recall["balanced"] > 0.8, recall


@pytest.mark.slow
def test_class_weights_file_trains_is_saved_and_a_changed_file_is_reported_on_resume(skewed_npz, tmp_path):
    weights = tmp_path / "weights.csv"
    weights.write_text("class,weight\ncommon,1\nrare,10\n")
    common = [*FIT, "--data-train", str(skewed_npz), "--run-dir", str(tmp_path / "runs"),
              "--model-prefix", str(tmp_path / "model" / "w"), "--class-weights", str(weights)]
    res = run_cli("fit", *common, "--augment", "[{name: mixup, alpha: 0.4}]", "--label-smoothing", "0.1")
    assert res.returncode == 0, res.stderr
    state = torch.load(tmp_path / "model" / "w-0001.ckpt", weights_only=True, map_location="cpu")
    assert state["lit_imgcls"]["class_weights"] == {"source": str(weights), "weights": [1.0, 10.0]}
    weights.write_text(json.dumps({"rare": 5, "common": 1}))  # JSON now, other values, the same file name
    res = run_cli("fit", *common, "--augment", "[{name: mixup, alpha: 0.4}]", "--label-smoothing", "0.1",
                  "--num-epochs", "2", "--resume", "auto")
    assert res.returncode == 0, res.stderr
    assert "resuming with a changed recipe: num_epochs 1 -> 2, class_weights [1.0, 10.0] -> [1.0, 5.0]" in res.stderr
    weights.write_text("common,1\nrarely,2\n")
    res = run_cli("fit", *common, "--num-epochs", "3", "--resume", "auto")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"lit-imgcls: error: class_weights file {weights}, line 2: unknown class 'rarely'; the classes are: "
        "common, rare"]


@pytest.mark.parametrize("text, needle", [
    ("common,1\n", "gives no weight for 1 of the 2 classes: rare"),
    ("common,1\nrare,0\n", "the weight of class 'rare' must be a finite number > 0, got '0'"),
    ("common,1\nrare,inf\n", "must be a finite number > 0, got 'inf'"),
    ("common,1\nrare,1\ncommon,2\n", "line 3: class 'common' is given twice"),
    ("common;1\nrare,1\n", "line 1: 'common;1' is not NAME,WEIGHT"),
    ('{"common": 1, "rare": "__import__(\'os\')"}', "got \"__import__('os')\""),  # data, never evaluated
    ('{"common": 1, "rare": NaN}', "got nan"),
    ("{common: 1}", "not valid JSON"),
    ('["common", "rare"]', "must hold a JSON object of class name -> weight, got list"),
])
def test_a_bad_class_weights_file_is_one_line(tmp_path, text, needle):
    path = tmp_path / ("w.json" if text.startswith(("{", "[")) and "NaN" not in text else "w.txt")
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        read_class_weights(str(path), ["common", "rare"])
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert err.value.key == "class_weights"


def test_class_weights_auto_on_arrays_whose_last_class_has_no_training_image_is_one_line(tmp_path):
    """An npz without class_names takes its classes from the training labels: a validation label beyond them
    (the last class never in training) was a ValueError traceback from the class count --class-weights needs."""
    rng = np.random.default_rng(0)
    data = tmp_path / "missing.npz"
    np.savez(data, x_train=rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8), y_train=np.arange(40) % 2,
             x_val=rng.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8), y_val=np.arange(9) % 3)
    res = run_cli("fit", "--network", "mlp", "--dataset", "npz", "--data-train", str(data), "--class-weights", "auto",
                  "--batch-size", "8", "--num-epochs", "1", "--model-prefix", str(tmp_path / "model" / "m"),
                  "--run-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "val labels must lie in [0, 2), found 0..2" in err and "class_names" in err
    assert not (tmp_path / "model").exists()


def test_class_weight_formats_and_the_auto_formula(tmp_path):
    (tmp_path / "w.tsv").write_text("# rare is 10 times rarer\nrare class\t10\n\ncommon 1.5\n")
    assert read_class_weights(str(tmp_path / "w.tsv"), ["common", "rare class"]) == [1.5, 10.0]
    counts = [640, 64]
    w = inverse_frequency(counts)
    assert w == pytest.approx([704 / (2 * 640), 704 / (2 * 64)])
    assert sum(n * x for n, x in zip(counts, w)) == pytest.approx(sum(counts))  # average 1 over the images
    assert resolve_class_weights(None, ["a", "b"], counts, "x") is None
    with pytest.raises(UsageError, match="neither 'auto' nor an existing file"):
        resolve_class_weights(str(tmp_path / "missing.csv"), ["a", "b"], counts, "x")


def test_weighted_loss_is_one_rule_for_hard_and_soft_targets():
    """Hard labels with label smoothing give the loss of the same smoothed labels given as soft targets, so a
    batch mixed by mixup/cutmix is weighted as a plain one."""
    from lit_imgcls.module import ImageClassifier

    torch.manual_seed(0)
    module = ImageClassifier(torch.nn.Linear(5, 3), num_classes=3, label_smoothing=0.1, class_weights=[1, 2, 4])
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    soft = torch.nn.functional.one_hot(y, 3).float()  # a mixed batch's targets, smoothed by the loss as labels are
    module._plain_backward, module._check_finite = True, lambda loss, opt: None
    hard_loss = module._backward(x, y, y, None, 1.0)
    soft_loss = module._backward(x, y, soft, None, 1.0)
    smoothed = soft * 0.9 + 0.1 / 3
    by_hand = -(smoothed * torch.tensor([1.0, 2, 4]) * module.net(x).log_softmax(1)).sum(1).mean()
    assert torch.allclose(hard_loss, soft_loss) and torch.allclose(hard_loss, by_hand)
    with pytest.raises(ValueError, match="3 finite positive numbers"):
        ImageClassifier(torch.nn.Linear(5, 3), num_classes=3, class_weights=[1, 0, 1])


def test_balanced_draws_are_fixed_by_seed_and_epoch_and_key_repeats_apart():
    labels = torch.tensor([0] * 100 + [1] * 10)
    idx, keys = balanced_draws(labels, 2, seed=3, epoch=1, draws=1100)
    again = balanced_draws(labels, 2, seed=3, epoch=1, draws=1100)
    assert torch.equal(idx, again[0]) and not torch.equal(idx, balanced_draws(labels, 2, 3, 2, 1100)[0])
    rare = float((labels[idx] == 1).float().mean())
    assert 0.45 < rare < 0.55  # classes equally often (10% of the samples)
    assert torch.equal(keys % len(labels), idx) and len(set(keys.tolist())) == len(keys)


def test_in_memory_balanced_epochs_resume_exactly_with_equal_batches_per_rank():
    from lit_imgcls.data.arrays import TensorBatches

    x = torch.arange(110, dtype=torch.uint8).view(110, 1, 1, 1).expand(110, 1, 2, 2).contiguous()
    y = torch.tensor([0] * 100 + [1] * 10)

    def make(rank=0, world=1):
        return TensorBatches(x, y, 4, shuffle=True, seed=5, drop_last=True, rank=rank, world_size=world,
                             balanced=True)

    whole = _epoch(make(), 1)
    assert len(whole) == 27  # 110 // 4: a shuffle's epoch
    labels = torch.cat([b[1] for b in whole])
    assert 0.35 < float(labels.float().mean()) < 0.65  # the rare class, 9% of the data, in about half
    head, tail, _ = _resumed(make, 10)
    _assert_same(head + tail, whole)
    ranks = [_epoch(make(r, 2), 1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 13  # 110 // 2 // 4 on each


def test_folder_balanced_epoch_resumes_exactly(tmp_path):
    """Random-resized crops included: each draw of a repeated image is cropped as its own."""
    from PIL import Image

    from lit_imgcls.data.folder import FolderDataModule

    rng = np.random.default_rng(0)
    for name, n in (("common", 20), ("rare", 2)):
        (tmp_path / name).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    dm = FolderDataModule(data_train=str(tmp_path), batch_size=2, data_nthreads=0, image_shape="3,8,8",
                          sampler="balanced")
    whole = _epoch(dm.train_dataloader(), 1)
    assert len(whole) == 11
    assert 6 <= int(torch.cat([b[1] for b in whole]).sum()) <= 16  # rare: 2 of 22 images, about 11 of 22 draws
    head, tail, _ = _resumed(dm.train_dataloader, 4)
    _assert_same(head + tail, whole)


@pytest.fixture(scope="module")
def skewed_pack(tmp_path_factory) -> Path:
    """A pack (both formats) of 20 common and 4 rare 72 x 72 images: too big to be kept decoded, so FFCV
    streams it through its Loader with the balanced traversal order; beside it, ``pack8``, the same at 8 x 8,
    which FFCV decodes once and serves from memory."""
    pytest.importorskip("ffcv")
    from PIL import Image

    from lit_imgcls.data.encode import EncodeOptions
    from lit_imgcls.data.pack import PackOptions, pack_dataset

    root = tmp_path_factory.mktemp("skewed-pack")
    rng = np.random.default_rng(1)
    for side in (72, 8):
        for name, n in (("common", 20), ("rare", 4)):
            (root / f"tree{side}" / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / f"tree{side}" / name / f"{i}.png")
        pack_dataset(str(root / f"tree{side}"), str(root / f"pack{side}"), PackOptions(format="both"),
                     EncodeOptions())
    return root / "pack72"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ffcv_balanced_order_resumes_exactly_and_wds_refuses_it(skewed_pack, ffcv_collected):
    from lit_imgcls.data.formats.ffcv import FFCVDataModule
    from lit_imgcls.data.formats.wds import WDSDataModule

    dm = FFCVDataModule(data_train=str(skewed_pack), batch_size=4, data_nthreads=1, image_shape="3,24,24",
                        sampler="balanced")
    assert not dm.small
    whole = _epoch(dm.train_dataloader(), 1)
    assert len(whole) == 6
    assert 6 <= int(torch.cat([b[1] for b in whole]).sum()) <= 18  # rare: 4 of 24 images, about 12 of 24 draws
    head, tail, _ = _resumed(dm.train_dataloader, 2)
    _assert_same(head + tail, whole, pixels=False)  # FFCV's crops are unseeded: the order is what is exact
    small = FFCVDataModule(data_train=str(skewed_pack.parent / "pack8"), batch_size=4, data_nthreads=1,
                           sampler="balanced")
    assert small.small  # decoded once and served from memory, in the order the Loader would follow
    whole = _epoch(small.train_dataloader(), 1)
    assert len(whole) == 6 and 6 <= int(torch.cat([b[1] for b in whole]).sum()) <= 18
    head, tail, _ = _resumed(small.train_dataloader, 2)
    _assert_same(head + tail, whole)  # pixels too: small images are used whole
    # Made without complaint (score and validate read the pack whatever sampler the recipe names); training refused.
    wds = WDSDataModule(data_train=str(skewed_pack), batch_size=4, data_nthreads=0, sampler="balanced")
    with pytest.raises(UsageError, match="sampler balanced is not available for dataset wds.*--dataset ffcv"):
        wds.train_dataloader()


def test_fit_refuses_balanced_on_wds_before_reading_data_and_validate_does_not(skewed_pack, tmp_path):
    """A checkpoint trained with ffcv and sampler balanced is still scored on the pack's wds copy (score and
    validate rebuild its recipe, sampler included)."""
    from lit_imgcls.engine import fit
    from lit_imgcls.recipe import Recipe, validate

    recipe = Recipe(dataset="wds", data_train=str(skewed_pack), sampler="balanced", run_dir=str(tmp_path))
    validate(recipe)
    with pytest.raises(UsageError, match="^sampler balanced is not available for dataset wds") as err:
        fit(recipe)
    assert err.value.key == "sampler"


@pytest.fixture
def ffcv_collected():
    import gc

    yield
    gc.collect()


def test_inspect_suggests_the_options_for_skewed_classes(skewed_pack, capsys):
    from lit_imgcls.commands.dataset_inspect import inspect_pack

    inspect_pack(str(skewed_pack))
    out = capsys.readouterr().out
    assert (f"hint: train: classes are skewed: the largest has 5.0x the samples of the smallest (>= "
            f"{SKEW_HINT_RATIO:g}); consider `fit --class-weights auto`") in out
    assert "`--sampler balanced`" in out
    assert skew_hint([20, 7]) is None and skew_hint([21, 7]) is not None  # the threshold: 3 times


def test_inspect_of_a_wds_only_pack_suggests_class_weights_not_the_sampler_it_refuses(skewed_pack, capsys):
    from lit_imgcls.commands.dataset_inspect import inspect_pack
    from lit_imgcls.data.encode import EncodeOptions
    from lit_imgcls.data.pack import PackOptions, pack_dataset

    wds_only = skewed_pack.parent / "pack8-wds"
    pack_dataset(str(skewed_pack.parent / "tree8"), str(wds_only), PackOptions(format="wds"), EncodeOptions())
    capsys.readouterr()
    inspect_pack(str(wds_only))
    hint = next(line for line in capsys.readouterr().out.splitlines() if "hint: train:" in line)
    assert "`fit --class-weights auto`" in hint and "classes drawn equally often" not in hint
    assert "`--sampler balanced` needs the pack's FFCV copy (pack it again with `dataset pack --format both`)" in hint


def test_a_sampler_change_is_refused_inside_an_epoch_and_reported_at_its_end():
    import dataclasses

    from lit_imgcls.recipe import Recipe
    from lit_imgcls.resume_changes import recipe_changes

    saved = dataclasses.asdict(Recipe())
    with pytest.raises(UsageError, match="sampler 'shuffle' -> 'balanced'"):
        recipe_changes(saved, Recipe(sampler="balanced"), "m-step-00000010.ckpt", mid_epoch=True)
    assert recipe_changes(saved, Recipe(sampler="balanced"), "m-0001.ckpt", mid_epoch=False) == [
        ("sampler", "shuffle", "balanced")]
