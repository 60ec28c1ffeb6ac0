"""Training samples/s from a pack against in memory: LeNet on MNIST, recipes/mnist.yaml's settings, 1 epoch.

In one process, each trial runs `lit_imgcls.engine.fit` three times, rotating which goes first so machine noise
hits each alike: on the in-memory MNIST tensors, from the pack's WebDataset shards and from its FFCV file. The
rate of a run is its own Speedometer's (the `step` events of its events.jsonl), the first window left out (it
holds start-up: worker processes, the first batches); windows are of equal size, so the rate is their samples over
their summed time. The figure is the median over `--trials` of each rate and of each per-trial ratio to memory;
the wall time of each `fit` call (start-up, loading, training, validation) is reported beside it.

The pack is made with `lit-imgcls dataset pack mnist` (the 60,000 training images); with `--examples N` below
60,000 the pack holds the first N (the same code, on the built-in source cut short), and the in-memory run takes
`num_examples N`, so both train on the same images (a quicker measurement on a busy machine).

    python benchmarks/pack_vs_memory.py [--workdir /tmp/lit-imgcls-packspeed] [--trials 3] [--examples 60000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import save

KINDS = ("memory", "wds", "ffcv")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lit_imgcls", *args], check=True, stdout=subprocess.DEVNULL)


def make_pack(workdir: Path, examples: int) -> Path:
    """The MNIST pack (wds and ffcv) of the first ``examples`` training images, made once per size."""
    pack = workdir / f"pack-{examples}"
    if (pack / "manifest.json").exists():
        return pack
    if examples >= 60000:
        _cli("dataset", "pack", "mnist", str(pack), "--format", "both", "--num-workers", "2")
        return pack
    # The same command's code in this process, on MNIST cut to its first N training images (and the first 2,000
    # held out, a quick validation): the built-in source's splits, shortened before they are shuffled and packed.
    from lit_imgcls.data import pack as packing
    from lit_imgcls.data.encode import EncodeOptions

    def cut_source(*a, **kw):
        source = open_source(*a, **kw)
        source.splits = {s: items[: examples if s == "train" else 2000] for s, items in source.splits.items()}
        return source

    open_source, packing.open_source = packing.open_source, cut_source
    try:
        packing.pack_dataset("mnist", str(pack), packing.PackOptions(format="both", num_workers=2), EncodeOptions())
    finally:
        packing.open_source = open_source
    return pack


def recipe(kind: str, pack: Path, examples: int, workdir: Path, data_nthreads: int | None):
    from lit_imgcls.recipe import Recipe

    data = {"dataset": "mnist", "num_examples": examples} if kind == "memory" else {
        "dataset": kind, "data_train": str(pack), "data_nthreads": data_nthreads}
    return Recipe(network="lenet", batch_size=64, fused_steps=8, num_epochs=1, lr=0.05, mom=0.9, nesterov=True,
                  wd=5e-4, lr_schedule="onecycle", onecycle_pct=0.25, channels_last=True, seed=0,
                  disp_batches=40, progress_bar=False, model_prefix=str(workdir / "model" / kind),
                  run_dir=str(workdir / "runs"), **data)


def window_rate(run_dir: str) -> tuple[float, int]:
    """Samples/s over the run's Speedometer windows after the first, and how many windows that is."""
    rates = []
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        for line in f:
            event = json.loads(line)
            if event.get("type") == "step" and event.get("samples_per_sec"):
                rates.append(float(event["samples_per_sec"]))
    rest = rates[1:] or rates
    return len(rest) / sum(1 / r for r in rest), len(rest)  # equal windows: the harmonic mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lit-imgcls-packspeed"))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--data-nthreads", type=int, default=None,
                        help="loader workers of the packs (default: the run's)")
    parser.add_argument("--label", default="", help="a name for this run in the results file (before/after)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pack = make_pack(args.workdir, args.examples)

    from lit_imgcls.engine import fit

    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    walls: dict[str, list[float]] = {k: [] for k in KINDS}
    loads = []
    for trial in range(args.trials):
        loads.append(os.getloadavg()[0])
        order = KINDS[trial % 3:] + KINDS[: trial % 3]
        for kind in order:
            tic = time.perf_counter()
            result = fit(recipe(kind, pack, args.examples, args.workdir, args.data_nthreads), overwrite=True)
            walls[kind].append(time.perf_counter() - tic)
            rate, windows = window_rate(result.run_dir)
            rates[kind].append(rate)
            print(f"trial {trial} {kind}: {rate:.0f} samples/s over {windows} windows, "
                  f"fit call {walls[kind][-1]:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = {k: statistics.median(r / m for r, m in zip(rates[k], rates["memory"])) for k in KINDS}
    wall = {k: statistics.median(v) for k, v in walls.items()}
    lines = ["| data | samples/s (median) | ratio to memory (median of per-trial ratios) | fit call, wall s (median) |",
             "| --- | --- | --- | --- |"]
    for k in KINDS:
        lines.append(f"| {k} | {med[k]:,.0f} | {ratio[k]:.2f} | {wall[k]:.1f} |")
    text = "\n".join(lines)
    print(text)
    print(f"load average (1 min) at each trial's start: {', '.join(f'{v:.1f}' for v in loads)}")
    save(f"pack_vs_memory{'_' + args.label if args.label else ''}", {
        "examples": args.examples, "trials": args.trials, "data_nthreads": args.data_nthreads,
        "samples_per_sec": med, "ratio": ratio, "wall_s": wall, "all": rates, "all_wall_s": walls,
        "load_average": loads, "table": text})


if __name__ == "__main__":
    main()
