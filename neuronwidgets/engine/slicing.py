"""A chunk's work in slices short enough that a click waiting for the model is served within a fraction of a
second: a 128-image chunk of ResNet-18 at 224x224 is 7 s on two cores, one of ResNet-50 about 40 s.

Slices are sized by timing them as they run (`Pace`), and they are exact only where the work handles each image
on its own, which `outputs_match` checks (e.g. not a model that normalises over its batch).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

SLICE_SECONDS = 0.25  # the longest a click should wait for a long pass to reach its next yield point
FIRST_SLICE = 2  # images in the first slice of work whose speed is not known yet
CHECK_IMAGES = 2  # the exactness check compares these images at once with the first one and the rest

Output = torch.Tensor | Sequence[torch.Tensor]


class Pace:
    """Seconds per image of one kind of work, from its last timed slice; how many images fit in one slice."""

    def __init__(self, seconds: float | None = None, per_image: float | None = None) -> None:
        """``per_image``: an estimate of the work's seconds per image to start from (None: unknown)."""
        self.seconds = SLICE_SECONDS if seconds is None else seconds
        self.per_image = per_image

    def size(self, left: int) -> int:
        """Images for the next slice, at most ``left``: `FIRST_SLICE` until a slice has been timed."""
        if self.per_image is None:
            return min(left, FIRST_SLICE)
        if self.per_image <= 0:
            return left
        fits = self.seconds / self.per_image
        return left if fits >= left else max(1, int(fits))

    def timed(self, work: Callable[..., Output], batches: Sequence[torch.Tensor]) -> Output:
        """``work(*batches)``, noting its seconds per image (of the batches' first dimension)."""
        start = time.perf_counter()
        result = work(*batches)
        self.per_image = (time.perf_counter() - start) / max(1, batches[0].shape[0])
        return result


def concat(parts: list[Output]) -> Output:
    """The slices' outputs joined along the image dimension (a tensor, or a list or tuple of tensors)."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)  # type: ignore[arg-type]
    joined = [torch.cat(column) for column in zip(*parts)]
    return tuple(joined) if isinstance(first, tuple) else joined


def outputs_match(whole: Output, parts: Output) -> bool:
    """Whether two outputs have the same shapes and agree up to the rounding of a different batch size."""
    xs = [whole] if isinstance(whole, torch.Tensor) else list(whole)
    ys = [parts] if isinstance(parts, torch.Tensor) else list(parts)
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        scale = float(x.abs().max()) if x.numel() else 0.0
        if not torch.allclose(x, y, rtol=1e-4, atol=1e-4 * scale, equal_nan=True):
            return False
    return True


def is_per_image(value: torch.Tensor, images: int) -> bool:
    """Whether ``value`` holds one entry per image (its first dimension is the number of ``images``); other
    values of a pass are shared by every image and passed whole."""
    return bool(value.ndim) and value.shape[0] == images


def rows_of(values: Sequence[torch.Tensor], rows: slice) -> list[torch.Tensor]:
    """``values`` restricted to the images in ``rows``: those whose first dimension is the first value's
    (the images'); the others are shared by every image and passed whole."""
    n = values[0].shape[0]
    if rows == slice(0, n):
        return list(values)
    return [v[rows] if is_per_image(v, n) else v for v in values]


def slices_exact(work: Callable[..., Output], batches: Sequence[torch.Tensor]) -> bool:
    """Whether ``work`` gives the same output for `CHECK_IMAGES` images at once as for the first one and the
    rest (so it scores each image on its own, and its outputs all have the images as their first dimension)."""
    k = min(CHECK_IMAGES, batches[0].shape[0])
    try:
        whole = work(*rows_of(batches, slice(0, k)))
        parts = concat([work(*rows_of(batches, slice(0, 1))), work(*rows_of(batches, slice(1, k)))])
    except RuntimeError:  # e.g. a value with a first dimension of the images' size by chance, or an output
        return False  # whose first dimension is not the images'
    return outputs_match(whole, parts)
