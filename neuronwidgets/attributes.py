"""Do unit attributes predict ablation damage? Zhou et al. 2018's analysis, on any layer.

Single-unit ablation barely moves overall accuracy but can badly hurt particular classes; attributes such as
class selectivity, weight norm and class correlation predict the class-level damage better than the overall one.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import spearmanr

from neuronwidgets.engine.progress import CancelFlag, ProgressOption

if TYPE_CHECKING:
    from neuronwidgets.engine.site import Site
    from neuronwidgets.probe import Probe


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return float("nan")  # undefined for constant inputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(a[keep], b[keep]).statistic)


def class_correlation(image_mean: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """(units, classes) Pearson correlation across images of each unit's mean activation with each class's
    softmax probability; 0 where either is constant."""
    a = image_mean - image_mean.mean(0)
    p = probabilities - probabilities.mean(0)
    denominator = np.sqrt(np.outer((a**2).sum(0), (p**2).sum(0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a.T @ p) / denominator, 0.0)


def attribute_correlations(
    probe: Probe,
    *,
    mode: str = "zero",
    threshold: float = 0.1,
    layer: str | None = None,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> dict[str, Any]:
    """Spearman correlations, across the layer's units, of unit attributes with ablation damage.

    Attributes: class selectivity, weight L1 norm (when one conv/linear produces the layer), and the unit's
    largest class correlation. Damage: the overall accuracy drop, the largest class drop and the number of
    classes whose accuracy drops by more than ``threshold``. Also, across (unit, class) pairs, the
    correlation of class correlation with the class drop. Returns ``{"correlations": {attribute: {damage: rho}},
    "pairs": {...}, "units": {per-unit arrays}, "notes": [...]}``. Cost: one ablation ranking.
    """
    site = probe.site(layer)
    ablation = probe.rank("ablation", layer=site.layer, mode=mode, progress=progress, cancel=cancel)
    drops = ablation.meta["drop_matrix"]
    damage = {
        "overall_drop": ablation.scores,
        "max_class_drop": ablation.meta["max_class_drop"],
        "classes_hurt": (np.nan_to_num(drops, nan=0.0) > threshold).sum(1).astype(float),
    }
    summary = site.summary()
    probabilities = np.concatenate([p.numpy() for p in _probabilities(site, cancel)])
    correlation = class_correlation(summary.image_mean.astype(np.float64), probabilities)
    attributes = {
        "selectivity": probe.rank("selectivity", layer=site.layer, progress=False).scores,
        "max_class_correlation": correlation.max(1),
    }
    notes = []
    try:
        attributes["weight_l1"] = probe.rank("weight_l1", layer=site.layer).scores
    except ValueError as err:
        notes.append(f"weight_l1 left out: {err}")
    table = {name: {what: _spearman(values, d) for what, d in damage.items()} for name, values in attributes.items()}
    present = ~np.isnan(drops[0])
    pairs = {"class_correlation_vs_class_drop": _spearman(correlation[:, present].ravel(), drops[:, present].ravel())}
    return {
        "correlations": table,
        "pairs": pairs,
        "units": {**attributes, **damage, "class_correlation": correlation},
        "threshold": threshold,
        "mode": mode,
        "notes": notes,
    }


def _probabilities(site: Site, cancel: CancelFlag):
    ablator = site.ablator()
    for values, _chunk, bar in site.crossings("class probabilities", False, cancel):
        yield ablator.scores(values).double().softmax(1).cpu()
        bar.advance()
