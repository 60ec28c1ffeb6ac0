"""ResNet-9: the small residual network of the CIFAR-10 speed records, for 28-64 px images.

Where it comes from: David Page's DAWNBench entry ("How to train your ResNet", Myrtle.ai, 2018: 94% on CIFAR-10 in
79 s on one V100 with 24 epochs, 26 s after his later "bag of tricks") and its descendant, Keller Jordan's airbench
(arXiv 2404.00498: airbench94 reaches 94.01% in 3.83 s on one A100). Both are a prep convolution, three stages of
conv-BN-ReLU each halving the resolution with a max-pool, a residual block of two conv-BN-ReLU after the first and
the third stage, a global max-pool and a linear classifier whose output is scaled down (x 0.125) so that the
initial logits are small and the softmax starts near uniform. This is a plain re-statement of that layout, written
for lit-imgcls; it leaves out the records' other tricks (whitened first layer, frozen BN scales, lookahead), which
belong to their training recipes rather than to the network.

Shapes: input (N, in_chans, H, W), any H, W >= 1 (the pools round up and the end is a global pool, so 28-px MNIST,
32-px CIFAR and 64-px photos all work); output logits (N, num_classes). With ``width=1`` the channels are
64 -> 128 -> 256 -> 512 and the network has 6.57 M parameters for 3 input channels and 10 classes; ``width``
scales every stage (``resnet9_small`` is ``width=0.25``: 16 -> 32 -> 64 -> 128, 0.41 M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_imgcls.networks.head import HeadMixin

_POOLS = ("max", "avg")


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    # bias=False: the BN that follows has its own shift, a conv bias would be a redundant parameter
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class _Residual(nn.Module):
    """x + f(x) with f two conv-BN-ReLU of the same width (the records' "res" blocks: no projection, no stride)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(channels, channels), *_conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(cin: int, cout: int, residual: bool) -> nn.Sequential:
    # ceil_mode: a 1- or 3-px map still pools to >= 1 px, so no input size is too small for three halvings
    layers: list[nn.Module] = [*_conv_bn(cin, cout), nn.MaxPool2d(2, ceil_mode=True)]
    if residual:
        layers.append(_Residual(cout))
    return nn.Sequential(*layers)


class ResNet9(HeadMixin, nn.Module):
    """prep conv(64w) - stage(128w) + residual - stage(256w) - stage(512w) + residual - global pool - linear x scale.

    Args:
        num_classes: outputs of the classifier.
        in_chans: image channels (1 for grey, 3 for colour).
        width: multiplier of every stage's channels (> 0; channels are rounded, at least 4 each).
        pool: ``"max"`` (the records' choice) or ``"avg"`` global pooling before the classifier.
        scale: factor on the logits (the records use 0.125).
        drop_rate: dropout before the classifier (timm's name; default 0).

    Raises:
        ValueError: width <= 0, scale <= 0, an unknown pool, drop_rate outside [0, 1).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: float = 1.0, pool: str = "max",
                 scale: float = 0.125, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"resnet9 width must be > 0, got {width}")
        if not scale > 0:
            raise ValueError(f"resnet9 scale must be > 0, got {scale}")
        if pool not in _POOLS:
            raise ValueError(f"resnet9 pool must be one of {', '.join(_POOLS)}, got {pool!r}")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"resnet9 drop_rate must lie in [0, 1), got {drop_rate}")
        c0, c1, c2, c3 = (max(4, round(c * width)) for c in (64, 128, 256, 512))
        self.num_classes = num_classes
        self.num_features = c3  # timm's name for the classifier's input width
        self.scale = float(scale)
        self.features = nn.Sequential(
            nn.Sequential(*_conv_bn(in_chans, c0)),
            _stage(c0, c1, residual=True),
            _stage(c1, c2, residual=False),
            _stage(c2, c3, residual=True),
        )
        self.pool = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(c3, num_classes, bias=False)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(x).flatten(1))) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def resnet9(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNet9:
    """timm entry point for :class:`ResNet9` (weights come from a local file, never a hub); ``width``, ``pool``,
    ``scale`` and ``drop_rate`` pass through."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return ResNet9(num_classes=num_classes, in_chans=in_chans, **kwargs)


def resnet9_small(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs) -> ResNet9:
    """:func:`resnet9` at a quarter of the width (16 -> 32 -> 64 -> 128 channels, 0.41 M parameters): a name a recipe
    can give (recipes pass no network options), for CPU runs and the photo benchmark."""
    kwargs.setdefault("width", 0.25)
    return resnet9(pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
