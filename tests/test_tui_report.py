"""The TUI's report view (issue 18, item 5): a run's page in Runs offers its evaluation report, the per-class table
and the confusion matrix, read from the JSON ``score --report`` writes; ``m`` makes one with a real ``score``."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textual")

import ckpt_factory  # noqa: E402
from test_tui import RECIPES, SIZE, static_text, synced, wait_until, write_fixed_run  # noqa: E402

from tui.app import LitImgclsApp  # noqa: E402


def matrix_rows(app) -> list[list[str]]:
    """The confusion matrix as drawn: its Rich table rendered to text, one list of cells per line."""
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(app.screen.query_one("#report-matrix").content)
    return [line.split() for line in console.export_text().splitlines() if line.strip()]


def class_rows(app) -> list[list[str]]:
    table = app.screen.query_one("#report-classes")
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def run_events(folder: Path, checkpoint: Path) -> None:
    """A finished run of one epoch whose checkpoint is ``checkpoint``, as fit's events.jsonl says it."""
    folder.mkdir(parents=True)
    events = [{"t": 1_700_000_000.0, "type": "start", "pid": -1, "recipe": {"network": "mlp", "dataset": "npz"},
               "total_steps": 1, "num_epochs": 1, "start_epoch": 0, "start_step": 0},
              {"t": 1_700_000_001.0, "type": "epoch", "epoch": 0, "step": 1, "val_acc": 0.1,
               "checkpoint": str(checkpoint)},
              {"t": 1_700_000_002.0, "type": "end", "status": "finished"}]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.fixture
def scored_run(tmp_path, monkeypatch, mnist_arrays):
    """runs/npz-mlp/version_0, whose checkpoint (an MLP, seeded) scores 64 MNIST digits of an .npz; the working
    directory is tmp_path. Returns the checkpoint."""
    import torch

    monkeypatch.chdir(tmp_path)
    x, y = mnist_arrays["test_images"][:64][..., None], mnist_arrays["test_labels"][:64]
    np.savez(tmp_path / "val.npz", x_train=x, y_train=y, x_val=x, y_val=y,
             mean=np.array(ckpt_factory.MNIST_MEAN, np.float32), std=np.array(ckpt_factory.MNIST_STD, np.float32))
    torch.manual_seed(0)
    ckpt = ckpt_factory.checkpoint("mlp")
    ckpt["lit_imgcls"]["recipe"].update(dataset="npz", data_train=str(tmp_path / "val.npz"), batch_size=64)
    path = ckpt_factory.write(tmp_path / "model" / "npz-mlp-0001.ckpt", ckpt)
    run_events(tmp_path / "runs" / "npz-mlp" / "version_0", path)
    return path


def write_report(checkpoint: Path) -> dict:
    """The JSON of a real score of ``checkpoint`` (score.report_data), beside it as the TUI would ask for it."""
    from lit_imgcls.score import report_data, score

    data = report_data(score(str(checkpoint)))
    checkpoint.with_name(f"{checkpoint.stem}-report.json").write_text(json.dumps(data))
    return data


async def open_report(pilot, runs: int = 1) -> None:
    await pilot.press("f4")
    await wait_until(pilot, lambda: len(pilot.app.screen.order) == runs, 30, "the runs")
    await pilot.press("e")
    await wait_until(pilot, lambda: getattr(pilot.app.screen, "loaded", False), 30, "the report screen")
    await pilot.pause()


@synced
async def test_the_report_screen_shows_the_reports_classes_and_matrix(scored_run):
    data = write_report(scored_run)
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await open_report(pilot)
        assert [row[:2] for row in class_rows(app)] == [[c["name"], str(c["support"])] for c in data["classes"]]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        assert [row[2:] for row in class_rows(app)] == [[fmt(c["precision"]), fmt(c["recall"]), fmt(c["f1"])]
                                                        for c in data["classes"]]
        drawn = matrix_rows(app)
        assert drawn[0][-10:] == [c["name"] for c in data["classes"]]  # the header: predicted classes
        assert [row[1:] for row in drawn[1:]] == [[str(v) for v in row] for row in data["confusion"]]
        figures = static_text(app, "#report-figures")
        assert f"top-1 {data['top1']:.4f}" in figures and f"images {data['count']}" in figures
        assert f"ECE {data['calibration']['ece']:.4f}" in figures
        assert "checkpoint model/npz-mlp-0001.ckpt" in figures and "calibrated" not in figures  # temperature 1

        # a click on the recall header sorts the classes by recall, largest first; again: back to class order
        await pilot.click("#report-classes", offset=(30, 0))
        await pilot.pause()
        recalls = [float(r[3]) for r in class_rows(app)]
        assert recalls == sorted(recalls, reverse=True) and recalls != [c["recall"] for c in data["classes"]]
        await pilot.click("#report-classes", offset=(30, 0))
        await pilot.pause()
        assert [r[0] for r in class_rows(app)] == [c["name"] for c in data["classes"]]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "RunsScreen"


