"""Ranking methods: one module per method, each ``rank(probe, **options) -> Ranking``, and their registry."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from neuronwidgets.methods import ablation, activation, car, pcace, resampling, selectivity, taylor, weight_l1

_REGISTRY: dict[str, Callable] = {
    "ablation": ablation.rank,
    "car": car.rank,
    "pcace": pcace.rank,
    "resampling_correlation": resampling.rank_correlation,
    "resampling_precision": resampling.rank_precision,
    "selectivity": selectivity.rank,
    "weight_l1": weight_l1.rank,
    "taylor": taylor.rank,
    "activation": activation.rank,
}


def methods() -> dict[str, str]:
    """Every ranking method's name and a one-line description."""
    return {name: (func.__doc__ or "").strip().splitlines()[0].replace("``", "") for name, func in _REGISTRY.items()}


def get(name: str) -> Callable:
    """The ``rank`` function of method ``name``; an unknown name lists the valid ones."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]
