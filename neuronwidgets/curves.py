"""Cumulative ablation curves: accuracy as more and more units (or principal components) are removed.

`faithfulness` asks which ranking best explains the model: removing its most important units first should hurt
the accuracy fastest, and its least important ones first the slowest, compared with random orders.
`completeness` is Dey et al.'s comparison of the neuron basis with the principal-component basis.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neuronwidgets.engine.ablate import with_units
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.ranking import Ranking

if TYPE_CHECKING:
    from neuronwidgets.evaluation import Evaluation
    from neuronwidgets.probe import Probe


@dataclass(frozen=True)
class Curve:
    """Accuracy after removing ``ks[i]`` units (or components) in one order."""

    label: str
    ks: np.ndarray
    accuracy: np.ndarray
    units: int

    @property
    def auc(self) -> float:
        """Area under accuracy versus the fraction removed (0..1); lower = removal hurts sooner."""
        x = self.ks / self.units
        return float(np.sum((x[1:] - x[:-1]) * (self.accuracy[1:] + self.accuracy[:-1]) / 2))


@dataclass(frozen=True)
class Curves:
    """A set of ablation curves on one layer, with the model's accuracy before any removal."""

    title: str
    layer: str
    baseline: float
    curves: dict[str, Curve]
    extra: dict[str, Any] = field(default_factory=dict)

    def auc(self) -> dict[str, float]:
        return {label: curve.auc for label, curve in self.curves.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "layer": self.layer,
            "baseline": self.baseline,
            "curves": {
                label: {"ks": c.ks.tolist(), "accuracy": c.accuracy.tolist(), "auc": c.auc}
                for label, c in self.curves.items()
            },
        }

    def plot(self, ax: Any = None) -> Any:
        """Accuracy against the number removed, one line per curve, with a marker at every measured point and
        the legend below the axes (where it covers no point); returns the matplotlib Figure."""
        from matplotlib.figure import Figure

        figure = Figure(figsize=(6.4, 4.8), layout="constrained") if ax is None else ax.figure
        ax = figure.add_subplot() if ax is None else ax
        # a line style and marker per curve, so that curves that coincide can still be told apart
        styles = itertools.cycle([("-", "o"), ("--", "s"), ("-.", "^"), (":", "D")])
        for (label, curve), (line, marker) in zip(self.curves.items(), styles):
            ax.plot(
                curve.ks,
                curve.accuracy,
                linestyle=line,
                marker=marker,
                markersize=4,
                label=f"{label} (AUC {curve.auc:.3f})",
            )
        ax.axhline(self.baseline, color="grey", linewidth=0.8, linestyle=":", label="no removal")
        ax.set_xlabel("units or components removed (k)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{self.title} · {self.layer}")
        ax.legend(
            fontsize="small",
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14),
            ncol=2,
            title="AUC: area under accuracy against the share removed (lower: removal hurts sooner)",
            title_fontsize="small",
        )
        return figure


def default_steps(units: int, points: int = 11) -> np.ndarray:
    return np.unique(np.round(np.linspace(0, units, min(units + 1, points))).astype(int))


def _check_steps(steps: Sequence[int] | None, units: int, default: np.ndarray) -> np.ndarray:
    ks = default if steps is None else np.unique(np.asarray(list(steps), dtype=int))
    if len(ks) == 0 or ks.min() < 0 or ks.max() > units:
        raise ValueError(f"steps must be counts between 0 and {units} (the layer's units), got {list(ks)}")
    return ks


