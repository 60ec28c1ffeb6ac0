"""The contract every dataset plugin meets: a LightningDataModule that knows its classes and image shape."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import lightning as L


class ImageDataModule(L.LightningDataModule):
    """Base of lit-imgcls DataModules; it owns loaders and the per-device batch size.

    Subclasses set ``num_classes``, ``class_names``, ``image_shape`` (C, H, W), ``mean`` and ``std`` in
    ``__init__`` (or at latest in ``prepare_dataset``) and build loaders in ``train_dataloader`` etc.
    """

    num_classes: int
    class_names: Sequence[str]
    image_shape: tuple[int, int, int]
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)

    @classmethod
    def from_recipe(cls, recipe: Any) -> "ImageDataModule":
        """Builds the DataModule from the recipe keys its ``__init__`` accepts (``batch_size``, ``data_dir``...)."""
        params = inspect.signature(cls.__init__).parameters
        kwargs = {k: getattr(recipe, k) for k in params if k != "self" and hasattr(recipe, k)}
        return cls(**kwargs)
