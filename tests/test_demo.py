"""Tests for the bundled digits demo (model, shipped weights and test split, training script)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neuronwidgets.demo import CLASSES, DigitsCNN, DigitsDataset, load
from neuronwidgets.demo.data import MEAN, STD, TEST_SPLIT_PATH, to_unit_range
from neuronwidgets.demo.model import WEIGHTS_PATH


@pytest.fixture(scope="module")
def demo() -> tuple[DigitsCNN, DigitsDataset]:
    return load()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_load_does_not_import_sklearn() -> None:
    code = (
        "import sys\n"
        "from neuronwidgets.demo import load\n"
        "load()\n"
        "assert 'sklearn' not in sys.modules, 'sklearn was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_dataset_shapes_dtypes_and_classes(demo: tuple[DigitsCNN, DigitsDataset]) -> None:
    _, dataset = demo
    n = len(dataset)
    assert n == 360
    assert dataset.images.shape == (n, 1, 32, 32) and dataset.images.dtype == torch.float32
    assert dataset.labels.shape == (n,) and dataset.labels.dtype == torch.int64
    assert dataset.raw.shape == (n, 1, 32, 32) and dataset.raw.dtype == torch.float32
    assert dataset.raw.min() >= 0.0 and dataset.raw.max() <= 1.0
    assert torch.allclose(dataset.images, (dataset.raw - MEAN) / STD)
    assert dataset.classes == CLASSES == [str(d) for d in range(10)]
    # Stratified split: every class is held out in roughly equal numbers.
    assert torch.bincount(dataset.labels, minlength=10).min() >= 35

    image, label = dataset[0]
    assert image.shape == (1, 32, 32)
    assert type(label) is int and 0 <= label < 10


def test_model_layout(demo: tuple[DigitsCNN, DigitsDataset]) -> None:
    model, _ = demo
    names = [name for name, _ in model.named_children()]
    assert names == [
        "conv1", "bn1", "relu1", "pool1",
        "conv2", "bn2", "relu2", "pool2",
        "conv3", "bn3", "relu3", "pool3",
        "fc",
    ]  # fmt: skip
    assert model.relu1.inplace and not model.relu2.inplace and not model.relu3.inplace
    assert not model.training
    assert all(not m.training for m in model.modules())


def test_shipped_model_accuracy(demo: tuple[DigitsCNN, DigitsDataset]) -> None:
    model, dataset = demo
    with torch.no_grad():
        logits = model(dataset.images)
    assert logits.shape == (len(dataset), 10)
    accuracy = (logits.argmax(dim=1) == dataset.labels).float().mean().item()
    assert accuracy >= 0.95


def test_shipped_files_are_small() -> None:
    assert WEIGHTS_PATH.stat().st_size < 1_000_000
    assert TEST_SPLIT_PATH.stat().st_size < 100_000


def test_normalisation_constants_match_train_split() -> None:
    pytest.importorskip("sklearn")
    from neuronwidgets.demo.train import split_digits

    split = split_digits()
    pixels = to_unit_range(split.images[split.train_indices]).double()
    assert pixels.mean().item() == pytest.approx(MEAN, abs=1e-4)
    assert pixels.std().item() == pytest.approx(STD, abs=1e-4)


def test_train_short_run_leaves_shipped_files_alone(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from neuronwidgets.demo.train import train

    shipped = {path: _sha256(path) for path in (WEIGHTS_PATH, TEST_SPLIT_PATH)}
    weights, test_split = tmp_path / "w.pt", tmp_path / "t.npz"
    model, accuracy = train(epochs=1, max_train_samples=128, out=weights, test_out=test_split)

    assert isinstance(model, DigitsCNN) and not model.training
    assert 0.0 <= accuracy <= 1.0
    assert {path: _sha256(path) for path in shipped} == shipped

    reloaded = DigitsCNN()
    reloaded.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    # The split is fixed, so the regenerated npz matches the shipped one exactly.
    with np.load(test_split) as new, np.load(TEST_SPLIT_PATH) as old:
        assert sorted(new.files) == sorted(old.files)
        for key in old.files:
            np.testing.assert_array_equal(new[key], old[key])
