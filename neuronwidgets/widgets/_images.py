"""Images and overlays for the widgets, computed from a probe (always on the probe's worker thread)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neuronwidgets import render
from neuronwidgets.probe import Probe


def display_images(probe: Probe, indices: Sequence[int]) -> np.ndarray:
    """uint8 (n, H, W, 3) pictures of images ``indices`` by the probe's display rule (`Probe.display`: the
    dataset's ``raw`` images, its transform's ``Normalize`` undone, or ``display=``; see
    `neuronwidgets.display`)."""
    return probe.display_images(indices)


def labels_of(probe: Probe, indices: Sequence[int]) -> list[int | None]:
    """The true class of each image, or None where the data has no labels."""
    labels = probe.source.take(indices).labels
    return [None] * len(indices) if labels is None else [int(v) for v in labels.tolist()]


def thumbnail(probe: Probe, unit: int, layer: str, colormap: str = "magma", size: int = 64) -> bytes:
    """PNG of the image that activates ``unit`` of ``layer`` most, with the unit's map over it (``size`` px
    wide)."""
    probe.site(layer).summary(progress=False)  # the pass top_images reads (cached), without a tqdm bar
    (index,) = probe.top_images(unit, k=1, layer=layer)
    image = display_images(probe, [int(index)])[0]
    amap = probe.activation_maps(unit, [int(index)], layer=layer)[0]
    tile = render.overlay(image, amap, colormap, opacity=0.55)
    scale = max(1, size // tile.shape[1])
    return render.png(np.kron(tile, np.ones((scale, scale, 1), dtype=np.uint8)))
