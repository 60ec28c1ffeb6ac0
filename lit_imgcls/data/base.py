"""The contract every dataset plugin meets: a LightningDataModule that knows its classes, input shape and
evaluation preprocessing."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import lightning as L

from lit_imgcls.data.preprocess import DataConfig, per_channel


class ImageDataModule(L.LightningDataModule):
    """Base of lit-imgcls DataModules; it owns loaders and the per-device batch size.

    Subclasses set ``num_classes``, ``class_names``, ``image_shape`` (C, H, W: what every loader delivers,
    exactly), ``mean`` and ``std`` in ``__init__`` (or at latest in ``setup``) and build loaders in
    ``train_dataloader`` etc. Loaders yield (images, labels): images uint8 (N, C, H, W), normalised on the
    training device with :attr:`data_config`'s mean/std, or float (N, C, H, W) already normalised; labels int64.
    """

    num_classes: int
    class_names: Sequence[str]
    image_shape: tuple[int, int, int]
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    # Set by the engine with the recipe's augment_device: the per-image stages run in the training step, so the
    # training loader delivers uint8 images at the input size without augmentation of its own (the recipe's list,
    # batch stages alone, is what it is given as augment).
    augment_on_device: bool = False
    # The training order (the recipe's sampler): "shuffle", or "balanced" (classes drawn equally often, with
    # replacement: lit_imgcls.data.balance.balanced_draws) where the loader can draw single samples at random,
    # which a DataModule says with draws_balanced.
    sampler: str = "shuffle"
    draws_balanced: bool = False

    @classmethod
    def from_recipe(cls, recipe: Any) -> "ImageDataModule":
        """Builds the DataModule from the recipe keys its ``__init__`` accepts (``batch_size``, ``data_dir``...)."""
        params = inspect.signature(cls.__init__).parameters
        kwargs = {k: getattr(recipe, k) for k in params if k != "self" and hasattr(recipe, k)}
        return cls(**kwargs)

    @property
    def data_config(self) -> DataConfig:
        """How an image becomes this DataModule's evaluation input (saved in checkpoints; ``predict`` applies it).

        The default, for data whose images already have the input size: the whole image resized to
        ``image_shape`` (a no-op for its own images). A DataModule that crops overrides this.
        """
        c = int(self.image_shape[0])
        return DataConfig(tuple(int(v) for v in self.image_shape), "squash", 0.875, "area",
                          per_channel(self.mean, c), per_channel(self.std, c))

    def set_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Replaces the per-channel mean and/or std (0-1 scale, one value per channel of ``image_shape``; None
        keeps the DataModule's own): the recipe's ``rgb_mean``/``rgb_std``. Called before ``setup``."""
        if mean is not None:
            self.mean = tuple(mean)
        if std is not None:
            self.std = tuple(std)

    def use_eval_config(self, config: DataConfig) -> bool:
        """Evaluates with ``config`` (a checkpoint's) instead of :attr:`data_config`; False when it cannot, and
        the caller then says the two differ. The base class can only evaluate with its own."""
        return config == self.data_config

    def training_class_counts(self) -> list[int] | None:
        """Training samples per class, in class order, as training will see them (after ``num_examples`` and
        skipped files); None when unknown before loading. ``fit`` checks them before the run starts."""
        return None
