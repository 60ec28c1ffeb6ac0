"""Samples/s of `lit-imgcls fit` against a bare PyTorch loop: same LeNet, batch, threads, data, schedule.

Both train on the in-memory MNIST tensors in one process, alternating, so machine noise hits both alike.
Each trial trains `--examples` samples; the figure is the median over `--trials`. `fit` runs twice per trial:
with the recipe's `fused_steps` (K batches handed to Lightning at once, K optimizer steps each) and with 1.

    python benchmarks/fit_vs_bare_loop.py [--trials 6] [--examples 30000] [--fused-steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lit_imgcls.data.mnist import MNISTDataModule
from lit_imgcls.engine import fit
from lit_imgcls.networks import create_network
from lit_imgcls.recipe import Recipe
from lit_imgcls.schedules import LRSchedule

from _common import save


def recipe(examples: int, fused_steps: int = 1) -> Recipe:
    return Recipe(fused_steps=fused_steps,
        network="lenet", dataset="mnist", batch_size=64, num_epochs=1, lr=0.05, nesterov=True, wd=5e-4,
        lr_schedule="onecycle", channels_last=True, disp_batches=200, progress_bar=False, num_examples=examples,
        threads=2, run_dir="/tmp/lit-imgcls-bench-runs",
    )


def bare_loop(x: torch.Tensor, y: torch.Tensor, r: Recipe, epochs: int = 1, evaluate=None) -> float:
    """The tuned hand-written loop: slice shuffled tensors, SGD with one-cycle, no framework.

    Returns samples/s of training; with ``evaluate(net) -> accuracy`` it also records, after each epoch,
    ``(training seconds so far, accuracy)`` in ``bare_loop.history``.
    """
    torch.manual_seed(r.seed)
    net = create_network("lenet", num_classes=10, in_chans=1, img_size=28).to(memory_format=torch.channels_last)
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": r.wd}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=r.lr, momentum=r.mom, nesterov=True)
    per_epoch = len(x) // r.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRSchedule("onecycle", per_epoch, per_epoch * epochs))
    bare_loop.history = []
    seconds = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        start = time.perf_counter()
        for b in range(per_epoch):
            idx = perm[b * r.batch_size : (b + 1) * r.batch_size]
            xb = x[idx].contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        seconds += time.perf_counter() - start
        if evaluate is not None:
            bare_loop.history.append((seconds, evaluate(net)))
    return epochs * per_epoch * r.batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--examples", type=int, default=30000)
    parser.add_argument("--fused-steps", type=int, default=8)
    args = parser.parse_args()
    r = recipe(args.examples, args.fused_steps)
    r1 = recipe(args.examples, 1)
    torch.set_num_threads(r.threads)
    dm = MNISTDataModule(batch_size=r.batch_size, num_examples=args.examples)
    dm.setup()
    x, y = dm._tensors["train"]
    runs = {"bare": lambda: bare_loop(x, y, r), "fused": lambda: fit(r).samples_per_sec,
            "unfused": lambda: fit(r1).samples_per_sec}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    bare_loop(x[:5000], y[:5000], r)  # warm-up: first-call allocations and kernel selection
    for trial in range(args.trials):
        # rotate the order, so a drift in machine speed favours none of them
        names = list(runs)[trial % 3:] + list(runs)[: trial % 3]
        for name in names:
            rates[name].append(runs[name]())
        print(f"trial {trial}: bare {rates['bare'][-1]:.0f} samples/s, fit {rates['fused'][-1]:.0f} "
              f"(fused_steps {r.fused_steps}), fit {rates['unfused'][-1]:.0f} (fused_steps 1)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = {k: statistics.median(o / b for o, b in zip(rates[k], rates["bare"])) for k in ("fused", "unfused")}
    print(f"median: bare loop {med['bare']:.0f} samples/s | fit {med['fused']:.0f} samples/s with fused_steps "
          f"{r.fused_steps} (ratio {ratio['fused']:.3f}) | fit {med['unfused']:.0f} samples/s with fused_steps 1 "
          f"(ratio {ratio['unfused']:.3f})")
    save("fit_vs_bare_loop", {"bare_samples_per_sec": med["bare"], "fit_samples_per_sec": med["fused"],
                               "ratio": ratio["fused"], "fused_steps": r.fused_steps,
                               "fit_unfused_samples_per_sec": med["unfused"], "ratio_unfused": ratio["unfused"],
                               "trials": args.trials, "examples": args.examples, "batch_size": r.batch_size,
                               "threads": r.threads, "all": rates})


if __name__ == "__main__":
    main()
