"""The shapes demo: nw.demo.load("shapes"), its shipped weights and its seeded training script."""

from __future__ import annotations

import hashlib
import socket

import pytest
import torch

import neuronwidgets as nw
from neuronwidgets.datasets import SHAPES, ShapesDataset
from neuronwidgets.demo import DigitsCNN, DigitsDataset, ShapesCNN
from neuronwidgets.demo.shapes_model import HELD_OUT_SEED, SHAPES_WEIGHTS_PATH, TRAIN_SEED
from neuronwidgets.demo.train_shapes import as_tensors, fit, train


def test_load_shapes_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the demo tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    model, data = nw.demo.load("shapes")
    assert isinstance(model, ShapesCNN) and all(not m.training for m in model.modules())
    assert isinstance(data, ShapesDataset) and len(data) == 1000 and data.seed == HELD_OUT_SEED != TRAIN_SEED
    assert data.classes == list(SHAPES)
    names = [name for name, _ in model.named_children()]
    assert names == [
        "conv1", "bn1", "relu1", "pool1",
        "conv2", "bn2", "relu2", "pool2",
        "conv3", "bn3", "relu3", "pool3",
        "fc",
    ]  # fmt: skip
    assert nw.Probe(model, data).layers[:4] == ["conv1", "bn1", "relu1", "pool1"]


def test_held_out_accuracy_is_at_least_95_percent() -> None:
    model, data = nw.demo.load("shapes")
    images, labels = as_tensors(ShapesDataset(300, seed=data.seed))  # the first 300 held-out images
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95


def test_load_without_a_name_is_still_the_digits_demo() -> None:
    model, data = nw.demo.load()
    assert isinstance(model, DigitsCNN) and isinstance(data, DigitsDataset) and len(data) == 360
    assert isinstance(nw.demo.load("digits")[0], DigitsCNN)


def test_an_unknown_demo_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown demo 'cifar'; valid demos: 'digits', 'shapes'"):
        nw.demo.load("cifar")
    with pytest.raises(ValueError, match=r"unknown demo 'cpu'.*device="):
        nw.demo.load("cpu")


def test_shipped_weights_are_small() -> None:
    assert SHAPES_WEIGHTS_PATH.stat().st_size < 1_000_000


def test_training_is_deterministic_from_its_seed() -> None:
    """Two short runs (two steps) from one seed give the same weights bit for bit; another seed does not."""
    runs = [fit(epochs=1, train_images=96, seed=seed, batch_size=48, lr=1e-2) for seed in (0, 0, 1)]
    first, again, other = (run.state_dict() for run in runs)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    torch.manual_seed(0)
    assert not torch.equal(first["conv1.weight"], ShapesCNN().conv1.weight)  # it moved from seed 0's start


def test_train_saves_where_asked_and_leaves_the_shipped_weights_alone(tmp_path) -> None:
    shipped = hashlib.sha256(SHAPES_WEIGHTS_PATH.read_bytes()).hexdigest()
    threads = torch.get_num_threads()
    model, accuracy = train(epochs=1, train_images=64, out=tmp_path / "w.pt", held_out_images=50)
    assert torch.get_num_threads() == threads
    assert not model.training and 0.0 <= accuracy <= 1.0
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert hashlib.sha256(SHAPES_WEIGHTS_PATH.read_bytes()).hexdigest() == shipped