@synced
async def test_damaged_and_foreign_json_is_skipped_with_a_note(scored_run):
    folder = scored_run.parent
    (folder / "npz-mlp-0001-old-report.json").write_text('{"format": "lit-imgcls score report", "classes": [')
    (folder / "other.json").write_text(json.dumps({"format": "something else", "top1": 1.0}))
    (folder / "bad-matrix.json").write_text(json.dumps(
        {"format": "lit-imgcls score report", "checkpoint": str(scored_run), "count": 2, "top_k": 0, "top1": 1.0,
         "topk": None, "balanced_accuracy": 1.0, "macro_f1": 1.0, "classes": [{"name": "a", "support": 2,
         "precision": 1.0, "recall": 1.0, "f1": 1.0}], "confusion": [[2, 0]], "calibration": {"ece": 0.0}}))
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await open_report(pilot)
        notes = static_text(app, "#report-notes")
        assert "npz-mlp-0001-old-report.json: not valid JSON" in notes
        assert "other.json: not a lit-imgcls score report" in notes
        assert "bad-matrix.json: confusion is not a 1 x 1 matrix of counts" in notes
        # none was a report: the screen offers to make one
        assert "no report of this run yet: m scores its newest checkpoint, model/npz-mlp-0001.ckpt" in static_text(
            app, "#report-figures")
        assert app.screen.query_one("#report-classes").row_count == 0


def fixed_report(names: list[str], checkpoint: str) -> dict:
    """A report of fixed figures (evaluation.summarize of seeded labels and probabilities)."""
    from lit_imgcls.evaluation import summarize
    from lit_imgcls.score import REPORT_FORMAT, REPORT_VERSION

    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(names), 200)
    logits = rng.normal(size=(200, len(names))) + 3.0 * np.eye(len(names))[labels]
    logits[labels == 3, 5] += 2.5  # class 3 often taken for 5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "checkpoint": checkpoint, "dataset": "mnist",
            "images_per_sec": 1000.0, "seconds": 0.2, "ema": False, "tta_flip": False,
            **summarize(labels, probs.astype(np.float32), names)}


def test_snapshot_report(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fixed_run(tmp_path / "runs" / "mnist-lenet" / "version_0", "mnist-lenet", [0.91, 0.95, 0.97])
    (tmp_path / "model").mkdir()
    names = [str(i) for i in range(10)]
    (tmp_path / "model" / "mnist-lenet-0003-report.json").write_text(
        json.dumps(fixed_report(names, "model/mnist-lenet-0003.ckpt")))

    async def run_before(pilot):
        await open_report(pilot)
        await pilot.pause(0.3)

    assert snap_compare(LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES), terminal_size=SIZE, run_before=run_before)



@synced
async def test_many_classes_list_the_worst_confusions_and_n_steps_to_an_older_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_fixed_run(tmp_path / "runs" / "mnist-lenet" / "version_0", "mnist-lenet", [0.91, 0.95, 0.97])
    (tmp_path / "model").mkdir()
    old, new = tmp_path / "model" / "mnist-lenet-0002-report.json", tmp_path / "model" / "mnist-lenet-0003-report.json"
    old.write_text(json.dumps(fixed_report([str(i) for i in range(10)], "model/mnist-lenet-0002.ckpt")))
    many = fixed_report([f"class{i}" for i in range(25)], "model/mnist-lenet-0003.ckpt")
    many["temperature"] = 1.5  # a calibrated checkpoint's
    new.write_text(json.dumps(many))
    os.utime(old, (1_700_000_000, 1_700_000_000))  # the older of the two
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await open_report(pilot)
        assert "(1 of 2; n: older)" in str(app.screen.query_one("#report-title").render())
        assert static_text(app, "#report-matrix-title").startswith("worst confusions  (25 classes")
        assert "calibrated at temperature 1.5000" in static_text(app, "#report-figures")
        worst = many["worst_confusions"][0]
        assert matrix_rows(app)[1] == [worst["true"], worst["predicted"], str(worst["count"]), f"{worst['share']:.1%}"]
        await pilot.press("n")
        await pilot.pause()
        assert "mnist-lenet-0002-report.json  (2 of 2" in str(app.screen.query_one("#report-title").render())
        assert static_text(app, "#report-matrix-title").startswith("confusion matrix")
        assert len(matrix_rows(app)) == 11


@synced
async def test_m_makes_the_report_with_a_real_score(scored_run):
    """No report yet: m runs `lit-imgcls score --checkpoint CKPT --report CKPT-STEM-report.html` as a process, and
    the screen then shows the JSON it wrote beside the page."""
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await open_report(pilot)
        assert "no report of this run yet" in static_text(app, "#report-figures")
        await pilot.press("m")
        await pilot.pause()
        assert static_text(app, "#report-status").startswith(
            f"scoring...  lit-imgcls score --checkpoint {scored_run} --report {scored_run.parent}/npz-mlp-0001-report.html")
        await wait_until(pilot, lambda: app.screen.reports or app.screen.error, 120, "the report")
        await pilot.pause()
        assert not app.screen.error, app.screen.error
        assert not app.screen.query_one("#report-progress").display
        html, [made] = scored_run.parent / "npz-mlp-0001-report.html", app.screen.reports
        assert html.is_file() and made.path.parent == scored_run.parent and made.path.suffix == ".json"
        data = json.loads(made.path.read_text())
        assert [row[:2] for row in class_rows(app)] == [[c["name"], str(c["support"])] for c in data["classes"]]
        assert [row[1:] for row in matrix_rows(app)[1:]] == [[str(v) for v in row] for row in data["confusion"]]


@synced
async def test_a_failed_score_shows_its_one_line_error(scored_run):
    scored_run.write_bytes(b"not a checkpoint")  # damaged after the run
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await open_report(pilot)
        await pilot.press("m")
        await wait_until(pilot, lambda: app.screen.error, 120, "the score's end")
        await pilot.pause()
        notes = static_text(app, "#report-notes")
        assert notes.startswith("score failed: lit-imgcls: error:") and "npz-mlp-0001.ckpt" in notes, notes
        assert "Traceback" not in notes and "no report of this run yet" in static_text(app, "#report-figures")
        assert list(scored_run.parent.iterdir()) == [scored_run]  # nothing written
