"""Samples/s of `lit-imgcls fit` against a bare PyTorch loop: same LeNet, batch, threads, data, schedule.

Both train on the in-memory MNIST tensors in one process, alternating, so machine noise hits both alike.
Each trial trains `--examples` samples; the figure is the median over `--trials`.

    python benchmarks/fit_vs_bare_loop.py [--trials 6] [--examples 30000]
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


def recipe(examples: int) -> Recipe:
    return Recipe(
        network="lenet", dataset="mnist", batch_size=64, num_epochs=1, lr=0.05, nesterov=True, wd=5e-4,
        lr_schedule="onecycle", channels_last=True, disp_batches=100, progress_bar=False, num_examples=examples,
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
    args = parser.parse_args()
    r = recipe(args.examples)
    torch.set_num_threads(r.threads)
    dm = MNISTDataModule(batch_size=r.batch_size, num_examples=args.examples)
    dm.setup()
    x, y = dm._tensors["train"]
    bare, ours = [], []
    bare_loop(x[:5000], y[:5000], r)  # warm-up: first-call allocations and kernel selection
    for trial in range(args.trials):
        # alternate which goes first, so a drift in machine speed does not favour either side
        if trial % 2 == 0:
            bare.append(bare_loop(x, y, r))
            ours.append(fit(r).samples_per_sec)
        else:
            ours.append(fit(r).samples_per_sec)
            bare.append(bare_loop(x, y, r))
        print(f"trial {trial}: bare {bare[-1]:.0f} samples/s, fit {ours[-1]:.0f} samples/s, ratio {ours[-1] / bare[-1]:.3f}")
    b, o = statistics.median(bare), statistics.median(ours)
    ratio = statistics.median(oi / bi for oi, bi in zip(ours, bare))
    print(f"median: bare loop {b:.0f} samples/s | lit-imgcls fit {o:.0f} samples/s | median ratio {ratio:.3f}")
    save("fit_vs_bare_loop", {"bare_samples_per_sec": b, "fit_samples_per_sec": o, "ratio": ratio,
                               "trials": args.trials, "examples": args.examples, "batch_size": r.batch_size,
                               "threads": r.threads, "all_bare": bare, "all_fit": ours})


if __name__ == "__main__":
    main()
