"""Image folders (a sub-folder per class), decoded by the image contract in DataLoader workers.

The tree is listed by :func:`lit_imgcls.data.classes.list_tree` (hidden files and folders are not data) and every
image is checked before the run (:func:`lit_imgcls.data.image.check_complete`): files that cannot be used are
skipped and listed with the reason, as ``dataset pack`` does, instead of stopping the run mid-epoch.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import torch

from lit_imgcls.callbacks.interrupt import loader_worker_init
from lit_imgcls.cores import default_data_nthreads
from lit_imgcls.data.arrays import epoch_generator
from lit_imgcls.data.base import ImageDataModule
from lit_imgcls.data.classes import ImageTree, list_tree
from lit_imgcls.data.image import MAX_PIXELS, ImageDecodeError, check_complete, read_file
from lit_imgcls.data.preprocess import DataConfig, EvalTransform, per_channel
from lit_imgcls.data.resumable import ResumableEpoch
from lit_imgcls.data.transforms import collate
from lit_imgcls.errors import UsageError, from_worker
from lit_imgcls.printable import warn
from lit_imgcls.ranks import is_global_zero

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EpochShuffle(torch.utils.data.Sampler):
    """Shuffled indices fixed by (seed, epoch); each rank takes an equal share (the remainder is dropped).

    Yields ``(index, epoch)`` keys: the dataset draws an image's augmentation from (seed, epoch, index) alone, so
    the pixels of a batch do not depend on which worker decodes it, nor on a resume.
    ``skip`` leaves that many of this rank's first indices out of the next pass only (a resumed epoch); the
    length stays the whole epoch's, as Lightning counts the resumed epoch's batches from the checkpoint's.
    With ``labels`` (the items' class indices: ``sampler`` balanced) the epoch's indices are drawn with replacement,
    every class equally likely (:func:`~lit_imgcls.data.balance.balanced_draws`), as many as a shuffle hands out;
    the key of a sample's r-th draw is ``index + size * r``, so each draw gets its own augmentation.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, labels=None) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.labels = labels
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.labels is not None:
            from lit_imgcls.data.balance import balanced_draws

            order = balanced_draws(self.labels, max(self.labels) + 1, self.seed, self.epoch,
                                   len(self) * self.world_size)[1]
        else:
            order = torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch))
        skip, self.skip = self.skip, 0
        mine = order[: len(self) * self.world_size][self.rank :: self.world_size][skip:].tolist()
        return iter([(i, self.epoch) for i in mine])


class ResumableDataLoader(ResumableEpoch, torch.utils.data.DataLoader):
    """A DataLoader over an :class:`EpochShuffle` sampler that resumes mid-epoch (Lightning's stateful loader).

    Lightning stores :meth:`state_dict` in each checkpoint; after a restart in the middle of an epoch the sampler
    leaves out the indices of the batches already trained on, so they are neither read nor decoded, and the rest
    of the epoch comes in the same order, with the same augmentation.

    On a restart Lightning calls ``iter()`` before ``set_epoch``, and a DataLoader with workers reads its
    sampler as soon as its iterator exists; so the epoch comes back with the state, and the iterator is made on
    the first ``next()``, after ``set_epoch``.
    """

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        skip = self.start_epoch()
        self.sampler.skip = skip * self.batch_size
        try:
            yield from self.counted(super().__iter__())
        except UsageError as exc:
            raise from_worker(exc) from None


class EvalLoader(torch.utils.data.DataLoader):
    """A plain DataLoader whose worker errors come out as the one line they say."""

    def __iter__(self) -> Iterator:
        try:
            yield from super().__iter__()
        except UsageError as exc:
            raise from_worker(exc) from None


