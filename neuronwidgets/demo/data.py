"""Held-out digits for the demo, and the preprocessing shared with training.

The images are scikit-learn's bundled 8x8 ``load_digits`` set (pixel values 0..16).
Only the held-out test split ships with the package, in ``digits_test.npz``, so
nothing here needs scikit-learn or a download at run time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

TEST_SPLIT_PATH = Path(__file__).with_name("digits_test.npz")
"""Shipped test split, written by ``python -m neuronwidgets.demo.train``."""

CLASSES: list[str] = [str(d) for d in range(10)]
"""Class names; index ``i`` is the digit ``i``."""

IMAGE_SIZE = 32
"""Side of the (square) model input, in pixels."""

# Mean and std of all pixels of the TRAIN split after scaling to [0, 1] and bilinear
# upsampling to 32x32 (i.e. of ``to_unit_range(train_images)``), rounded to 4 decimals:
# load_digits(), train_test_split(test_size=0.2, random_state=0, stratify=labels).
# tests/test_demo.py recomputes them when scikit-learn is available.
MEAN = 0.3054
STD = 0.3237


def to_unit_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Scale (N, 8, 8) images with values 0..16 to float32 [0, 1] and upsample to (N, 1, 32, 32).

    Bilinear interpolation is a convex combination of pixels, so the result stays in [0, 1].
    """
    x = torch.as_tensor(np.asarray(images)).to(torch.float32).div(16.0).unsqueeze(1)
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Standardise [0, 1] images with the fixed train-split :data:`MEAN` and :data:`STD`."""
    return (x - MEAN) / STD


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn raw (N, 8, 8) digits (0..16) into normalised (N, 1, 32, 32) float32 model inputs."""
    return normalize(to_unit_range(images))


class DigitsDataset(Dataset):
    """Preprocessed digits with their labels, kept whole in memory (the set is tiny).

    Attributes:
        images: (N, 1, 32, 32) float32 normalised model inputs.
        labels: (N,) int64 class indices.
        raw: (N, 1, 32, 32) float32 un-normalised images in [0, 1], for display.
        classes: class names, ``["0", ..., "9"]``.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> None:
        """Build from raw (N, 8, 8) images with values 0..16 and (N,) integer labels."""
        self.classes = list(CLASSES)
        self.raw = to_unit_range(images)
        self.images = normalize(self.raw)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    @classmethod
    def from_npz(cls, path: str | Path = TEST_SPLIT_PATH) -> DigitsDataset:
        """Load a split saved by the training script (keys ``images`` and ``labels``)."""
        with np.load(path) as data:
            return cls(data["images"], data["labels"])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
