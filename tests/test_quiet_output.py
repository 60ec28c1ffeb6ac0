"""Quiet, useful output (issue 16 item 4): no Lightning notices about Lightning itself, run folders named after the
data and the network built, `validate` naming its checkpoint, `dataset inspect`'s class spread, predict's table
header and true labels, `benchmark io` on a corpus too small for its batches."""

from __future__ import annotations

import re

from conftest import quick_args, run_cli

# Lightning's lines that concern Lightning, not the run (filtered in engine.prepare_process).
INTERNAL = ("Loading `train_dataloader` to estimate", "Total FLOPs: 0", "Total Flops: 0", "TPU available: False",
            "Skipping setting a default", "smaller than the logging interval", "has `__len__` defined",
            "Total length of `list` across ranks is zero", "stopped: `max_epochs=")


def test_lightnings_max_epochs_reached_line_is_dropped():
    """``fit`` and the Python ``fit`` ended with Lightning's "`Trainer.fit` stopped: `max_epochs=1` reached." under
    the Speedometer's last line: news about Lightning's loop; the final: line already says what the run trained."""
    import logging

    from lit_imgcls.engine import _DropNotices

    def kept(msg: str) -> bool:
        return _DropNotices().filter(logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, "", 0,
                                                       msg, None, None))

    assert not kept("`Trainer.fit` stopped: `max_epochs=1` reached.")
    assert kept("resuming from model/mnist-0002.ckpt") and kept("GPU available: False, used: False")


def test_fit_prints_no_internal_notices_and_validate_names_its_checkpoint(tmp_path, capsys):
    res = run_cli("fit", *quick_args(tmp_path, num_examples=640, progress_bar="true", disp_batches=100), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    said = res.stdout + res.stderr
    assert not [n for n in INTERNAL if n in said], said
    # the model summary stays, with the network's real FLOPs (LeNet on 28 x 28: millions) and its input size
    assert re.search(r"^\s*[\d.]+ [KMG]\s+Total Flops$", said, re.M) and "[1, 1, 28, 28]" in said, said
    assert f"logs {tmp_path}/runs/mnist-lenet/version_0" in res.stdout

    from lit_imgcls.cli import main

    assert main(["validate", *quick_args(tmp_path, num_examples=640)]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(rf"epoch 1: val/acc [0-9.]+ \| val/loss [0-9.]+ \| checkpoint {tmp_path}/model/mnist-0001.ckpt",
                        line), line


def test_run_folder_is_named_after_the_data_and_the_network_built(tiny_pack, tmp_path, capsys):
    from lit_imgcls.data.formats.wds import WDSDataModule
    from lit_imgcls.data.manifest import dataset_name
    from lit_imgcls.engine import run_name
    from lit_imgcls.recipe import Recipe

    assert run_name(Recipe(dataset="mnist", network="resnet", num_layers=18)) == "mnist-resnet18"
    assert run_name(Recipe(dataset="cifar10", network="inception-bn")) == "cifar10-inception_bn"
    assert run_name(Recipe(dataset="mnist", network="timm/resnet18.a1_in1k")) == "mnist-timm_resnet18.a1_in1k"
    # a pack is named by what it was packed from (conftest's tiny_pack: the folder "tree"), not by its format
    dm = WDSDataModule(data_train=str(tiny_pack), batch_size=2, data_nthreads=0)
    assert run_name(Recipe(dataset="wds", network="lenet"), dm) == "tree-lenet"
    # a real fit from the pack, in this process: its run folder, and none of Lightning's notices or warnings
    import warnings

    from lit_imgcls.cli import main

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        assert main(["fit", "--dataset", "wds", "--data-train", str(tiny_pack), "--network", "mlp", "--image-shape",
                     "3,8,8", "--batch-size", "2", "--num-epochs", "1", "--data-nthreads", "0", "--run-dir",
                     str(tmp_path / "runs"), "--progress-bar", "false"]) == 0
    out, err = capsys.readouterr()
    assert f"logs {tmp_path}/runs/tree-mlp/version_0" in out, out + err
    said = err + "\n".join(str(w.message) for w in caught)
    assert not [n for n in INTERNAL if n in said], said
    for source, name in [({"kind": "mnist", "src": "mnist"}, "mnist"), ({"kind": "folder", "src": "data/photos/"}, "photos"),
                         ({"kind": "lst", "src": "lists/train.lst"}, "train"), ({"kind": "folder", "src": "s3://b/x"}, "p"),
                         ({"kind": "folder", "src": 7}, "p"), (None, "p")]:
        assert dataset_name({"source": source}, "packs/p/") == name, source


def test_inspect_names_the_classes_at_the_fewest_and_the_most(tiny_pack, capsys):
    from lit_imgcls.cli import main
    from lit_imgcls.data.pack_report import class_range

    assert main(["dataset", "inspect", str(tiny_pack)]) == 0
    out = capsys.readouterr().out
    assert "  train: 6 samples; per class 3 (each of the 2 classes), images 8x8 to 8x8 px" in out, out
    names = ["astronaut", "bee", "cat", "dog", "eel", "fox"]
    assert class_range([20, 18, 20, 18, 19, 18], names) == "per class 18 (bee, dog, fox) to 20 (astronaut, cat)"
    assert class_range([1, 1, 1, 1, 2, 1], names) == "per class 1 (astronaut, bee, cat and 2 more) to 2 (eel)"
    assert class_range([20] * 6, names) == "per class 20 (each of the 6 classes)"


def test_predict_table_has_a_header_and_the_true_labels():
    from lit_imgcls.predictions import Result, format_table

    plain = format_table([Result("a.png", [("cat", 0.9), ("dog", 0.1)]), Result("bb.png", error="not an image")])
    assert plain.splitlines() == ["input   top-1       top-2", "a.png   cat 0.9000  dog 0.1000",
                                  "bb.png  error: not an image"]
    packed = format_table([Result("p:val0", [("cat", 0.7)], label="dog"), Result("c.png", [("dog", 0.6)])])
    assert packed.splitlines() == ["input   label  top-1", "p:val0  dog    cat 0.7000", "c.png   -      dog 0.6000"]


def test_benchmark_io_warns_of_a_corpus_too_small_and_refuses_one_with_nothing_to_time(tiny_pack, capsys):
    from lit_imgcls.bench_io import timed_batches
    from lit_imgcls.cli import main

    assert timed_batches("f", 640, 64, 30, 5) == 5  # 10 batches in an epoch: 5 to warm up, 5 timed
    err = capsys.readouterr().err
    assert err.startswith("lit-imgcls: warning: f holds 640 images, 10 batches of 64: after the 5 warm-up batches "
                          "each loader is timed on 5, not 30") and len(err.splitlines()) == 1, err
    assert timed_batches("f", 64 * 35, 64, 30, 5) == 30 and capsys.readouterr().err == ""
    tree = str(tiny_pack.parent / "tree")  # 6 images
    assert main(["benchmark", "io", tree]) == 2
    err = capsys.readouterr().err
    assert err == (f"lit-imgcls: error: {tree} holds 6 images, 0 batches of 64: none left to time after the 5 warm-up "
                   "batches; give more images, or a --batch-size of at most 1\n"), err
