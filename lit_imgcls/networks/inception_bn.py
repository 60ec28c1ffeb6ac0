"""Inception with batch normalisation (Ioffe & Szegedy, 2015) in MXNet's two sizes.

``inception_bn_small`` is MXNet's 28/32-px variant for MNIST and CIFAR (simple and downsample blocks);
``inception_bn`` is the 224-px ImageNet network. Both end in global average pooling, so other sizes work too.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_imgcls.networks.head import HeadMixin


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Concat(nn.Module):
    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


def _simple(cin: int, c1: int, c3: int) -> tuple[nn.Module, int]:
    return _Concat(_conv(cin, c1, 1), _conv(cin, c3, 3, pad=1)), c1 + c3


def _downsample(cin: int, c3: int) -> tuple[nn.Module, int]:
    return _Concat(_conv(cin, c3, 3, stride=2, pad=1), nn.MaxPool2d(3, 2, 1)), c3 + cin


def _block_a(cin: int, c1: int, c3r: int, c3: int, cd3r: int, cd3: int, pool: str, proj: int) -> tuple[nn.Module, int]:
    pooling = nn.AvgPool2d(3, 1, 1) if pool == "avg" else nn.MaxPool2d(3, 1, 1)
    block = _Concat(
        _conv(cin, c1, 1),
        nn.Sequential(_conv(cin, c3r, 1), _conv(c3r, c3, 3, pad=1)),
        nn.Sequential(_conv(cin, cd3r, 1), _conv(cd3r, cd3, 3, pad=1), _conv(cd3, cd3, 3, pad=1)),
        nn.Sequential(pooling, _conv(cin, proj, 1)),
    )
    return block, c1 + c3 + cd3 + proj


def _block_b(cin: int, c3r: int, c3: int, cd3r: int, cd3: int) -> tuple[nn.Module, int]:
    block = _Concat(
        nn.Sequential(_conv(cin, c3r, 1), _conv(c3r, c3, 3, stride=2, pad=1)),
        nn.Sequential(_conv(cin, cd3r, 1), _conv(cd3r, cd3, 3, pad=1), _conv(cd3, cd3, 3, stride=2, pad=1)),
        nn.MaxPool2d(3, 2, 1),
    )
    return block, c3 + cd3 + cin


class InceptionBN(HeadMixin, nn.Module):
    """Inception-BN; ``small=True`` builds the 28/32-px variant."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small: bool = False, drop_rate: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        if small:
            layers.append(_conv(in_chans, 96, 3, pad=1))
            width = 96
            plan = [("s", 32, 32), ("s", 32, 48), ("d", 80), ("s", 112, 48), ("s", 96, 64), ("s", 80, 80),
                    ("s", 48, 96), ("d", 96), ("s", 176, 160), ("s", 176, 160)]
        else:
            layers += [_conv(in_chans, 64, 7, 2, 3), nn.MaxPool2d(3, 2, 1), _conv(64, 64, 1), _conv(64, 192, 3, pad=1),
                       nn.MaxPool2d(3, 2, 1)]
            width = 192
            plan = [("a", 64, 64, 64, 64, 96, "avg", 32), ("a", 64, 64, 96, 64, 96, "avg", 64),
                    ("b", 128, 160, 64, 96), ("a", 224, 64, 96, 96, 128, "avg", 128),
                    ("a", 192, 96, 128, 96, 128, "avg", 128), ("a", 160, 128, 160, 128, 160, "avg", 128),
                    ("a", 96, 128, 192, 160, 192, "avg", 128), ("b", 128, 192, 192, 256),
                    ("a", 352, 192, 320, 160, 224, "avg", 128), ("a", 352, 192, 320, 192, 224, "max", 128)]
        makers = {"s": _simple, "d": _downsample, "a": _block_a, "b": _block_b}
        for kind, *args in plan:
            block, width = makers[kind](width, *args)
            layers.append(block)
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate))
        self.num_classes = num_classes
        self.num_features = width
        self.head = nn.Linear(width, num_classes)


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


def _clean(kwargs: dict) -> dict:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "img_size"):
        kwargs.pop(key, None)
    return kwargs


def inception_bn(pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, **kwargs) -> InceptionBN:
    """timm entry point: the 224-px ImageNet Inception-BN."""
    return InceptionBN(num_classes=num_classes, in_chans=in_chans, small=False, **_clean(kwargs))


def inception_bn_small(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs) -> InceptionBN:
    """timm entry point: MXNet's small Inception-BN for 28/32-px images (MNIST, CIFAR-10)."""
    return InceptionBN(num_classes=num_classes, in_chans=in_chans, small=True, **_clean(kwargs))
