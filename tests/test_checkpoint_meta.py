"""A checkpoint is data (issue 14 item 2): every field of its meta is checked in one place (read_meta) before
anything is built from it; a checkpoint of another network is one line naming both networks, wherever it is given;
``--resume auto`` names each checkpoint it skips and why."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ckpt_factory import MALFORMED, checkpoint, malformed, write
from conftest import run_cli
from PIL import Image

from lit_imgcls.errors import UsageError


def _one_line_exit_2(returncode: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert returncode == 2 and len(lines) == 1 and "Traceback" not in stderr, (returncode, stderr[-3000:])
    return lines[0]


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
    return path


# What each malformed field's message must name (the field, or the rule it broke).
NAMES = {
    "image_shape_text": "image_shape", "class_names_int": "class_names", "class_names_empty": "class_names",
    "class_names_not_strings": "class_names", "state_dict_list": "state_dict", "state_dict_of_strings": "state_dict",
    "recipe_text": "recipe", "mean_text": "mean", "mean_wrong_length": "mean", "std_zero": "std",
    "input_size_huge": "input_size", "input_size_too_many_pixels": "H x W", "input_size_text": "input_size",
    "channels_zero": "input_size", "data_config_list": "data_config", "recipe_network_int": "network",
    "recipe_lr_text": "lr", "recipe_image_shape_huge": "image_shape", "version_int": "version",
    "position_text": "lit_imgcls_position", "pretrained_text": "pretrained",
}


@pytest.mark.parametrize("name", [m[0] for m in MALFORMED])
def test_each_malformed_field_is_one_line_from_predict(tmp_path, digit, capsys, name):
    """The CLI's own entry point in this process (fast); one case per command also runs as a real process below."""
    from lit_imgcls.cli import main

    path = write(tmp_path / f"{name}.ckpt", malformed(name))
    rc = main(["predict", "--checkpoint", str(path), str(digit), "--threads", "1"])
    line = _one_line_exit_2(rc, capsys.readouterr().err)
    assert line.startswith("lit-imgcls: error: checkpoint ") and NAMES[name] in line, line


def test_the_factory_checkpoint_itself_is_accepted(tmp_path):
    """The control for the cases above: unchanged, the crafted checkpoint passes every check."""
    from lit_imgcls.checkpoint_meta import read_meta

    meta = read_meta(checkpoint(), "good.ckpt")
    assert meta.image_shape == (1, 28, 28) and meta.class_names[3] == "3"


def test_score_with_a_huge_image_shape_is_one_line(tmp_path):
    path = write(tmp_path / "huge.ckpt", malformed("input_size_huge"))
    res = run_cli("score", "--checkpoint", str(path), "--threads", "1", cwd=tmp_path)
    line = _one_line_exit_2(res.returncode, res.stderr)
    assert "input_size must be (C, H, W)" in line and "16384" in line and "(1, 100000, 100000)" in line


def test_predict_builds_the_network_on_the_meta_device_first(tmp_path, digit, capsys):
    """A data_config within every bound (64 x 9000 x 9000) over a small network's weights: an MLP for that input
    would need terabytes; the network is built without memory first, so the misfit is one line, not an attempt.
    (In this process, as the validate case below: both need Lightning, imported once.)"""
    from lit_imgcls.cli import main

    ckpt = checkpoint("mlp")
    ckpt["lit_imgcls"]["data_config"].update(input_size=[64, 9000, 9000], mean=[0.5] * 64, std=[0.25] * 64)
    for key in ("image_shape", "mean", "std"):
        del ckpt["lit_imgcls"][key]
    path = write(tmp_path / "wide.ckpt", ckpt)
    rc = main(["predict", "--checkpoint", str(path), str(digit), "--threads", "1"])
    line = _one_line_exit_2(rc, capsys.readouterr().err)
    assert "does not hold weights of network mlp" in line and "net.body.1.weight" in line, line


