"""Samples/s of LeNet on MNIST with 1 and 2 CPU workers per kv-store mode, as the seed's speed tables.

Every worker gets one thread (this machine has 2 cores, so 2 workers fill it), the same per-worker batch and the
same number of steps; a run's rate is its training samples over its training time (the Speedometer's epoch figure,
summed over the workers that do not synchronise). Efficiency = N-worker rate / (N x 1-worker rate).

    python benchmarks/scaling.py [--examples 24000] [--batch-size 64] [--modes local dist_sync dist_async]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import save

REPO = Path(__file__).resolve().parents[1]
FINAL = re.compile(r"final: .*?\(([\d.]+) samples/s last epoch\)")


def fit_args(mode: str, examples: int, batch: int, workdir: Path) -> list[str]:
    return ["fit", "--recipe", str(REPO / "recipes/mnist.yaml"), "--kv-store", mode, "--num-epochs", "1",
            "--num-examples", str(examples), "--batch-size", str(batch), "--threads", "1", "--fused-steps", "1",
            "--progress-bar", "false", "--disp-batches", "1000", "--run-dir", str(workdir / "runs"),
            "--model-prefix", str(workdir / "model/m")]


def run(mode: str, workers: int, examples: int, batch: int) -> float:
    """Training samples/s of all workers together."""
    with tempfile.TemporaryDirectory() as tmp:
        args = fit_args(mode, examples, batch, Path(tmp))
        if workers == 1:
            cmd = [sys.executable, "-m", "lit_imgcls", *args]
        elif mode in ("local", "device"):
            cmd = [sys.executable, "-m", "lit_imgcls", *args, "--num-processes", str(workers)]
        else:  # separate worker processes, as on separate machines
            cmd = [sys.executable, "-m", "lit_imgcls", "launch", "-n", str(workers), "--",
                   sys.executable, "-m", "lit_imgcls", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if out.returncode != 0:
            raise SystemExit(f"{mode} x{workers} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        rates = [float(r) for r in FINAL.findall(out.stdout)]
        if not rates:
            raise SystemExit(f"{mode} x{workers}: no final line in\n{out.stdout[-3000:]}")
        # Synchronous runs report once for all workers; asynchronous workers each report their own rate.
        return sum(rates) if mode == "dist_async" else rates[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=24000, help="training samples per worker")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", nargs="+", default=["local", "dist_sync", "dist_async"])
    args = parser.parse_args()
    rows = []
    print("| kv-store | 1 worker, samples/s | 2 workers, samples/s | speed-up | efficiency |")
    print("| --- | --- | --- | --- | --- |")
    for mode in args.modes:
        one = run(mode, 1, args.examples, args.batch_size)
        # each worker trains as many samples as the single one did, so both runs last about as long
        two = run(mode, 2, args.examples * 2, args.batch_size)
        rows.append({"mode": mode, "one": one, "two": two, "efficiency": two / (2 * one)})
        print(f"| {mode} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x | {two / (2 * one):.0%} |", flush=True)
    save("scaling", {"examples_per_worker": args.examples, "batch_size": args.batch_size, "threads_per_worker": 1,
                     "rows": rows})


if __name__ == "__main__":
    main()
