"""Shared fixtures: seeded models with random weights and labelled random images (no zeros)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.models import InPlaceMethods, PlainCNN, ResidualCNN, Untraceable, randomize_batchnorm


@pytest.fixture(autouse=True)
def traced_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' models and data are tiny, so the small-work rule would send every ablation down the hook
    path; the traced paths are what most tests check, so the rule is off unless a test turns it on
    (`tests/test_engine.py` tests the rule itself)."""
    monkeypatch.setattr("neuronwidgets.engine.ablate.SETUP_SECONDS_PER_MODULE", 0.0)


def make_data(model: nn.Module, n: int, shape: tuple[int, ...], seed: int, dtype=torch.float64):
    """Random images and labels that agree with the model on about two thirds of the images, so that
    ablations change the accuracy in both directions."""
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand((n, *shape), generator=generator, dtype=dtype) - 0.4) * 2
    with torch.no_grad():
        was = model.training
        model.eval()
        predicted = model(images).argmax(1)
        model.train(was)
    classes = model(images[:1]).shape[1]
    random = torch.randint(0, classes, (n,), generator=generator)
    keep = torch.rand(n, generator=generator) < 0.67
    return images, torch.where(keep, predicted, random)


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if name == "plain":
        model, shape = PlainCNN(), (3, 8, 8)
    elif name == "residual":
        model, shape = ResidualCNN(), (3, 6, 6)
    elif name == "inplace":
        model, shape = InPlaceMethods(), (3, 8, 8)
    elif name == "untraceable":
        model, shape = Untraceable(), (3, 5, 5)
    elif name == "resnet18":
        model, shape = torchvision.models.resnet18(weights=None, num_classes=6), (3, 32, 32)
    elif name == "mobilenet":
        model, shape = torchvision.models.mobilenet_v2(weights=None, num_classes=5), (3, 32, 32)
    else:
        raise KeyError(name)
    randomize_batchnorm(model, generator)
    return model.double().eval(), shape


@pytest.fixture(params=["plain", "residual", "inplace", "untraceable"])
def small_model(request):
    model, shape = build(request.param)
    images, labels = make_data(model, 23, shape, seed=1)
    return request.param, model, images, labels
