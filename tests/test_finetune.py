"""Fine-tuning (MXNet's fine-tune.py): weights from a checkpoint of another task, a new classifier, frozen or
slower backbone; and the .npz dataset the test builds its two tasks with."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lit_imgcls.io import load_checkpoint

from conftest import quick_args, run_cli

ACC = re.compile(r"final: val top-1 accuracy ([\d.]+)")


def _task(path, arrays, digits, n_train, n_val=1000):
    """An .npz dataset of the MNIST images of ``digits``, relabelled 0..len(digits)-1."""
    def pick(x, y, n):
        keep = np.isin(y, digits)
        x, y = x[keep][:n], y[keep][:n]
        return x, np.searchsorted(np.array(digits), y).astype(np.int64)

    x_train, y_train = pick(arrays["train_images"], arrays["train_labels"], n_train)
    x_val, y_val = pick(arrays["test_images"], arrays["test_labels"], n_val)
    np.savez(path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
             class_names=np.array([str(d) for d in digits]), mean=np.array([0.1307]), std=np.array([0.3081]))
    return path


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, mnist_arrays):
    """Pretrained LeNet on digits 0-5 (6 classes), and a small 4-class task: digits 6-9, 128 training images."""
    tmp = tmp_path_factory.mktemp("finetune")
    source = _task(tmp / "digits0-5.npz", mnist_arrays, [0, 1, 2, 3, 4, 5], 3000)
    target = _task(tmp / "digits6-9.npz", mnist_arrays, [6, 7, 8, 9], 128)
    res = run_cli("fit", *quick_args(tmp / "pre", dataset="npz", data_train=source, num_examples=3000), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return tmp, target, tmp / "pre/model/mnist-0001.ckpt"


def _fit(tmp, name, target, **extra):
    args = quick_args(tmp / name, dataset="npz", data_train=target, num_epochs=1, batch_size=32, lr=0.05, seed=1, **extra)
    res = run_cli("fit", *args, cwd=tmp)
    assert res.returncode == 0, res.stderr
    return float(ACC.search(res.stdout).group(1)), res, tmp / name / "model/mnist-0001.ckpt"


def test_finetuning_beats_training_from_scratch_with_the_same_steps(tasks):
    tmp, target, pretrained = tasks
    scratch, _, _ = _fit(tmp, "scratch", target)
    tuned, res, ckpt = _fit(tmp, "tuned", target, pretrained=pretrained)
    print(f"after 4 steps: fine-tuned {tuned:.3f}, from scratch {scratch:.3f}")
    # 4 steps of 32 images: from scratch LeNet has barely started; the digit features carry over
    assert tuned > scratch + 0.1, (tuned, scratch)
    assert tuned > 0.7, tuned
    # the report says what came from the file and what is new (the 6-class head does not fit 4 classes)
    report = res.stderr + res.stdout
    assert re.search(r"pretrained: loaded 6 tensors from \S+mnist-0001\.ckpt; skipped 2 with other shapes "
                     r"\(head\.weight, head\.bias\); 2 new \(head\.weight, head\.bias\)", report), report
    meta = load_checkpoint(ckpt)["lit_imgcls"]
    assert meta["class_names"] == ["6", "7", "8", "9"] and meta["pretrained"]["new"] == ["head.weight", "head.bias"]


def test_frozen_backbone_keeps_the_loaded_weights(tasks):
    tmp, target, pretrained = tasks
    _, _, ckpt = _fit(tmp, "frozen", target, pretrained=pretrained, freeze_backbone="true")
    before = load_checkpoint(pretrained)["state_dict"]
    after = load_checkpoint(ckpt)["state_dict"]
    for k in after:
        if k.startswith("net.head."):
            assert after[k].shape[0] == 4
        else:
            assert torch.equal(before[k], after[k]), k
    assert not torch.equal(after["net.head.bias"], torch.zeros(4))


def test_backbone_learns_at_its_own_rate(tasks):
    tmp, target, pretrained = tasks
    _, _, ckpt = _fit(tmp, "slow", target, pretrained=pretrained, backbone_lr_mult=0.1)
    groups = load_checkpoint(ckpt)["optimizer_states"][0]["param_groups"]
    rates = sorted({round(g["initial_lr"], 6) for g in groups})
    assert rates == [0.005, 0.05]


def test_bad_finetuning_input_is_one_line(tmp_path, tasks):
    _, target, _ = tasks
    bad = run_cli("fit", *quick_args(tmp_path, dataset="npz", data_train=target, backbone_lr_mult=0), cwd=tmp_path)
    assert bad.returncode == 2 and "backbone_lr_mult must be positive" in bad.stderr
    mlp_less = tmp_path / "noise.pt"
    torch.save({"w": torch.zeros(3)}, mlp_less)
    bad = run_cli("fit", *quick_args(tmp_path, dataset="npz", data_train=target, pretrained=mlp_less), cwd=tmp_path)
    assert bad.returncode == 2 and "no tensor in" in bad.stderr and "Traceback" not in bad.stderr
    # an .npz whose arrays would need unpickling is refused, not loaded
    evil = tmp_path / "evil.npz"
    np.savez(evil, x_train=np.array([object()], dtype=object), y_train=np.zeros(1))
    bad = run_cli("fit", *quick_args(tmp_path, dataset="npz", data_train=evil), cwd=tmp_path)
    assert bad.returncode == 2 and "object arrays are refused" in bad.stderr, bad.stderr
