"""What each augmentation stage costs: images/s on the host (per image, as the loader runs the recipe's stages)
against on the device (``augment_device: true``: the whole batch at once, kornia.augmentation), side by side.

For each built-in per-image stage alone, and for two chains (cifar10-style: pad-4 crop and flip; MXNet-style:
every MXNet augmentation flag that has a device form), on random RGB uint8 images of each size:

- host: :class:`lit_imgcls.data.augment.Pipeline` on one uint8 (3, H, W) image at a time, with the image's own
  seed, on one thread (what one loader worker does; a loader runs ``data_nthreads`` of them side by side);
- device: :class:`lit_imgcls.data.augment.DeviceAugment` on a batch of ``--batch`` images, from the uint8 batch
  to the float pixels the module normalises (the uint8 -> float step included), on ``--device`` with torch's
  threads (cpu: all of them; a GPU run waits for the GPU before reading the clock).

Each figure is the median of ``--repeats`` timed passes after one untimed pass (kornia builds its transforms and
torch warms its kernels in that one). RandAugment, TrivialAugment and AutoAugment have no device form (kornia's
policies draw one sub-policy per batch): their device column is empty.

    python benchmarks/augment_stages.py [--sizes 32,224] [--batch 256] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lit_imgcls.data.augment import DeviceAugment, Pipeline, StageContext, device_form, sample_seed
from lit_imgcls.registry import augmentations

from _common import machine, save, stamp

STAGES: dict[str, list[dict]] = {
    "random_crop": [{"name": "random_crop", "pad": 4}],
    "mirror": [{"name": "mirror"}],
    "random_resized_crop": [{"name": "random_resized_crop"}],
    "rotate": [{"name": "rotate", "degrees": 15}],
    "shear": [{"name": "shear", "ratio": 0.1}],
    "scale": [{"name": "scale", "min": 0.8, "max": 1.2}],
    "hsl": [{"name": "hsl", "h": 36, "s": 50, "l": 50}],
    "color_jitter": [{"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4}],
    "pca_noise": [{"name": "pca_noise", "std": 0.1}],
    "random_erasing": [{"name": "random_erasing"}],
    "rand_augment": [{"name": "rand_augment"}],
    "trivial_augment": [{"name": "trivial_augment"}],
    "auto_augment": [{"name": "auto_augment"}],
    # chains
    "cifar10-style": [{"name": "random_crop", "pad": 4}, {"name": "mirror"}],
    "MXNet-style": [{"name": "rotate", "degrees": 10}, {"name": "shear", "ratio": 0.1},
                    {"name": "scale", "min": 0.9, "max": 1.1}, {"name": "random_crop", "pad": 4}, {"name": "mirror"},
                    {"name": "hsl", "h": 36, "s": 50, "l": 50},
                    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4},
                    {"name": "pca_noise", "std": 0.1}],
}


def on_device(stages: list[dict]) -> bool:
    return all(device_form(augmentations.get(s["name"])) is not None for s in stages)


def host_rate(stages: list[dict], images: torch.Tensor, repeats: int) -> float:
    pipeline = Pipeline(stages, StageContext(tuple(images.shape[1:]), 10))
    pipeline.stack(images[:4], list(range(4)))  # builds the transforms
    seeds = [sample_seed(0, 0, i) for i in range(len(images))]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline.stack(images, seeds)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def device_rate(stages: list[dict], images: torch.Tensor, repeats: int, device: torch.device) -> float:
    aug = DeviceAugment(stages, StageContext(tuple(images.shape[1:]), 10), seed=0)
    batch = images.to(device)

    def once(step: int) -> None:
        aug(batch.float() / 255, step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    once(0)
    times = []
    for step in range(1, repeats + 1):
        start = time.perf_counter()
        once(step)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,224", help="square image sizes in pixels, comma-separated")
    parser.add_argument("--batch", type=int, default=256, help="images per batch (the host times each of them)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    parser.add_argument("--device", default="cpu", help="where the batched stages run: cpu, cuda, cuda:1...")
    parser.add_argument("--only", default="", help="comma-separated rows of the table (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device here")
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [r for r in STAGES if not args.only or r in args.only.split(",")]
    gen = torch.Generator().manual_seed(0)
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    for size in sizes:
        images = torch.randint(0, 256, (args.batch, 3, size, size), generator=gen, dtype=torch.uint8)
        for row in rows:
            stages = STAGES[row]
            host = host_rate(stages, images, args.repeats)
            dev = device_rate(stages, images, args.repeats, device) if on_device(stages) else None
            results.setdefault(row, {})[str(size)] = {"host": host, "device": dev}
            print(f"{size:>4} px  {row:<20} host {host:>9.0f}/s   {args.device} batched "
                  + (f"{dev:>9.0f}/s  x{dev / host:.1f}" if dev else "        -"), flush=True)
    print(f"\n{machine()}; torch threads {torch.get_num_threads()}; {stamp()}")
    header = "| stage | " + " | ".join(f"{s} px host | {s} px {device.type} batched" for s in sizes) + " |"
    print(header)
    print("|" + " --- |" * (1 + 2 * len(sizes)))
    for row, per_size in results.items():
        cells = []
        for s in sizes:
            r = per_size[str(s)]
            cells += [f"{r['host']:,.0f}", f"{r['device']:,.0f}" if r["device"] else "host only"]
        print(f"| {row} | " + " | ".join(cells) + " |")
    save(f"augment_stages_{device.type}", {"batch": args.batch, "repeats": args.repeats, "device": args.device,
                                            "torch_threads": torch.get_num_threads(),
                                            "images_per_sec": results})


if __name__ == "__main__":
    main()
