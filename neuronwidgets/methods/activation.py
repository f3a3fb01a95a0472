"""Mean activation: how strongly a unit responds on average (a cheap baseline, no labels needed)."""

from __future__ import annotations

import numpy as np

from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking


def rank(
    site: Site, *, target: int | None = None, progress: ProgressOption = None, cancel: CancelFlag = None
) -> Ranking:
    """Mean activation of the unit over images and positions; over class ``target``'s images if given.

    Needs one forward pass up to the layer (shared with `selectivity` and `top_images`).
    """
    summary = site.summary(progress=progress, cancel=cancel)
    images = summary.image_mean
    if target is not None:
        assert summary.labels is not None
        site.require_class(target, np.bincount(summary.labels, minlength=site.num_classes))
        images = images[summary.labels == target]
    return Ranking(
        scores=images.astype("float64").mean(0),
        method="activation",
        layer=site.layer,
        target=target,
        meta={"variance": summary.variance, "images_used": len(images)},
    )
