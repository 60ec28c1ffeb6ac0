"""benchmark train / benchmark infer: real CLI runs on tiny settings, on the CPU."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from lit_imgcls.data.photos import make_photo_corpus

from conftest import run_cli

TINY = ["--networks", "lenet", "--steps", "5", "--warmup", "2"]


def _table(stdout: str, title: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Markdown table printed under the line starting with ``title``."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    block = []
    for ln in lines[start + 1:]:
        if not ln.startswith("|"):
            break
        block.append([c.strip() for c in ln.strip("|").split("|")])
    return block[0], block[2:]


def _number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_train_table_and_csv_over_batches_and_processes(tmp_path):
    out = tmp_path / "bench" / "train.csv"
    res = run_cli("benchmark", "train", *TINY, "--batch-sizes", "16", "32", "--num-processes", "1", "2",
                  "--threads", "2", "--csv", str(out))
    assert res.returncode == 0, res.stderr
    head, rows = _table(res.stdout, "train, precision 32-true")
    assert head == ["network", "batch", "input", "cpu img/s", "cpu epoch", "cpu x2 img/s", "cpu x2 epoch"]
    assert [r[:3] for r in rows] == [["lenet", "16", "1,28,28"], ["lenet", "32", "1,28,28"]]
    for r in rows:
        assert _number(r[3]) > 0 and _number(r[5]) > 0
        assert re.fullmatch(r"\d+:\d\d:\d\d", r[4]) and re.fullmatch(r"\d+:\d\d:\d\d", r[6])
    with open(out, newline="") as f:
        saved = list(csv.DictReader(f))
    assert [(s["network"], s["batch_size"], s["devices"]) for s in saved] == [
        ("lenet", "16", "cpu"), ("lenet", "16", "cpu x2"), ("lenet", "32", "cpu"), ("lenet", "32", "cpu x2")]
    printed = {(r[1], "cpu"): _number(r[3]) for r in rows} | {(r[1], "cpu x2"): _number(r[5]) for r in rows}
    for s in saved:
        assert s["mode"] == "train" and s["precision"] == "32-true"
        assert float(s["images_per_sec"]) == pytest.approx(printed[(s["batch_size"], s["devices"])], abs=0.06)
        assert float(s["epoch_seconds"]) == pytest.approx(1281167 / float(s["images_per_sec"]), rel=1e-3)
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_infer_one_table_per_precision(tmp_path):
    res = run_cli("benchmark", "infer", *TINY, "--batch-sizes", "16", "--precision", "32-true", "bf16-mixed",
                  "--threads", "1", "--dataset-size", "50000", "--csv", str(tmp_path / "infer.csv"))
    assert res.returncode == 0, res.stderr
    for precision in ("32-true", "bf16-mixed"):
        head, rows = _table(res.stdout, f"infer, precision {precision} (epoch = 50,000 images")
        assert head == ["network", "batch", "input", "cpu img/s", "cpu epoch"]
        assert len(rows) == 1 and rows[0][:2] == ["lenet", "16"] and _number(rows[0][3]) > 0
    with open(tmp_path / "infer.csv", newline="") as f:
        assert [(s["mode"], s["precision"]) for s in csv.DictReader(f)] == [("infer", "32-true"), ("infer", "bf16-mixed")]


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("benchpack")
    make_photo_corpus(root / "photos", train_per_class=12, val_per_class=4, classes=3, seed=1)
    res = run_cli("dataset", "pack", str(root / "photos" / "train"), str(root / "pack"), "--format", "wds",
                  "--resize", "32", "--center-crop")
    assert res.returncode == 0, res.stderr
    return root / "pack"


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_real_shards_split_data_and_compute(pack, mode):
    res = run_cli("benchmark", mode, "--networks", "lenet", "--batch-sizes", "8", "--steps", "4", "--warmup", "2",
                  "--threads", "1", "--data", str(pack), "--format", "wds", "--data-nthreads", "1")
    assert res.returncode == 0, res.stderr
    head, rows = _table(res.stdout, f"{mode}, precision 32-true")
    assert rows[0][:3] == ["lenet", "8", "3,32,32"]  # the pack's own image size
    head, rows = _table(res.stdout, "data/compute split per step (wds pack")
    assert head == ["network", "batch", "devices", "precision", "data wait ms/step", "compute ms/step", "waiting"]
    wait, compute = _number(rows[0][4]), _number(rows[0][5])
    assert wait >= 0 and compute > 0 and rows[0][6].endswith("%")
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("bottleneck: lenet batch 8 cpu 32-true: "))
    assert re.search(r"the loader is the bottleneck; try more --data-nthreads|the loader keeps up|neither dominates", line)


def test_bottleneck_names_the_side_that_dominates():
    from lit_imgcls.bench import BenchConfig, BenchResult, bottleneck

    cfg = BenchConfig("train", "lenet", 8, "1,28,28", steps=10, data_nthreads=2)
    assert "loader is the bottleneck" in bottleneck(BenchResult(cfg, 1.0, 1.0, wait_seconds=0.8, compute_seconds=0.2))
    assert "ffcv" in bottleneck(BenchResult(cfg, 1.0, 1.0, wait_seconds=0.8, compute_seconds=0.2))
    assert "keeps up" in bottleneck(BenchResult(cfg, 1.0, 1.0, wait_seconds=0.1, compute_seconds=0.9))
    assert "neither" in bottleneck(BenchResult(cfg, 1.0, 1.0, wait_seconds=0.5, compute_seconds=0.5))


@pytest.mark.parametrize("mode, args, message", [
    ("infer", ["--networks", "nosuchnet"], "unknown network 'nosuchnet' choices: "),
    ("infer", ["--precision", "8-bit"], "precision must be one of 32-true"),
    ("train", ["--networks", "nosuchnet"], "unknown network 'nosuchnet' choices: "),
    ("train", ["--precision", "8-bit"], "precision must be one of 32-true"),
    ("train", ["--batch-sizes", "0"], "batch_sizes must be >= 1"),
    ("train", ["--image-shape", "224,224"], "image_shape must be 'C,H,W'"),
    ("train", ["--data", "/nonexistent/pack"], "--data PACK and --format wds|ffcv go together"),
    ("train", ["--format", "parquet"], "format"),
])
def test_bad_input_is_one_line_exit_2(mode, args, message):
    res = run_cli("benchmark", mode, *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and message in res.stderr and "Traceback" not in res.stderr
