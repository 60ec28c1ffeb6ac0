"""The Textual UI, driven by pilots: build and check a recipe, launch and watch a real run, attach, stop; snapshots."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, quick_args, run_cli

pytest.importorskip("textual")

from textual.widgets import Input, OptionList, ProgressBar, Select, Static  # noqa: E402

from tui.app import LitImgclsApp  # noqa: E402
from tui.runs import discover_runs  # noqa: E402

SIZE = (120, 40)


def synced(fn):
    """Runs an async pilot test in its own event loop (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        asyncio.run(fn(*args, **kwargs))

    return wrapper


RECIPES = str(REPO / "recipes")


async def wait_until(pilot, cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


async def settle(pilot) -> None:
    """Waits for the builder's checks (finite workers) and the refresh after them."""
    await pilot.pause()
    app = pilot.app
    await wait_until(pilot, lambda: getattr(app.screen, "checked", True), 60, "the recipe check")
    await wait_until(pilot, lambda: getattr(app.screen, "networks_shown", True), 60, "the network list")
    await pilot.pause()


def static_text(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render()).replace("\u00a0", " ")  # no-break spaces as spaces


async def set_field(pilot, key: str, value: str) -> None:
    widget = pilot.app.screen.query_one(f"#f-{key}")
    widget.value = value
    await pilot.pause()
    await settle(pilot)


def events_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines() if line.strip()]


# -- a fixed run folder for the attach and snapshot tests -----------------------------------------------------
def write_fixed_run(folder: Path, name: str, accs: list[float], status: str = "finished", t0: float = 1_700_000_000.0):
    folder.mkdir(parents=True)
    recipe = {"network": name.split("-")[1], "dataset": name.split("-")[0], "num_epochs": len(accs)}
    steps_per_epoch = 40
    events = [{"t": t0, "type": "start", "pid": -1, "recipe": recipe, "total_steps": steps_per_epoch * len(accs),
               "num_epochs": len(accs), "start_epoch": 0, "start_step": 0}]
    t = t0
    for epoch, acc in enumerate(accs):
        for k in range(1, 5):
            t += 2.0
            step = epoch * steps_per_epoch + 10 * k
            events.append({"t": t, "type": "step", "step": step, "epoch": epoch, "samples_per_sec": 3000.0 + 100 * k,
                           "train_acc": round(acc - 0.2 + 0.04 * k, 4), "train_loss": round(1.5 / (step + 1) ** 0.5, 4),
                           "lr": 0.05})
        t += 1.0
        events.append({"t": t, "type": "epoch", "epoch": epoch, "step": (epoch + 1) * steps_per_epoch, "val_acc": acc,
                       "val_loss": round(1 - acc, 4), "train_acc": round(acc - 0.05, 4), "epoch_time": 8.0,
                       "samples_per_sec": 3200.0, "checkpoint": f"model/{name}-{epoch + 1:04d}.ckpt"})
    end = {"t": t + 0.5, "type": "end", "status": status}
    if status == "stopped":
        end["checkpoint"] = f"model/{name}-stop.ckpt"
    events.append(end)
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


@pytest.fixture
def fixed_runs(tmp_path, monkeypatch):
    """runs/ with two finished runs and a stopped one, fixed times; the working directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    write_fixed_run(tmp_path / "runs" / "mnist-lenet" / "version_0", "mnist-lenet", [0.91, 0.95, 0.97])
    write_fixed_run(tmp_path / "runs" / "mnist-lenet" / "version_1", "mnist-lenet", [0.93, 0.96, 0.985])
    write_fixed_run(tmp_path / "runs" / "mnist-mlp" / "version_0", "mnist-mlp", [0.88], status="stopped")
    return tmp_path / "runs"


# -- the Monitor's figures: steps are the run's optimizer steps (events.jsonl) ----------------------------------
def test_progress_eta_and_epoch_follow_the_runs_optimizer_steps(tmp_path):
    from tui.runs import RunState

    # resumed at epoch 1, step 40 of 120 (3 epochs of 40 optimizer steps), then 40 steps in 20 s
    state = RunState(tmp_path)
    state.feed([{"t": 100.0, "type": "start", "pid": -1, "total_steps": 120, "num_epochs": 3, "start_epoch": 1,
                 "start_step": 40},
                {"t": 110.0, "type": "step", "step": 60, "epoch": 1},
                {"t": 120.0, "type": "step", "step": 80, "epoch": 1}])
    assert state.progress() == pytest.approx(80 / 120)  # the run's step over the run's steps, not this process's
    assert state.eta() == pytest.approx(40 * 20 / 40)  # 40 steps left at 0.5 s a step
    assert state.epoch == 2  # the second of three is being trained
    state.feed([{"t": 121.0, "type": "end", "status": "stopped", "checkpoint": "m-stop.ckpt"}])
    assert state.epoch == 2 and state.progress() == pytest.approx(80 / 120)  # the same after the stop

    finished = RunState(tmp_path)
    finished.feed([{"t": 0.0, "type": "start", "total_steps": 80, "num_epochs": 2, "start_epoch": 0, "start_step": 0},
                   {"t": 1.0, "type": "epoch", "epoch": 0, "step": 40}, {"t": 2.0, "type": "epoch", "epoch": 1, "step": 80},
                   {"t": 2.5, "type": "end", "status": "finished"}])
    assert (finished.epoch, finished.progress(), finished.eta()) == (2, 1.0, 0.0)


def test_charts_draw_one_value_as_a_dot_and_two_runs_on_shared_axes():
    from tui.widgets.plot import raster

    cells = raster([([0], [0.5])], width=20, height=3)
    drawn = [(row, col) for row, line in enumerate(cells) for col, (bits, _) in enumerate(line) if bits]
    assert len(drawn) == 1 and cells[drawn[0][0]][drawn[0][1]][0].bit_count() == 1  # one braille dot

    rising, falling = ([0, 10], [0.0, 1.0]), ([0, 10], [1.0, 0.0])
    cells = raster([rising, falling], width=10, height=3)
    assert cells[0][0][1] == 2 and cells[2][0][1] in (1, 2)  # B starts at the top left, A at the bottom left
    assert cells[0][-1][1] in (1, 2) and cells[2][-1][1] == 2  # and they end the other way round


def write_events(folder: Path, events: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "events.jsonl", "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events))


def stopped_in_epoch_two(folder: Path, pid: int, t0: float, stopped: bool) -> None:
    """Three epochs of 40 optimizer steps: the first done (its checkpoint saved), 20 steps of the second."""
    events = [{"t": t0, "type": "start", "pid": pid, "recipe": {"network": "mlp", "dataset": "mnist", "num_epochs": 3},
               "total_steps": 120, "num_epochs": 3, "start_epoch": 0, "start_step": 0}]
    events += [{"t": t0 + k, "type": "step", "step": 10 * k, "epoch": 0, "samples_per_sec": 3000.0 + 50 * k,
                "train_acc": 0.6 + 0.05 * k, "train_loss": 0.9 - 0.1 * k, "lr": 0.05} for k in range(1, 5)]
    events.append({"t": t0 + 5, "type": "epoch", "epoch": 0, "step": 40, "val_acc": 0.88, "val_loss": 0.35,
                    "train_acc": 0.78, "epoch_time": 4.0, "samples_per_sec": 3100.0,
                    "checkpoint": str(folder.parent.parent.parent / "model" / "mnist-mlp-0001.ckpt")})
    events += [{"t": t0 + 5 + k, "type": "step", "step": 40 + 10 * k, "epoch": 1, "samples_per_sec": 3200.0,
                "train_acc": 0.85, "train_loss": 0.4, "lr": 0.05} for k in (1, 2)]
    if stopped:
        events.append({"t": t0 + 8, "type": "end", "status": "stopped", "checkpoint": "model/mnist-mlp-stop.ckpt"})
    write_events(folder, events)


@synced
async def test_monitor_ticks_and_keeps_its_figures_from_one_run_to_the_next(fixed_runs):
    app = LitImgclsApp(runs_dir="runs", attach="runs/mnist-lenet/version_1", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.screen.view.get("status") == "finished", 30, "the finished run")
        monitor, bar = app.screen, app.screen.query_one("#monitor-bar", ProgressBar)
        assert bar.progress == 100

        live = fixed_runs / "mnist-mlp" / "version_1"  # a run of this process, started 65 s ago
        stopped_in_epoch_two(live, os.getpid(), time.time() - 65, stopped=False)
        app.monitor(folder=live)
        assert bar.progress == 0 and static_text(app, "#monitor-stats") == ""  # nothing of the previous run
        await wait_until(pilot, lambda: monitor.view.get("status") == "running", 30, "the running run")
        await pilot.pause(0.1)
        stats = static_text(app, "#monitor-stats")
        assert "epoch 2/3  step 60/120  ETA 0:07" in stats and bar.progress == 50  # 60 steps in 7 s, 60 left
        elapsed = stats.split("elapsed ")[1].split()[0]
        await wait_until(pilot, lambda: static_text(app, "#monitor-stats").split("elapsed ")[1].split()[0] != elapsed,
                         2.5, "the elapsed time to tick")

        write_events(live, [{"t": time.time(), "type": "end", "status": "stopped", "checkpoint": "m-stop.ckpt"}])
        await wait_until(pilot, lambda: monitor.view.get("status") == "stopped", 30, "the stop")
        await pilot.pause(0.1)
        assert "epoch 2/3  step 60/120" in static_text(app, "#monitor-stats")  # the same epoch as while it ran


# -- recipe builder --------------------------------------------------------------------------------------------
@synced
async def test_builder_shows_bad_input_at_the_field_and_refuses_to_launch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert screen.recipe is not None and screen.recipe.network == "lenet"  # recipes/mnist.yaml, valid

        await set_field(pilot, "lr", "-0.1")
        assert "lr must be positive" in static_text(app, "#err-lr")
        assert screen.query_one("#row-lr").has_class("invalid") and screen.recipe is None

        await pilot.press("ctrl+l")  # save and launch: refused
        await pilot.pause()
        assert app.launched == [] and not (tmp_path / "recipes" / "recipe.yaml").exists()
        assert "not saved" in static_text(app, "#builder-status")

        await set_field(pilot, "lr", "0.05")
        assert static_text(app, "#err-lr") == "" and screen.recipe is not None

        await set_field(pilot, "network", "no_such_net")
        assert "unknown network 'no_such_net'" in static_text(app, "#err-network")
        await set_field(pilot, "network", "lenet")

        await set_field(pilot, "data_dir", str(tmp_path / "missing"))
        assert "data_dir does not exist" in static_text(app, "#err-data_dir")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.launched == [] and app.recipe_path is None

        await set_field(pilot, "batch_size", "many")
        assert "must be an integer" in static_text(app, "#err-batch_size")
        # every wrong field is marked and counted, not only the first one a check stops at
        assert "data_dir does not exist" in static_text(app, "#err-data_dir")
        assert "2 problems" in static_text(app, "#builder-status")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.launched == []


def test_builder_offers_the_shipped_recipes_beside_the_users_own(tmp_path):
    from tui.screens.recipe_builder import recipe_files

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "recipe.yaml").write_text("num_epochs: 1\n")  # what the builder saves by default
    (tmp_path / "recipes" / "mnist.yaml").write_text("num_epochs: 2\n")  # the user's own of a shipped name
    files = {p.name: p for p in recipe_files(tmp_path / "recipes")}
    assert files["recipe.yaml"].parent == files["mnist.yaml"].parent == tmp_path / "recipes"
    assert "cifar10.yaml" in files and files["cifar10.yaml"].parent != tmp_path / "recipes"


@synced
async def test_builder_searches_networks_with_parameter_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.networks_shown = False
        await set_field(pilot, "network", "resnet5")
        await wait_until(pilot, lambda: app.screen.networks_shown, 60, "the network list")
        box = app.screen.query_one("#network-list", OptionList)
        shown = {box.get_option_at_index(i).id: str(box.get_option_at_index(i).prompt) for i in range(box.option_count)}
        assert "resnet50" in shown and shown["resnet50"].split()[0] == "23.5M"  # timm's resnet50, 10 classes
        box.highlighted = list(shown).index("resnet50")
        box.action_select()
        await pilot.pause()
        assert app.screen.query_one("#f-network", Input).value == "resnet50"

        # typing in the field, Up and Down move through the list below it and Enter takes the name
        await wait_until(pilot, lambda: box.option_count and box.get_option_at_index(0).id == "resnet50", 60,
                         "the list for resnet50")
        field = app.screen.query_one("#f-network", Input)
        field.focus()
        await pilot.pause()
        second = box.get_option_at_index(1).id
        await pilot.press("down", "down", "down", "up")
        assert box.highlighted == 1 and app.focused is field
        await pilot.press("enter")
        await pilot.pause()
        assert field.value == second


@synced
async def test_builder_saves_a_recipe_the_cli_reads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await set_field(pilot, "num_examples", "2000")
        await set_field(pilot, "num_epochs", "1")
        await set_field(pilot, "optimizer", "adamw")
        save_as = app.screen.query_one("#save-path", Input)
        assert save_as.value == "recipes/recipe.yaml"  # a visible folder by default, not one under runs/
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.recipe_path == "recipes/recipe.yaml" and (tmp_path / "recipes" / "recipe.yaml").is_file()
        save_as.value = "mine.yaml"  # and where the user chooses
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.recipe_path == "mine.yaml"
        assert "-" in str(app.screen.query_one("#yaml", Static).render())  # the YAML is shown
    data = yaml.safe_load((tmp_path / "mine.yaml").read_text())
    assert data["num_examples"] == 2000 and data["num_epochs"] == 1 and data["optimizer"] == "adamw"
    assert data["fused_steps"] == 8  # the other keys come from recipes/mnist.yaml
    res = run_cli("fit", "--recipe", str(tmp_path / "mine.yaml"), "--print-recipe")
    assert res.returncode == 0 and "num_examples: 2000" in res.stdout


# -- launch, monitor, stop -------------------------------------------------------------------------------------
@pytest.mark.slow
@synced
async def test_launch_a_real_run_and_watch_its_accuracy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await set_field(pilot, "num_examples", "2000")
        await set_field(pilot, "num_epochs", "2")
        await set_field(pilot, "model_prefix", str(tmp_path / "model" / "mnist"))
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("f2")  # Launch: the exact command, extra flags
        await pilot.pause()
        app.screen.query_one("#launch-extra", Input).value = "--threads 1 --disp-batches 5"
        await pilot.pause()
        command = static_text(app, "#launch-command")
        assert command.startswith("lit-imgcls fit --recipe recipes/recipe.yaml --run-dir runs")
        assert command.endswith("--threads 1 --disp-batches 5")
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert len(app.launched) == 1 and app.current_mode == "monitor"
        run = app.launched[0]
        monitor = app.screen
        try:
            await wait_until(pilot, lambda: monitor.view.get("status") not in (None, "starting", "running")
                             and monitor.view.get("end"), 300, "the run's end")
            await wait_until(pilot, lambda: run.proc.poll() is not None, 60, "the process's exit")
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        assert monitor.view["status"] == "finished", run.log_tail(40)
        folder = run.folder
        epochs = [e for e in events_of(folder) if e["type"] == "epoch"]
        final = epochs[-1]["val_acc"]
        assert final > 0.8
        await pilot.pause(0.3)
        assert f"val acc {final:.4f}" in static_text(app, "#monitor-stats")
        from tui.widgets.plot import MetricPlot

        assert monitor.query_one("#plot-val-acc", MetricPlot).values == [e["val_acc"] for e in epochs]
        assert len(monitor.query_one("#plot-train-acc", MetricPlot).values) >= 4
        assert any("final: val top-1 accuracy" in line for line in monitor.view["logs"])  # its output, captured
        assert run.proc.returncode == 0


@pytest.mark.slow
@synced
async def test_attach_to_a_cli_started_run(tmp_path, monkeypatch):
    res = run_cli("fit", *quick_args(tmp_path, num_examples=2000, num_epochs=2, threads=1, disp_batches=5))
    assert res.returncode == 0, res.stderr[-2000:]
    [folder] = discover_runs(tmp_path / "runs")
    final = [e for e in events_of(folder) if e["type"] == "epoch"][-1]["val_acc"]
    monkeypatch.chdir(tmp_path)
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press("a")  # attach: type the folder
        await pilot.pause()
        box = app.screen.query_one("#attach-path", Input)
        box.value = str(folder)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen.view.get("status") == "finished", 30, "the attached run")
        await pilot.pause(0.3)
        assert f"val acc {final:.4f}" in static_text(app, "#monitor-stats")
        assert "mnist-lenet/version_0" in static_text(app, "#monitor-head")
        await pilot.press("f4")  # and it is listed in Runs
        await wait_until(pilot, lambda: len(app.screen.order) == 1, 30, "the runs table")
        assert app.screen.query_one("#runs-table").get_row_at(0)[2] == "finished"


@pytest.mark.slow
@synced
async def test_stop_a_run_gracefully_from_the_monitor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "long.yaml"
    recipe.write_text(yaml.safe_dump({"network": "lenet", "dataset": "mnist", "num_examples": 30000, "num_epochs": 10,
                                      "lr": 0.05, "lr_schedule": "constant", "model_prefix": str(tmp_path / "model" / "m")}))
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        run = app.launch_fit(str(recipe), "--threads 1 --disp-batches 5")
        try:
            await pilot.pause()
            monitor = app.screen
            # a series is (steps, values): wait for a value, a step event of the run itself
            await wait_until(pilot, lambda: len((monitor.view.get("train_acc") or ([], []))[1]) >= 1, 180,
                             "the first step event")
            await pilot.press("s")  # graceful stop
            await wait_until(pilot, lambda: monitor.view.get("status") == "stopped", 120, "the stopped end event")
            assert run.proc.wait(60) is not None
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        end = events_of(run.folder)[-1]
        assert end["type"] == "end" and end["status"] == "stopped"
        assert end["checkpoint"] == str(tmp_path / "model" / "m-stop.ckpt") and os.path.isfile(end["checkpoint"])
        assert "m-stop.ckpt" in static_text(app, "#monitor-head")


# -- snapshots: every screen at 120x40, fixed content ----------------------------------------------------------
def test_snapshot_builder(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot):
        await settle(pilot)
        await set_field(pilot, "lr", "-1")
        await set_field(pilot, "data_dir", "no/such/folder")

    assert snap_compare(LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES), terminal_size=SIZE, run_before=run_before)


def test_snapshot_launch(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.recipe_path = "recipes/recipe.yaml"
        pilot.app.extra_args = "--threads 1"
        await pilot.press("f2")
        await pilot.pause()

    assert snap_compare(LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES), terminal_size=SIZE, run_before=run_before)


def test_snapshot_monitor(snap_compare, fixed_runs):
    async def run_before(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.view.get("status") == "finished", 30, "the fixed run")
        await pilot.pause(0.3)

    app = LitImgclsApp(runs_dir="runs", attach="runs/mnist-lenet/version_1", recipes_dir=RECIPES)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_monitor_of_a_stopped_run_and_its_output(snap_compare, fixed_runs, tmp_path):
    """A run stopped in its second epoch, started here: epoch 2/3 as while it ran, one validation value as a
    dot, the checkpoint column, and the Speedometer's tab-separated lines whole."""
    import subprocess
    import sys

    from tui.launcher import Launched

    folder = fixed_runs / "mnist-mlp" / "version_1"
    stopped_in_epoch_two(folder, -1, 1_700_000_000.0, stopped=True)
    log = tmp_path / "fit.log"
    log.write_text(
        "Epoch[0] Batch [0-10]\tSpeed: 3050.00 samples/sec\taccuracy=0.650000\tloss=0.800000\tlr=0.05\n"
        "Epoch[0] Batch [10-20]\tSpeed: 3100.00 samples/sec\taccuracy=0.700000\tloss=0.700000\tlr=0.05\n"
        "Epoch[0] Train-accuracy=0.780000\tTime cost=4.00 s\tSpeed: 3100.00 samples/sec\tValidation-accuracy=0.880000\n"
        "Epoch[1] Batch [0-10]\tSpeed: 3200.00 samples/sec\taccuracy=0.850000\tloss=0.400000\tlr=0.05\n")
    proc = subprocess.Popen([sys.executable, "-c", ""])  # a process that has exited, as a stopped run's has
    proc.wait()
    launched = Launched(proc, ["fit"], log, Path("runs"), folder=Path("runs/mnist-mlp/version_1"))

    async def run_before(pilot):
        pilot.app.monitor(folder=Path("runs/mnist-mlp/version_1"), launched=launched)  # as typed: relative
        await wait_until(pilot, lambda: pilot.app.screen.view.get("status") == "stopped", 30, "the stopped run")
        await pilot.pause(0.3)

    app = LitImgclsApp(runs_dir="runs", attach="runs/mnist-lenet/version_1", recipes_dir=RECIPES)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_runs_and_compare(snap_compare, fixed_runs):
    async def run_before(pilot):
        await pilot.press("f4")
        await wait_until(pilot, lambda: len(pilot.app.screen.order) == 3, 30, "the runs")
        await pilot.press("space", "down", "space", "c")
        await pilot.pause(0.3)

    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_runs(snap_compare, fixed_runs):
    async def run_before(pilot):
        await pilot.press("f4")
        await wait_until(pilot, lambda: len(pilot.app.screen.order) == 3, 30, "the runs")
        await pilot.pause(0.3)

    assert snap_compare(LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES), terminal_size=SIZE, run_before=run_before)


