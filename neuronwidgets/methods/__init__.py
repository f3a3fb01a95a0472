"""Ranking methods: one module per method, each ``rank(site, **options) -> Ranking``, and their registry.

Each method declares what it needs (`MethodSpec`); `check_options` enforces that in one place before any method
runs, and the widgets read the same declarations to decide which pickers to show.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from neuronwidgets.engine.site import Site, require_labels
from neuronwidgets.methods import ablation, activation, car, pcace, resampling, selectivity, taylor, weight_l1
from neuronwidgets.ranking import Ranking

# How much work a method does, cheapest first: the filter weights only, one pass over the data, copies of one
# image, a re-run of the network after the layer per unit, or that per unit and per pruning round.
COSTS = ("weights", "one pass", "one image", "per unit", "per unit per round")
_CALL_ARGUMENTS = ("site", "progress", "cancel")


@dataclass(frozen=True)
class MethodSpec:
    """A ranking method and what it needs; `methods()` and the widgets show ``description``."""

    name: str
    rank: Callable[..., Ranking]
    description: str
    needs_labels: bool = False
    takes_target: bool = False
    needs_target: bool = False
    needs_image: bool = False
    preview: str | None = None  # a cheaper method estimating the same quantity (shown first by widgets)
    # for a method that refines its own estimate: whether on this site that estimate comes before the preview's
    estimate_first: Callable[[Site], bool] | None = None
    cost: str = "one pass"
    score: str = "score"  # what one score is, as a column heading with its unit
    percent: bool = False  # scores are fractions of the images, shown in percentage points
    tiebreak: str | None = None  # what orders units with equal scores (Ranking.tiebreak), if anything

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options the method accepts (``target`` among them where it takes one)."""
        return tuple(p for p in inspect.signature(self.rank).parameters if p not in _CALL_ARGUMENTS)


_SPECS = (
    MethodSpec(
        "ablation",
        ablation.rank,
        "Accuracy drop when the unit is zeroed (or set to its mean map); per class with target",
        needs_labels=True,
        takes_target=True,
        preview="taylor",
        estimate_first=ablation.estimate_first,
        cost="per unit",
        score="accuracy drop (pp)",
        percent=True,
        tiebreak="loss increase",
    ),
    MethodSpec(
        "car",
        car.rank,
        "Greedy CAR: units pruned least harmful first; the last pruned rank highest",
        needs_labels=True,
        takes_target=True,
        preview="taylor",
        cost="per unit per round",
        score="pruning position (0 first, 1 last)",
    ),
    MethodSpec(
        "pcace",
        pcace.rank,
        "Maximal correlation (ACE) of the unit's map, via PCA, with the target class's logit",
        needs_labels=True,
        takes_target=True,
        needs_target=True,
        score="maximal correlation",
    ),
    MethodSpec(
        "resampling_correlation",
        resampling.rank_correlation,
        "Mean |correlation| with the output across noisy copies of one image",
        takes_target=True,
        needs_image=True,
        cost="one image",
        score="mean |correlation|",
    ),
    MethodSpec(
        "resampling_precision",
        resampling.rank_precision,
        "Inverse variance across noisy copies of one image, for units above a threshold",
        takes_target=True,
        needs_image=True,
        cost="one image",
        score="1 / variance",
    ),
    MethodSpec(
        "selectivity",
        selectivity.rank,
        "Class selectivity index: preferred class's mean activation against the others'",
        needs_labels=True,
        takes_target=True,
        score="selectivity index",
    ),
    MethodSpec(
        "weight_l1",
        weight_l1.rank,
        "L1 norm of the filter that produces the unit",
        cost="weights",
        score="filter L1 norm",
    ),
    MethodSpec(
        "taylor",
        taylor.rank,
        "First-order Taylor estimate of the loss change when the unit is removed",
        needs_labels=True,
        score="|loss change|, L2-normalised",
    ),
    MethodSpec(
        "activation",
        activation.rank,
        "Mean activation over images and positions; per class with target",
        takes_target=True,
        score="mean activation",
    ),
)
_REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in _SPECS}


def methods() -> dict[str, str]:
    """Every ranking method's name and a one-line description."""
    return {name: spec.description for name, spec in _REGISTRY.items()}


def specs() -> dict[str, MethodSpec]:
    """Every ranking method's declaration, by name."""
    return dict(_REGISTRY)


def spec(name: str) -> MethodSpec:
    """The declaration of method ``name``; an unknown name lists the valid ones."""
    if not isinstance(name, str):
        raise TypeError(
            f"a method name must be a str, got {type(name).__name__}; valid methods: {', '.join(_REGISTRY)}"
        )
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def get(name: str) -> Callable[..., Ranking]:
    """The ``rank`` function of method ``name``."""
    return spec(name).rank


def check_options(method: MethodSpec, options: dict[str, Any], *, num_classes: int, has_labels: bool) -> None:
    """Refuse, before any work, options the method does not take, a bad ``target``, missing labels or image."""
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        raise TypeError(
            f"method {method.name!r} got unknown option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(method.options) or 'none'}"
        )
    if method.needs_labels:
        require_labels(has_labels, method.name)
    target = options.get("target")
    if target is None and method.needs_target:
        raise ValueError(f"{method.name} needs target=<class index>")
    if target is not None:
        if isinstance(target, (bool, np.bool_)):
            raise TypeError(f"target must be a class index in 0..{num_classes - 1}, got the bool {target!r}")
        if not isinstance(target, (int, np.integer)) or not 0 <= target < num_classes:
            raise ValueError(f"target must be a class index in 0..{num_classes - 1}, got {target!r}")
        if not has_labels:
            raise ValueError(f"{method.name} with target= needs labels to find the class's images; the data has none")
    if method.needs_image and options.get("image") is None:
        raise ValueError(
            f"{method.name} explains one image: pass image=<index into the data> or an image tensor (C, H, W)"
        )
