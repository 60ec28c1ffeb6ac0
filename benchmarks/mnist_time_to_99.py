"""Time to 99% top-1 on the real MNIST test set with `lit-imgcls fit --recipe recipes/mnist.yaml`.

Runs the recipe for several seeds on this machine and reports, per seed, the training seconds (validation
excluded) until the first epoch whose test accuracy is >= 99%, and the wall time of the whole command. For scale,
the same seeds also train the bare PyTorch loop of fit_vs_bare_loop.py with the recipe's settings.

    python benchmarks/mnist_time_to_99.py [--seeds 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import save
from fit_vs_bare_loop import bare_loop, recipe

REPO = Path(__file__).resolve().parents[1]


def one_run(seed: int, threads: int, workdir: Path) -> dict:
    cmd = [sys.executable, "-m", "lit_imgcls", "fit", "--recipe", str(REPO / "recipes/mnist.yaml"), "--seed", str(seed),
           "--threads", str(threads), "--progress-bar", "false", "--run-dir", str(workdir / "runs"),
           "--model-prefix", str(workdir / f"model/mnist-s{seed}")]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    run_dir = out.stdout.rsplit("logs ", 1)[1].strip()
    rows = list(csv.DictReader(open(Path(run_dir) / "metrics.csv")))
    epochs: dict[int, dict] = {}
    for row in rows:
        e = int(float(row["epoch"])) if row.get("epoch") else None
        if e is None:
            continue
        if row.get("train/epoch_time"):
            epochs.setdefault(e, {})["time"] = float(row["train/epoch_time"])
        if row.get("val/acc"):
            epochs.setdefault(e, {})["acc"] = float(row["val/acc"])
    elapsed, reached = 0.0, None
    for e in sorted(epochs):
        elapsed += epochs[e]["time"]
        if reached is None and epochs[e].get("acc", 0) >= 0.99:
            reached = elapsed
    final = epochs[max(epochs)]["acc"]
    return {"seed": seed, "seconds_to_99": reached, "final_acc": final, "train_seconds": elapsed, "wall_seconds": wall,
            "per_epoch": {str(e): epochs[e] for e in sorted(epochs)}}


def bare_run(seed: int, threads: int, epochs: int = 2) -> dict:
    from lit_imgcls.data.mnist import MNISTDataModule

    torch.set_num_threads(threads)
    dm = MNISTDataModule(batch_size=64)
    dm.setup()
    x, y = dm._tensors["train"]
    xt, yt = dm._tensors["test"]

    def evaluate(net) -> float:
        with torch.no_grad():
            return sum(int((net(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum()) for i in range(0, len(xt), 1000)) / len(xt)

    r = recipe(None)
    r.seed = seed
    bare_loop(x, y, r, epochs=epochs, evaluate=evaluate)
    hist = bare_loop.history
    reached = next((sec for sec, acc in hist if acc >= 0.99), None)
    return {"seed": seed, "seconds_to_99": reached, "per_epoch": hist}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lit-imgcls-bench"))
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        r = one_run(seed, args.threads, args.workdir)
        runs.append(r)
        t = f"{r['seconds_to_99']:.1f} s" if r["seconds_to_99"] is not None else "not reached"
        print(f"seed {seed}: 99% after {t} of training; final {r['final_acc']:.4f}; command wall time {r['wall_seconds']:.1f} s")
    bare = [bare_run(seed, args.threads) for seed in args.seeds]
    for b in bare:
        print(f"bare loop seed {b['seed']}: " + ", ".join(f"epoch {i + 1}: {acc:.4f} after {sec:.1f} s" for i, (sec, acc) in enumerate(b["per_epoch"])))
    reached = [r["seconds_to_99"] for r in runs if r["seconds_to_99"] is not None]
    med = statistics.median(reached) if reached else None
    print(f"reached 99% in {len(reached)}/{len(runs)} runs; median time to 99%: {med:.1f} s" if med else "never reached 99%")
    save("mnist_time_to_99", {"threads": args.threads, "runs": runs, "median_seconds_to_99": med,
                               "reached": len(reached), "of": len(runs), "bare_loop": bare})


if __name__ == "__main__":
    main()