def faithfulness(
    probe: Probe,
    rankings: Ranking | Sequence[Ranking],
    steps: Sequence[int] | None = None,
    *,
    mode: str = "zero",
    random_orders: int = 3,
    seed: int = 0,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Curves:
    """Accuracy as units are removed cumulatively in each ranking's order (most important first), in reverse
    order, and in random orders (their mean), with the area under each curve.

    A faithful ranking has a low AUC in ranked order and a high one in reverse. Cost: one re-run of the
    network after the layer per point and curve.
    """
    rankings = [rankings] if isinstance(rankings, Ranking) else list(rankings)
    if not rankings:
        raise ValueError("faithfulness needs at least one Ranking")
    layer = rankings[0].layer
    units = probe.layer_info(layer).units
    for ranking in rankings:
        if ranking.layer != layer or ranking.units != units:
            raise ValueError(
                f"the {ranking.method} ranking is of layer {ranking.layer!r} ({ranking.units} units), but the "
                f"curves are of layer {layer!r} ({units} units): compare rankings of one layer"
            )
    ks = _check_steps(steps, units, default_steps(units))
    rng = np.random.default_rng(seed)
    orders: dict[str, list[np.ndarray]] = {}
    for ranking in rankings:
        name = ranking.method if ranking.target is None else f"{ranking.method} (class {ranking.target})"
        orders[f"{name}, ranked"] = [ranking.order]
        orders[f"{name}, reverse"] = [ranking.order[::-1]]
    if random_orders > 0:
        orders["random"] = [rng.permutation(units) for _ in range(random_orders)]
    total = sum(len(o) for o in orders.values()) * len(ks)
    evaluate = partial(probe.evaluate, layer=layer, mode=mode, cancel=cancel)
    with Progress("faithfulness", total, progress, cancel) as bar:
        curves = {label: _curve(evaluate, label, ks, sequences, units, bar) for label, sequences in orders.items()}
    baseline = probe.evaluate(layer=layer).accuracy
    return Curves("faithfulness", layer, baseline, curves, {"mode": mode, "seed": seed})


def _curve(
    evaluate: Callable[..., Evaluation],
    label: str,
    ks: np.ndarray,
    sequences: list[np.ndarray],
    units: int,
    bar: Progress,
) -> Curve:
    accuracy = np.zeros(len(ks))
    for sequence in sequences:
        for i, k in enumerate(ks):
            accuracy[i] += evaluate(sequence[:k].tolist()).accuracy
            bar.advance()
    return Curve(label, ks, accuracy / len(sequences), units)


def completeness(
    probe: Probe,
    steps: Sequence[int] | None = None,
    *,
    sampling: str = "position",
    component_mode: str = "mean",
    neuron_mode: str = "mean",
    layer: str | None = None,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Curves:
    """Dey et al.'s completeness: accuracy after removing the top-k principal components versus the top-k
    neurons (by variance), each in descending and ascending order of variance.

    Components are projected out about the mean (``component_mode="mean"``) or through the origin
    (``"zero"``); neurons are set to their mean (``neuron_mode="mean"``, the channel's mean over images and
    positions) or to zero. ``extra["variance"]`` holds the variance-explained curves of both bases.
    Default steps: 0 and a log-spaced grid up to all units.
    """
    layer = probe.layer if layer is None else layer
    basis = probe.components(sampling=sampling, layer=layer, progress=progress, cancel=cancel)
    units = probe.layer_info(layer).units
    grid = np.unique(np.concatenate([[0], np.round(np.geomspace(1, units, min(units, 8))).astype(int)]))
    ks = _check_steps(steps, units, grid)
    by_variance = np.argsort(-basis.neuron_variances, kind="stable")
    if neuron_mode not in ("mean", "zero") or component_mode not in ("mean", "zero"):
        raise ValueError("component_mode and neuron_mode must be 'mean' or 'zero'")
    layer_shape = probe.layer_info(layer).shape
    fill = torch.zeros(layer_shape, dtype=probe.dtype, device=probe.device)
    if neuron_mode == "mean":  # each channel at its mean over images and positions, as the PCA sees it
        fill += torch.as_tensor(basis.mean, dtype=probe.dtype, device=probe.device).reshape(
            -1, *[1] * (len(layer_shape) - 1)
        )
    orders = {"descending": np.arange(units), "ascending": np.arange(units)[::-1]}
    curves: dict[str, Curve] = {}
    with Progress("completeness", 4 * len(ks), progress, cancel) as bar:
        for direction, component_order in orders.items():
            neuron_order = by_variance if direction == "descending" else by_variance[::-1]
            for kind in ("components", "neurons"):
                accuracy = []
                for k in ks:
                    if kind == "components":
                        picked = component_order[:k].tolist()
                        ev = probe.evaluate(
                            ablate_components=picked, mode=component_mode, sampling=sampling, layer=layer, cancel=cancel
                        )
                    else:
                        picked = neuron_order[:k].tolist()
                        ev = probe.evaluate(
                            transform=partial(with_units, units=picked, fill=fill), layer=layer, cancel=cancel
                        )
                    accuracy.append(ev.accuracy)
                    bar.advance()
                curves[f"{kind}, {direction}"] = Curve(f"{kind}, {direction}", ks, np.array(accuracy), units)
    baseline = probe.evaluate(layer=layer).accuracy
    extra = {
        "variance": basis.variance_curves(),
        "needed_80": basis.needed(0.8),
        "needed_99": basis.needed(0.99),
        "sampling": sampling,
        "component_mode": component_mode,
        "neuron_mode": neuron_mode,
    }
    return Curves("completeness", layer, baseline, curves, extra)
