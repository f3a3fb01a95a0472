"""Activation maps → coloured, upsampled overlays on the images → PNG bytes (matplotlib colormaps, Pillow).

Part of the widget-free core: it imports neither ipywidgets nor anywidget, so scripts can use it too.
Images here are display images: uint8 arrays (H, W, 3).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image

from neuronwidgets.display import default_pictures

# perceptually uniform maps (equal steps in value look like equal steps in colour), and grey, offered first
FIRST_COLORMAPS = ("magma", "viridis", "inferno", "plasma", "cividis", "gray")
# diverging maps for signed values (contributions), negative blue or green, zero pale, positive red or pink
DIVERGING_COLORMAPS = ("RdBu_r", "coolwarm", "bwr", "PiYG_r", "seismic")


def colormap_names() -> list[str]:
    """Every colormap matplotlib knows, sorted (reversed ``_r`` variants included): what `colormap` accepts."""
    return sorted(colormaps)


def offered_colormaps() -> tuple[list[str], list[str]]:
    """The colormaps a menu offers: `FIRST_COLORMAPS`, then the rest of matplotlib's, sorted case-blind, without
    the reversed ``_r`` variants (a menu of 180 names, half of them duplicates, helps no one)."""
    first = [name for name in FIRST_COLORMAPS if name in colormaps]
    rest = sorted((n for n in colormaps if not n.endswith("_r") and n not in first), key=str.lower)
    return first, rest


def offered_diverging_colormaps() -> list[str]:
    """The diverging colormaps a menu for signed maps offers first (`DIVERGING_COLORMAPS`)."""
    return [name for name in DIVERGING_COLORMAPS if name in colormaps]


def check_colormap(name: str) -> str:
    """``name`` if matplotlib has that colormap; a ValueError listing a few valid ones otherwise."""
    if not isinstance(name, str) or name not in colormaps:
        raise ValueError(f"unknown colormap {name!r}; valid: any of matplotlib's, e.g. viridis, magma, jet, gray")
    return name


def to_display(images: np.ndarray, minmax: bool = False) -> np.ndarray:
    """(n, C, H, W) float images → uint8 (n, H, W, 3) by the default display rule: images in [0, 1] as they are
    (unless ``minmax``), any other image min-max scaled with one min and max over all its channels, never per
    channel. 1 channel is grey; see `neuronwidgets.display` for the whole rule and for un-normalising."""
    return default_pictures(images, minmax=minmax)


def upsample(activation: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) map → (H, W) float32 by bilinear interpolation; ``size`` is (H, W)."""
    amap = Image.fromarray(np.asarray(activation, dtype=np.float32), mode="F")
    return np.asarray(amap.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float32)


def colorize(activation: np.ndarray, colormap: str = "magma", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A map as uint8 RGB (h, w, 3) through ``colormap``, with [vmin, vmax] mapped to its ends."""
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.clip((np.asarray(activation, dtype=np.float64) - vmin) / span, 0.0, 1.0)
    return colormaps[check_colormap(colormap)](scaled, bytes=True)[..., :3]


def blend(image: np.ndarray, colored: np.ndarray, opacity: float) -> np.ndarray:
    """``colored`` laid over ``image`` (uint8 (H, W, 3)) with the given opacity in [0, 1]; an RGBA ``colored``
    (H, W, 4) scales it by its own alpha per pixel (transparent pixels leave the image as it is)."""
    alpha = np.float32(np.clip(opacity, 0.0, 1.0))
    colored = np.asarray(colored)
    if colored.shape[-1] == 4:
        alpha = alpha * (colored[..., 3:].astype(np.float32) / 255.0)
        colored = colored[..., :3]
    mixed = image.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha
    return mixed.round().astype(np.uint8)


def inner(activation: np.ndarray, border: int = 1) -> np.ndarray:
    """The map without its outer ``border`` cells on each side (the ring a convolution's zero padding
    shapes), or the whole map where it is too small to have an inside."""
    h, w = activation.shape[-2:]
    if border <= 0 or h <= 2 * border or w <= 2 * border:
        return activation
    return activation[..., border : h - border, border : w - border]


def colorize_without_border(
    activation: np.ndarray, size: tuple[int, int], colormap: str, vmin: float, vmax: float, border: int = 1
) -> np.ndarray:
    """The map upsampled to ``size`` and coloured as uint8 RGBA (H, W, 4), its outer ``border`` cells fully
    transparent. The ring's values are replaced by their inner neighbours before upsampling, so they pull
    no colour into the cells next to them."""
    middle = inner(activation, border)
    if middle is activation:
        return np.dstack([colorize(upsample(activation, size), colormap, vmin, vmax), np.full(size, 255, np.uint8)])
    padded = np.pad(middle, border, mode="edge")
    colored = colorize(upsample(padded, size), colormap, vmin, vmax)
    mask = np.zeros(activation.shape, dtype=np.uint8)
    mask[border:-border, border:-border] = 255
    alpha = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST))
    return np.dstack([colored, alpha])


def fade_near_zero(colored: np.ndarray, values: np.ndarray, largest: float) -> np.ndarray:
    """``colored`` (uint8 (H, W, 3) or RGBA) as RGBA whose alpha is ``sqrt(|values| / largest)`` (clipped to 1;
    times its own alpha, if any): a signed map laid over an image hides it only where the values are large, so
    a diverging colormap's pale middle does not wash the image out where the map is about zero. The square root
    keeps values a quarter of the largest half opaque, visible beside a few large ones."""
    weight = np.sqrt(np.clip(np.abs(np.asarray(values, np.float64)) / largest, 0.0, 1.0)) if largest > 0 else 0.0
    alpha = np.broadcast_to(weight, colored.shape[:2]) * 255.0
    if colored.shape[-1] == 4:
        alpha = alpha * (colored[..., 3] / 255.0)
        colored = colored[..., :3]
    return np.dstack([colored, alpha.round().astype(np.uint8)])


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay(
    image: np.ndarray, activation: np.ndarray, colormap: str = "magma", opacity: float = 0.5, vrange=None
) -> np.ndarray:
    """One display image with the unit's map upsampled, coloured and laid over it: uint8 (H, W, 3).

    ``vrange``: (vmin, vmax) of the colour scale; default: the map's own range.
    """
    vmin, vmax = vrange if vrange is not None else (float(activation.min()), float(activation.max()))
    colored = colorize(upsample(activation, image.shape[:2]), colormap, vmin, vmax)
    return blend(image, colored, opacity)


def overlay_png(
    image: np.ndarray, activation: np.ndarray, colormap: str = "magma", opacity: float = 0.5, vrange=None
) -> bytes:
    """`overlay` as PNG bytes."""
    return png(overlay(image, activation, colormap, opacity, vrange))


def colorbar(colormap: str, width: int = 256, height: int = 12) -> np.ndarray:
    """A horizontal colour bar, low values on the left: uint8 (height, width, 3)."""
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return colorize(ramp, colormap, 0.0, 1.0)


def grid(tiles: Sequence[np.ndarray], columns: int, gap: int = 2, background: int = 255) -> np.ndarray:
    """Equal-sized uint8 (H, W, 3) tiles in a grid, row by row."""
    if not tiles:
        raise ValueError("grid needs at least one tile")
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), background, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out
