"""FFCV ``.beton`` files: written from the packed tar shards, read by an FFCV Loader (CPU or GPU).

FFCV is imported inside the functions that need it: importing lit-imgcls never requires it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from lit_imgcls.data.encode import EncodeOptions
from lit_imgcls.data.image import decode
from lit_imgcls.data.formats.packed import PackedDataModule
from lit_imgcls.data.formats.tar_shards import SampleLocation, ShardInfo, read_location
from lit_imgcls.data.remote import cached_copy, is_remote, local_path
from lit_imgcls.data.resumable import ResumableEpoch
from lit_imgcls.data.shard_check import check_whole_file
from lit_imgcls.errors import UsageError


class _ShardImages:
    """An indexable view of the images in tar shards (what FFCV's writer wants), decoded on demand."""

    def __init__(self, folder: Path, shards: list[ShardInfo], locations: list[SampleLocation]) -> None:
        self.paths = [str(folder / s.file) for s in shards]
        self.locations = locations

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        loc = self.locations[i]
        return decode(read_location(self.paths[loc.shard], loc), 3), loc.label


def write_beton(work: Path, split: str, shards: list[ShardInfo], locations: list[SampleLocation],
                enc: EncodeOptions, num_workers: int) -> dict:
    """Writes ``ffcv/<split>.beton`` from the split's shards; returns its manifest entry."""
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    out = work / "ffcv"
    out.mkdir(exist_ok=True)
    path = out / f"{split}.beton"
    tmp = out / f".{split}.beton.tmp"
    # JPEG stays JPEG (FFCV re-encodes at the pack's quality); lossless sources stay raw pixels, exactly.
    mode = "raw" if enc.encoding == ".png" else "jpg"
    fields = {"image": RGBImageField(write_mode=mode, jpeg_quality=enc.quality), "label": IntField()}
    import ffcv.writer

    from lit_imgcls.terminal import progress

    writer = DatasetWriter(str(tmp), fields, num_workers=max(1, num_workers))
    # FFCV's writer draws its own tqdm bar, carriage returns included, even into a log; ours follows the rule of
    # every lit-imgcls progress: a bar in a terminal, else a whole line at most every 5 s ("samples", so the
    # TUI's pack bar, which reads "N/TOTAL images", keeps counting the pack's images).
    own_tqdm = ffcv.writer.tqdm
    ffcv.writer.tqdm = lambda total=None, **_: progress(total, f"writing ffcv/{split}.beton", unit="sample",
                                                        noun="samples")
    try:
        writer.from_indexed_dataset(_ShardImages(work / "wds", shards, locations), chunksize=64)
    finally:
        ffcv.writer.tqdm = own_tqdm
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    os.replace(tmp, path)
    return {"file": f"ffcv/{split}.beton", "samples": len(locations), "bytes": path.stat().st_size,
            "sha256": digest.hexdigest(), "write_mode": mode}


def epoch_indices(indices, seed: int, epoch: int, rank: int, world: int, shuffle: bool,
                  labels: np.ndarray | None = None) -> np.ndarray:
    """This rank's sample indices of an epoch, in order: a permutation fixed by (seed, epoch) when shuffling (cut
    to an equal share per rank), else storage order; rank ``rank`` of ``world`` takes every ``world``-th.

    With ``labels`` (int64, every sample's class in storage order: the ``balanced`` sampler) and ``shuffle``, the
    same number of indices is drawn with replacement instead, every class equally likely
    (:func:`~lit_imgcls.data.balance.balanced_draws`, fixed by (seed, epoch))."""
    indices = np.asarray(indices)
    if shuffle and labels is not None:
        from lit_imgcls.data.balance import balanced_draws

        labels = np.asarray(labels)
        drawn = balanced_draws(labels[indices], int(labels.max()) + 1, seed, epoch, len(indices) // world * world)[0]
        return indices[drawn.numpy()][rank::world]
    if shuffle:
        indices = np.random.default_rng(int(seed) * 1_000_003 + int(epoch)).permutation(indices)
        per = len(indices) // world
        indices = indices[: per * world]
    return indices[rank::world]


def _epoch_order(rank: int, world: int, shuffle: bool, labels: np.ndarray | None = None):
    """An FFCV traversal order: a permutation fixed by (seed, epoch), cut to an equal share per rank (with
    ``labels``: a balanced draw of as many indices, :func:`epoch_indices`).

    FFCV 1.0.2's Loader accepts a custom order only as an *instance* of TraversalOrder, which it then calls with
    the loader; so this returns such an instance (made without TraversalOrder's loader-bound __init__) whose
    call builds the real, loader-bound order.
    """
    from ffcv.traversal_order.base import TraversalOrder

    class EpochOrder(TraversalOrder):
        skip = 0  # samples to leave out of the next order only: a resumed epoch's (set by FFCVBatches)

        def sample_order(self, epoch: int):
            skip, self.skip = self.skip, 0
            return epoch_indices(self.indices, self.seed, epoch, rank, world, shuffle, labels)[skip:]

    class Factory(TraversalOrder):
        def __call__(self, loader):
            return EpochOrder(loader)

        def sample_order(self, epoch: int):  # never used: FFCV calls the factory first
            raise NotImplementedError

    return object.__new__(Factory)


class FFCVBatches(ResumableEpoch):
    """An FFCV Loader with ``set_epoch`` and ``len``, yielding (uint8 NCHW, int64 labels).

    FFCV reuses its output buffers, so each batch, images and labels, is copied out (the images as a contiguous
    tensor) before FFCV overwrites them; normalisation to float happens on the training device (ImageClassifier).
    Each iteration reads the epoch last given to ``set_epoch`` (FFCV's own Loader would move on by one).

    Resumable mid-epoch (:class:`~lit_imgcls.data.resumable.ResumableEpoch`): with the order of
    :func:`_epoch_order`, a restored loader leaves the batches handed out before the checkpoint out of the
    epoch's order, so they are never read; with any other order it decodes and drops them. The order and the
    pixels of unaugmented (small-image) packs are exact after a resume. FFCV's random crop and flip draw from
    numba's per-thread generators, which FFCV does not seed: they differ between any two runs, resumed or not.
    """

    def __init__(self, loader, channels: int, channels_last: bool) -> None:
        self.loader = loader
        self.channels, self.channels_last = channels, channels_last
        self.sampler = self
        self.batch_sampler = None
        self.epoch = 0
        # (uint8 (N, H, W, C) images, int64 (N,) labels) of the whole file, once :meth:`decode_all` ran.
        self.decoded: tuple[np.ndarray, np.ndarray] | None = None

    def decode_all(self, rank: int, world: int, shuffle: bool, seed: int, balanced: bool = False) -> None:
        """Decodes every sample of the file once, in storage order, with the loader's own pipeline, and keeps
        them: later iterations slice batches from memory in the order :func:`epoch_indices` gives, which is
        the loader's own (``rank``, ``world``, ``shuffle``, ``seed``, ``balanced``: as the loader's order was
        made).

        Only for pipelines without random draws (small images used whole): their pixels are the same every time.
        """
        import torch
        from ffcv.traversal_order import Sequential

        loader = self.loader
        # Every sample once, in storage order (the Loader's length follows its first order: set both).
        loader.traversal_order = Sequential(loader)
        loader.first_traversal_order = loader.traversal_order.sample_order(0)
        loader.drop_last = False
        images, labels = [], []
        for x, y in loader:
            images.append(x[:, : self.channels].permute(0, 2, 3, 1).numpy().copy())  # NHWC, FFCV's buffer copied
            labels.append(y.view(-1).to(torch.long, copy=True).numpy())
        self.decoded = (np.concatenate(images), np.concatenate(labels))
        self.order, self.batch = (rank, world, shuffle, seed), loader.batch_size
        self.balanced = balanced
        self.loader = None  # its threads and memory map are not needed again

    def _from_memory(self, skip: int):
        import torch

        images, labels = self.decoded
        rank, world, shuffle, seed = self.order
        order = epoch_indices(np.arange(len(images)), seed, self.epoch, rank, world, shuffle,
                              labels if self.balanced else None)
        end = len(order) // self.batch * self.batch if shuffle else len(order)  # drop_last when training
        for start in range(skip * self.batch, end, self.batch):
            idx = order[start : start + self.batch]
            x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels-last
            yield (x if self.channels_last else x.contiguous()), torch.from_numpy(labels[idx])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.decoded is not None:
            rank, world, shuffle, _ = self.order
            n = len(epoch_indices(np.arange(len(self.decoded[0])), 0, 0, rank, world, shuffle))
            return n // self.batch if shuffle else -(-n // self.batch)
        return len(self.loader)

    def __iter__(self):
        import torch

        skip = self.start_epoch()
        if self.decoded is not None:
            yield from self.counted(self._from_memory(skip))
            return
        self.loader.next_epoch = self.epoch
        order = self.loader.traversal_order
        if hasattr(order, "skip"):
            order.skip, skip = skip * self.loader.batch_size, 0
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        batches = iter(self.loader)
        try:
            for images, labels in self.counted(self.skipped(batches, skip)):
                x = images[:, : self.channels]  # NCHW view of FFCV's NHWC buffer; grey packs keep one channel
                # Labels come as int64 already, where .long() would hand out FFCV's buffer itself: copy them too.
                yield torch.empty_like(x, memory_format=fmt).copy_(x), labels.view(-1).to(torch.long, copy=True)
        finally:
            # FFCV's reader thread of an epoch left early (an error, limit_train_batches) would otherwise wait
            # on its full queue for ever.
            batches.close()


class FFCVDataModule(PackedDataModule):
    """Trains from the FFCV .beton files of a pack, decoding with FFCV's compiled pipelines on the CPU.

    Arguments as :class:`PackedDataModule`; ``data_nthreads`` is FFCV's decoding threads, and a remote pack needs
    ``data_cache`` (FFCV memory-maps local files).
    """

    format_name = "ffcv"
    # FFCV's compiled pipelines crop and flip themselves; per-image stages are not wired into them, and run on the
    # training device instead (augment_device: the training loader then decodes centre crops).
    takes_augment = False
    interpolation = "area"  # FFCV's decoders resize with OpenCV's pixel-area averaging
    draws_balanced = True  # its Loader reads any index order, repeats included (the balanced sampler)

    def check_shape(self) -> None:
        """FFCV's compiled decoders deliver RGB, square centre crops, and small images at their stored size; any
        other shape is refused here rather than delivered wrong."""
        c, h, w = self.image_shape
        shape = ",".join(map(str, self.image_shape))
        if c == 1 and self.pack_channels == 3:
            raise UsageError(f"image_shape {shape}: FFCV decodes RGB only, and this pack holds colour images; use "
                             "--dataset wds (grey by the image contract's luma), or image_shape 3,H,W")
        if self.small and (h, w) != self.stored_size:
            sh, sw = self.stored_size
            raise UsageError(f"image_shape {shape}: this pack's images are {sh}x{sw} and FFCV's decoder for small "
                             f"images does not resize; use --image-shape {c},{sh},{sw}, --dataset wds (which "
                             "resizes), or re-pack with `lit-imgcls dataset pack --resize`")
        if not self.small and h != w:
            raise UsageError(f"image_shape {shape}: FFCV's centre crop is square; use H = W, or --dataset wds")

    def check_workers(self) -> None:
        """FFCV runs ``data_nthreads`` numba threads, and numba refuses more than its pool holds (the cores this
        process may use, or NUMBA_NUM_THREADS) with a bare ValueError deep in the first batch: refused here, in
        one line naming the limit.

        Raises:
            UsageError: ``data_nthreads`` above numba's thread limit.
        """
        import numba

        limit = int(numba.config.NUMBA_NUM_THREADS)
        if self.workers > limit:
            raise UsageError(f"data_nthreads {self.workers} is more than FFCV can run here: its decoder (numba) runs "
                             f"at most {limit} threads (the cores this process may use, or NUMBA_NUM_THREADS); give "
                             f"--data-nthreads 1 to {limit}, or leave data_nthreads unset (it then fits the cores)",
                             key="data_nthreads")

    def _path(self, location: str, manifest: dict, split: str) -> str:
        """The local path of the split's ``.beton``, its header, pointers and labels checked
        (:func:`~lit_imgcls.data.formats.beton.read_beton`) before FFCV reads a byte of it."""
        from lit_imgcls.data.formats.beton import read_beton

        entry = manifest["splits"][split]["ffcv"]
        if is_remote(location):
            if not self.data_cache:
                raise UsageError(f"FFCV reads local files only (memory-mapped): set data_cache to copy {location} here, or use dataset wds")
            url = f"{location.rstrip('/')}/{entry['file']}"
            path = cached_copy(url, self.data_cache, entry["sha256"], entry["bytes"])
            check_whole_file(path, entry, f"{url} (cached as {path})")
        else:
            path = local_path(location) / entry["file"]
            if not path.is_file() or path.stat().st_size != entry["bytes"]:
                raise UsageError(f"{path} is missing or not the size the manifest says ({entry['bytes']} bytes): run `lit-imgcls dataset verify {location}`")
            # Memory-mapped, not streamed: hashed whole once per process before FFCV maps it.
            check_whole_file(path, entry)
        read_beton(path, len(manifest["class_names"]), entry["samples"])
        return str(path)

    def _loader(self, location: str, manifest: dict, split: str, train: bool) -> FFCVBatches:
        path = self._path(location, manifest, split)  # checked before FFCV is even imported
        labels = None
        if train and self.sampler == "balanced":
            from lit_imgcls.data.formats.beton import read_beton

            labels = read_beton(path, len(manifest["class_names"])).labels  # its checked labels, storage order
        from ffcv.fields.decoders import (CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder,
                                          SimpleRGBImageDecoder)
        from ffcv.loader import Loader
        from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

        _, h, w = self.image_shape
        if self.small:
            image = [SimpleRGBImageDecoder()]
        elif train and not self.augment_on_device:
            image = [RandomResizedCropRGBImageDecoder((h, w)), RandomHorizontalFlip()]
        else:  # the region of lit_imgcls.data.transforms.center_crop_box, resized with INTER_AREA (augment_device:
            # the training step augments these)
            image = [CenterCropRGBImageDecoder((h, w), ratio=self.data_config.crop_pct)]
        rank, world = self.rank_world()
        loader = Loader(
            path, batch_size=self.batch_size, num_workers=max(1, self.workers),
            order=_epoch_order(rank, world, train, labels), seed=self.seed, drop_last=train, os_cache=True,
            pipelines={"image": [*image, ToTensor(), ToTorchImage(channels_last=True)], "label": [IntDecoder(), ToTensor()]},
        )
        count = manifest["splits"][split]["count"]
        if train:
            self.batches_per_rank(count)  # too few samples: a clear error, not 0 batches
        batches = FFCVBatches(loader, self.image_shape[0], self.channels_last)
        if self.keeps_decoded(count):
            batches.decode_all(rank, world, train, self.seed, balanced=labels is not None)
        return batches
