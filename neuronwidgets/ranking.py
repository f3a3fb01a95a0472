"""The result type of every ranking method: per-unit scores of one layer, plus export and comparison.

This module is part of the widget-free core: it must not import ipywidgets/anywidget, and it imports
matplotlib only inside :meth:`Ranking.plot`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_DEFAULT_PLOT_UNITS = 40
_REPR_TOP = 3
_MAX_LISTED_NAN_UNITS = 10


def _is_tensor(obj: Any) -> bool:
    """True if ``obj`` is a torch tensor; never imports torch itself."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _as_float64_vector(values: Any, name: str) -> np.ndarray:
    """Return a read-only 1-D float64 copy of ``values`` (array-like or torch tensor)."""
    if _is_tensor(values):
        values = values.detach().cpu().double().numpy()
    arr = np.array(values, dtype=np.float64, copy=True)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per unit), got shape {arr.shape}")
    arr.flags.writeable = False
    return arr


def _jsonable(obj: Any) -> Any:
    """Recursively convert ``obj`` to plain JSON types.

    numpy arrays/scalars and torch tensors become lists/Python scalars, tuples and sets become lists,
    non-finite floats become None, non-string dict keys become strings, and anything else that JSON
    cannot hold (paths, dtypes, devices, ...) becomes its ``str()``.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else str(_jsonable(k))): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return _jsonable(obj.tolist())
    if _is_tensor(obj):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def _vector_for_json(values: np.ndarray) -> list[float | str]:
    """Scores for JSON: finite floats as is, infinities as the strings "inf"/"-inf" (NaN never occurs)."""
    return [x if math.isfinite(x) else repr(x) for x in values.tolist()]


@dataclass(frozen=True, eq=False)
class Ranking:
    """Scores for every unit of one layer under one method; larger = more important.

    ``scores`` (and ``tiebreak``) are stored as read-only float64 copies. NaN is rejected; ±inf is
    allowed. ``meta`` is shallow-copied and should hold JSON-convertible values (see :meth:`to_dict`).
    """

    scores: np.ndarray
    method: str
    layer: str
    target: int | None = None
    meta: dict = field(default_factory=dict)
    tiebreak: np.ndarray | None = None

    def __post_init__(self) -> None:
        scores = _as_float64_vector(self.scores, "scores")
        if scores.size == 0:
            raise ValueError(f"scores for layer {self.layer!r} ({self.method}) are empty: need at least one unit")
        nan_units = np.flatnonzero(np.isnan(scores))
        if nan_units.size:
            shown = ", ".join(str(u) for u in nan_units[:_MAX_LISTED_NAN_UNITS])
            more = ", ..." if nan_units.size > _MAX_LISTED_NAN_UNITS else ""
            raise ValueError(
                f"{nan_units.size} of {scores.size} scores for layer {self.layer!r} ({self.method}) are NaN "
                f"(units {shown}{more})"
            )
        object.__setattr__(self, "scores", scores)
        if self.tiebreak is not None:
            tiebreak = _as_float64_vector(self.tiebreak, "tiebreak")
            if tiebreak.shape != scores.shape:
                raise ValueError(f"tiebreak has {tiebreak.size} values but there are {scores.size} scores")
            if np.isnan(tiebreak).any():
                raise ValueError(f"tiebreak contains {int(np.isnan(tiebreak).sum())} NaN value(s)")
            object.__setattr__(self, "tiebreak", tiebreak)
        if self.target is not None:
            object.__setattr__(self, "target", operator.index(self.target))
        object.__setattr__(self, "meta", dict(self.meta))

    @cached_property
    def order(self) -> np.ndarray:
        """Unit indices, most important first (read-only).

        Sorted by score descending, then tiebreak descending (if given), then unit index ascending.
        """
        keys = (-self.scores,) if self.tiebreak is None else (-self.tiebreak, -self.scores)
        order = np.lexsort(keys)  # stable, so remaining ties keep ascending unit order
        order.flags.writeable = False
        return order

    @cached_property
    def _ranks(self) -> np.ndarray:
        """Inverse of :attr:`order`: ``_ranks[unit]`` is the rank of ``unit``."""
        ranks = np.empty(self.units, dtype=np.intp)
        ranks[self.order] = np.arange(self.units)
        return ranks

    @property
    def units(self) -> int:
        """Number of units (channels) in the layer."""
        return int(self.scores.size)

    def __len__(self) -> int:
        return self.units

    def rank_of(self, unit: int) -> int:
        """Rank of ``unit`` (0 = most important); IndexError if it is not in ``range(units)``."""
        unit = operator.index(unit)
        if not 0 <= unit < self.units:
            raise IndexError(f"unit {unit} out of range for layer {self.layer!r} with {self.units} units")
        return int(self._ranks[unit])

    def top(self, k: int = 10) -> list[tuple[int, float]]:
        """The ``k`` most important ``(unit, score)`` pairs; ``k`` beyond the unit count returns all."""
        k = operator.index(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return [(int(u), float(self.scores[u])) for u in self.order[:k]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; inverse of :meth:`from_dict`.

        Infinite scores are written as the strings "inf"/"-inf". ``meta`` goes through a lossy
        conversion: arrays/tensors become (nested) lists, tuples become lists, non-finite floats
        become None and unknown objects become strings.
        """
        return {
            "method": self.method,
            "layer": self.layer,
            "target": self.target,
            "units": self.units,
            "scores": _vector_for_json(self.scores),
            "order": self.order.tolist(),
            "tiebreak": None if self.tiebreak is None else _vector_for_json(self.tiebreak),
            "meta": _jsonable(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ranking:
        """Rebuild a Ranking from :meth:`to_dict` output; the derived ``units``/``order`` are recomputed."""
        return cls(
            scores=np.asarray(d["scores"], dtype=np.float64),
            method=d["method"],
            layer=d["layer"],
            target=d.get("target"),
            meta=d.get("meta") or {},
            tiebreak=None if d.get("tiebreak") is None else np.asarray(d["tiebreak"], dtype=np.float64),
        )

    def to_json(self, path: str | os.PathLike | None = None, indent: int | None = None) -> str:
        """Strict JSON text of :meth:`to_dict`; also written (UTF-8) to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> Ranking:
        """Load from JSON text or from a file path (a string is treated as JSON if it starts with ``{``)."""
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text = source
        else:
            text = Path(source).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """CSV text with columns ``rank,unit,score[,tiebreak]`` in ranked order (rank 1 = most important);
        written to ``path`` if given.

        Values are written with ``repr`` so they parse back to the identical float64.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        header = ["rank", "unit", "score"] + ([] if self.tiebreak is None else ["tiebreak"])
        writer.writerow(header)
        for rank, unit in enumerate(self.order.tolist(), start=1):
            row = [rank, unit, repr(float(self.scores[unit]))]
            if self.tiebreak is not None:
                row.append(repr(float(self.tiebreak[unit])))
            writer.writerow(row)
        text = buf.getvalue()
        if path is not None:
            with open(path, "w", newline="", encoding="utf-8") as f:
                f.write(text)
        return text

    def plot(
        self, ax: Axes | None = None, top: int | None = None, highlight: int | Iterable[int] | None = None
    ) -> Figure:
        """Horizontal bar chart of the scores in ranked order, most important at the top.

        Shows the ``top`` best units (default: all if there are at most 40, else 40). Units in
        ``highlight`` are drawn in a contrasting colour. Without ``ax`` a standalone
        ``matplotlib.figure.Figure`` is created (no pyplot state, works headless); with ``ax`` the chart
        is drawn into it and ``ax.figure`` is returned.
        """
        from matplotlib.figure import Figure

        if top is None:
            n = min(self.units, _DEFAULT_PLOT_UNITS)
        else:
            n = operator.index(top)
            if n < 1:
                raise ValueError(f"top must be >= 1, got {n}")
            n = min(n, self.units)
        if highlight is None:
            highlighted: set[int] = set()
        elif isinstance(highlight, Iterable):
            highlighted = {operator.index(u) for u in highlight}
        else:
            highlighted = {operator.index(highlight)}

        if ax is None:
            fig = Figure(figsize=(6.0, 1.0 + 0.22 * n), layout="constrained")
            ax = fig.add_subplot()
        units = self.order[:n].tolist()
        colors = ["C3" if u in highlighted else "C0" for u in units]
        ax.barh(np.arange(n), self.scores[units], color=colors)
        ax.set_yticks(np.arange(n), [f"unit {u}" for u in units])
        ax.invert_yaxis()
        ax.set_xlabel("score")
        title = f"{self.method} · {self.layer}"
        if self.target is not None:
            title += f" · class {self.target}"
        ax.set_title(title)
        return ax.figure

    def __repr__(self) -> str:
        top = ", ".join(f"({u}, {s:.4g})" for u, s in self.top(_REPR_TOP))
        return (
            f"Ranking(method={self.method!r}, layer={self.layer!r}, units={self.units}, "
            f"target={self.target!r}, top=[{top}])"
        )


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def compare(a: Ranking, b: Ranking, k: int = 10) -> dict[str, float]:
    """Agreement of two rankings of the same units: Spearman and Kendall (tau-b) rank correlation of the
    scores, and the overlap of the top-k sets (|top_k(a) ∩ top_k(b)| / k).

    Correlations are NaN when either ranking has constant scores. ``k`` is clipped to the unit count
    (the clipped value is returned under "k"); top-k sets follow :attr:`Ranking.order`, so ties are
    resolved by tiebreak and unit index. Warns if the layers differ.
    """
    if a.units != b.units:
        raise ValueError(
            f"cannot compare rankings with different unit counts: {a.units} ({a.layer!r}, {a.method}) "
            f"vs {b.units} ({b.layer!r}, {b.method})"
        )
    if a.layer != b.layer:
        warnings.warn(
            f"comparing rankings of different layers ({a.layer!r} vs {b.layer!r}) with {a.units} units each",
            stacklevel=2,
        )
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, a.units)
    if _is_constant(a.scores) or _is_constant(b.scores):
        spearman = kendall = math.nan
    else:
        spearman = float(stats.spearmanr(a.scores, b.scores).statistic)
        kendall = float(stats.kendalltau(a.scores, b.scores, variant="b").statistic)
    overlap = len(set(a.order[:k].tolist()) & set(b.order[:k].tolist())) / k
    return {"spearman": spearman, "kendall": kendall, "top_k_overlap": overlap, "k": k}
