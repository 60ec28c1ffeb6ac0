"""The recipe's ``augment`` key: an ordered list of named stages, built from the ``augmentations`` registry.

A stage is ``{name: NAME, ARG: VALUE, ...}`` (or just ``NAME``). Its name is looked up in
:data:`lit_imgcls.registry.augmentations`, whose entries are factories ``fn(ctx, **args)`` with ``ctx`` a
:class:`StageContext`; a factory returns a callable. Per-sample stages (the default) take and return one uint8
image tensor (C, H, W): torchvision.transforms.v2 transforms are such callables. A factory marked
``level = "batch"`` (mixup, cutmix) returns a callable taking a float image batch (N, C, H, W) and int64 labels
(N,) and returning the batch and soft labels (N, K); those run in the module's training step.

With the recipe's ``augment_device: true`` the per-sample stages run instead in the training step, on the batch
after it reached the training device (:class:`DeviceAugment`): each factory then needs a device form, declared as
an attribute ``device_form`` (``fn(ctx, **args)`` with the same arguments, returning a callable on a float batch
(N, C, H, W) of pixels in [0, 1] that draws its parameters per image; the built-ins' are kornia.augmentation's).
A stage without one runs only on the host and is refused with augment_device.

Randomness: every per-sample stage draws from torch's and Python's global generators, which :class:`Pipeline`
seeds from (seed, epoch, index) around each image and restores afterwards (``torch.random.fork_rng``), so an image
gets the same pixels on every data path, in every worker process, and after a resume.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from lit_imgcls.errors import UsageError, quoted

SAMPLE, BATCH = "sample", "batch"


@dataclass(frozen=True)
class StageContext:
    """What a stage factory may need to know about the run.

    Args:
        image_shape: (C, H, W) of the network input: what a training image must have after the stages.
        num_classes: the class count (batch stages make soft labels of this width).
    """

    image_shape: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10


def level(factory: Any) -> str:
    """``"batch"`` for a factory marked ``level = "batch"``, else ``"sample"``."""
    return BATCH if getattr(factory, "level", SAMPLE) == BATCH else SAMPLE


def device_form(factory: Any) -> Callable | None:
    """The factory's batched form for the training device (its ``device_form`` attribute), or None."""
    form = getattr(factory, "device_form", None)
    return form if callable(form) else None


