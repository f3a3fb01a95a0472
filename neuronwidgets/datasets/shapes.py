"""Images of one coloured shape on a grey background, with a per-pixel mask of every concept in them.

Each image has one shape (its label), one colour and one background texture, at a random position and size,
with a little pixel noise. Every image is made from ``(seed, index)`` alone, when it is asked for: a dataset
of any size costs no memory, and image ``i`` is the same on every machine and in every worker of a DataLoader.
The concepts are plain names: the shapes ("circle", ...), the colours ("red", ...) and the background textures
("plain", "stripes", "dots"). A shape's and its colour's masks are the shape's pixels; the texture's mask is
the rest. The background is grey, so colour belongs to the shape alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (0.86, 0.14, 0.12),
    "green": (0.16, 0.66, 0.20),
    "blue": (0.14, 0.30, 0.88),
    "yellow": (0.95, 0.84, 0.12),
}
TEXTURES = ("plain", "stripes", "dots")
NOISE = 0.03  # standard deviation of the pixel noise
MIN_SIZE = 16


@dataclass(frozen=True)
class Scene:
    """What image ``index`` shows: its shape (the label), colour and texture, and the shape's mask."""

    index: int
    shape: str
    colour: str
    texture: str
    mask: np.ndarray  # (H, W) bool: the shape's pixels


class ShapesDataset(Dataset):
    """``n`` generated images (3, size, size) float32 in [0, 1], labelled by their shape (`SHAPES`)."""

    def __init__(self, n: int, seed: int = 0, size: int = 32) -> None:
        for name, value, least in (("n", n, 1), ("size", size, MIN_SIZE)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"shapes: {name} must be an integer of at least {least}, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"shapes: seed must be a non-negative integer, got {seed!r}")
        self.n, self.seed, self.size = int(n), int(seed), int(size)
        self.classes = list(SHAPES)
        self.concepts = [*SHAPES, *COLOURS, *TEXTURES]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, scene = self._draw(index)
        return torch.from_numpy(image), SHAPES.index(scene.shape)

    def scene(self, index: int) -> Scene:
        """The shape, colour and texture of image ``index``, and the shape's mask."""
        return self._draw(index)[1]

    def concept_masks(self, index: int) -> dict[str, np.ndarray]:
        """``{concept: (H, W) bool}`` for every concept (`concepts`); those not in image ``index`` are empty."""
        scene = self.scene(index)
        empty = np.zeros_like(scene.mask)
        masks = {name: empty for name in self.concepts}
        masks[scene.shape] = masks[scene.colour] = scene.mask
        masks[scene.texture] = ~scene.mask
        return masks

    def _draw(self, index: int) -> tuple[np.ndarray, Scene]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"shapes: an image index must be an integer, got {type(index).__name__}")
        if not -self.n <= index < self.n:
            raise IndexError(f"shapes: image {index} is out of range; the dataset has {self.n} images")
        index = int(index) % self.n
        rng = np.random.default_rng([self.seed, index])
        shape, colour, texture = (rng.choice(names) for names in (SHAPES, list(COLOURS), TEXTURES))
        size = self.size
        radius = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(radius + 1, size - radius - 1, 2)
        mask = _shape_mask(str(shape), size, cx, cy, radius)
        image = np.repeat(_background(str(texture), size, rng)[None], 3, axis=0)
        image[:, mask] = np.asarray(COLOURS[str(colour)], np.float32)[:, None]
        image += rng.normal(0.0, NOISE, image.shape).astype(np.float32)
        scene = Scene(index, str(shape), str(colour), str(texture), mask)
        return np.clip(image, 0.0, 1.0, out=image), scene


def shapes(n: int, seed: int = 0, size: int = 32) -> ShapesDataset:
    """``n`` generated images of coloured shapes with their concept masks (`ShapesDataset`)."""
    return ShapesDataset(n, seed=seed, size=size)


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """The pixels (by their centres) of ``shape`` centred at (cx, cy), ``r`` about half its extent."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (dx <= 0.85 * r) & (dy <= 0.85 * r)
    if shape == "triangle":  # pointing up, its base at the bottom
        top = cy - r
        return (y >= top) & (y <= cy + r) & (dx <= (y - top) / np.sqrt(3))
    assert shape == "cross"
    arm = r / 3
    return ((dx <= arm) & (dy <= r)) | ((dy <= arm) & (dx <= r))


def _background(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) grey background: flat, striped at a random angle and period, or dotted."""
    level = rng.uniform(0.25, 0.55)
    if texture == "plain":
        return np.full((size, size), level, np.float32)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if texture == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 8)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period
        return (level + 0.18 * np.sign(np.sin(phase))).astype(np.float32)
    assert texture == "dots"
    background = np.full((size, size), level, np.float32)
    for cx, cy in rng.uniform(0, size, (size // 2, 2)):
        background[(x - cx) ** 2 + (y - cy) ** 2 <= 1.5**2] = level + 0.25
    return background
