"""A new user's mistakes, through every command: each is one line `lit-imgcls: error: ...` saying what is wrong and
what is valid, exit code 2, no traceback, nothing deleted (issue 16, item 1).

The table runs in-process through ``lit_imgcls.cli.main`` (a subprocess costs ~5 s); two real subprocesses check
the same through the console entry point.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_cli

from lit_imgcls.cli import main

RECIPE = str(REPO / "recipes" / "mnist.yaml")
QUICK = ["--num-epochs", "1", "--num-examples", "256", "--progress-bar", "false", "--threads", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Real inputs of the mistakes: recipes with bad values, an image tree one level too high, a file in the way."""
    tmp = tmp_path_factory.mktemp("mistakes")
    recipes = {"optimizer": "optimizer: adam\n", "schedule": "lr_schedule: cosin\n", "batch": "batch_size: -3\n",
               "typo": "lr_schedul: cosine\n", "epochs": "num_epochs: many\n", "callbacks": "callbacks: 3\n"}
    for name, text in recipes.items():
        (tmp / f"{name}.yaml").write_text(text)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (tmp / "photos" / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                    tmp / "photos" / split / cls / f"{i}.png")
    (tmp / "taken").write_text("a file of the user's\n")
    (tmp / "img.png").write_bytes((tmp / "photos/train/cat/0.png").read_bytes())
    return tmp


def _cases(t: Path) -> list[tuple[list[str], list[str]]]:
    """(argv, words the error line must hold) for each mistake; ``t`` is the ``files`` folder."""
    r = lambda name: str(t / f"{name}.yaml")  # noqa: E731
    return [
        # fit: the recipe's keys, from flags and from files
        (["fit", "--kv-store", "fsdp", *QUICK], ["kv_store fsdp", "--gpus", "kv_store device"]),
        (["fit", "--kv-store", "deepspeed", *QUICK], ["kv_store deepspeed", "--gpus"]),
        (["fit", "--optimizer", "adam"], ["--optimizer must be one of sgd, adamw", "'adam'", "did you mean adamw"]),
        (["fit", "--lr-schedul", "cosine"], ["unknown flag '--lr-schedul'", "did you mean --lr-schedule"]),
        (["fit", "--recipe", r("typo")], ["unknown recipe key 'lr_schedul'", "did you mean lr_schedule"]),
        (["fit", "--recipe", r("optimizer")], [f"optimizer in recipe {r('optimizer')}", "one of sgd, adamw"]),
        (["fit", "--recipe", r("schedule")], [f"lr_schedule in recipe {r('schedule')}", "cosine, onecycle, linear or null",
                                             "did you mean cosine"]),
        (["fit", "--recipe", r("epochs")], [f"num_epochs in recipe {r('epochs')} must be a whole number", "'many'"]),
        (["fit", "--recipe", r("callbacks")], ["callbacks in recipe", "a list of mappings or null", "got 3"]),
        (["fit", "--recipe", r("batch")], ["batch_size must be a positive integer, got -3",
                                          f"key batch_size of recipe {r('batch')}"]),
        (["fit", "--recipe", r("batch"), "--print-recipe"], ["batch_size must be a positive integer",
                                                            f"key batch_size of recipe {r('batch')}"]),
        (["fit", "--network", "resnet5O"], ["unknown network 'resnet5O'", "did you mean resnet50"]),
        (["fit", "--network", "vit_bas_patch16_224"], ["did you mean vit_base_patch16_224"]),
        (["fit", "--threads", "x"], ["--threads must be a whole number or null, got 'x'"]),
        (["fit", "--progress-bar", "maybe"], ["--progress-bar must be true or false"]),
        (["fit", "extra"], ["unexpected argument 'extra'"]),
        # evaluation: a file that is no checkpoint
        (["validate", "--model-prefix", str(t / "none" / "m"), "--load-epoch", "1"], ["no checkpoint for epoch 1"]),
        (["test", "--optimizer", "adan"], ["did you mean adamw"]),
        (["predict", "--checkpoint", RECIPE, str(t / "img.png")], ["is not a checkpoint", "not a PyTorch file"]),
        (["score", "--checkpoint", RECIPE], ["is not a checkpoint"]),
        (["fit", "--pretrained", RECIPE, *QUICK], ["is not a checkpoint"]),
        # dataset
        (["dataset", "pack", str(t / "photos"), str(t / "out")], ["one level too high", "photos/train"]),
        (["dataset", "pack", str(t / "photos/train"), str(t / "taken")], ["taken: it is an existing file"]),
        (["dataset", "pack", str(t / "photos/train"), str(t / "out2"), "--formt", "wds"], ["did you mean --format"]),
        (["dataset", "pack", str(t / "photos/train"), str(t / "out3"), "--format", "tar"],
         ["--format must be one of wds, ffcv, both", "'tar'"]),
        (["dataset", "inspect", str(t / "nothing")], ["no manifest.json"]),
        (["dataset", "verify", str(t / "photos")], ["no manifest.json"]),
        (["dataset", "photos", str(t / "ph"), "--classes", "x"], ["--classes must be a whole number"]),
        # benchmark, plot, launch, list, the command itself
        (["benchmark", "io", str(t / "photos/train"), "--nthreads", "2"], ["unknown flag '--nthreads'"]),
        (["benchmark", "train", "--batch-sizes", "x"], ["batch_sizes must be whole numbers"]),
        (["benchmark", "infer", "--networks", "lenett", "--steps", "1"], ["unknown network 'lenett'",
                                                                         "did you mean lenet"]),
        (["plot", str(t / "no-runs")], ["run folder not found"]),
        (["plot", str(t), "--x", "time"], ["--x must be one of step, epoch"]),
        (["launch", "-n", "x", "--", "fit"], ["-n must be a whole number"]),
        (["list", "netwroks"], ["list KIND must be one of networks", "'netwroks'", "did you mean networks"]),
        (["fitt"], ["unknown command 'fitt'", "did you mean fit"]),
    ]


