"""The small CNN behind the bundled digits demo."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS_PATH = Path(__file__).with_name("digits_cnn.pt")
"""Shipped ``state_dict`` of :class:`DigitsCNN`, produced by ``python -m neuronwidgets.demo.train``."""


class DigitsCNN(nn.Module):
    """Three conv blocks and a linear head for 1x32x32 digit images, 10 classes.

    Every layer is a named attribute used exactly once in :meth:`forward`, so each
    one can be addressed by name (``"conv2"``, ``"relu3"``, ...) when hooking
    activations. ``relu1`` is in-place on purpose, to exercise hooks on in-place
    modules; the other ReLUs are not.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(64)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (N, 1, 32, 32) batch to (N, num_classes) logits."""
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.pool3(self.relu3(self.bn3(self.conv3(x))))
        x = torch.flatten(x, 1)
        return self.fc(x)