@synced
async def test_pack_runs_with_progress(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    app = LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        await pilot.pause()
        screen = app.screen
        screen.query_one("#pack-src", Input).value = "imgs"
        screen.query_one("#pack-out", Input).value = "packed"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "done" in static_text(app, "#pack-status") or "failed" in static_text(app, "#pack-status"),
                         120, "the pack to end")
        assert "done" in static_text(app, "#pack-status")
        bar = screen.query_one("#pack-bar", ProgressBar)
        assert (bar.total, bar.progress) == (40, 40)  # from pack's "N/M images" lines
    assert (tmp_path / "packed" / "manifest.json").is_file()


def test_snapshot_pack(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot):
        await pilot.press("f5")
        await pilot.pause()
        pilot.app.screen.query_one("#pack-src", Input).value = "mnist"
        pilot.app.screen.query_one("#pack-out", Input).value = "data/mnist-packed"
        pilot.app.screen.query_one("#pack-format", Select).value = "both"
        for field in pilot.app.screen.query(Input):  # a blinking cursor would make the picture depend on timing
            field.cursor_blink = False
        await pilot.pause()

    assert snap_compare(LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES), terminal_size=SIZE, run_before=run_before)


def test_snapshot_help(snap_compare, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def run_before(pilot):
        await settle(pilot)
        await pilot.press("f10")
        await pilot.pause()

    assert snap_compare(LitImgclsApp(runs_dir="runs", recipes_dir=RECIPES), terminal_size=SIZE, run_before=run_before)


def test_readme_screenshot_is_current_format():
    svg = REPO / "docs" / "tui.svg"
    assert svg.is_file() and svg.read_text().lstrip().startswith("<svg")