def test_validate_with_another_networks_checkpoint_names_both(tmp_path, capsys):
    from lit_imgcls.cli import main

    write(tmp_path / "m-0001.ckpt", checkpoint("mlp"))
    rc = main(["validate", "--network", "lenet", "--model-prefix", str(tmp_path / "m"), "--load-epoch", "1",
               "--num-examples", "320", "--threads", "1"])
    line = _one_line_exit_2(rc, capsys.readouterr().err)
    assert "holds weights of network mlp, not of lenet" in line and "--network mlp" in line, line


def test_pretrained_of_another_network_is_refused_naming_both(tmp_path):
    from lit_imgcls.networks import create_network
    from lit_imgcls.networks.factory import load_pretrained

    path = write(tmp_path / "mlp.ckpt", checkpoint("mlp"))
    net = create_network("lenet", num_classes=10, in_chans=1, img_size=28)
    with pytest.raises(UsageError, match=r"holds weights of network mlp, not of lenet .*--pretrained takes"):
        load_pretrained(net, path, [str(i) for i in range(10)], "lenet")
    same = load_pretrained(create_network("mlp", num_classes=10, in_chans=1, img_size=28), path,
                           [str(i) for i in range(10)], "mlp")
    assert len(same.loaded) == 6 and not same.skipped  # the same network still loads whole


def test_pretrained_with_malformed_meta_is_refused(tmp_path):
    from lit_imgcls.networks import create_network
    from lit_imgcls.networks.factory import load_pretrained

    path = write(tmp_path / "bad.ckpt", malformed("class_names_int"))
    with pytest.raises(UsageError, match="class_names must be a list"):
        load_pretrained(create_network("mlp", num_classes=10, in_chans=1, img_size=28), path, None, "mlp")


def test_resume_auto_says_why_it_skipped_each_checkpoint(tmp_path, capsys):
    from lit_imgcls.checkpoints import newest_readable

    prefix = str(tmp_path / "run")
    good = write(tmp_path / "run-0001.ckpt", checkpoint("lenet"))
    nan = checkpoint("lenet")
    nan["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in nan["state_dict"].items()}
    write(tmp_path / "run-0002.ckpt", nan)
    (tmp_path / "run-0003.ckpt").write_bytes(b"PK\x03\x04 not a whole checkpoint")
    write(tmp_path / "run-0004.ckpt", malformed("class_names_int", network="lenet"))
    write(tmp_path / "run-0005.ckpt", checkpoint("mlp"))
    for epoch in range(1, 6):  # written in epoch order, as a run would
        os.utime(tmp_path / f"run-{epoch:04d}.ckpt", ns=(epoch * 10**9, epoch * 10**9))
    assert newest_readable(prefix, "lenet") == str(good)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 4 and all(w.startswith("lit-imgcls: warning: ") and "skipping it" in w for w in warnings)
    assert "run-0005.ckpt holds weights of network mlp, not of lenet" in warnings[0]
    assert "run-0004.ckpt: class_names must be" in warnings[1]
    assert "run-0003.ckpt is damaged or not a lit-imgcls checkpoint" in warnings[2]
    assert "run-0002.ckpt holds weights that are not finite" in warnings[3]


def test_resume_auto_with_nothing_resumable_says_so(tmp_path, capsys):
    from lit_imgcls.checkpoints import resume_path
    from lit_imgcls.recipe import Recipe

    write(tmp_path / "run-0001.ckpt", checkpoint("mlp"))
    with pytest.raises(UsageError, match=r"--resume auto: none of the 1 checkpoint\(s\) under .* can be resumed"):
        resume_path(Recipe(network="lenet", model_prefix=str(tmp_path / "run"), resume="auto"))
    assert "network mlp, not of lenet" in capsys.readouterr().err


def test_recipe_image_shape_out_of_bounds_is_refused():
    """The neighbour of the checkpoint's bound: the same rule (one home) for a recipe's image_shape."""
    from lit_imgcls.recipe import Recipe, parse_image_shape, validate

    with pytest.raises(UsageError, match=r"image_shape must be .* H x W <= \d+ pixels, got \(1, 100000, 100000\)"):
        validate(Recipe(image_shape="1,100000,100000"))
    with pytest.raises(UsageError, match="image_shape must be 'C,H,W'"):
        parse_image_shape("1," + "9" * 5000 + ",1")
    assert parse_image_shape("3, 224,224") == (3, 224, 224)
