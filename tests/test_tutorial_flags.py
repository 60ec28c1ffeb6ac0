"""MXNet's tutorial command lines, after their script name, on `lit-imgcls fit --recipe <matching recipe>` (issue 15,
item 1): each resolves to the recipe values it meant, and the short MNIST ones train for real (kept tiny)."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, run_cli

RECIPES = {"train_mnist.py": "mnist.yaml", "train_cifar10.py": "cifar10.yaml", "train_imagenet.py": "imagenet.yaml"}

# (script, its flags in the tutorial or example README, the recipe keys they must set)
TUTORIAL = [
    # the older tutorial (docs/tutorials/image_classification.md)
    ("train_mnist.py", "", {"network": "lenet", "dataset": "mnist"}),
    ("train_mnist.py", "--model-prefix model/mnist", {"model_prefix": "model/mnist"}),
    ("train_mnist.py", "--model-prefix model/mnist --load-epoch 8", {"model_prefix": "model/mnist", "load_epoch": 8}),
    ("train_mnist.py", "--lr .1 --lr-factor .9 --lr-factor-epoch .5",
     {"lr": 0.1, "lr_factor": 0.9, "lr_factor_epoch": 0.5, "lr_schedule": "step"}),
    ("train_mnist.py", "--network lenet --gpus 0", {"network": "lenet", "gpus": "0"}),
    ("train_mnist.py", "--kv-store dist_sync", {"kv_store": "dist_sync"}),
    ("train_cifar10.py", "--batch-size 128 --lr 0.1 --lr-factor .94 --num-epoch 50",
     # --lr-factor alone: MXNet's older scripts decayed every epoch (--lr-factor-epoch 1 by default)
     {"batch_size": 128, "lr": 0.1, "lr_factor": 0.94, "num_epochs": 50, "lr_schedule": "step", "lr_factor_epoch": 1.0}),
    ("train_imagenet.py", "--batch-size 144 --lr 0.05 --lr-factor .94 --gpus 0,1,2,3 --num-epoch 60 "
     "--network inception-bn --data-dir ilsvrc12/ --model-prefix model/ilsvrc12",
     # the recipe's own schedule (linear, FFCV's) never multiplies by lr_factor: --lr-factor alone is the older
     # tutorial's decay every epoch, as with train_cifar10.py's line above
     {"batch_size": 144, "lr": 0.05, "lr_factor": 0.94, "gpus": "0,1,2,3", "num_epochs": 60, "network": "inception-bn",
      "data_dir": "ilsvrc12/", "model_prefix": "model/ilsvrc12", "lr_schedule": "step", "lr_factor_epoch": 1.0}),
    ("train_imagenet.py", "--batch-size 144 --lr 0.05 --lr-factor .94 --gpus 0,1,2,3 --num-epoch 60 "
     "--network inception-bn --kv-store dist_sync --data-dir s3://dmlc/ilsvrc12/ --model-prefix s3://dmlc/model/ilsvrc12",
     {"num_epochs": 60, "kv_store": "dist_sync", "data_dir": "s3://dmlc/ilsvrc12/",
      "model_prefix": "s3://dmlc/model/ilsvrc12"}),
    ("train_imagenet.py", "--kv-store local_allreduce_device", {"kv_store": "local_allreduce_device"}),
    # the example's README (MXNet 1.x)
    ("train_mnist.py", "--network mlp", {"network": "mlp"}),
    ("train_cifar10.py", "--network resnet --num-layers 110 --batch-size 128 --gpus 0,1",
     {"network": "resnet", "num_layers": 110, "batch_size": 128, "gpus": "0,1"}),
    ("train_cifar10.py", "--network resnet --num-layers 110 --batch-size 128 --gpus 0,1 --kv-store dist_device_sync",
     {"num_layers": 110, "kv_store": "dist_device_sync"}),
    ("train_imagenet.py", "--network inception-bn --rgb-mean 123.68,116.779,103.939",
     {"rgb_mean": "123.68,116.779,103.939"}),
    # common/fit.py's and data.py's spellings
    ("train_imagenet.py", "--dtype float16", {"precision": "16-mixed"}),
    ("train_imagenet.py", "--num-epochs 3 --num-classes 1000 --num-examples 1281167 --rgb-std 58.393,57.12,57.375",
     {"num_epochs": 3, "num_classes": 1000, "num_examples": 1281167, "rgb_std": "58.393,57.12,57.375"}),
]


def _fit(capsys, *args: str) -> tuple[int, str, str]:
    from lit_imgcls.cli import main

    capsys.readouterr()
    code = main(["fit", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("script, flags, want", TUTORIAL, ids=[f"{s} {f}" for s, f, _ in TUTORIAL])
def test_tutorial_command_line_resolves(capsys, script, flags, want):
    code, out, err = _fit(capsys, "--recipe", str(REPO / "recipes" / RECIPES[script]), *shlex.split(flags),
                          "--print-recipe")
    assert code == 0, err
    got = yaml.safe_load(out)
    assert {k: got[k] for k in want} == want


def test_tutorial_names_are_registered():
    """The names those lines use build here: inception-bn (inception_bn), the kv-stores of both tutorials."""
    from lit_imgcls.networks.factory import resolve_name
    from lit_imgcls.registry import networks, strategies

    assert networks.get(resolve_name("inception-bn")) is networks.get("inception_bn")
    for name in ("local", "device", "local_allreduce_device", "dist_sync", "dist_device_sync", "dist_async"):
        strategies.get(name)


def test_aliases_show_in_help():
    text = " ".join(run_cli("fit", "--help").stdout.split())
    assert "--num-epochs NUM_EPOCHS, --num_epochs NUM_EPOCHS, --num-epoch NUM_EPOCHS" in text
    assert "--precision PRECISION, --dtype PRECISION" in text
    for flag in ("--rgb-mean", "--rgb-std", "--num-classes", "--num-examples", "--log-file", "--data-dir"):
        assert flag in text, flag
    assert "0-255 scale" in text


TINY = ["--num-examples", "256", "--batch-size", "64", "--num-epochs", "1", "--fused-steps", "1", "--threads", "2",
        "--progress-bar", "false", "--disp-batches", "2"]


@pytest.mark.slow
def test_short_tutorial_lines_train(tmp_path, monkeypatch, capsys):
    """The MNIST lines train for real, a few batches each; --load-epoch continues the checkpoint the
    --model-prefix line saved, and --log-file gets the lines stdout got."""
    import torch

    monkeypatch.chdir(tmp_path)
    recipe = ["--recipe", str(REPO / "recipes" / "mnist.yaml"), "--run-dir", str(tmp_path / "runs")]
    gpus = ["--gpus", "0"] if torch.cuda.is_available() else []
    lines = [
        ["--model-prefix", "model/mnist"],
        ["--model-prefix", "model/mnist", "--load-epoch", "1", "--num-epoch", "2"],
        # two tutorial lines in one run, to keep the test short: `--network mlp` and the LR decay line
        ["--network", "mlp", "--lr", ".1", "--lr-factor", ".9", "--lr-factor-epoch", ".5", "--model-prefix", "model/lr"],
        ["--network", "lenet", *gpus, "--model-prefix", "model/lenet", "--rgb-mean", "33.3", "--rgb-std", "78.6",
         "--num-classes", "10", "--log-file", "train.log"],
    ]
    for flags in lines:
        code, out, err = _fit(capsys, *recipe, *TINY, *flags)
        assert code == 0, err
        assert out.splitlines()[-1].startswith("final: val top-1 accuracy"), out
    assert Path("model/mnist-0002.ckpt").is_file() and Path("model/lr-0001.ckpt").is_file()
    # --log-file: the Speedometer lines and the final line, as stdout had them, appended
    log = Path("train.log").read_text()
    assert "\r" not in log and "Epoch[0] Batch [" in log and log.splitlines()[-1].startswith("final: ")
    # --rgb-mean/--rgb-std on the 0-255 scale: the checkpoint's preprocessing holds them / 255
    meta = torch.load("model/lenet-0001.ckpt", map_location="cpu", weights_only=False)["lit_imgcls"]
    assert np.allclose(meta["mean"], [33.3 / 255]) and np.allclose(meta["std"], [78.6 / 255])


@pytest.mark.parametrize("flags, needle", [
    (["--num-classes", "12"], "num_classes is 12 but dataset mnist has 10 classes"),
    (["--num-examples", "70000"], "num_examples is 70000 but dataset mnist has 60000 training samples"),
    (["--rgb-mean", "1,2,3"], "rgb_mean has 3 values but the images of dataset mnist have 1 channel(s)"),
    (["--rgb-std", "0"], "rgb_std must be comma-separated numbers in (0, 255]"),
    (["--rgb-mean", "abc"], "rgb_mean must be comma-separated numbers in [0, 255]"),
    (["--log-file", "no/such/dir/train.log"], "cannot append to --log-file no/such/dir/train.log"),
])
def test_a_description_that_does_not_match_the_data_is_one_line(tmp_path, monkeypatch, capsys, flags, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = _fit(capsys, "--recipe", str(REPO / "recipes" / "mnist.yaml"), *TINY, *flags)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def _png_tree(root: Path, n: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_data_dir_of_train_and_val_packs(tmp_path, capsys):
    """MXNet's --data-dir held train.rec and val.rec: here a folder of two packs train/ and val/ (or one pack);
    --num-examples must then be the training pack's count, --num-classes its class count."""
    from lit_imgcls.registry import datasets

    WdsDataModule = datasets.get("wds")

    for split, n in (("train", 4), ("val", 2)):
        res = run_cli("dataset", "pack", str(_png_tree(tmp_path / "tree" / split, n)), str(tmp_path / "d" / split),
                      "--train-ratio", "1" if split == "train" else "0")
        assert res.returncode == 0, res.stderr
    dm = WdsDataModule(data_dir=str(tmp_path / "d"), data_nthreads=0)
    assert (dm.train_location, dm.val_location) == (str(tmp_path / "d" / "train"), str(tmp_path / "d" / "val"))
    assert WdsDataModule(data_dir=str(tmp_path / "d" / "train")).train_location == str(tmp_path / "d" / "train")
    base = ["--dataset", "wds", "--data-dir", str(tmp_path / "d"), "--network", "mlp", "--image-shape", "3,8,8",
            "--batch-size", "2", "--num-epochs", "1", "--data-nthreads", "0", "--progress-bar", "false",
            "--run-dir", str(tmp_path / "runs")]
    code, _, err = _fit(capsys, *base, "--num-examples", "5")
    assert code == 2 and "num_examples is 5 but dataset wds" in err and "has 8 training samples" in err, err
    code, out, err = _fit(capsys, *base, "--num-examples", "8", "--num-classes", "2")
    assert code == 0 and "final: val top-1 accuracy" in out, err


def test_remote_data_dir_of_the_folder_dataset_says_to_pack(tmp_path, capsys):
    code, _, err = _fit(capsys, "--recipe", str(REPO / "recipes" / "imagenet.yaml"), "--data-dir", "s3://dmlc/ilsvrc12/",
                        "--gpus", "", "--model-prefix", str(tmp_path / "m"), "--run-dir", str(tmp_path / "runs"))
    assert code == 2 and "data_dir s3://dmlc/ilsvrc12/ is remote" in err and "--dataset wds" in err, err
