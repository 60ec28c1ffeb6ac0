"""What augmentation and EMA give on little data (issue 17 item 5): MNIST reduced to its first 1,000 training
images, LeNet, the same epochs and schedule for every variant, test accuracy on MNIST's 10,000 test images.

Variants (each a recipe change only):
  none        no augmentation
  mxnet       MXNet-style: pad-2 random crop and rotation up to 10 degrees (``--pad-size 2 --max-random-rotate-angle 10``)
  trivial     TrivialAugment (torchvision's TrivialAugmentWide)
  mixup       the MXNet-style stages plus cutmix (alpha 1) with label smoothing 0.1
  ema         the MXNet-style stages plus an EMA of the weights (decay 0.99); validation uses the EMA weights

Each variant runs with ``--seeds`` seeds (the data order, the initial weights and the augmentation's draws); the
figure is the median test accuracy. Runs interleave (seed by seed) so that machine load hits every variant alike.

    python benchmarks/augment_mnist1000.py [--seeds 3] [--epochs 20] [--variants none,mxnet,trivial,mixup,ema]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lit_imgcls.engine import fit
from lit_imgcls.recipe import Recipe

from _common import print_medians, save

MXNET = [{"name": "random_crop", "pad": 2}, {"name": "rotate", "degrees": 10}]
VARIANTS: dict[str, dict] = {
    "none": {},
    "mxnet": {"augment": MXNET},
    "trivial": {"augment": [{"name": "trivial_augment"}]},
    "mixup": {"augment": [*MXNET, {"name": "cutmix", "alpha": 1.0}], "label_smoothing": 0.1},
    "ema": {"augment": MXNET, "ema_decay": 0.99},
}


def recipe(args, variant: str, seed: int) -> Recipe:
    return Recipe(network="lenet", dataset="mnist", num_examples=args.examples, batch_size=args.batch_size,
                  num_epochs=args.epochs, lr=args.lr, lr_schedule="cosine", seed=seed, threads=2,
                  disp_batches=1000, progress_bar=False, run_dir="/tmp/lit-imgcls-bench-runs", **VARIANTS[variant])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choices: {', '.join(VARIANTS)}")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for seed in range(args.seeds):
        for name in names:
            start = time.perf_counter()
            res = fit(recipe(args, name, seed))
            acc = float(res.metrics["val/acc"])
            runs[name].append({"seed": seed, "test_acc": acc, "wall_s": time.perf_counter() - start})
            print(f"{name:8s} seed {seed}: test accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    median = {n: statistics.median(r["test_acc"] for r in v) for n, v in runs.items()}
    payload = {"examples": args.examples, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
               "seeds": args.seeds, "median_test_acc": median, "runs": runs,
               "variants": {n: VARIANTS[n] for n in names}}
    path = save("augment_mnist1000", payload)
    print_medians(median, "test accuracy")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
