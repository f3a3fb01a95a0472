"""The model's accuracy with parts of one layer removed: units zeroed or set to their mean, components projected
out, or any transform of the layer's output. The model itself is never changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from neuronwidgets.components import layer_components
from neuronwidgets.engine import distributed
from neuronwidgets.engine.ablate import with_units
from neuronwidgets.engine.indices import as_indices
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import ABLATION_MODES, Site
from neuronwidgets.engine.stats import OutcomeCounts

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Evaluation:
    """The model's accuracy on the probe's data, with some units of the layer replaced (or none)."""

    accuracy: float
    per_class_accuracy: np.ndarray  # (classes,), NaN for classes without images
    loss: float  # mean cross-entropy
    predictions: np.ndarray  # (images,) predicted class per image
    labels: np.ndarray  # (images,) true class per image
    ablated: tuple[int, ...]
    mode: str
    ablated_components: tuple[int, ...] = ()

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels


def _compose(steps: list[Transform]) -> Transform:
    def apply(activations: torch.Tensor) -> torch.Tensor:
        for step in steps:
            activations = step(activations)
        return activations

    return apply


def evaluate(
    site: Site,
    ablate: Any = (),
    mode: str | None = None,
    *,
    ablate_components: Any = (),
    sampling: str = "position",
    transform: Transform | None = None,
    progress: ProgressOption = False,
    cancel: CancelFlag = None,
) -> Evaluation:
    """See `Probe.evaluate`."""
    site.require_labels("evaluate()")
    units = site.check_units(ablate)
    if mode is not None and mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; valid modes: {', '.join(ABLATION_MODES)}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of the layer's output, got {type(transform).__name__}")
    picked = as_indices(ablate_components, "components", site.units, f"layer {site.layer!r}")
    unit_mode = mode or "zero"
    steps: list[Transform] = [transform] if transform is not None else []
    if picked:
        basis = layer_components(site, sampling=sampling)
        about_mean = (mode or "mean") == "mean"
        steps.append(lambda a: basis.project_out(a, picked, about_mean))
    if units:
        steps.append(partial(with_units, units=units, fill=site.fill(unit_mode)))
    ablator = site.ablator()
    counts = OutcomeCounts.zeros(1, site.num_classes)
    predictions, labels = [], []
    composed = _compose(steps) if steps else None

    def suffix(*values: torch.Tensor) -> torch.Tensor:
        return ablator.scores(list(values)) if composed is None else ablator.transformed(list(values), composed)

    for values, chunk, bar in site.crossings("evaluating", progress, cancel, merged=True):
        # ours handle each image on its own; a user's transform might not, so it gets whole chunks
        scores = site.suffix_scores(suffix, values, bar=bar) if transform is None else suffix(*values)
        assert chunk.labels is not None
        counts.count_images(chunk.labels)
        counts.add([0], scores.unsqueeze(0), chunk.labels)
        predictions.append(scores.argmax(1).cpu().numpy())
        labels.append(chunk.labels.cpu().numpy())
        bar.advance()
    predicted, truth = np.concatenate(predictions), np.concatenate(labels)
    if site.group is not None:  # every rank's counts, and its shard's predictions in image order
        counts = distributed.outcomes(site.group, counts)
        images = len(site.source)
        predicted, truth = (
            site.group.gather("predictions", predicted, images),
            site.group.gather("labels", truth, images),
        )
    return Evaluation(
        accuracy=float(counts.accuracy[0]),
        per_class_accuracy=counts.class_accuracy[0],
        loss=float(counts.mean_loss[0]),
        predictions=predicted,
        labels=truth,
        ablated=tuple(units),
        mode=unit_mode,
        ablated_components=tuple(picked),
    )
