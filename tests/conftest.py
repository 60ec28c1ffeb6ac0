"""Shared fixtures: real MNIST files, a CLI runner in a real subprocess, small recipes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> Result:
    """Runs ``python -m lit_imgcls ARGS`` as a separate process, as a user's shell would."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "lit_imgcls", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def mnist_arrays():
    from lit_imgcls.data.mnist import load_mnist

    arrays, _ = load_mnist()
    return arrays


@pytest.fixture(scope="session")
def mnist_idx_dir(tmp_path_factory, mnist_arrays) -> Path:
    """The full MNIST as official gzip IDX files, written from the packaged copy."""
    from lit_imgcls.data.cards import load_card
    from lit_imgcls.data.mnist import write_idx

    folder = tmp_path_factory.mktemp("mnist-idx")
    for key, stem in load_card("mnist")["sources"]["idx_files"].items():
        write_idx(folder / f"{stem}.gz", mnist_arrays[key])
    return folder


def quick_args(tmp: Path, **overrides) -> list[str]:
    """Flags for a short MNIST run (a few thousand images) that still learns."""
    base = {
        "network": "lenet", "dataset": "mnist", "batch_size": "64", "num_epochs": "1", "num_examples": "3000",
        "lr": "0.05", "lr_schedule": "constant", "threads": "2", "progress_bar": "false", "disp_batches": "10",
        "run_dir": str(tmp / "runs"), "model_prefix": str(tmp / "model" / "mnist"),
    }
    if overrides.keys() & {"lr_factor_epoch", "lr_step_epochs"} and "lr_schedule" not in overrides:
        del base["lr_schedule"]  # those keys choose their schedule (MXNet's); constant would not read them
    base.update({k: str(v) for k, v in overrides.items()})
    if base["dataset"] not in ("mnist", "cifar10", "npz") and "num_examples" not in overrides:
        del base["num_examples"]  # the other datasets refuse it (they would not honour it)
    out: list[str] = []
    for k, v in base.items():
        out += [f"--{k.replace('_', '-')}", v]
    return out
