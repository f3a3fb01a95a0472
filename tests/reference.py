"""Independent brute-force references: plain forward hooks on the full model, numpy for statistics."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def layer_output(model: nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    """The layer's output, read by a hook on a full forward pass (cloned before in-place ops run)."""
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return seen[0]


def scores_with(model: nn.Module, layer: str, images: torch.Tensor, units: list[int], fill: torch.Tensor):
    """Class scores of the full model with ``units`` of ``layer`` overwritten by ``fill``."""

    def hook(module, inputs, output):
        output = output.clone()
        output[:, units] = fill[units]
        return output

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(images)
    finally:
        handle.remove()


def fill_for(model, layer, images, mode):
    out = layer_output(model, layer, images)
    return torch.zeros_like(out[0]) if mode == "zero" else out.mean(0)


def ablation_table(model, layer, images, labels, mode="zero", units=None):
    """(base scores, per-unit scores (units, N, classes)) by the naive loop."""
    fill = fill_for(model, layer, images, mode)
    with torch.no_grad():
        base = model(images)
    units = range(fill.shape[0]) if units is None else units
    return base, torch.stack([scores_with(model, layer, images, [u], fill) for u in units])


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float((scores.argmax(-1) == labels).double().mean())


def class_accuracy(scores: torch.Tensor, labels: torch.Tensor, classes: int) -> np.ndarray:
    hits = (scores.argmax(-1) == labels).numpy()
    out = np.full(classes, np.nan)
    for k in range(classes):
        if (labels == k).any():
            out[k] = hits[(labels == k).numpy()].mean()
    return out


def taylor(model, layer, images, labels):
    """|mean(A * dL/dA)| per unit, normalised, with retain_grad on a hooked output of a copy of the model."""
    import copy

    model = copy.deepcopy(model)
    held = []

    def hook(module, inputs, output):
        output = output.clone()  # a fresh non-leaf: in-place ops after the layer act on this clone's users
        output.retain_grad()
        held.append(output)
        return output * 1.0

    handle = model.get_submodule(layer).register_forward_hook(hook)
    loss = F.cross_entropy(model(images), labels, reduction="sum")
    loss.backward()
    handle.remove()
    a, g = held[0].detach(), held[0].grad
    raw = (a * g).transpose(0, 1).reshape(a.shape[1], -1).mean(1).abs().numpy()
    return raw / np.linalg.norm(raw)


def selectivity(activations: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Morcos et al.'s index from (N, units, ...) activations, by explicit loops."""
    means = activations.reshape(activations.shape[0], activations.shape[1], -1).mean(2)
    classes = sorted(set(labels.tolist()))
    out = []
    for u in range(means.shape[1]):
        per_class = [means[labels == k, u].mean() for k in classes]
        best = max(per_class)
        rest = (sum(per_class) - best) / (len(per_class) - 1)
        out.append(0.0 if best + rest == 0 else (best - rest) / (best + rest))
    return np.array(out)
