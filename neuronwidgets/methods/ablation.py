"""Single-unit ablation (Zhou et al. 2018; the one-shot index of CAR): the accuracy lost when a unit is removed."""

from __future__ import annotations

import numpy as np

from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking


def rank(
    site: Site,
    *,
    target: int | None = None,
    mode: str = "zero",
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Ranking:
    """Accuracy drop when the unit is zeroed (or set to its mean map); per class with ``target``.

    Score: ``acc(model) - acc(model with the unit replaced)``, over all images or, with ``target=k``, over
    the images of class k. Ties (common: accuracy moves in steps of 1/N) are ordered by the increase in
    mean cross-entropy. ``meta["drop_matrix"]`` holds the accuracy drop of every unit on every class.
    Cost: one pass for the cut, then one re-run per unit of only what follows the layer.
    """
    base, per_unit = site.ablation_outcomes(mode=mode, progress=progress, cancel=cancel)
    class_drop = base.class_accuracy[0] - per_unit.class_accuracy
    overall_drop = base.accuracy[0] - per_unit.accuracy
    loss_increase = per_unit.mean_loss - base.mean_loss[0]
    site.require_class(target, base.images)
    scores = overall_drop if target is None else class_drop[:, target]
    with np.errstate(invalid="ignore"):
        max_class_drop = np.nanmax(class_drop, axis=1) if np.isfinite(class_drop).any() else class_drop[:, 0]
    return Ranking(
        scores=scores,
        tiebreak=loss_increase,
        method="ablation",
        layer=site.layer,
        target=target,
        meta={
            "mode": mode,
            **site.ablator().describe(),
            "base_accuracy": float(base.accuracy[0]),
            "base_class_accuracy": base.class_accuracy[0],
            "ablated_accuracy": per_unit.accuracy,
            "drop_matrix": class_drop,
            "max_class_drop": max_class_drop,
            "loss_increase": loss_increase,
            "class_images": base.images,
        },
    )
