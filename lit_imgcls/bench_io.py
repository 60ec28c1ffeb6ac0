"""Loader throughput (MXNet's --test-io): images/s of each loader with training augmentation, no model.

Compares, on the same images and with the same number of workers: the plain baseline (torchvision ImageFolder
+ DataLoader, PIL decoding), lit-imgcls's WebDataset and FFCV loaders, and a decode-only bound (a tight
libjpeg-turbo loop through simplejpeg, one core). The decode-only bound keeps libjpeg-turbo's fast IDCT: it is a
ceiling, not the contract's decoder (lit_imgcls.data.image, accurate IDCT, about 5% slower).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class IOResult:
    loader: str
    images_per_sec: float
    workers: int
    images: int
    seconds: float

    @property
    def per_core(self) -> float:
        return self.images_per_sec / max(1, self.workers)


def drain(batches, limit: int, warmup: int) -> tuple[int, float]:
    """Images and seconds over ``limit`` batches after ``warmup`` batches (worker start, JIT, caches); fewer when
    the loader's epoch ends first (:func:`timed_batches` warns of that beforehand)."""
    it = iter(batches)
    for _ in range(warmup):
        if next(it, None) is None:
            return 0, 0.0
    n, start = 0, time.perf_counter()
    for i, (x, _) in enumerate(it):
        n += x.shape[0]
        if i + 1 >= limit:
            break
    return n, time.perf_counter() - start


def plain_loader(folder: str, size: int, batch: int, workers: int):
    import torch
    from torchvision.datasets import ImageFolder

    from torchvision import transforms as T

    # The textbook loader (torchvision's ImageNet example): PIL decoding, torchvision's crop, flip and ToTensor.
    ds = ImageFolder(folder, transform=T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                                                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)


def folder_loader(folder: str, size: int, batch: int, workers: int):
    """lit-imgcls's folder dataset: the image contract's decoding, its random-resized crop, uint8 batches. Its
    check of every image runs here, before the clock starts."""
    from lit_imgcls.data.folder import FolderDataModule

    dm = FolderDataModule(data_train=folder, batch_size=batch, data_nthreads=workers, image_shape=f"3,{size},{size}")
    return dm.train_dataloader()


def packed_loader(fmt: str, pack: str, size: int, batch: int, workers: int):
    from lit_imgcls.registry import formats

    cls = formats.get(fmt)
    dm = cls(data_train=pack, batch_size=batch, data_nthreads=workers, image_shape=f"3,{size},{size}")
    return dm.train_dataloader()


def decode_bound(blobs: list[bytes], seconds: float = 5.0) -> tuple[int, float]:
    """JPEGs decoded back to back by libjpeg-turbo (simplejpeg, fast IDCT) on one core, from memory: the ceiling
    for any loader of these bytes."""
    import simplejpeg

    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for b in blobs:
            simplejpeg.decode_jpeg(b, fastdct=True, fastupsample=True)
            n += 1
    return n, time.perf_counter() - start


def _pack_jpegs(pack: str, limit: int = 500) -> list[bytes]:
    from lit_imgcls.data.manifest import read_manifest
    from lit_imgcls.data.pack_check import iter_tar_samples

    m = read_manifest(pack)
    blobs: list[bytes] = []
    for shard in m["splits"]["train"].get("wds", []):
        for _, data, _ in iter_tar_samples(Path(pack) / "wds" / shard["file"], len(m["class_names"])):
            blobs.append(data)
            if len(blobs) >= limit:
                return blobs
    return blobs


def timed_batches(folder: str, images: int, batch: int, batches: int, warmup: int) -> int:
    """How many batches each loader can be timed on: ``batches``, or what one epoch of ``images`` (whole batches
    of ``batch``) leaves after the warm-up, with one warning line saying so.

    Raises:
        UsageError: no batch would be left to time after the warm-up.
    """
    from lit_imgcls.errors import UsageError
    from lit_imgcls.printable import warn

    per_epoch = images // batch
    if per_epoch <= warmup:
        most = images // (warmup + 1)
        raise UsageError(f"{folder} holds {images} images, {per_epoch} batches of {batch}: none left to time after "
                         f"the {warmup} warm-up batches; give more images, or a --batch-size of at most {most}"
                         if most else f"{folder} holds {images} images, too few for {warmup} warm-up batches and a "
                         "timed one; give more images")
    if per_epoch < warmup + batches:
        left = per_epoch - warmup
        warn(f"{folder} holds {images} images, {per_epoch} batches of {batch}: after the {warmup} warm-up batches "
             f"each loader is timed on {left}, not {batches}, a less steady figure; give more images or a smaller "
             f"--batch-size (--batches {left} times the same without this warning)")
        return left
    return batches


def run_io_benchmark(folder: str, packs: list[tuple[str, str]], size: int = 224, batch: int = 64, workers: int = 2,
                     batches: int = 30, warmup: int = 5) -> list[IOResult]:
    """Each loader ((format, pack) pairs), then the decode-only bounds: of the folder's files and of each pack's
    stored JPEGs."""
    from lit_imgcls.data.classes import list_tree

    batches = timed_batches(folder, len(list_tree(folder).items), batch, batches, warmup)
    results = []
    loaders = {"plain (ImageFolder + DataLoader, PIL)": lambda: plain_loader(folder, size, batch, workers),
               f"lit-imgcls folder ({folder})": lambda: folder_loader(folder, size, batch, workers)}
    for fmt, pack in packs:
        loaders[f"lit-imgcls {fmt} ({pack})"] = lambda fmt=fmt, pack=pack: packed_loader(fmt, pack, size, batch, workers)
    for name, make in loaders.items():
        n, sec = drain(make(), batches, warmup)
        results.append(IOResult(name, n / sec if sec > 0 else 0.0, workers, n, sec))
    files = sorted(Path(folder).rglob("*.jpg"))[:500]
    n, sec = decode_bound([f.read_bytes() for f in files])
    results.append(IOResult(f"decode only: {folder} (1 core)", n / sec, 1, n, sec))
    for pack in dict.fromkeys(p for _, p in packs):
        blobs = _pack_jpegs(pack)
        if blobs:
            n, sec = decode_bound(blobs)
            results.append(IOResult(f"decode only: {pack} (1 core)", n / sec, 1, n, sec))
    return results


def table(results: list[IOResult]) -> str:
    """Markdown table; each loader is compared with the plain loader and with the decode bound of its own data."""
    plain = results[0].per_core
    bounds = {r.loader.split("decode only: ", 1)[1].rsplit(" (1 core)", 1)[0]: r.per_core
              for r in results if r.loader.startswith("decode only: ")}
    lines = ["| loader | workers | images/s | images/s per core | x plain (per core) | of its data's decode bound |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        source = r.loader.rsplit("(", 1)[-1].rstrip(")") if "lit-imgcls" in r.loader else next(iter(bounds))
        bound = bounds.get(source)
        share = f"{r.per_core / bound:.0%}" if bound and not r.loader.startswith("decode only") else ""
        lines.append(f"| {r.loader} | {r.workers} | {r.images_per_sec:,.0f} | {r.per_core:,.0f} | "
                     f"{r.per_core / plain:.2f} | {share} |")
    return "\n".join(lines)
