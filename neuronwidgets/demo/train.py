"""Reproducible training of the demo :class:`DigitsCNN` on scikit-learn's digits.

``python -m neuronwidgets.demo.train`` regenerates the shipped weights (``digits_cnn.pt``)
and held-out split (``digits_test.npz``). Unlike the rest of the demo this needs
scikit-learn, for ``load_digits`` and the stratified split.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .data import TEST_SPLIT_PATH, DigitsDataset, normalize
from .model import WEIGHTS_PATH, DigitsCNN

SPLIT_SEED = 0
"""``random_state`` of the train/test split; fixed so the shipped split and MEAN/STD never move."""

TEST_SIZE = 0.2
"""Fraction of the 1797 digits held out for testing."""

MAX_SHIFT = 2
"""Largest random translation, in pixels of the 32x32 input, used as augmentation."""


class DigitsSplit(NamedTuple):
    """All raw digits (uint8 0..16 images, int64 labels) and the indices of each split."""

    images: np.ndarray
    labels: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray


def split_digits() -> DigitsSplit:
    """Load scikit-learn's bundled digits and make the fixed stratified train/test split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(
            "Training the digits demo needs scikit-learn (pip install scikit-learn); "
            "loading the shipped demo with neuronwidgets.demo.load() does not."
        ) from exc
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    train_indices, test_indices = train_test_split(
        np.arange(len(labels)), test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
    )
    return DigitsSplit(digits.images.astype(np.uint8), labels, train_indices, test_indices)


def save_test_split(split: DigitsSplit, path: str | Path) -> None:
    """Write the test images and labels, plus how the split was made, to a compressed npz."""
    np.savez_compressed(
        path,
        images=split.images[split.test_indices],
        labels=split.labels[split.test_indices],
        train_indices=split.train_indices,
        test_indices=split.test_indices,
        split_seed=np.int64(SPLIT_SEED),
        test_size=np.float64(TEST_SIZE),
    )


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each (C, H, W) image of a batch by up to ``max_shift`` pixels, filling with 0.

    Meant for un-normalised [0, 1] images, where 0 is the background.
    """
    _, _, h, w = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator).tolist()
    return torch.stack([img[:, dy : dy + h, dx : dx + w] for img, (dy, dx) in zip(padded, offsets)])


@torch.no_grad()
def evaluate(model: DigitsCNN, dataset: DigitsDataset) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on the whole ``dataset``."""
    model.eval()
    predictions = model(dataset.images).argmax(dim=1)
    return (predictions == dataset.labels).float().mean().item()


def fit_one_cycle(
    model: torch.nn.Module,
    samples: int,
    batch: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> None:
    """Train ``model`` with Adam on a one-cycle schedule (peak ``lr``): each epoch visits the ``samples`` in an
    order drawn from ``generator``, ``batch(indices)`` giving a minibatch's inputs and labels; prints each
    epoch's mean training loss. Shared by both demo models' training."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-samples // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    for epoch in range(epochs):
        model.train()
        total_loss = 0.0
        for indices in torch.randperm(samples, generator=generator).split(batch_size):
            inputs, labels = batch(indices)
            loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(indices)
        print(f"epoch {epoch + 1}/{epochs}  train loss {total_loss / samples:.4f}")


def train(
    epochs: int = 20,
    seed: int = 0,
    out: str | Path | None = None,
    test_out: str | Path | None = None,
    max_train_samples: int | None = None,
    batch_size: int = 64,
    lr: float = 1e-2,
) -> tuple[DigitsCNN, float]:
    """Train a :class:`DigitsCNN` on the train split and return it (in eval mode) with its test accuracy.

    Args:
        epochs: passes over the training samples.
        seed: seeds the weight initialisation, shuffling and augmentation (not the split).
        out: where to save the ``state_dict``; ``None`` saves nothing.
        test_out: where to write the test split npz; ``None`` writes nothing.
        max_train_samples: train on a seeded random subset of this size (for quick tests).
        batch_size: minibatch size.
        lr: peak Adam learning rate of the one-cycle schedule.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    split = split_digits()
    train_indices = split.train_indices
    if max_train_samples is not None:
        keep = torch.randperm(len(train_indices), generator=generator)[:max_train_samples]
        train_indices = train_indices[keep.numpy()]
    train_set = DigitsDataset(split.images[train_indices], split.labels[train_indices])
    test_set = DigitsDataset(split.images[split.test_indices], split.labels[split.test_indices])

    model = DigitsCNN()

    def shifted(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(random_shift(train_set.raw[batch], MAX_SHIFT, generator)), train_set.labels[batch]

    fit_one_cycle(model, len(train_set), shifted, epochs, batch_size, lr, generator)
    accuracy = evaluate(model, test_set)
    print(f"test accuracy {accuracy:.4f} ({len(test_set)} held-out digits)")
    if out is not None:
        torch.save(model.state_dict(), out)
        print(f"saved weights to {out}")
    if test_out is not None:
        save_test_split(split, test_out)
        print(f"saved test split to {test_out}")
    return model, accuracy


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; by default overwrites the shipped weights and test split."""
    parser = argparse.ArgumentParser(description="Train the neuronwidgets digits demo CNN.")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="weights file (default: shipped)")
    parser.add_argument("--test-out", type=Path, default=TEST_SPLIT_PATH, help="test npz (default: shipped)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train(epochs=args.epochs, seed=args.seed, out=args.out, test_out=args.test_out)
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
