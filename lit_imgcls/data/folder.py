"""Image folders (a subfolder per class) through torchvision's ImageFolder and a DataLoader: the plain baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from lit_imgcls.data.arrays import epoch_generator
from lit_imgcls.data.base import ImageDataModule
from lit_imgcls.data.resumable import ResumableEpoch
from lit_imgcls.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EpochShuffle(torch.utils.data.Sampler[int]):
    """Shuffled indices fixed by (seed, epoch); each rank takes an equal share (the remainder is dropped).

    ``skip`` leaves that many of this rank's first indices out of the next pass only (a resumed epoch); the
    length stays the whole epoch's, as Lightning counts the resumed epoch's batches from the checkpoint's.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch))
        skip, self.skip = self.skip, 0
        return iter(order[: len(self) * self.world_size][self.rank :: self.world_size][skip:].tolist())


class ResumableDataLoader(ResumableEpoch, torch.utils.data.DataLoader):
    """A DataLoader over an :class:`EpochShuffle` sampler that resumes mid-epoch (Lightning's stateful loader).

    Lightning stores :meth:`state_dict` in each checkpoint and, after a restart in the middle of an epoch, hands
    it back before the first ``iter()``: the sampler then leaves out the indices of the batches already trained
    on, so they are neither read nor decoded, and the rest of the epoch comes in the same order. Augmentation
    draws from torch's global generator in the workers, so the pixels of the resumed batches are new draws.

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
        yield from self.counted(super().__iter__())


def image_transforms(size: int, train: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Train: random-resized-crop and flip; val: resize the shorter side to size/0.875, centre crop."""
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


class FolderDataModule(ImageDataModule):
    """Images in ``<root>/<class>/<file>`` folders, decoded with PIL in DataLoader workers.

    Args:
        data_train: folder of training images, a subfolder per class.
        data_val: folder of validation images with the same class subfolders.
        data_dir: parent holding ``train/`` and ``val/`` when data_train/data_val are not given.
        batch_size: samples per batch on each device.
        data_nthreads: DataLoader worker processes (MXNet's decode threads).
        image_shape: "C,H,W" of the network input (H = W = crop size).
        seed: seed of the data order.
        channels_last: hand batches over in channels-last memory format.
    """

    def __init__(
        self,
        data_train: str | None = None,
        data_val: str | None = None,
        data_dir: str | None = None,
        batch_size: int = 64,
        data_nthreads: int = 4,
        image_shape: str | None = "3,224,224",
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if data_train is None and data_dir:
            data_train, data_val = str(Path(data_dir) / "train"), data_val or str(Path(data_dir) / "val")
        if not data_train:
            raise UsageError("the folder dataset needs data_train (a folder with a subfolder per class) or data_dir")
        for key, value in (("data_train", data_train), ("data_val", data_val)):
            if value and not Path(value).is_dir():
                raise UsageError(f"{key} folder does not exist: {value}")
        self.data_train, self.data_val = data_train, data_val
        self.batch_size, self.workers, self.seed = batch_size, data_nthreads, seed
        self.channels_last = channels_last
        c, h, w = (int(v) for v in (image_shape or "3,224,224").split(","))
        self.image_shape = (c, h, w)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.class_names = sorted(p.name for p in Path(data_train).iterdir() if p.is_dir())
        if not self.class_names:
            raise UsageError(f"data_train {data_train} has no class subfolders")
        self.num_classes = len(self.class_names)

    def _dataset(self, root: str, train: bool):
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(root, transform=image_transforms(self.image_shape[1], train, self.mean, self.std))
        if ds.classes != list(self.class_names):
            raise UsageError(f"{root} has classes {ds.classes[:5]}..., training has {list(self.class_names)[:5]}...")
        return ds

    def _loader(self, root: str, train: bool) -> torch.utils.data.DataLoader:
        ds = self._dataset(root, train)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        # Only the training loader keeps a state: Lightning saves and restores no other loader's.
        cls = ResumableDataLoader if train else torch.utils.data.DataLoader
        sampler = EpochShuffle(len(ds), self.seed, rank, world) if train else None
        return cls(
            ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.workers, drop_last=train,
            persistent_workers=self.workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self):
        return self._loader(self.data_train, True)

    def val_dataloader(self):
        return self._loader(self.data_val, False) if self.data_val else []

    def test_dataloader(self):
        return self._loader(self.data_val or self.data_train, False)