class FolderImages(torch.utils.data.Dataset):
    """(path, label) items -> (uint8 (H, W, C) image, label).

    Training keys are ``(index, epoch)`` (:class:`EpochShuffle`; an index past the items is a repeated draw of
    item ``index % len``, augmented as its own): a random-resized crop and flip drawn from
    (seed, epoch, index), or, with ``pipeline``, its stages on the decoded image seeded by the same three (then
    brought to the input size by the evaluation rule when the stages leave it another size). Evaluation keys are
    indices: :class:`EvalTransform` of the DataModule's config.
    """

    def __init__(self, items: list[tuple[str, int]], config: DataConfig, train: bool, seed: int,
                 max_pixels: int = MAX_PIXELS, pipeline=None) -> None:
        self.items, self.config, self.train, self.seed, self.max_pixels = items, config, train, seed, max_pixels
        self.eval = EvalTransform(config, max_pixels)
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        from lit_imgcls.data import image, transforms

        index, epoch = key if isinstance(key, tuple) else (key, 0)
        path, label = self.items[index % len(self.items)]  # a balanced sampler's repeated draw: index + size * r
        try:
            data = read_file(path)
            if not self.train:
                return self.eval(data), label
            c, h, w = self.config.input_size
            if self.pipeline is not None:
                from lit_imgcls.data.augment import sample_seed

                pixels = self.pipeline.numpy_hwc(image.decode(data, c, self.max_pixels), sample_seed(self.seed, epoch, index))
                return (pixels if pixels.shape[:2] == (h, w) else self.eval(pixels)), label
            rng = random.Random(f"{self.seed}/{epoch}/{index}")
            pixels = transforms.random_resized_crop(image.decode(data, c, self.max_pixels), h, w, rng)
            return (pixels[:, :, None] if pixels.ndim == 2 else pixels), label
        except ImageDecodeError as exc:
            # Checked before the run; a file changed since then still names itself, in one line.
            raise UsageError(f"image {path} cannot be used any more ({exc}); it was readable when the run "
                             "started: was it changed or removed?") from None


def scan(tree: ImageTree, workers: int, max_pixels: int = MAX_PIXELS) -> tuple[list[tuple[str, int]], list[dict]]:
    """The usable items of ``tree`` and, for the others, ``{"path", "reason"}``; every image decoded once.

    Threads share the work (PIL releases the GIL while it decodes); JPEGs are read at 1/8 scale, which still
    reads every byte, so a truncated file is found (about 1 ms per 500 x 375 photo).
    """
    from concurrent.futures import ThreadPoolExecutor

    def reason(item: tuple[str, int]) -> str | None:
        try:
            check_complete(read_file(item[0]), max_pixels)
            return None
        except ImageDecodeError as exc:
            return str(exc)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        reasons = list(pool.map(reason, tree.items, chunksize=64))
    good = [item for item, why in zip(tree.items, reasons) if why is None]
    bad = [{"path": item[0], "reason": why} for item, why in zip(tree.items, reasons) if why is not None]
    return good, bad


def report_skipped(where: str, total: int, bad: list[dict], limit: int = 10) -> None:
    """One warning naming the files of a tree that cannot be used (on the first process of a run only)."""
    if not bad or not is_global_zero():
        return
    shown = "; ".join(f"{b['path']}: {b['reason']}" for b in bad[:limit])
    more = f"; and {len(bad) - limit} more" if len(bad) > limit else ""
    warn(f"skipped {len(bad)} of {total} files in {where} that cannot be used: {shown}{more}")


