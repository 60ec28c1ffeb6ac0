"""What augmentation and EMA give a small ResNet on little photo data (issue 17 item 5, the photo half): the photo
corpus (:func:`lit_imgcls.data.photos.make_photo_corpus`, 14 classes, a few dozen JPEGs each), ``resnet9_small``
(ResNet-9 at a quarter width, 0.41 M parameters) on 64-px inputs, the same epochs and schedule for every variant,
validation accuracy on the corpus's val split.

Variants (each a recipe change only):
  none     no augmentation: each training JPEG resized and centre-cropped as for validation
  mxnet    MXNet-style: random-resized crop (area 0.08-1, aspect 3/4-4/3) and mirror
  trivial  the MXNet-style stages, then TrivialAugment (torchvision's TrivialAugmentWide) on the 64-px crop
  cutmix   the MXNet-style stages plus cutmix (alpha 1) with label smoothing 0.1
  ema      the MXNet-style stages plus an EMA of the weights (``--ema-decay``); validation uses the EMA weights
  mild     random-resized crop of area 0.35-1 (not 0.08-1) and mirror (not run by default: ``--variants mild``)

Each variant runs with ``--seeds`` seeds (data order, initial weights, augmentation draws; the corpus itself is
the same for all: corpus seed 0); the figure is the median validation accuracy. Runs interleave (seed by seed) so
that machine load hits every variant alike. The corpus is made once under ``--corpus`` and reused.

    python benchmarks/augment_photos.py [--seeds 3] [--epochs 10] [--size 64] [--store-side 80] [--variants ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from lit_imgcls.engine import fit
from lit_imgcls.recipe import Recipe

from _common import print_medians, save

MXNET = [{"name": "random_resized_crop"}, {"name": "mirror"}]
VARIANTS: dict[str, dict] = {
    "none": {"augment": []},  # an empty list: no stage, and not the folder loader's default crop-and-flip
    "mxnet": {"augment": MXNET},
    "trivial": {"augment": [*MXNET, {"name": "trivial_augment"}]},
    "cutmix": {"augment": [*MXNET, {"name": "cutmix", "alpha": 1.0}], "label_smoothing": 0.1},
    "ema": {"augment": MXNET, "ema_decay": "EMA"},  # the decay comes from --ema-decay
    # crops no smaller than a third of the image: nearer the corpus's own variation (its JPEGs are crops of 1/4 to
    # all of a photo, flipped and colour-jittered), which the default area 0.08-1 overshoots
    "mild": {"augment": [{"name": "random_resized_crop", "area": [0.35, 1.0]}, {"name": "mirror"}]},
}


def corpus(args) -> Path:
    """The corpus for these counts, made on first use and reused by later runs: the photos (shorter side 300-500
    px) stored again with their shorter side at ``--store-side`` px, as ``lit-imgcls dataset pack --resize`` stores
    them for photos.yaml. Decoding the full-size JPEGs took most of a run's time on 2 cores (15-25 images/s), which
    would measure the decoder, not the augmentation."""
    from PIL import Image

    from lit_imgcls.data.photos import make_photo_corpus

    full = Path(args.corpus) / f"photos-{args.train_per_class}-{args.val_per_class}"
    small = full.with_name(f"{full.name}-side{args.store_side}")
    if not (small / ".complete").exists():
        if not (full / ".complete").exists():
            make_photo_corpus(full, train_per_class=args.train_per_class, val_per_class=args.val_per_class, seed=0,
                              num_workers=2)
            (full / ".complete").write_text("")
        for src in sorted(full.glob("*/*/*.jpg")):
            dst = small / src.relative_to(full)
            dst.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(src) as im:
                scale = args.store_side / min(im.size)
                im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                          Image.Resampling.BICUBIC, reducing_gap=3.0).save(dst, quality=90)
        (small / ".complete").write_text("")
    return small


def recipe(args, root: Path, variant: str, seed: int) -> Recipe:
    # threads=1: on 2 cores shared with other work, two OpenMP threads were 13x slower per step than one (3.4 s
    # against 0.27 s for a batch of 32 at 32 px, load average 9): each waits at every barrier for a descheduled twin.
    extra = {k: (args.ema_decay if v == "EMA" else v) for k, v in VARIANTS[variant].items()}
    return Recipe(network=args.network, dataset="folder", data_train=str(root / "train"), data_val=str(root / "val"),
                  image_shape=f"3,{args.size},{args.size}", data_nthreads=1, batch_size=args.batch_size,
                  num_epochs=args.epochs, lr=args.lr, nesterov=True, wd=args.wd, lr_schedule="onecycle",
                  channels_last=True, seed=seed, threads=1, disp_batches=1000, progress_bar=False,
                  run_dir="/tmp/lit-imgcls-bench-runs", **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--size", type=int, default=64, help="input side in pixels")
    parser.add_argument("--store-side", type=int, default=80, help="shorter side of the stored JPEGs in pixels")
    parser.add_argument("--network", default="resnet9_small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--wd", type=float, default=0.0005)
    parser.add_argument("--ema-decay", type=float, default=0.98)
    parser.add_argument("--corpus", default="/tmp/lit-imgcls-bench-photos")
    parser.add_argument("--variants", default="none,mxnet,trivial,cutmix,ema", help=f"of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choices: {', '.join(VARIANTS)}")
    root = corpus(args)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for seed in range(args.seeds):
        for name in names:
            start = time.perf_counter()
            res = fit(recipe(args, root, name, seed))
            acc = float(res.metrics["val/acc"])
            runs[name].append({"seed": seed, "val_acc": acc, "wall_s": time.perf_counter() - start})
            print(f"{name:8s} seed {seed}: val accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    median = {n: statistics.median(r["val_acc"] for r in v) for n, v in runs.items()}
    payload = {"network": args.network, "image_size": args.size, "train_per_class": args.train_per_class,
               "val_per_class": args.val_per_class, "store_side": args.store_side, "epochs": args.epochs,
               "batch_size": args.batch_size,
               "lr": args.lr, "wd": args.wd, "ema_decay": args.ema_decay, "seeds": args.seeds,
               "median_val_acc": median, "runs": runs, "variants": {n: VARIANTS[n] for n in names}}
    tail = "" if args.variants == parser.get_default("variants") else "_" + "-".join(names)
    path = save(f"augment_photos_{args.size}px_{args.epochs}ep{tail}", payload)
    print_medians(median, "val accuracy")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
