"""Reproducible training of the shapes demo's :class:`ShapesCNN` on generated shapes.

``python -m neuronwidgets.demo.train_shapes`` regenerates the shipped weights (``shapes_cnn.pt``). The training
images are ``shapes(n, seed=TRAIN_SEED)``, the held-out ones ``shapes(HELD_OUT_IMAGES, seed=HELD_OUT_SEED)``;
both are generated, so nothing but the weights ships. It runs on one CPU thread: the same floating-point order
on every machine, and on a shared 2-core machine a second thread made it ten times slower, not faster.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from neuronwidgets.datasets.shapes import ShapesDataset, shapes
from neuronwidgets.demo.shapes_model import HELD_OUT_IMAGES, HELD_OUT_SEED, SHAPES_WEIGHTS_PATH, TRAIN_SEED, ShapesCNN
from neuronwidgets.demo.train import fit_one_cycle

THREADS = 1


def as_tensors(dataset: ShapesDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image (N, 3, H, W) and label (N,) of ``dataset``, generated once."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])


@torch.no_grad()
def evaluate(model: ShapesCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on ``images``."""
    model.eval()
    predictions = torch.cat([model(batch).argmax(dim=1) for batch in images.split(batch_size)])
    return (predictions == labels).float().mean().item()


def fit(epochs: int, train_images: int, seed: int, batch_size: int, lr: float) -> ShapesCNN:
    """A :class:`ShapesCNN` trained with Adam on a one-cycle schedule (see `train` for the arguments)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, labels = as_tensors(shapes(train_images, seed=TRAIN_SEED))
    model = ShapesCNN()
    fit_one_cycle(model, len(images), lambda batch: (images[batch], labels[batch]), epochs, batch_size, lr, generator)
    return model.eval()


def train(
    epochs: int = 8,
    train_images: int = 16000,
    seed: int = 0,
    out: str | Path | None = None,
    batch_size: int = 64,
    lr: float = 1e-2,
    held_out_images: int = HELD_OUT_IMAGES,
) -> tuple[ShapesCNN, float]:
    """Train a :class:`ShapesCNN` and return it (in eval mode) with its accuracy on the held-out images.

    Args:
        epochs: passes over the training images.
        train_images: how many of ``shapes(n, seed=TRAIN_SEED)`` to train on.
        seed: seeds the weight initialisation and the shuffling (not the images).
        out: where to save the ``state_dict``; ``None`` saves nothing.
        batch_size: minibatch size.
        lr: peak Adam learning rate of the one-cycle schedule.
        held_out_images: how many of ``shapes(n, seed=HELD_OUT_SEED)`` to measure the accuracy on.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        model = fit(epochs, train_images, seed, batch_size, lr)
        accuracy = evaluate(model, *as_tensors(shapes(held_out_images, seed=HELD_OUT_SEED)))
    finally:
        torch.set_num_threads(threads)
    print(f"held-out accuracy {accuracy:.4f} ({held_out_images} images, seed {HELD_OUT_SEED})")
    if out is not None:
        torch.save(model.state_dict(), out)
        print(f"saved weights to {out}")
    return model, accuracy


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; by default overwrites the shipped weights."""
    parser = argparse.ArgumentParser(description="Train the neuronwidgets shapes demo CNN.")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default: 8)")
    parser.add_argument("--train-images", type=int, default=16000, help="training images (default: 16000)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    parser.add_argument("--out", type=Path, default=SHAPES_WEIGHTS_PATH, help="weights file (default: shipped)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train(epochs=args.epochs, train_images=args.train_images, seed=args.seed, out=args.out)
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
