"""Class-contribution maps: where a unit's activation adds to (or takes from) one class's score.

For a layer's output A, unit c and class score S (the model's logit for the class), the map is
``A_c * dS/dA_c`` at each position of the layer. Its sum over positions is the unit's first-order (Taylor)
term for that image and class: about how much S would fall if the unit were zeroed. Positive where the unit
pushes the class up, negative where it pushes it down.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from neuronwidgets.data import as_float_images
from neuronwidgets.engine.hooks import forward_hooks, gradient_leaf
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.engine.stats import per_image_dtype


def check_target(target: Any, num_classes: int) -> int | None:
    """``target`` as a class index in ``0..num_classes-1``, or None (each image's predicted class)."""
    if target is None:
        return None
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
        raise TypeError(
            f"target must be a class index (an int in 0..{num_classes - 1}) or None for each image's predicted "
            f"class, got {target!r} ({type(target).__name__})"
        )
    if not 0 <= target < num_classes:
        raise ValueError(
            f"target must be a class index in 0..{num_classes - 1} (the model has {num_classes} outputs) or None "
            f"for each image's predicted class, got {target}"
        )
    return int(target)


def products(site: Site, images: torch.Tensor, target: int | None) -> torch.Tensor:
    """``A * dS/dA`` for every unit, (N, units, *spatial) in the model's dtype, for images on the model's
    device; S is class ``target``'s score of each image (None: the class the model predicts for it).

    Gradients are taken with respect to the activation only (the parameters' ``.grad`` are never touched),
    and the graph starts at the layer: memory is that of the network's tail. Each image's score depends on
    its own activation only (eval mode), so one backward pass of the summed scores gives every image's
    gradient. Run inside ``site.running()``.
    """
    held: list[torch.Tensor] = []

    try:
        with forward_hooks([(site.module, gradient_leaf(held))]):
            scores = site.model(images)
        classes = scores.detach().argmax(1) if target is None else torch.full_like(scores[:, 0], target).long()
        chosen = scores.gather(1, classes[:, None]).sum()
    finally:
        torch.set_grad_enabled(False)
    if not held:
        raise RuntimeError(f"layer {site.layer!r} did not run during the forward pass")
    try:
        (grad,) = torch.autograd.grad(chosen, held[:1], allow_unused=True)
    except RuntimeError as err:  # e.g. an in-place op after the layer overwrote a value the backward pass needs
        raise RuntimeError(
            f"contribution maps need the gradient of the class score with respect to layer {site.layer!r}'s "
            f"output, which autograd could not compute through the rest of the model: {err}"
        ) from err
    activation = held[0].detach()
    return activation * grad if grad is not None else torch.zeros_like(activation)  # None: the score ignores it


def maps(site: Site, unit: int, images: torch.Tensor, target: int | None) -> np.ndarray:
    """(n, h, w) float32 contribution maps of ``unit`` for a batch of images (N, C, H, W) or one image
    (C, H, W), run in chunks of the data's chunk size; a layer without positions gives (n, 1, 1)."""
    batch = as_float_images(images.unsqueeze(0) if images.ndim == 3 else images)
    parts = []
    with site.running():
        for start in range(0, len(batch), site.source.chunk_size):
            part = batch[start : start + site.source.chunk_size].to(site.device, site.dtype)
            parts.append(site.sliced("contribution", lambda x: products(site, x, target)[:, unit], part))
    result = torch.cat(parts).float().cpu().numpy()
    return result.reshape(-1, 1, 1) if result.ndim == 1 else result


def totals(site: Site, target: int | None, progress: ProgressOption = None, cancel: CancelFlag = None) -> np.ndarray:
    """(images, units): each unit's contribution map summed over positions, for every image of the data,
    i.e. its first-order term for class ``target`` (None: each image's predicted class). One forward and
    backward pass per chunk gives every unit at once; cached per layer, class and model version."""

    def per_image(images: torch.Tensor) -> torch.Tensor:
        product = products(site, images, target)
        return product.reshape(product.shape[0], product.shape[1], -1).double().sum(2)

    def compute() -> np.ndarray:
        parts = []
        with site.running():
            for chunk, bar in site.chunks(f"contributions {site.layer}", progress, cancel):
                parts.append(site.sliced("contribution totals", per_image, chunk.images, bar=bar).cpu())
                bar.advance()
        return torch.cat(parts).to(per_image_dtype(site.dtype)).numpy()

    return site.cached(("contribution totals", target), compute)
