"""LeNet as in MXNet's image-classification example: two conv/pool stages, one hidden fully connected layer."""

from __future__ import annotations

import torch
from torch import nn

from lit_imgcls.networks.head import HeadMixin

_ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class LeNet(HeadMixin, nn.Module):
    """conv5x5(20) - act - maxpool - conv5x5(50) - act - maxpool - fc(500) - act - fc(classes).

    MXNet's LeNet uses tanh; ReLU is the default here because it reaches 99% on MNIST in fewer steps.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int | tuple[int, int] = 28, act: str = "relu") -> None:
        super().__init__()
        if act not in _ACTS:
            raise ValueError(f"lenet act must be one of {sorted(_ACTS)}, got {act!r}")
        act_layer = _ACTS[act]
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 20, 5), act_layer(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), act_layer(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size  # timm's convention: side or (H, W)
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if fh < 1 or fw < 1:
            raise ValueError(f"lenet needs images of at least 16 px, got {img_size}")
        self.fc = nn.Sequential(nn.Linear(50 * fh * fw, 500), act_layer())
        self.head = nn.Linear(500, num_classes)


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))


def lenet(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, img_size: int | tuple[int, int] = 28,
          **kwargs) -> LeNet:
    """timm entry point for :class:`LeNet` (weights come from a local file, never a hub)."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return LeNet(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
