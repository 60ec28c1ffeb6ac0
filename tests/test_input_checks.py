"""Inputs checked before the run, the same on every data path; class names that survive every route.

Each mistake is one line on stderr and exit 2 (no traceback, nothing trained, nothing written), or, for files
that cannot be used, a warning naming them while the run goes on without them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli

RNG = np.random.default_rng(11)


def _images(folder: Path, n: int, colour: tuple[int, int, int] | None = None, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        if colour:
            a[:20] = colour  # something to learn
        Image.fromarray(a).save(folder / f"{i}.png")


def _tree(root: Path, classes=("cat", "dog"), train: int = 8, val: int = 4) -> Path:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for split, n in (("train", train), ("val", val)):
        for k, c in enumerate(classes):
            _images(root / split / c, n, colours[k % 3], seed=k)
    return root


def in_process(capsys, *args: str):
    """``lit-imgcls ARGS`` through the CLI's own entry point in this process (what a failing check needs, without
    a new interpreter's start-up): the exit code and what it printed on stderr."""
    from lit_imgcls.cli import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lit-imgcls: error: "), stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


def fit_args(tmp: Path, data: Path | None = None, **kw) -> list[str]:
    args = {"dataset": "folder", "network": "lenet", "image_shape": "3,28,28", "num_epochs": "1", "batch_size": "4",
            "data_nthreads": "0", "progress_bar": "false", "lr": "0.01", "run_dir": str(tmp / "runs"),
            "model_prefix": str(tmp / "model" / "m"), "threads": "2"}
    if data is not None:
        args.update(data_train=str(data / "train"), data_val=str(data / "val"))
    args.update({k: str(v) for k, v in kw.items()})
    return [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", v)]


def test_hidden_files_and_folders_are_not_classes_or_images(tmp_path):
    data = _tree(tmp_path / "d")
    (data / "train" / ".ipynb_checkpoints").mkdir()
    (data / "train" / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text("{}")
    (data / "train" / "__MACOSX").mkdir()
    (data / "train" / "cat" / "._0.png").write_bytes(b"\0\5\26\7AppleDouble")
    (data / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (data / "val" / "dog" / ".ipynb_checkpoints").mkdir()
    shutil.copy(data / "val" / "dog" / "0.png", data / "val" / "dog" / ".ipynb_checkpoints" / "0.png")
    res = run_cli("fit", *fit_args(tmp_path, data))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "warning" not in res.stderr  # nothing to skip: hidden entries are not data at all
    meta = torch.load(tmp_path / "model" / "m-0001.ckpt", map_location="cpu", weights_only=True)["lit_imgcls"]
    assert meta["class_names"] == ["cat", "dog"]


@pytest.mark.parametrize("case", ["empty class", "one class", "fewer than a batch", "batch of 1 into BatchNorm",
                                  "npz fewer than a batch", "npz class without samples", "pack fewer than a batch",
                                  "images not in class folders", "one level too high"])
def test_training_data_that_cannot_train_is_one_line_before_the_run(tmp_path, case, capsys):
    data = _tree(tmp_path / "d")
    args = fit_args(tmp_path, data)
    if case == "empty class":
        (data / "train" / "bird").mkdir()
        (data / "val" / "bird").mkdir()
        says = r"no training samples of class 'bird'"
    elif case == "one class":
        shutil.rmtree(data / "train" / "dog")
        shutil.rmtree(data / "val" / "dog")
        says = r"only class 'cat'.*at least 2 classes"
    elif case == "fewer than a batch":
        args = fit_args(tmp_path, data, batch_size=32)
        says = r"16 training samples, fewer than one batch of batch_size 32.*--batch-size 16"
    elif case == "batch of 1 into BatchNorm":
        args = fit_args(tmp_path, data, batch_size=1, network="resnet18", image_shape="3,32,32")
        says = r"batch_size 1 with network resnet18, which has BatchNorm"
    elif case.startswith("npz"):
        x = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
        labels = [0, 1, 0] if "fewer" in case else [0, 0, 0]
        np.savez(tmp_path / "s.npz", x_train=x, y_train=np.array(labels), class_names=np.array(["a", "b"]))
        args = fit_args(tmp_path, dataset="npz", data_train=tmp_path / "s.npz", image_shape="1,28,28",
                        batch_size=8 if "fewer" in case else 2)
        says = r"3 training samples, fewer than one batch" if "fewer" in case else r"no training samples of class 'b'"
    elif case == "pack fewer than a batch":
        res = run_cli("dataset", "pack", str(data / "train"), str(tmp_path / "pack"))
        assert res.returncode == 0, res.stderr
        args = fit_args(tmp_path, dataset="wds", data_train=tmp_path / "pack", batch_size=32)
        says = r"16 training samples, fewer than one batch"
    elif case == "one level too high":  # with its sub-folders searched, train/ and val/ would be the classes
        args = fit_args(tmp_path, dataset="folder", data_train=data)
        says = r"looks one level too high: its class folders would be train, val"
    else:
        for p in (data / "train" / "cat").iterdir():
            p.rename(data / "train" / f"cat-{p.name}")
        shutil.rmtree(data / "train" / "cat")
        shutil.rmtree(data / "train" / "dog")
        says = r"has no class sub-folders.*holds images directly"
    code, err = in_process(capsys, "fit", *args)
    assert code == 2, err[-2000:]
    assert re.search(says, one_line(err)), err
    assert not (tmp_path / "model").exists() or not any((tmp_path / "model").glob("*.ckpt"))


def test_files_that_cannot_be_used_are_skipped_and_named(tmp_path):
    """A truncated JPEG, a decompression bomb, an empty file, a FIFO and a text file in a class folder: the run
    goes on without them and names each with the reason (it used to die mid-epoch with a traceback naming none,
    and a FIFO made it wait for ever)."""
    data = _tree(tmp_path / "d")
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    (data / "train" / "cat" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("L", (10000, 9000)).save(data / "train" / "dog" / "huge.png")
    (data / "train" / "dog" / "empty.jpg").write_bytes(b"")
    (data / "val" / "cat" / "notes.png").write_text("not an image")
    os.mkfifo(data / "train" / "cat" / "pipe.jpg")
    res = run_cli("fit", *fit_args(tmp_path, data, batch_size=1, network="lenet"), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("lit-imgcls: warning: skipped")]
    assert len(warnings) == 2, res.stderr  # one line per tree
    train, val = warnings
    assert "skipped 4 of 20 files" in train and "truncated.jpg: corrupt image" in train
    assert "pipe.jpg: not a regular file (a FIFO)" in train
    assert "huge.png: too many pixels" in train and "empty.jpg: empty file" in train
    assert "skipped 1 of 9 files" in val and "notes.png: not an image" in val
    assert "final: val top-1 accuracy" in res.stdout
    ckpt = str(tmp_path / "model" / "m-0001.ckpt")
    for name in (str(data / "train" / "cat"), str(data / "train" / "cat" / "pipe.jpg")):  # a folder, and by name
        res = run_cli("predict", "--checkpoint", ckpt, name, timeout=120)
        assert res.returncode == 1 and re.search(r"pipe\.jpg\s+error: .*not a regular file \(a FIFO\)", res.stdout)
    res = run_cli("dataset", "pack", str(data / "train"), str(tmp_path / "pack"), timeout=120)
    skipped = json.loads((tmp_path / "pack" / "manifest.json").read_text())["skipped"]
    assert res.returncode == 0 and {Path(s["path"]).name: s["reason"] for s in skipped}["pipe.jpg"] == \
        "not a regular file (a FIFO)"


def test_a_data_key_the_dataset_does_not_read_is_an_error(tmp_path, capsys):
    """`fit --recipe recipes/mnist.yaml --data-train PACK` trained MNIST and ignored the pack."""
    data = _tree(tmp_path / "d")
    assert run_cli("dataset", "pack", str(data / "train"), str(tmp_path / "pack")).returncode == 0
    res = run_cli("fit", "--recipe", str(REPO / "recipes" / "mnist.yaml"), "--data-train", str(tmp_path / "pack"),
                  "--model-prefix", str(tmp_path / "m"))
    line = one_line(res.stderr)
    assert res.returncode == 2
    assert "data_train is set" in line and "dataset mnist does not read it" in line and "wds" in line
    assert "is a pack: add --dataset wds" in line
    code, err = in_process(capsys, "fit", *fit_args(tmp_path, data, num_examples=8))
    # a folder trains on all its images: --num-examples describes them (MXNet's meaning), 8 is not their 16
    assert code == 2 and "num_examples is 8 but dataset folder" in one_line(err) and "16 training samples" in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data folder with train/ and val/ of cat and dog, the recipe flags) of a LeNet trained 3 epochs on it."""
    tmp = tmp_path_factory.mktemp("classes")
    data = _tree(tmp / "d", train=16, val=6)
    res = run_cli("fit", *fit_args(tmp, data, num_epochs=3))
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp, data


def _variant(data: Path, tmp: Path, how: str) -> Path:
    out = tmp / how
    shutil.copytree(data, out)
    for split in ("train", "val"):
        if how == "renamed":  # dog -> ant: same count, indices swap
            (out / split / "dog").rename(out / split / "ant")
        elif how == "added":
            shutil.copytree(out / split / "cat", out / split / "bird")
        elif how == "removed":
            shutil.rmtree(out / split / "dog")
            shutil.copytree(out / split / "cat", out / split / "cow")
    return out


@pytest.mark.parametrize("how,says", [("renamed", r"'ant' only in the data; 'dog' only in the checkpoint"),
                                      ("added", r"has 3 classes.*trained on 2: 'bird' only in the data"),
                                      ("removed", r"'cow' only in the data; 'dog' only in the checkpoint")])
def test_evaluating_on_other_classes_names_the_difference(trained, tmp_path, how, says, capsys):
    """validate and test used to report val/acc 0.0 for a renamed class folder (exit 0), and blame the network
    for an added one; score, validate, test and a resumed fit now share one check."""
    tmp, data = trained
    other = _variant(data, tmp_path, how)
    base = fit_args(tmp, other)
    runs = {cmd: in_process(capsys, cmd, *base) for cmd in ("validate", "test")}
    runs["score"] = in_process(capsys, "score", "--checkpoint", str(tmp / "model" / "m-0003.ckpt"), "--data-train",
                               str(other / "train"), "--data-val", str(other / "val"), "--data-nthreads", "0")
    runs["fit --load-epoch"] = in_process(capsys, "fit", *fit_args(tmp, other, num_epochs=4, load_epoch=3))
    for cmd, (code, err) in runs.items():
        assert code == 2 and re.search(says, one_line(err)), (cmd, err)
    assert not (tmp / "model" / "m-0004.ckpt").exists()
    if how == "renamed":  # and in a process of its own, as a user runs it
        res = run_cli("validate", *base)
        assert res.returncode == 2 and re.search(says, one_line(res.stderr)), res.stderr


def test_the_same_classes_evaluate_and_another_network_is_one_line(trained, tmp_path, capsys):
    tmp, data = trained
    res = run_cli("validate", *fit_args(tmp, data))
    assert res.returncode == 0 and "epoch 3: val/acc" in res.stdout, res.stderr[-2000:]
    # the validation folder alone is enough to evaluate; training needs the training folder
    only_val = [a for a in fit_args(tmp) if a != "--data-train"] + ["--data-val", str(data / "val")]
    code, err = in_process(capsys, "validate", *only_val)
    assert code == 0, err
    code, err = in_process(capsys, "fit", *[a.replace(str(tmp / "model"), str(tmp_path)) for a in only_val])
    assert code == 2 and "needs data_train" in one_line(err)
    # a validation folder of other classes than the training folder's: named as such
    other = _variant(data, tmp_path, "renamed")
    code, err = in_process(capsys, "validate", *fit_args(tmp, dataset="folder", data_train=data / "train",
                                                         data_val=other / "val"))
    line = one_line(err)
    assert code == 2 and "validation folder" in line and "the training folder has 2" in line, line
    assert "'ant' only in the data; 'dog' only in the training data" in line, line
    res = run_cli("validate", *fit_args(tmp, data, network="mlp"))
    line = one_line(res.stderr)
    assert res.returncode == 2 and "holds weights of network lenet, not of mlp" in line and "--network lenet" in line


def test_fine_tuning_on_renamed_classes_starts_a_fresh_classifier(trained, tmp_path):
    """Same class count, other names: the classifier's output i would mean another class, so it is not copied."""
    tmp, data = trained
    other = _variant(data, tmp_path, "renamed")
    ckpt = tmp / "model" / "m-0003.ckpt"
    res = run_cli("fit", *fit_args(tmp_path, other, pretrained=ckpt))
    assert res.returncode == 0, res.stderr[-2000:]
    said = re.search(r"pretrained: (.*)", res.stdout + res.stderr).group(1)
    assert "classifier not loaded (head.bias, head.weight)" in said and "2 new (head.weight, head.bias)" in said
    res = run_cli("fit", *fit_args(tmp_path / "same", data, pretrained=ckpt))
    assert res.returncode == 0 and "classifier not loaded" not in res.stdout + res.stderr


def test_a_pack_of_nothing_is_an_error_and_keeps_the_previous_pack(tmp_path):
    """A folder one level too high (class folders holding folders) used to pack 0 images and exit 0."""
    data = _tree(tmp_path / "d")
    out = tmp_path / "pack"
    assert run_cli("dataset", "pack", str(data / "train"), str(out)).returncode == 0
    before = (out / "manifest.json").read_bytes()
    res = run_cli("dataset", "pack", str(data), str(out))
    assert res.returncode == 2 and "looks one level too high: its class folders would be train, val" in \
        one_line(res.stderr)
    assert "or data_dir" not in res.stderr  # pack has no data_dir: name fit's flag, as a flag
    nested = tmp_path / "nested"
    shutil.copytree(data / "train", nested / "2024")
    shutil.copytree(data / "val", nested / "2025")
    res = run_cli("dataset", "pack", str(nested), str(out))
    assert res.returncode == 2
    line = one_line("\n".join(x for x in res.stderr.splitlines() if not x.startswith("packing ")))
    assert "nothing to pack" in line and "(2024, 2025) hold no images directly" in line and "--recursive" in line
    assert (out / "manifest.json").read_bytes() == before  # the previous pack is untouched
    for p in (data / "train" / "cat").iterdir():
        p.write_bytes(b"")
    for p in (data / "train" / "dog").iterdir():
        p.write_bytes(b"not an image")
    res = run_cli("dataset", "pack", str(data / "train"), str(tmp_path / "empty"))
    assert res.returncode == 2 and "none can be used (e.g. " in res.stderr, res.stderr
    assert not (tmp_path / "empty" / "manifest.json").exists()


def test_predict_takes_max_pixels_as_its_message_says(trained, tmp_path):
    tmp, _ = trained
    Image.new("L", (10000, 9000), 128).save(tmp_path / "panorama.png")
    ckpt = str(tmp / "model" / "m-0003.ckpt")
    res = run_cli("predict", "--checkpoint", ckpt, str(tmp_path / "panorama.png"))
    assert res.returncode == 1 and "too many pixels" in res.stdout and "`predict` take --max-pixels" in res.stdout
    res = run_cli("predict", "--checkpoint", ckpt, "--max-pixels", "100000000", str(tmp_path / "panorama.png"))
    assert res.returncode == 0 and re.search(r"panorama\.png\s+(cat|dog) ", res.stdout), res.stdout + res.stderr


def test_lists_leave_out_names_a_list_cannot_hold_and_packs_name_classes_train_lacks(tmp_path):
    data = _tree(tmp_path / "d")
    shutil.copy(data / "train" / "cat" / "0.png", data / "train" / "cat" / "tab\there.png")
    res = run_cli("dataset", "pack", str(data / "train"), str(tmp_path / "lists"), "--list")
    assert res.returncode == 0, res.stderr
    assert "1 files have a tab or line break in their name" in res.stderr and "tab\\there.png" in res.stderr
    assert "tab\there" not in (tmp_path / "lists" / "train.lst").read_text()
    res = run_cli("dataset", "pack", str(tmp_path / "lists" / "train.lst"), str(tmp_path / "repacked"))
    assert res.returncode == 0 and "skipped" not in res.stderr, res.stderr  # every listed image is found
    (data / "train" / "bird").mkdir()  # an empty class folder
    res = run_cli("dataset", "pack", str(data / "train"), str(tmp_path / "pack"))
    assert res.returncode == 0
    assert "warning: train has no sample of 1 of the 3 classes ('bird')" in res.stderr, res.stderr
