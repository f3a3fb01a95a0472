"""The small CNN behind the shapes demo: which of four shapes a generated coloured image shows."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from neuronwidgets.datasets.shapes import SHAPES

SHAPES_WEIGHTS_PATH = Path(__file__).with_name("shapes_cnn.pt")
"""Shipped ``state_dict`` of :class:`ShapesCNN`, produced by ``python -m neuronwidgets.demo.train_shapes``."""

TRAIN_SEED = 1
"""Seed of the generated training images (``shapes(n, seed=TRAIN_SEED)``)."""

HELD_OUT_SEED = 0
"""Seed of the held-out images: another seed than training's, so no image is shared (each image is drawn from
(seed, index)); 0 is `shapes`' default, so ``nw.datasets.shapes(1000)`` is the held-out set."""

HELD_OUT_IMAGES = 1000
"""Size of the held-out set that ``nw.demo.load("shapes")`` returns."""


class ShapesCNN(nn.Module):
    """Three conv blocks (16, 32, 32 channels), global average pooling and a linear head, for 3x32x32 images
    in [0, 1] (as `neuronwidgets.datasets.shapes` makes them; no normalisation needed), 4 shapes.

    Every layer is a named attribute used exactly once in :meth:`forward`, so each can be probed by name
    (``"conv2"``, ``"relu3"``, ...).
    """

    def __init__(self, num_classes: int = len(SHAPES)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 32, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(32)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a (N, 3, 32, 32) batch to (N, num_classes) logits."""
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.pool3(self.relu3(self.bn3(self.conv3(x))))
        return self.fc(torch.flatten(x, 1))
