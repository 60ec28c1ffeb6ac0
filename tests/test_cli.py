"""The command line: MXNet's flags parse, help explains every option, bad input gets one clear line and exit 2."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from lit_imgcls.recipe import Recipe

from conftest import REPO, quick_args, run_cli

SEED_FLAGS = ["--network", "lenet", "--gpus", "0", "--lr", ".1", "--lr-factor", ".9", "--lr-factor-epoch", ".5",
              "--model-prefix", "model/mnist", "--load-epoch", "8", "--kv-store", "dist_sync"]


def _printed(*args: str) -> dict:
    res = run_cli("fit", *args, "--print-recipe")
    assert res.returncode == 0, res.stderr
    return yaml.safe_load(res.stdout)


def test_seed_command_line_parses_onto_the_recipe():
    got = _printed("--recipe", str(REPO / "recipes/mnist.yaml"), *SEED_FLAGS)
    assert got["network"] == "lenet" and got["gpus"] == "0" and got["lr"] == 0.1
    assert got["lr_factor"] == 0.9 and got["lr_factor_epoch"] == 0.5
    assert got["model_prefix"] == "model/mnist" and got["load_epoch"] == 8 and got["kv_store"] == "dist_sync"
    # --lr-factor-epoch on the command line means MXNet's step decay, whatever the recipe said
    assert got["lr_schedule"] == "step"
    assert got["batch_size"] == 64  # untouched keys keep the recipe's value


@pytest.mark.parametrize(
    "flags, key, value",
    [(["--num-layers", "50", "--network", "resnet"], "num_layers", 50), (["--batch-size", "256"], "batch_size", 256),
     (["--num-epochs", "3"], "num_epochs", 3), (["--lr-step-epochs", "30,60"], "lr_step_epochs", "30,60"),
     (["--mom", "0.8"], "mom", 0.8), (["--wd", "0.001"], "wd", 0.001), (["--top-k", "5"], "top_k", 5),
     (["--disp-batches", "7"], "disp_batches", 7), (["--data-nthreads", "2"], "data_nthreads", 2),
     (["--kv-store", "local"], "kv_store", "local"), (["--gpus", "0,1,3"], "gpus", "0,1,3"), (["--gpus", ""], "gpus", ""),
     (["--lr_factor", "0.5"], "lr_factor", 0.5)],
)
def test_each_mxnet_flag(flags, key, value):
    assert _printed(*flags)[key] == value


def test_config_is_an_alias_of_recipe_and_flags_override_in_order(tmp_path):
    (tmp_path / "r.yaml").write_text("lr: 0.3\nbatch_size: 32\n")
    got = _printed("--config", str(tmp_path / "r.yaml"), "--batch-size", "16")
    assert got["lr"] == 0.3 and got["batch_size"] == 16


def test_printed_recipe_is_a_recipe_again(tmp_path):
    text = run_cli("fit", "--recipe", str(REPO / "recipes/mnist.yaml"), "--print-recipe").stdout
    (tmp_path / "again.yaml").write_text(text)
    assert _printed("--recipe", str(tmp_path / "again.yaml")) == yaml.safe_load(text)


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_help_explains_every_recipe_key(command):
    res = run_cli(command, "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for field in dataclasses.fields(Recipe):
        assert f"--{field.name.replace('_', '-')}" in text, field.name
    # every key's description from the Recipe docstring is shown (not just the flag)
    assert "MXNet's FactorScheduler" not in text  # that is the schedule class's text, not the recipe's
    assert "epochs between two decays of step" in text and "CUDA devices like" in text


def test_top_level_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for command in ("fit", "validate", "test", "list"):
        assert f"\n  {command} " in res.stdout


def test_top_level_help_gives_each_command_a_whole_sentence(capsys):
    """Each command's summary in ``lit-imgcls --help`` is a whole sentence, not a first line cut mid-phrase."""
    from lit_imgcls.cli import COMMANDS, main

    assert main(["--help"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(lines) == len(COMMANDS)
    for line in lines:
        assert line.rstrip().endswith("."), line


def _one_clear_line(res, *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_recipe_key(tmp_path):
    (tmp_path / "r.yaml").write_text("lr: 0.1\nlr_facter: 0.5\n")
    _one_clear_line(run_cli("fit", "--recipe", str(tmp_path / "r.yaml")), "lr_facter", "did you mean lr_factor", "valid keys")


def test_wrong_type():
    _one_clear_line(run_cli("fit", "--lr", "fast"), "--lr must be a number", "fast")


def test_wrong_type_in_recipe(tmp_path):
    (tmp_path / "r.yaml").write_text("batch_size: many\n")
    _one_clear_line(run_cli("fit", "--recipe", str(tmp_path / "r.yaml")),
                    f"batch_size in recipe {tmp_path / 'r.yaml'} must be a whole number", "'many'")


def test_unknown_network(tmp_path):
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, network="lenett")), "unknown network 'lenett'", "lenet", "timm")


def test_unknown_dataset_and_kv_store(tmp_path):
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, dataset="mnsit")), "unknown dataset", "did you mean mnist")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, kv_store="dist")), "unknown kv-store", "dist_sync")


def test_missing_files(tmp_path):
    _one_clear_line(run_cli("fit", "--recipe", str(tmp_path / "none.yaml")), "recipe file not found")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, data_dir=tmp_path / "nowhere")), "data_dir does not exist")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, pretrained=tmp_path / "w.pt")), "pretrained does not exist")


def test_bad_values(tmp_path):
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, lr=-0.1)), "lr must be positive")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, gpus="0,x")), "gpus must be")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, lr_schedule="step")), "lr_factor_epoch")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, lr_schedule="sawtooth")), "--lr-schedule must be one of",
                    "cosine", "sawtooth")
    _one_clear_line(run_cli("nofit"), "unknown command", "fit")


def test_gpu_asked_on_a_machine_without_one(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _one_clear_line(run_cli("fit", *quick_args(tmp_path, gpus="0")), "CUDA device", "--gpus ''")


def test_recipe_that_is_not_a_mapping(tmp_path):
    (tmp_path / "r.yaml").write_text("- lr\n- 0.1\n")
    _one_clear_line(run_cli("fit", "--recipe", str(tmp_path / "r.yaml")), "must be a mapping")
    (tmp_path / "y.yaml").write_text("lr: [\n")
    _one_clear_line(run_cli("fit", "--recipe", str(tmp_path / "y.yaml")), "cannot read recipe")
    for text in ("", "# only a comment\n", "{}\n"):  # once "fit: Unexpected config:" and nothing more
        (tmp_path / "e.yaml").write_text(text)
        _one_clear_line(run_cli("fit", "--recipe", str(tmp_path / "e.yaml"), "--print-recipe"), "holds no keys")


def test_yaml_recipe_cannot_construct_python_objects(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "r.yaml").write_text(f"lr: !!python/object/apply:os.system ['touch {marker}']\n")
    res = run_cli("fit", "--recipe", str(tmp_path / "r.yaml"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["list", "networks"], ["--help"], ["fit", "--help"], ["fit", "--print-recipe"]])
def test_a_reader_that_stops_reading_gets_no_traceback(argv):
    """`lit-imgcls ... | head -1`: the pipe is closed before anything is written, so every write meets it."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes a byte
    proc = subprocess.run([sys.executable, "-m", "lit_imgcls", *argv], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    os.close(write)
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    # 141 = 128 + SIGPIPE, as a Unix tool the pipe killed; argparse's own help printer ignores the failed write
    assert proc.returncode == (0 if argv == ["fit", "--help"] else 141), (proc.returncode, proc.stderr)