# jsonargparse's and PyTorch's own wording, which a user must not need to read
FOREIGN = ("Union subtypes", "typing.Literal", "Parser key", "<class", "weights_only", "Traceback")


def test_every_mistake_is_one_line(files, capsys):
    before = sorted(str(p) for p in files.rglob("*"))
    problems = []
    for argv, words in _cases(files):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        line = lines[-1] if lines else ""
        if not (code == 2 and len(lines) == 1 and line.startswith("lit-imgcls: error: ")
                and all(w in line for w in words) and not any(f in out.err for f in FOREIGN)):
            problems.append(f"{' '.join(argv)} -> {code}: {out.err.strip()[-600:]}")
    # nothing the user had is gone, and a refused pack left no output folder behind
    assert sorted(str(p) for p in files.rglob("*")) == before
    assert not problems, "\n".join(problems)


def test_default_data_nthreads_fits_the_machine(tiny_pack, capsys):
    """Unset, data_nthreads fits the cores (FFCV's numba refuses more, torch warns of more workers); the printed
    recipe shows the value used. An explicit value FFCV cannot run is one line naming the limit."""
    import numba

    from lit_imgcls.cores import usable_cores
    from lit_imgcls.data.formats.ffcv import FFCVDataModule

    assert main(["fit", "--dataset", "ffcv", "--data-train", str(tiny_pack), "--print-recipe"]) == 0
    printed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("data_nthreads:")]
    value = int(printed[0].split(":")[1])
    assert 1 <= value <= min(4, usable_cores())
    assert FFCVDataModule(data_train=str(tiny_pack), data_nthreads=value).workers == value  # accepted
    too_many = int(numba.config.NUMBA_NUM_THREADS) + 1
    code = main(["fit", "--dataset", "ffcv", "--data-train", str(tiny_pack), "--data-nthreads", str(too_many),
                 "--batch-size", "2", *QUICK[:2], "--progress-bar", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"data_nthreads {too_many} is more than FFCV can run here" in err[0]
    assert f"--data-nthreads 1 to {too_many - 1}" in err[0]


def test_mistakes_through_the_console_script(files):
    """The real entry point: a recipe given as a checkpoint, and a bad recipe value; stderr is the one line."""
    res = run_cli("predict", "--checkpoint", RECIPE, str(files / "img.png"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("lit-imgcls: error: ") and "is not a checkpoint" in res.stderr
    assert "weights_only" not in res.stderr
    res = run_cli("fit", "--recipe", str(files / "schedule.yaml"), env={"PYTHONWARNINGS": "default"})
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "lr_schedule in recipe" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("kv_store", ["fsdp", "deepspeed"])
def test_a_kv_store_refused_on_the_cpu_leaves_no_folders_behind(kv_store, tmp_path, monkeypatch, capsys):
    """fsdp/deepspeed on the CPU used to be refused only after model/ and runs/ had been made (empty folders left in
    the user's folder); the refusal now comes before the data is loaded or anything is written."""
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--recipe", str(REPO / "recipes/mnist.yaml"), "--kv-store", kv_store, *QUICK]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lit-imgcls: error: kv_store {kv_store} shards the network"), err
    assert list(tmp_path.iterdir()) == []
