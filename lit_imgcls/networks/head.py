"""The classifier-head methods timm's tooling expects (``get_classifier``, ``reset_classifier``)."""

from __future__ import annotations

from torch import nn


class HeadMixin:
    """For networks whose last layer is ``self.head``, an ``nn.Linear``."""

    head: nn.Linear
    num_classes: int

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.head.in_features, num_classes)
