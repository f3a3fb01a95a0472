"""Single-unit ablation (Zhou et al. 2018; the one-shot index of CAR): the accuracy lost when a unit is removed.

Exact by default. With ``top=`` or ``fraction=`` it runs on a seeded random share of the images, with
confidence intervals that hold for sampling without replacement (`engine.progressive`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np

from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.engine.progressive import FIRST_ROUND, Estimate, ProgressiveAblation
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking

INTERVAL_METHOD = (
    "hedged betting confidence sequence for sampling without replacement (Waudby-Smith and Ramdas 2020), "
    "valid at every look"
)
ESTIMATE_METHOD = (
    "each unit's mean drop pulled toward the drop its loss increase predicts, by its sampling noise (empirical "
    "Bayes), within the interval; the plain mean is drop_unbiased"
)


def rank(
    site: Site,
    *,
    target: int | None = None,
    mode: str = "zero",
    top: int | None = None,
    fraction: float | None = None,
    confidence: float = 0.95,
    tolerance: float = 0.0,
    seed: int | None = 0,
    update: Callable[[Ranking], None] | None = None,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Ranking:
    """Accuracy drop when the unit is zeroed (or set to its mean map); per class with ``target``.

    Score: ``acc(model) - acc(model with the unit replaced)``, over all images or, with ``target=k``, over
    the images of class k. Ties (common: accuracy moves in steps of 1/N) are ordered by the increase in
    mean cross-entropy. ``meta["drop_matrix"]`` holds the accuracy drop of every unit on every class.
    Cost: one pass for the cut, then one re-run per unit of only what follows the layer.

    Sampled instead of exact:

    - ``top=k``: settle the k units with the largest drops, spending images only on units whose place is
      still in question. The declared set (``meta["top_set"]``) has, with probability ``confidence``, every
      unit's drop within ``tolerance`` (a fraction: 0.01 is one point) of the k-th largest.
    - ``fraction=f``: every unit on a random share ``f`` of the images, with intervals (with ``top``: at most
      that share).

    Images are taken in an order fixed by ``seed`` (``seed=None``: a fresh one; ``meta["seed"]`` says which).
    ``meta["intervals"]`` holds each drop's interval at ``confidence``: for every unit at once with ``top``, for
    each unit on its own otherwise. The scores are
    each unit's mean drop on its images pulled toward what its loss increase predicts, by how noisy that mean
    still is (`engine.progressive.shrunk_drops`: the order is right far sooner), kept within the interval;
    ``meta["drop_unbiased"]`` holds the plain means.
    ``meta["exact"]`` says whether every image was seen (then the scores are the exact ones).
    ``update`` receives the ranking so far after each round of images.
    """
    _check_sampling(site, top, fraction, confidence, tolerance, seed, update)
    if top is None and fraction is None:
        return _exact(site, target, mode, progress, cancel)
    site.require_labels("ablation")
    limit_share = 1.0 if fraction is None else float(fraction)
    steps = len(site.source) * (1 + site.units * limit_share)  # an adaptive run, or one class, ends sooner
    with Progress.within(f"ablating {site.layer} (sampled)", math.ceil(steps), progress, cancel) as bar:
        sampler = ProgressiveAblation(
            site,
            mode=mode,
            target=target,
            confidence_level=confidence,
            seed=seed,
            simultaneous=top is not None,
            bar=bar,
        )
        if not sampler.independent():
            ranking = _exact(site, target, mode, bar, cancel)
            ranking.meta["engine_note"] = (
                f"{ranking.meta['engine_note']}; so every image was used: taking images in a random order "
                "would change their outcomes"
            )
            return ranking
        limit = max(1, math.ceil(limit_share * sampler.population))
        options = {"top": top, "fraction": fraction, "confidence": confidence, "tolerance": tolerance, "seed": seed}

        def look(estimate: Estimate) -> None:
            if update is not None:
                update(_sampled_ranking(site, sampler, estimate, target, mode, options))

        estimate = sampler.run(top=top, tolerance=float(tolerance), limit=limit, on_look=look)
    return _sampled_ranking(site, sampler, estimate, target, mode, options)


def estimate_first(site: Site) -> bool:
    """Whether a sampled ranking's first estimate (every unit on `FIRST_ROUND` images) costs no more than a
    Taylor pass over all the images (a forward and a backward pass, about three forward passes): then the
    widgets show it first instead of Taylor. Where the layer is wide and the network after it is most of the
    network (a middle layer of a ResNet-50 on a thousand images), Taylor comes sooner."""
    first_round = site.units * FIRST_ROUND * site.unit_work_share()
    return first_round <= 3 * len(site.source)


def _exact(
    site: Site, target: int | None, mode: str, progress: ProgressOption | Progress, cancel: CancelFlag
) -> Ranking:
    base, per_unit = site.ablation_outcomes(mode=mode, progress=progress, cancel=cancel)
    class_drop = base.class_accuracy[0] - per_unit.class_accuracy
    overall_drop = base.accuracy[0] - per_unit.accuracy
    loss_increase = per_unit.mean_loss - base.mean_loss[0]
    site.require_class(target, base.images)
    scores = overall_drop if target is None else class_drop[:, target]
    population = int(base.images.sum() if target is None else base.images[target])
    return Ranking(
        scores=scores,
        tiebreak=loss_increase,
        method="ablation",
        layer=site.layer,
        target=target,
        meta={
            "mode": mode,
            **site.ablator().describe(),
            "exact": True,
            "intervals": np.stack([scores, scores], axis=1),
            "images_used": np.full(site.units, population),
            "base_accuracy": float(base.accuracy[0]),
            "base_class_accuracy": base.class_accuracy[0],
            "ablated_accuracy": per_unit.accuracy,
            "drop_matrix": class_drop,
            "max_class_drop": _max_class_drop(class_drop),
            "loss_increase": loss_increase,
            "class_images": base.images,
        },
    )


def _sampled_ranking(
    site: Site,
    sampler: ProgressiveAblation,
    estimate: Estimate,
    target: int | None,
    mode: str,
    options: dict,
) -> Ranking:
    base_accuracy, base_class_accuracy, class_images = sampler.base_accuracy()
    meta = {
        "mode": mode,
        **site.ablator().describe(),
        "exact": estimate.exact,
        "intervals": estimate.intervals,
        "images_used": estimate.seen,
        "population": estimate.population,
        "confidence": options["confidence"],
        "simultaneous": options["top"] is not None,
        "interval_method": INTERVAL_METHOD,
        "settled": estimate.settled,
        "loss_increase": estimate.loss_increase,
        "drop_unbiased": estimate.unbiased,
        "estimate_method": ESTIMATE_METHOD,
        "seed": sampler.seed,
    }
    if target is None:  # with a target only that class's images were read, so the whole data's accuracy is unknown
        meta.update(base_accuracy=base_accuracy, base_class_accuracy=base_class_accuracy, class_images=class_images)
        meta["ablated_accuracy"] = base_accuracy - estimate.drop
    else:
        meta["base_class_accuracy"] = base_class_accuracy
    if options["top"] is not None:
        meta["top_set"] = estimate.top
        meta["tolerance"] = options["tolerance"]
    return Ranking(
        scores=estimate.drop,
        tiebreak=estimate.loss_increase,
        method="ablation",
        layer=site.layer,
        target=target,
        meta=meta,
    )


def _max_class_drop(class_drop: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nanmax(class_drop, axis=1) if np.isfinite(class_drop).any() else class_drop[:, 0]


def _check_sampling(
    site: Site,
    top: object,
    fraction: object,
    confidence: object,
    tolerance: object,
    seed: object,
    update: object,
) -> None:
    """Refuse, before any work, sampling options out of range or given without ``top``/``fraction``."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, Integral) or not 1 <= top < site.units):
        raise ValueError(
            f"top must be a number of units in 1..{site.units - 1} (layer {site.layer!r} has {site.units}), "
            f"got {top!r}; leave it out for every unit's exact drop"
        )
    bad_fraction = isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1
    if fraction is not None and bad_fraction:
        raise ValueError(f"fraction must be a share of the images in (0, 1], got {fraction!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, Real) or not 0 <= tolerance <= 1:
        raise ValueError(
            f"tolerance must be an accuracy difference in [0, 1] (0.01 is one percentage point), got {tolerance!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if update is not None and not callable(update):
        raise TypeError(f"update must be a callable receiving a Ranking, got {type(update).__name__}")
    if top is None and fraction is None:
        given = [
            name
            for name, value, default in (("confidence", confidence, 0.95), ("tolerance", tolerance, 0.0))
            if value != default
        ]
        if given:
            raise ValueError(f"{', '.join(given)} applies to a sampled ranking: pass top=<k> or fraction=<share> too")
