"""The built-in augmentation stages: glue over torchvision.transforms.v2 (declared as entry points of the
``lit_imgcls.augmentations`` group in pyproject.toml, as a plugin's would be).

Each factory takes the run's :class:`~lit_imgcls.data.augment.StageContext` and the stage's arguments from the
recipe, checks them, and returns a callable on one uint8 image tensor (C, H, W) (batch stages: on a float batch and
its labels). MXNet's ``--max-random-*``, ``--brightness``... flags name these stages (see
:data:`lit_imgcls.recipe.AUGMENT_FLAGS`). Only ``pca_noise`` is written here: neither torchvision nor timm has
AlexNet's lighting noise.

Device forms (``augment_device: true``, :class:`~lit_imgcls.data.augment.DeviceAugment`): each per-image built-in
but the policies (rand_augment, trivial_augment, auto_augment) has one, set below as the factory's ``device_form``
attribute: kornia.augmentation's batched transform, parameters drawn per image, on float pixels in [0, 1]
(``fill`` and ``value`` on 0-255 are divided by 255). kornia's policies draw one sub-policy per batch, not per
image, so those stay on the host.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from lit_imgcls.data.augment import BATCH, StageContext


def _v2():
    from torchvision.transforms import v2

    return v2


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _number(v, name: str, low: float = 0.0, high: float = math.inf) -> float:
    _need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high,
          f"{name} must be a number in [{low:g}, {high:g}], got {v!r}")
    return float(v)


def _pair(v, name: str, low: float, high: float) -> tuple[float, float]:
    _need(isinstance(v, (list, tuple)) and len(v) == 2, f"{name} must be two numbers [low, high], got {v!r}")
    a, b = (_number(x, name, low, high) for x in v)
    _need(a <= b, f"{name} must be [low, high] with low <= high, got {list(v)}")
    return a, b


def _fill(fill, ctx: StageContext) -> int:
    return int(_number(fill, "fill", 0, 255))


def random_crop(ctx: StageContext, pad: int = 0, fill: int = 0):
    """MXNet's ``--pad-size`` and ``--random-crop``: pad each side by ``pad`` pixels of value ``fill`` (0-255), then
    crop the network's H x W at a random place (an image smaller than that is padded up to it first)."""
    _need(isinstance(pad, int) and not isinstance(pad, bool) and 0 <= pad <= 1024, f"pad must be an integer in [0, 1024], got {pad!r}")
    _, h, w = ctx.image_shape
    return _v2().RandomCrop((h, w), padding=pad or None, fill=_fill(fill, ctx), pad_if_needed=True)


def mirror(ctx: StageContext, p: float = 0.5):
    """MXNet's ``--random-mirror``: a horizontal flip with probability ``p``."""
    return _v2().RandomHorizontalFlip(_number(p, "p", 0, 1))


def random_resized_crop(ctx: StageContext, area: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)):
    """MXNet's ``--min/max-random-area`` and ``--min/max-random-aspect-ratio``: a crop of a random share ``area`` of
    the image with a random aspect ratio (width / height) in ``ratio``, resized to the network's H x W."""
    _, h, w = ctx.image_shape
    return _v2().RandomResizedCrop((h, w), scale=_pair(area, "area", 0, 1), ratio=_pair(ratio, "ratio", 1e-3, 1e3),
                                   antialias=True)


def rotate(ctx: StageContext, degrees: float = 0.0, fill: int = 0):
    """MXNet's ``--max-random-rotate-angle``: a rotation by a random angle in [-degrees, degrees] (corners ``fill``)."""
    return _v2().RandomRotation(_number(degrees, "degrees", 0, 360), fill=_fill(fill, ctx))


def shear(ctx: StageContext, ratio: float = 0.0, fill: int = 0):
    """MXNet's ``--max-random-shear-ratio``: a horizontal shear x' = x + s * y with s random in [-ratio, ratio]."""
    angle = math.degrees(math.atan(_number(ratio, "ratio", 0, 1)))
    return _v2().RandomAffine(degrees=0, shear=(-angle, angle), fill=_fill(fill, ctx))


def scale(ctx: StageContext, min: float = 1.0, max: float = 1.0, fill: int = 0):  # noqa: A002 - the recipe's words
    """MXNet's ``--min/max-random-scale``: the image zoomed by a random factor in [min, max] about its centre,
    keeping its size (a zoom out leaves a border of ``fill``)."""
    low, high = _pair([min, max], "[min, max]", 0.01, 100)
    return _v2().RandomAffine(degrees=0, scale=(low, high), fill=_fill(fill, ctx))


def hsl(ctx: StageContext, h: float = 0, s: float = 0, l: float = 0):  # noqa: E741 - MXNet's names
    """MXNet's ``--max-random-h/s/l`` (hue on OpenCV's 0-180 circle, saturation and lightness on 0-255), as
    torchvision's ColorJitter does them: hue shifted by up to h/180 of the circle, saturation and brightness
    multiplied by a factor within 1 -+ s/255 and 1 -+ l/255 (MXNet adds offsets in HLS space instead)."""
    h, s, l = _number(h, "h", 0, 180), _number(s, "s", 0, 255), _number(l, "l", 0, 255)
    return _v2().ColorJitter(brightness=l / 255 or None, saturation=s / 255 or None, hue=min(h / 180, 0.5) or None)