def sample_seed(seed: int, epoch: int, index: int | str) -> int:
    """A 63-bit seed that is a pure function of (seed, epoch, index): the augmentation of one image in one epoch."""
    digest = hashlib.blake2b(f"{int(seed)}/{int(epoch)}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Inside the block, torch's CPU generator (and ``device``'s, when it is a CUDA device) and Python's ``random``
    are seeded with ``seed``; the callers' states are restored after it, whatever happens inside.

    The CPU generator alone unless ``device`` is CUDA: torch.manual_seed would also seed every accelerator's
    (lazily, at about 1 ms a call), and host stages draw on the CPU."""
    accelerators = [device.index or 0] if device is not None and device.type == "cuda" else []
    state = random.getstate()
    with torch.random.fork_rng(devices=accelerators):
        torch.default_generator.manual_seed(seed)
        if accelerators:
            torch.cuda.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def parse_stages(value: Any, key: str = "augment") -> list[dict[str, Any]]:
    """``value`` (a recipe's ``augment``) as a list of ``{"name": ..., **args}`` mappings, names normalised.

    Raises:
        UsageError: not a list, a stage that is neither a name nor a mapping with ``name``.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise UsageError(f"{key} must be a list of stages like [{{name: random_crop, pad: 4}}, {{name: mirror}}], "
                         f"got {quoted(value)}")
    out = []
    for i, stage in enumerate(value, 1):
        if isinstance(stage, str):
            stage = {"name": stage}
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str):
            raise UsageError(f"{key} stage {i} must be a stage name or a mapping with a name, like {{name: mirror}}, "
                             f"got {quoted(stage)}")
        out.append({**stage, "name": stage["name"].strip().replace("-", "_")})
    return out


def build_stage(stage: dict[str, Any], ctx: StageContext, where: str = "augment stage") -> tuple[str, Callable]:
    """(level, callable) of one parsed stage.

    Raises:
        UsageError: an unknown name (listing the registered ones), an argument the factory does not take (listing
            the ones it does), or a value it refuses (its own words), in one line naming the stage.
    """
    from lit_imgcls.registry import augmentations

    name = stage["name"]
    try:
        factory = augmentations.get(name)
    except UsageError as exc:  # the registry's words (choices, close names), with the stage's place
        raise UsageError(f"{where}: {exc}") from None
    args = {k: v for k, v in stage.items() if k != "name"}
    params = [p for p in list(inspect.signature(factory).parameters.values())[1:]
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())
    known = [p.name for p in params]
    for arg in args:
        if arg not in known and not takes_any:
            close = difflib.get_close_matches(str(arg), known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{where} {name}: unknown argument {quoted(arg)}{hint} arguments: "
                             f"{', '.join(known) or 'none'}")
    try:
        return level(factory), factory(ctx, **args)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{where} {name}: {' '.join(str(exc).split())} (arguments: {quoted(args)})") from None


def check_stages(value: Any, ctx: StageContext | None = None, key: str = "augment",
                 only_known: bool = False) -> list[dict[str, Any]]:
    """Parses and builds every stage once (what ``recipe.validate`` calls), so that a bad one stops the run before
    it starts; returns the parsed list.

    Args:
        only_known: skip the stages whose names this machine's registry lacks (a recipe printed for another).

    Raises:
        UsageError: as :func:`parse_stages` and :func:`build_stage`, naming the stage's place in the list.
    """
    from lit_imgcls.registry import augmentations

    stages = parse_stages(value, key)
    for i, stage in enumerate(stages, 1):
        if not only_known or stage["name"] in augmentations:
            build_stage(stage, ctx or StageContext(), f"{key} stage {i}")
    return stages


def split_levels(stages: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-sample stages, batch stages) of a parsed list, each in its order (no factory is called). A name this
    machine does not know counts as per-image: ``fit`` refuses it in ``recipe.validate``, while ``predict`` and
    ``score`` rebuild a checkpoint's module without needing the plugins it trained with."""
    from lit_imgcls.registry import augmentations

    sample, batch = [], []
    for stage in stages or []:
        try:
            is_batch = level(augmentations.get(stage["name"])) == BATCH
        except UsageError:
            is_batch = False
        (batch if is_batch else sample).append(stage)
    return sample, batch


class Pipeline:
    """The per-sample stages of a recipe, applied to one uint8 image (C, H, W) with its own seed.

    Picklable (loader workers get a copy): it keeps the stage list and builds the transforms on first use.
    """

    def __init__(self, stages: list[dict[str, Any]], ctx: StageContext) -> None:
        self.stages, self.ctx = list(stages), ctx
        self._built: list[Callable] | None = None

    def __bool__(self) -> bool:
        return bool(self.stages)

    def __getstate__(self) -> dict[str, Any]:
        return {"stages": self.stages, "ctx": self.ctx, "_built": None}

    def transforms(self) -> list[Callable]:
        if self._built is None:
            self._built = [build_stage(s, self.ctx)[1] for s in self.stages]
        return self._built

    def __call__(self, image: torch.Tensor, seed: int) -> torch.Tensor:
        """``image`` (uint8 (C, H, W)) through every stage, the random draws fixed by ``seed`` (see
        :func:`sample_seed`); the callers' own torch and Python random states are left as they were."""
        transforms = self.transforms()
        with seeded(seed):
            for t in transforms:
                image = t(image)
        return image

    def stack(self, images: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Each image of ``images`` (uint8 (N, C, H, W)) with its seed, stacked; on one thread, for the in-memory
        loader that runs in the training process: the ops on one small image are too short to share, and
        several threads waiting on each other made a 28 x 28 rotation 10-100x slower on a busy 2-core machine."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return torch.stack([self(image, seed) for image, seed in zip(images, seeds)])
        finally:
            torch.set_num_threads(threads)

    def numpy_hwc(self, pixels, seed: int):
        """The same for a decoded uint8 (H, W) or (H, W, C) numpy image; returns uint8 (H, W, C) numpy."""
        if not pixels.flags.writeable:  # a decoder's read-only buffer: torch wants to own writable memory
            pixels = pixels.copy()
        t = torch.from_numpy(pixels if pixels.ndim == 3 else pixels[:, :, None]).permute(2, 0, 1)
        return self(t.contiguous(), seed).permute(1, 2, 0).contiguous().numpy()


class BatchMix:
    """The batch stages of a recipe (mixup, cutmix), run in the training step: one of them per batch, chosen at
    random when there are several (as timm's ``Mixup`` switches between the two).

    The draws come from a generator seeded by (seed, step), so a resumed run mixes the same way.
    Returns soft labels (N, K) whose rows sum to 1; any batch size (torchvision pairs each image with its
    neighbour in the batch, so odd sizes and a batch of one work).
    """

    def __init__(self, stages: list[dict[str, Any]], ctx: StageContext, seed: int = 0) -> None:
        self.stages, self.ctx, self.seed = list(stages), ctx, int(seed)
        self._built: list[Callable] | None = None

    def __bool__(self) -> bool:
        return bool(self.stages)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._built is None:
            self._built = [build_stage(s, self.ctx)[1] for s in self.stages]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(self.seed, step, "mix"))
            pick = self._built[int(torch.randint(len(self._built), ()))] if len(self._built) > 1 else self._built[0]
            return pick(x, y)


def check_device_stages(stages: list[dict[str, Any]] | None, only_known: bool = False) -> None:
    """Refuses what ``augment_device: true`` cannot do: a list without per-image stages, or a per-image stage
    whose factory has no :func:`device_form` (RandAugment and the other policies, most plugins).

    Args:
        only_known: skip the stages whose names this machine's registry lacks (a recipe printed for another).

    Raises:
        UsageError: in one line naming the stage and its place in ``augment``.
    """
    from lit_imgcls.registry import augmentations

    if not split_levels(stages)[0]:
        raise UsageError("augment_device is true but augment names no per-image stage to run on the training "
                         "device: add stages to augment (e.g. [{name: random_crop, pad: 4}, mirror]) or set "
                         "augment_device false")
    for i, stage in enumerate(stages or [], 1):
        if stage["name"] not in augmentations:
            if only_known:
                continue
            augmentations.get(stage["name"])  # the registry's own words
        factory = augmentations.get(stage["name"])
        if level(factory) == SAMPLE and device_form(factory) is None:
            raise UsageError(f"augment stage {i} {stage['name']} runs only on the host (per image in the loader), "
                             "not on the training device: remove it from augment or set augment_device false")


class DeviceAugment:
    """The per-image stages of a recipe with ``augment_device: true``, run in the training step on a whole batch
    on the training device, each image with its own random parameters (kornia.augmentation draws them per sample).

    Takes and returns float pixels in [0, 1], (N, C, H, W), on any device: the module converts its uint8 (or
    normalised) batch to that scale first and normalises after, so a stage's ``fill`` (0-255) means the same pixel
    value as on the host and colour stages see the range they are written for. The draws come from torch's CPU
    generator (kornia samples its parameters there; an accelerator's generator is forked and seeded too), seeded
    by (seed, global step, process rank) inside ``torch.random.fork_rng``: the same step gives the same batch, a
    resumed run augments as the uninterrupted one did, and the caller's random state is left as it was.

    Raises:
        UsageError: (when first used, and from :func:`check_device_stages` in ``recipe.validate``) a stage with no
            device form, or arguments its factory refuses.
    """

    def __init__(self, stages: list[dict[str, Any]], ctx: StageContext, seed: int = 0) -> None:
        self.stages, self.ctx, self.seed = list(stages), ctx, int(seed)
        self._built: list[Callable] | None = None

    def __bool__(self) -> bool:
        return bool(self.stages)

    def __getstate__(self) -> dict[str, Any]:
        return {"stages": self.stages, "ctx": self.ctx, "seed": self.seed, "_built": None}

    def transforms(self) -> list[Callable]:
        if self._built is None:
            from lit_imgcls.registry import augmentations

            check_device_stages(self.stages)
            built = []
            for i, stage in enumerate(self.stages, 1):
                build_stage(stage, self.ctx, f"augment stage {i}")  # the host factory checks the arguments
                args = {k: v for k, v in stage.items() if k != "name"}
                built.append(device_form(augmentations.get(stage["name"]))(self.ctx, **args))
            self._built = built
        return self._built

    def __call__(self, x: torch.Tensor, step: int, rank: int = 0) -> torch.Tensor:
        """``x`` (float (N, C, H, W), pixels in [0, 1]) through every stage, the draws fixed by (seed, ``step``,
        ``rank``): each process of a distributed run draws its own parameters for its own images."""
        transforms = self.transforms()
        seed = sample_seed(self.seed, step, f"device-{int(rank)}")
        with seeded(seed, x.device):
            for t in transforms:
                x = t(x)
        return x
