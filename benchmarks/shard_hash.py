"""What checking shards as they are read costs: the WebDataset training loader with the sha256 of every shard
computed as it streams (lit_imgcls.data.shard_check.open_shard, the default) and without it, side by side.

Makes a photo pack (shorter side 256, quality 90, shards of 64 images) and an MNIST pack unless they exist, then,
per pack, alternates ``--trials`` timed passes of each variant (same workers, same batches, training augmentation)
and reports the median images/s of each and their ratio; then the CPU time per sample of the shards' tar expansion
alone, plain and hashed, which other load on the machine does not blur. Also times the whole-file hash FFCV's
.beton files get once per process (seconds per GB, wall and CPU, from the page cache: the cost on top of reading
the file).

    python benchmarks/shard_hash.py [--workdir /tmp/lit-imgcls-hash] [--per-class 150] [--workers 2]
        [--batches 40] [--trials 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import save


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lit_imgcls", *args], check=True, stdout=subprocess.DEVNULL)


def loader(pack: Path, shape: str, batch: int, workers: int):
    from lit_imgcls.data.formats.wds import WDSDataModule

    dm = WDSDataModule(data_train=str(pack), batch_size=batch, data_nthreads=workers, image_shape=shape)
    return dm.train_dataloader()


def images_per_second(pack: Path, shape: str, batch: int, workers: int, batches: int, hashed: bool) -> float:
    """Images/s over ``batches`` batches after 3 warm-up batches (worker start); shards read from the page cache."""
    from lit_imgcls.data import shard_check
    from lit_imgcls.data.formats import wds

    # The unhashed variant opens each shard as a plain stream (what the loader did before): no entry, no check.
    wds.open_shard = shard_check.open_shard if hashed else (
        lambda url, entry, cache=None: shard_check.open_shard(url, None, cache))
    from lit_imgcls.bench_io import drain

    n, seconds = drain(loader(pack, shape, batch, workers), batches, warmup=3)
    return n / seconds


def parse_cpu_us_per_sample(pack: Path, split: str = "train") -> dict[str, float]:
    """CPU microseconds per sample to open and expand every shard of ``pack`` in this process (webdataset's tar
    expansion, no decoding), plain and hashed, alternating twice: the hash's own cost, which the load of other
    processes on the machine does not blur as it blurs images/s."""
    import json

    from webdataset.tariterators import tar_file_expander

    from lit_imgcls.data.shard_check import finish, open_shard

    entries = json.loads((pack / "manifest.json").read_text())["splits"][split]["wds"]
    cpu: dict[str, float] = {"unhashed": 0.0, "hashed": 0.0}
    for variant in ("unhashed", "hashed", "unhashed", "hashed"):
        start = time.process_time()
        for entry in entries:
            url = str(pack / "wds" / entry["file"])
            with open_shard(url, entry if variant == "hashed" else None) as stream:
                for _ in tar_file_expander([{"url": url, "stream": stream}]):
                    pass
                finish(stream)
        cpu[variant] += time.process_time() - start
    samples = sum(e["samples"] for e in entries) * 2  # two passes of each variant
    return {k: v / samples * 1e6 for k, v in cpu.items()}


def hash_seconds_per_gb(files: list[Path]) -> tuple[float, float]:
    """(wall, CPU) seconds per GB of sha256 over whole files as check_whole_file reads them (1 MiB chunks), page
    cache warm. The CPU time is what the hash takes from the process, whatever else shares the machine."""
    from lit_imgcls.data.download import file_digest

    for f in files:
        f.read_bytes()
    total, start, cpu = 0, time.perf_counter(), time.process_time()
    for f in files:
        file_digest(f)
        total += f.stat().st_size
    return (time.perf_counter() - start) / (total / 1e9), (time.process_time() - cpu) / (total / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lit-imgcls-hash"))
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    photos, photo_pack, mnist_pack = args.workdir / "photos", args.workdir / "pack-photos", args.workdir / "pack-mnist"
    if not (photos / "train").is_dir():
        _cli("dataset", "photos", str(photos), "--train-per-class", str(args.per_class), "--val-per-class", "0",
             "--num-workers", "2")
    if not (photo_pack / "manifest.json").exists():
        _cli("dataset", "pack", str(photos / "train"), str(photo_pack), "--format", "both", "--resize", "256",
             "--quality", "90", "--shard-size", "64", "--num-workers", "2")
    if not (mnist_pack / "manifest.json").exists():
        _cli("dataset", "pack", "mnist", str(mnist_pack), "--format", "wds", "--num-workers", "2")
    cases = [("photos 256 px, crop 224", photo_pack, "3,224,224", 64), ("MNIST 28 px", mnist_pack, "1,28,28", 256)]
    rows = []
    header = "| pack | workers | unhashed images/s | hashed images/s | ratio | tar CPU us/sample, unhashed | hashed |"
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, pack, shape, batch in cases:
        runs: dict[str, list[float]] = {"unhashed": [], "hashed": []}
        images_per_second(pack, shape, batch, args.workers, 3, True)  # warm-up: imports, page cache
        for _ in range(args.trials):
            for variant, times in runs.items():
                times.append(images_per_second(pack, shape, batch, args.workers, args.batches,
                                                       variant == "hashed"))
        med = {k: statistics.median(v) for k, v in runs.items()}
        ratio = med["hashed"] / med["unhashed"]
        rows.append({"pack": name, "batch": batch, "images_per_sec": med, "ratio_hashed": ratio, "trials": runs})
        parse = parse_cpu_us_per_sample(pack)
        rows[-1]["tar_cpu_us_per_sample"] = parse
        lines.append(f"| {name} | {args.workers} | {med['unhashed']:.0f} | {med['hashed']:.0f} | {ratio:.3f} | "
                     f"{parse['unhashed']:.0f} | {parse['hashed']:.0f} |")
    files = sorted(args.workdir.glob("pack-*/ffcv/*.beton")) + sorted(args.workdir.glob("pack-*/wds/*.tar"))
    wall, cpu = hash_seconds_per_gb(files)
    text = "\n".join(lines)
    print(text)
    print(f"sha256 of whole files ({len(files)} .beton and .tar files, as FFCV's are checked once per process): "
          f"{wall:.2f} s per GB wall, {cpu:.2f} s per GB of CPU time")
    save("shard_hash", {"workers": args.workers, "batches": args.batches, "per_class": args.per_class,
                        "results": rows, "hash_seconds_per_gb": {"wall": wall, "cpu": cpu}, "table": text})


if __name__ == "__main__":
    main()
