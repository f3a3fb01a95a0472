"""Class selectivity index (Morcos et al. 2018), as used by Zhou et al. 2018."""

from __future__ import annotations

import numpy as np

from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking


def class_means(image_mean: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, units) mean over each class's images of the units' spatially averaged activation;
    NaN rows for classes without images."""
    sums = np.zeros((classes, image_mean.shape[1]))
    np.add.at(sums, labels, image_mean.astype(np.float64))
    counts = np.bincount(labels, minlength=classes)[:, None]
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def rank(
    site: Site, *, target: int | None = None, progress: ProgressOption = None, cancel: CancelFlag = None
) -> Ranking:
    """Class selectivity index: (mean on the preferred class - mean on the others) / (their sum).

    Uses each unit's spatially averaged activation; ``m_k`` is its mean over the images of class k. The
    preferred class is the one with the largest ``m_k`` or, with ``target``, class ``target``. Dead units
    (0/0) score 0. The index lies in [-1, 1] only for non-negative activations: read it at a
    post-ReLU site (``meta["negative_mean_activation"]`` flags a negative mean on some image).
    """
    summary = site.summary(progress=progress, cancel=cancel)
    assert summary.labels is not None
    means = class_means(summary.image_mean, summary.labels, site.num_classes)
    present = ~np.isnan(means[:, 0])
    if present.sum() < 2:
        raise ValueError("selectivity needs images of at least two classes")
    site.require_class(target, present)
    m = means[present]
    preferred = np.argmax(m, axis=0) if target is None else np.full(m.shape[1], int(present[:target].sum()))
    top = m[preferred, np.arange(m.shape[1])]
    others = (m.sum(0) - top) / (m.shape[0] - 1)
    denominator = top + others
    with np.errstate(invalid="ignore", divide="ignore"):
        index = np.where(denominator != 0, (top - others) / denominator, 0.0)
    return Ranking(
        scores=index,
        method="selectivity",
        layer=site.layer,
        target=target,
        meta={
            "preferred_class": np.flatnonzero(present)[preferred],
            "class_means": means,
            "negative_mean_activation": bool((summary.image_mean < 0).any()),
        },
    )
