"""What the WebDataset and FFCV DataModules share: finding a pack, its manifest, classes and transforms."""

from __future__ import annotations

import json
import math
from typing import Any

from lit_imgcls.cores import default_data_nthreads
from lit_imgcls.data.base import ImageDataModule
from lit_imgcls.data.manifest import MANIFEST, check_manifest, dataset_name, read_manifest
from lit_imgcls.data.preprocess import DataConfig, per_channel
from lit_imgcls.data.remote import is_remote, local_path, read_bytes
from lit_imgcls.errors import UsageError

SMALL = 64  # packs of same-size images up to this side are used as they are (MNIST, CIFAR): no crop, no resize
# A split of small images whose decoded pixels take at most this many bytes is decoded once and served from
# memory (PackedDataModule.keeps_decoded): MNIST's 60,000 training images take 47 MB, CIFAR-10's 50,000 take
# 154 MB. Per sample, reading and decoding a 28-px image costs a loader about as much as LeNet's training step on
# 2 cores (docs/BENCHMARKS.md, "Packs of small images"); from memory it costs a few microseconds.
DECODED_MAX_BYTES = 1 << 30


def load_pack_manifest(location: str) -> dict[str, Any]:
    """The manifest of a pack folder, given as a path, ``file://``, ``http(s)://`` or ``s3://`` URL."""
    if not is_remote(location):
        return read_manifest(local_path(location))
    url = location.rstrip("/") + "/" + MANIFEST
    try:
        data = json.loads(read_bytes(url, "manifest"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the pack manifest {url}: {exc}") from None
    return check_manifest(data, url)  # the same checks as a local one: fields, types, shard names inside the pack


def split_data_dir(data_dir: str, data_val: str | None) -> tuple[str, str | None]:
    """``data_dir`` as (training pack, validation pack): itself when it is a pack, else its ``train/`` pack and
    its ``val/`` pack (when there is one; ``data_val`` wins).

    Raises:
        UsageError: neither ``data_dir`` nor its ``train/`` is a pack (the message of ``data_dir``'s own manifest).
    """
    try:
        load_pack_manifest(data_dir)
        return data_dir, data_val
    except UsageError as own:
        if not is_remote(data_dir) and (local_path(data_dir) / MANIFEST).exists():
            raise  # a pack, damaged: its own message
        train = data_dir.rstrip("/") + "/train"
        try:
            load_pack_manifest(train)
        except UsageError:
            raise own from None
    if data_val is None:
        val = data_dir.rstrip("/") + "/val"
        try:
            load_pack_manifest(val)
            data_val = val
        except UsageError:
            pass
    return train, data_val


def pick_split(manifest: dict, wanted: tuple[str, ...], where: str) -> str:
    for split in wanted:
        if manifest["splits"].get(split, {}).get("count"):
            return split
    raise UsageError(f"pack {where} has none of the splits {', '.join(wanted)} (it has {', '.join(manifest['splits'])})")


class PackedDataModule(ImageDataModule):
    """A DataModule over a pack made by ``lit-imgcls dataset pack``.

    Args:
        data_train: the pack to train from (folder, file:// or http(s):// URL); its train split.
        data_val: the pack to validate on (default: data_train); its val split, else test. Alone (no data_train),
            it is enough to evaluate (validate, test, score).
        data_dir: when data_train is not given: the pack, or a folder (or URL) holding two packs ``train/`` and
            ``val/`` (MXNet's --data-dir held train.rec and val.rec).
        batch_size: samples per batch on each device.
        data_nthreads: loader worker processes decoding images; default: 4, or the cores when fewer.
        image_shape: "C,H,W" every loader delivers; default: the pack's size for small images, else 3,224,224.
            Small same-size images (MNIST, CIFAR) are used whole (resized if the shape asks for another size);
            photos get random-resized crops for training and a centre crop for evaluation.
        seed: seed of the data order and augmentation.
        channels_last: hand batches over in channels-last memory format.
        data_cache: local folder keeping verified copies of remote shards (default: stream them).
        augment: the recipe's augmentation stages (:mod:`lit_imgcls.data.augment`), run on each decoded training
            image instead of the format's own (photos: random-resized crop and flip); formats with
            ``takes_augment`` False refuse the per-image ones (with ``augment_device`` the engine passes the batch
            stages only and sets :attr:`augment_on_device`: the training step runs the rest).
        sampler: the training order, "shuffle" or "balanced" (classes drawn equally often); formats with
            ``draws_balanced`` False (a stream of shards, WebDataset) refuse balanced when the training loader is
            made.

    Raises:
        UsageError: no pack, a pack without this format's files or with other classes, a shape or worker count
            the format cannot deliver.
    """

    format_name = ""
    takes_augment = True

    def __init__(
        self,
        data_train: str | None = None,
        data_val: str | None = None,
        data_dir: str | None = None,
        batch_size: int = 64,
        data_nthreads: int | None = None,
        image_shape: str | None = None,
        seed: int = 0,
        channels_last: bool = False,
        data_cache: str | None = None,
        augment: list | None = None,
        sampler: str = "shuffle",
    ) -> None:
        super().__init__()
        self.sampler = sampler  # checked when training starts: evaluation reads any pack whatever it says
        self.data_cache = data_cache
        from lit_imgcls.data.augment import split_levels

        self.stages = None if augment is None else split_levels(augment)[0]
        if self.stages and not self.takes_augment:
            raise UsageError(f"augment stages ({', '.join(s['name'] for s in self.stages)}) are not run by dataset "
                             f"{self.format_name} (its compiled pipelines do their own crops); use --augment-device "
                             "true to run them on the training device, --dataset wds on the same pack, or keep only "
                             "the batch stages (mixup, cutmix)")
        if not data_train and data_dir:
            data_train, data_val = split_data_dir(data_dir, data_val)
        train = data_train
        if not train and not data_val:
            raise UsageError(f"dataset {self.format_name} needs data_train (or data_dir): a pack made by `lit-imgcls "
                             "dataset pack` (data_val alone is enough to evaluate)")
        self.train_location, self.val_location = train, data_val or train
        self.val_manifest = load_pack_manifest(self.val_location)
        self.manifest = (self.val_manifest if train == self.val_location else load_pack_manifest(train)) if train else None
        for where, m in ((self.train_location, self.manifest), (self.val_location, self.val_manifest)):
            if m is not None and self.format_name not in m["formats"]:
                raise UsageError(f"pack {where} has no {self.format_name} files (it has {', '.join(m['formats'])}); re-pack with `lit-imgcls dataset pack --format {self.format_name}` (or both)")
        if self.manifest is not None:
            from lit_imgcls.data.classes import check_same_classes

            check_same_classes(self.val_manifest["class_names"], self.manifest["class_names"],
                               f"validation pack {self.val_location}", f"training pack {self.train_location}",
                               "training data")
        self.train_split = pick_split(self.manifest, ("train",), train) if self.manifest is not None else None
        if data_val:
            self.val_split: str | None = pick_split(self.val_manifest, ("val", "test", "train"), self.val_location)
        else:  # the training pack's own held-out split, if it has one
            self.val_split = next((s for s in ("val", "test") if self.val_manifest["splits"].get(s, {}).get("count")), None)
        # What the pack holds (classes, channels, statistics, image sizes) is read from the training pack, or from
        # the validation pack when it is the only one.
        ref, ref_split = (self.manifest, self.train_split) if self.manifest is not None else (self.val_manifest, self.val_split)
        self.class_names = list(ref["class_names"])
        # runs are named after the data set, not the format (engine.run_name)
        self.dataset_name = dataset_name(ref, self.train_location or self.val_location)
        self.num_classes = len(self.class_names)
        self.batch_size, self.seed, self.channels_last = batch_size, seed, channels_last
        self.workers = default_data_nthreads() if data_nthreads is None else data_nthreads
        size = ref["splits"][ref_split].get("image_size") or {"min": [0, 0], "max": [0, 0]}
        self.small = size["min"] == size["max"] and max(size["max"]) <= SMALL
        self.stored_size = tuple(size["max"][::-1]) if self.small else None  # (H, W) of every image
        self.pack_channels = int(ref.get("channels", 3))
        if image_shape:
            c, h, w = (int(v) for v in image_shape.split(","))
        elif self.small:
            c, (w, h) = self.pack_channels, size["max"]
        else:
            c, h, w = 3, 224, 224
        if c not in (1, 3):
            raise UsageError(f"image_shape {image_shape}: images from files have 1 (grey) or 3 (RGB) channels")
        self.image_shape = (c, h, w)
        self.mean = per_channel(ref.get("mean", (0.5,)), c)
        self.std = per_channel(ref.get("std", (0.5,)), c)
        self._eval_config: DataConfig | None = None
        self.check_shape()
        self.check_workers()

    interpolation = "auto"  # of the centre crop; FFCV's decoders use "area"

    def check_shape(self) -> None:
        """Raises :class:`UsageError` when this format cannot deliver :attr:`image_shape` from this pack."""

    def check_workers(self) -> None:
        """Raises :class:`UsageError` when this format cannot run ``data_nthreads`` (:attr:`workers`)."""

    @property
    def data_config(self) -> DataConfig:
        if self._eval_config is not None:
            return self._eval_config
        if self.small:  # used whole, as MNIST and CIFAR are in memory
            return DataConfig(self.image_shape, "squash", 0.875, "area", self.mean, self.std)
        return DataConfig(self.image_shape, "center", 0.875, self.interpolation, self.mean, self.std)

    def keeps_decoded(self, count: int) -> bool:
        """Whether a split of ``count`` samples is decoded once, when its loader is made, and served from memory:
        small images used whole (no random crop, so the decoded pixels are the same every epoch) that take at most
        :data:`DECODED_MAX_BYTES` bytes. Every check of the pack still applies, on that one read."""
        return self.small and count * math.prod(self.image_shape) <= DECODED_MAX_BYTES

    def _training_pack(self) -> None:
        if self.manifest is None:
            raise UsageError(f"dataset {self.format_name} needs data_train (a pack with a train split) to train")

    def training_class_counts(self) -> list[int]:
        self._training_pack()
        return list(self.manifest["splits"][self.train_split]["per_class"])

    def rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def batches_per_rank(self, count: int) -> int:
        """Equal on every rank: the samples one rank can count on, in whole batches."""
        _, world = self.rank_world()
        n = count // world // self.batch_size
        if n < 1:
            raise UsageError(f"{count} training samples are too few for batch_size {self.batch_size} on {world} workers")
        return n

    def _loader(self, location: str, manifest: dict, split: str, train: bool):
        """The format's loader for one split of one pack."""
        raise NotImplementedError

    def train_dataloader(self):
        from lit_imgcls.data.balance import check_sampler

        self._training_pack()
        check_sampler(self.sampler, self.format_name, self.draws_balanced)
        return self._loader(self.train_location, self.manifest, self.train_split, True)

    def val_dataloader(self):
        if self.val_split is None:
            return []
        return self._loader(self.val_location, self.val_manifest, self.val_split, False)

    def test_dataloader(self):
        return self.val_dataloader()