def color_jitter(ctx: StageContext, brightness: float = 0, contrast: float = 0, saturation: float = 0, hue: float = 0):
    """MXNet's ``--brightness``, ``--contrast``, ``--saturation``: each multiplied by a random factor in
    [1 - value, 1 + value] (torchvision's ColorJitter, in random order); ``hue``: a shift of up to that share of
    the colour circle (at most 0.5)."""
    return _v2().ColorJitter(brightness=_number(brightness, "brightness", 0, 1) or None,
                             contrast=_number(contrast, "contrast", 0, 1) or None,
                             saturation=_number(saturation, "saturation", 0, 1) or None,
                             hue=_number(hue, "hue", 0, 0.5) or None)


# AlexNet's lighting noise: the principal components of ImageNet's RGB pixels (0-255 scale), as MXNet's
# ``--pca-noise`` uses them (Krizhevsky et al. 2012, section 4.1).
PCA_EIGVAL = (55.46, 4.794, 1.148)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


class PCANoise:
    """Adds one random colour offset to every pixel: sum_i a_i * eigval_i * eigvec_i with a_i ~ N(0, std).

    Grey images get the mean of the RGB offset. The offset of each channel is at most |a| * 62 grey levels per
    unit of std (|a| rarely exceeds 3 std).
    """

    def __init__(self, std: float) -> None:
        self.std = std

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        offset = torch.tensor(PCA_EIGVEC) @ (alpha * torch.tensor(PCA_EIGVAL))  # (3,) in grey levels
        if image.shape[-3] != 3:
            offset = offset.mean().expand(image.shape[-3])
        out = image.float() + offset.view(-1, 1, 1)
        return out.round_().clamp_(0, 255).to(image.dtype)


def pca_noise(ctx: StageContext, std: float = 0.1):
    """MXNet's ``--pca-noise``: AlexNet's lighting noise with coefficients of standard deviation ``std``."""
    return PCANoise(_number(std, "std", 0, 1))


def rand_augment(ctx: StageContext, num_ops: int = 2, magnitude: int = 9):
    """RandAugment (torchvision): ``num_ops`` random operations each at ``magnitude`` (0-30)."""
    _need(isinstance(num_ops, int) and 0 < num_ops <= 16, f"num_ops must be an integer in [1, 16], got {num_ops!r}")
    _need(isinstance(magnitude, int) and 0 <= magnitude <= 30, f"magnitude must be an integer in [0, 30], got {magnitude!r}")
    return _v2().RandAugment(num_ops=num_ops, magnitude=magnitude)


def trivial_augment(ctx: StageContext):
    """TrivialAugment Wide (torchvision): one random operation at a random magnitude."""
    return _v2().TrivialAugmentWide()


AUTO_AUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")


def auto_augment(ctx: StageContext, policy: str = "imagenet"):
    """AutoAugment (torchvision) with the policy learnt on imagenet, cifar10 or svhn."""
    from torchvision.transforms import AutoAugmentPolicy

    _need(policy in AUTO_AUGMENT_POLICIES, f"policy must be one of {', '.join(AUTO_AUGMENT_POLICIES)}, got {policy!r}")
    return _v2().AutoAugment(AutoAugmentPolicy(policy))


def random_erasing(ctx: StageContext, p: float = 0.5, area: Sequence[float] = (0.02, 0.33),
                   ratio: Sequence[float] = (0.3, 3.3), value: int = 0):
    """Random erasing (torchvision): with probability ``p`` a rectangle of a random share ``area`` of the image and
    aspect ratio in ``ratio`` is set to ``value`` (0-255)."""
    return _v2().RandomErasing(p=_number(p, "p", 0, 1), scale=_pair(area, "area", 0, 1),
                               ratio=_pair(ratio, "ratio", 1e-3, 1e3), value=_fill(value, ctx))


def mixup(ctx: StageContext, alpha: float = 1.0):
    """MixUp (torchvision), per batch in the training step: each image blended with its neighbour in the batch
    by a weight drawn from Beta(alpha, alpha); the labels blended alike."""
    return _v2().MixUp(alpha=_number(alpha, "alpha", 1e-3, 100), num_classes=ctx.num_classes)


def cutmix(ctx: StageContext, alpha: float = 1.0):
    """CutMix (torchvision), per batch in the training step: a rectangle of each image replaced by its
    neighbour's, the labels mixed by the area."""
    return _v2().CutMix(alpha=_number(alpha, "alpha", 1e-3, 100), num_classes=ctx.num_classes)


mixup.level = BATCH  # type: ignore[attr-defined]
cutmix.level = BATCH  # type: ignore[attr-defined]


# Device forms: the same arguments as the host factories above (which check them first), on float batches.


def _kornia():
    import kornia.augmentation as K

    return K