class FolderDataModule(ImageDataModule):
    """Images in ``<root>/<class>/<file>`` folders (sub-folders of a class folder too), decoded in workers.

    Training: Inception-style random-resized crops with flips, drawn from (seed, epoch, image). Evaluation:
    :class:`~lit_imgcls.data.preprocess.EvalTransform` of :attr:`data_config` (centre 0.875 crop). Batches are
    uint8 (N, C, H, W), normalised with ImageNet's mean/std on the training device.

    Args:
        data_train: folder of training images, a sub-folder per class.
        data_val: folder of validation images with the same class sub-folders; alone (no data_train), enough to
            evaluate (validate, test, score).
        data_dir: parent holding ``train/`` and ``val/`` when data_train/data_val are not given.
        batch_size: samples per batch on each device.
        data_nthreads: DataLoader worker processes (MXNet's decode threads); also the threads checking the images;
            default: 4, or the cores when fewer.
        image_shape: "C,H,W" of the network input (C 1: grey, 3: RGB).
        seed: seed of the data order and augmentation.
        channels_last: hand batches over in channels-last memory format.
        augment: the recipe's augmentation stages (:mod:`lit_imgcls.data.augment`), run on each decoded training
            image instead of the random-resized crop and flip; [] trains on the evaluation crop.
        sampler: the training order, "shuffle" or "balanced" (classes drawn equally often: :class:`EpochShuffle`).

    Raises:
        UsageError: a missing folder, no class sub-folders, validation classes other than training's.
    """

    draws_balanced = True

    def __init__(
        self,
        data_train: str | None = None,
        data_val: str | None = None,
        data_dir: str | None = None,
        batch_size: int = 64,
        data_nthreads: int | None = None,
        image_shape: str | None = "3,224,224",
        seed: int = 0,
        channels_last: bool = False,
        augment: list | None = None,
        sampler: str = "shuffle",
    ) -> None:
        super().__init__()
        from lit_imgcls.data.augment import split_levels

        self.sampler = sampler

        self.stages = None if augment is None else split_levels(augment)[0]
        for key, value in (("data_dir", data_dir), ("data_train", data_train), ("data_val", data_val)):
            if value and "://" in value:  # `--data-dir s3://...` of MXNet's tutorial: its data there was packed
                raise UsageError(f"{key} {value} is remote, and dataset folder reads image folders on this machine: "
                                 "pack the images (lit-imgcls dataset pack), upload the pack, and read it with "
                                 "--dataset wds")
        if data_train is None and data_dir:
            data_train, data_val = str(Path(data_dir) / "train"), data_val or str(Path(data_dir) / "val")
        if not data_train and not data_val:
            raise UsageError("the folder dataset needs data_train (a folder with a sub-folder per class) or data_dir "
                             "(data_val alone is enough to evaluate)")
        for key, value in (("data_train", data_train), ("data_val", data_val)):
            if value and not Path(value).is_dir():
                raise UsageError(f"{key} folder does not exist: {value}")
        self.data_train, self.data_val = data_train, data_val
        self.batch_size, self.seed = batch_size, seed
        self.workers = default_data_nthreads() if data_nthreads is None else data_nthreads
        self.channels_last = channels_last
        c, h, w = (int(v) for v in (image_shape or "3,224,224").split(","))
        if c not in (1, 3):
            raise UsageError(f"image_shape {image_shape}: images from files have 1 (grey) or 3 (RGB) channels")
        self.image_shape = (c, h, w)
        self.mean, self.std = per_channel(IMAGENET_MEAN, c), per_channel(IMAGENET_STD, c)
        self.trees = {"train": list_tree(data_train, recursive=True)} if data_train else {}
        if data_val:
            train = self.trees.get("train")
            self.trees["val"] = list_tree(data_val, recursive=True, class_names=train.class_names if train else None)
        self.class_names = (self.trees.get("train") or self.trees["val"]).class_names
        self.num_classes = len(self.class_names)
        self._usable: dict[str, list[tuple[str, int]]] = {}
        self._eval_config: DataConfig | None = None

    @property
    def data_config(self) -> DataConfig:
        if self._eval_config is not None:
            return self._eval_config
        return DataConfig(self.image_shape, "center", 0.875, "auto", self.mean, self.std)

    def use_eval_config(self, config: DataConfig) -> bool:
        """Evaluates with ``config`` (a checkpoint's) instead of this DataModule's own; the channels must agree."""
        if config.input_size != self.image_shape:
            return False
        self._eval_config = config
        return True

    def usable(self, split: str) -> list[tuple[str, int]]:
        """The split's images that decode, checked once (the others are reported, once)."""
        if split not in self.trees:
            raise UsageError("the folder dataset needs data_train (a folder with a sub-folder per class) to train")
        if split not in self._usable:
            tree = self.trees[split]
            good, bad = scan(tree, self.workers)
            report_skipped(tree.root, len(tree.items), bad)
            self._usable[split] = good
        return self._usable[split]

    def training_class_counts(self) -> list[int]:
        counts = [0] * self.num_classes
        for _, label in self.usable("train"):
            counts[label] += 1
        return counts

    def class_counts_where(self) -> str:
        return f"folder {self.data_train}"

    def _loader(self, split: str, train: bool) -> torch.utils.data.DataLoader:
        pipeline = None
        if train and self.stages is not None:
            from lit_imgcls.data.augment import Pipeline, StageContext

            pipeline = Pipeline(self.stages, StageContext(self.image_shape, self.num_classes))
        ds = FolderImages(self.usable(split), self.data_config, train, self.seed, pipeline=pipeline)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        common = dict(batch_size=self.batch_size, num_workers=self.workers, collate_fn=collate,
                      persistent_workers=self.workers > 0, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=loader_worker_init)
        if train:
            # Only the training loader keeps a state: Lightning saves and restores no other loader's.
            labels = [label for _, label in ds.items] if self.sampler == "balanced" else None
            return ResumableDataLoader(ds, sampler=EpochShuffle(len(ds), self.seed, rank, world, labels),
                                       drop_last=True, **common)
        return EvalLoader(ds, shuffle=False, drop_last=False, **common)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False) if self.data_val else []

    def test_dataloader(self):
        return self._loader("val" if self.data_val else "train", False)
