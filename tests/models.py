"""Small models for tests: plain, residual (a skip over the ablated layer), in-place ReLUs, untraceable."""

from __future__ import annotations

import torch
from torch import nn


class PlainCNN(nn.Module):
    """conv-bn-relu blocks with in-place ReLUs, max pooling, a flatten and two linear layers."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1, padding_mode="reflect")
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(8 * 2 * 2, 12)
        self.relu4 = nn.ReLU()
        self.dropout = nn.Dropout(0.5)
        self.fc2 = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.pool3(self.relu3(self.conv3(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.dropout(self.relu4(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.out_relu(out)


class ResidualCNN(nn.Module):
    """A stem and two residual blocks: the skip of ``block2`` crosses every layer inside ``block2``, and
    ``stem_relu``'s output reaches both ``block1.conv1`` and the addition."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(6)
        self.stem_relu = nn.ReLU()
        self.block1 = Block(6)
        self.block2 = Block(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        x = self.block2(self.block1(x))
        return self.fc(self.pool(x).flatten(1))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so the engine must fall back to hooks."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        if x.mean() > -1e9:  # always true, but fx cannot know
            x = x * 1.0
        return self.fc(x.mean((2, 3)))


class InPlaceMethods(nn.Module):
    """In-place tensor methods whose results are unused (``x.relu_()``): the graph's data flow alone would
    miss that they change ``x``, so neither dead-code elimination nor the frontier analysis may ignore them."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x.relu_()
        y = self.conv2(x)
        torch.relu_(y)
        y.add_(0.5)
        return self.fc(y.mean((2, 3)))


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial running statistics and affine parameters, so BN(0) != 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.3)
