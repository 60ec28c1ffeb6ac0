"""What `--compile` (torch.compile of the network) gives `lit-imgcls fit` on this CPU: samples/s after compiling,
and what the compilation costs.

Each run is `fit` on the first `--examples` MNIST images, LeNet, batch 64, `--epochs` epochs, in this process;
the speed is the last epoch's samples/s (the Speedometer's figure: the first epoch also waits for compiling the
training graph and, at its validation, the evaluation graph); what compiling costs shows as the extra wall time of
a whole run (median compiled minus median eager; inductor's on-disk cache makes later compilations of the same
graphs cheaper). Runs alternate, without and with
compile, `--trials` times, so machine noise hits both alike; the figure is the median.

    python benchmarks/compile_cpu.py [--trials 2] [--examples 6000] [--epochs 2] [--network lenet]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lit_imgcls.engine import fit
from lit_imgcls.recipe import Recipe

from _common import save


def recipe(args, compile: bool) -> Recipe:
    return Recipe(network=args.network, dataset="mnist", batch_size=64, num_epochs=args.epochs, lr=0.05,
                  num_examples=args.examples, threads=2, disp_batches=1000, progress_bar=False, seed=0,
                  run_dir="/tmp/lit-imgcls-bench-runs", compile=compile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--network", default="lenet")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"eager": [], "compiled": []}
    for _ in range(args.trials):
        for name in runs:
            start = time.perf_counter()
            res = fit(recipe(args, name == "compiled"))
            runs[name].append({"samples_per_sec": res.samples_per_sec, "wall_s": time.perf_counter() - start,
                               "val_acc": res.metrics.get("val/acc")})
    speed = {k: statistics.median(r["samples_per_sec"] for r in v) for k, v in runs.items()}
    wall = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    extra_s = wall["compiled"] - wall["eager"]  # the compilations, and whatever the speed changed
    payload = {"network": args.network, "examples": args.examples, "epochs": args.epochs, "trials": args.trials,
               "samples_per_sec": speed, "wall_s": wall, "speedup": speed["compiled"] / speed["eager"],
               "extra_wall_s": extra_s, "runs": runs}
    path = save(f"compile_cpu_{args.network}", payload)
    for k in runs:
        print(f"{k:9s} {speed[k]:8.0f} samples/s (last epoch)  wall {wall[k]:6.1f} s")
    print(f"speed-up {payload['speedup']:.2f}x; a compiled run took {extra_s:.0f} s longer in all; saved {path}")


if __name__ == "__main__":
    main()