def _filled(op, fill: int):
    """``op`` (a geometric warp that pads with zeros) padding with ``fill`` (0-255) instead: the warp is linear in
    the pixel values, so warping x - f and adding f back leaves the image as it was and the border f."""
    f = _fill(fill, None) / 255
    return op if not f else (lambda x: op(x - f) + f)


def _random_crop_device(ctx: StageContext, pad: int = 0, fill: int = 0):
    _, h, w = ctx.image_shape
    return _kornia().RandomCrop((h, w), padding=pad or None, fill=_fill(fill, ctx) / 255, pad_if_needed=True, p=1.0)


def _mirror_device(ctx: StageContext, p: float = 0.5):
    return _kornia().RandomHorizontalFlip(p=_number(p, "p", 0, 1))


def _random_resized_crop_device(ctx: StageContext, area: Sequence[float] = (0.08, 1.0),
                                ratio: Sequence[float] = (3 / 4, 4 / 3)):
    _, h, w = ctx.image_shape
    return _kornia().RandomResizedCrop((h, w), scale=_pair(area, "area", 0, 1), ratio=_pair(ratio, "ratio", 1e-3, 1e3),
                                       p=1.0)


# torchvision's RandomRotation and RandomAffine sample the nearest pixel by default: the device forms do too.
def _rotate_device(ctx: StageContext, degrees: float = 0.0, fill: int = 0):
    d = _number(degrees, "degrees", 0, 360)
    return _filled(_kornia().RandomAffine(degrees=(-d, d), resample="nearest", p=1.0), fill)


def _shear_device(ctx: StageContext, ratio: float = 0.0, fill: int = 0):
    angle = math.degrees(math.atan(_number(ratio, "ratio", 0, 1)))
    return _filled(_kornia().RandomAffine(degrees=0, shear=(-angle, angle), resample="nearest", p=1.0), fill)


def _scale_device(ctx: StageContext, min: float = 1.0, max: float = 1.0, fill: int = 0):  # noqa: A002
    low, high = _pair([min, max], "[min, max]", 0.01, 100)
    return _filled(_kornia().RandomAffine(degrees=0, scale=(low, high), resample="nearest", p=1.0), fill)


def _jitter_device(ctx: StageContext, brightness: float, contrast: float, saturation: float, hue: float):
    """kornia's ColorJitter (torchvision's factors; the order of the four is drawn per batch, not per image).
    Saturation and hue leave a grey image as it is on the host: they are dropped for one channel."""
    if ctx.image_shape[0] != 3:
        saturation = hue = 0.0
    if not (brightness or contrast or saturation or hue):
        return lambda x: x
    return _kornia().ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=1.0)


def _hsl_device(ctx: StageContext, h: float = 0, s: float = 0, l: float = 0):  # noqa: E741
    h, s, l = _number(h, "h", 0, 180), _number(s, "s", 0, 255), _number(l, "l", 0, 255)  # noqa: E741 - MXNet's names
    return _jitter_device(ctx, l / 255, 0.0, s / 255, min(h / 180, 0.5))


def _color_jitter_device(ctx: StageContext, brightness: float = 0, contrast: float = 0, saturation: float = 0,
                         hue: float = 0):
    return _jitter_device(ctx, _number(brightness, "brightness", 0, 1), _number(contrast, "contrast", 0, 1),
                          _number(saturation, "saturation", 0, 1), _number(hue, "hue", 0, 0.5))


def _random_erasing_device(ctx: StageContext, p: float = 0.5, area: Sequence[float] = (0.02, 0.33),
                           ratio: Sequence[float] = (0.3, 3.3), value: int = 0):
    return _kornia().RandomErasing(scale=_pair(area, "area", 0, 1), ratio=_pair(ratio, "ratio", 1e-3, 1e3),
                                   value=_fill(value, ctx) / 255, p=_number(p, "p", 0, 1))


class BatchPCANoise:
    """:class:`PCANoise` on a float batch (N, C, H, W) of pixels in [0, 1]: one colour offset per image, its
    coefficients drawn from torch's CPU generator (the same numbers on any device), added and clamped to [0, 1]
    (not rounded to grey levels, as the host's uint8 output is)."""

    def __init__(self, std: float) -> None:
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(len(x), 3) * self.std
        offset = (alpha * torch.tensor(PCA_EIGVAL)) @ torch.tensor(PCA_EIGVEC).T  # (N, 3) in grey levels
        if x.shape[1] != 3:
            offset = offset.mean(1, keepdim=True).expand(-1, x.shape[1])
        return (x + offset.to(x.device, x.dtype).view(len(x), -1, 1, 1) / 255).clamp_(0, 1)


def _pca_noise_device(ctx: StageContext, std: float = 0.1):
    return BatchPCANoise(_number(std, "std", 0, 1))


for _host, _device in ((random_crop, _random_crop_device), (mirror, _mirror_device),
                       (random_resized_crop, _random_resized_crop_device), (rotate, _rotate_device),
                       (shear, _shear_device), (scale, _scale_device), (hsl, _hsl_device),
                       (color_jitter, _color_jitter_device), (random_erasing, _random_erasing_device),
                       (pca_noise, _pca_noise_device)):
    _host.device_form = _device  # type: ignore[attr-defined]
