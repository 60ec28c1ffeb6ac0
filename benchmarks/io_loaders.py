"""Loader throughput on the photo corpus (MXNet's --test-io): images/s with random-resized-crop 224 + flip.

Makes the photo corpus and two packs of it (original JPEG bytes, and shorter side 256 at quality 90, as FFCV's
ImageNet setup does) unless they exist, then times, in one run and with the same workers: the plain
ImageFolder + DataLoader, lit-imgcls's WebDataset and FFCV loaders on each pack, and the one-core
libjpeg-turbo decode-only bound of each set of JPEGs.

    python benchmarks/io_loaders.py [--workdir /tmp/lit-imgcls-io] [--per-class 150] [--workers 2] [--batches 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

from _common import save

from lit_imgcls.bench_io import run_io_benchmark, table


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lit_imgcls", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lit-imgcls-io"))
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args()
    photos, original, small = args.workdir / "photos", args.workdir / "pack-original", args.workdir / "pack-256"
    if not (photos / "train").is_dir():
        _cli("dataset", "photos", str(photos), "--train-per-class", str(args.per_class), "--val-per-class", "0",
             "--num-workers", "2")
    if not (original / "manifest.json").exists():
        _cli("dataset", "pack", str(photos / "train"), str(original), "--format", "both", "--pass-through", "--num-workers", "2")
    if not (small / "manifest.json").exists():
        _cli("dataset", "pack", str(photos / "train"), str(small), "--format", "both", "--resize", "256", "--quality", "90",
             "--num-workers", "2")
    packs = [("wds", str(original)), ("wds", str(small)), ("ffcv", str(original)), ("ffcv", str(small))]
    results = run_io_benchmark(str(photos / "train"), packs, workers=args.workers, batches=args.batches)
    text = table(results)
    print(text)
    save("io_loaders", {"workers": args.workers, "batches": args.batches, "per_class": args.per_class,
                        "results": [dataclasses.asdict(r) | {"per_core": r.per_core} for r in results], "table": text})


if __name__ == "__main__":
    main()
