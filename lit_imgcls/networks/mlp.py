"""MXNet's multi-layer perceptron: flatten - fc(128) - relu - fc(64) - relu - fc(classes)."""

from __future__ import annotations

import torch
from torch import nn

from lit_imgcls.networks.head import HeadMixin


class MLP(HeadMixin, nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int | tuple[int, int] = 28, hidden: tuple[int, ...] = (128, 64)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size  # timm's convention: side or (H, W)
        width = in_chans * h * w
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.head = nn.Linear(width, num_classes)


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def mlp(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, img_size: int | tuple[int, int] = 28,
        **kwargs) -> MLP:
    """timm entry point for :class:`MLP`."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return MLP(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
