"""AblationPanel: remove the top k units of a ranking (and toggle single units), see what the model loses."""

from __future__ import annotations

import textwrap
from typing import Any, ClassVar

import numpy as np
import traitlets
from PIL import Image

from neuronwidgets import render
from neuronwidgets.diagnostics import chance_accuracy
from neuronwidgets.engine.site import ABLATION_MODES
from neuronwidgets.evaluation import Evaluation
from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking
from neuronwidgets.widgets._arrays import array_trait
from neuronwidgets.widgets._base import (
    Choice,
    StrictInt,
    Widget,
    asset,
    check_kwargs,
    figure_png,
    index_or_none,
    nan_to_none,
)
from neuronwidgets.widgets._images import display_images
from neuronwidgets.widgets._worker import Job, worker_for

MAX_CHANGED_SHOWN = 24  # thumbnails of changed predictions sent to the browser
ALL_CLASSES_UP_TO = 12  # up to this many classes the picture shows all; beyond, the ones that changed most
TOP_CLASSES = 10  # (both as in js/lib/classes.js)
DEFAULT_METHOD = "weight_l1"  # instant and needs no data: the ranking of a panel made without one
FALLBACK_METHOD = "activation"  # where weight_l1 cannot rank the layer (one pass over the data)


class AblationPanel(Widget):
    """Accuracy of the model with the top ``k`` units of ``ranking`` removed, plus single units toggled
    (``toggled`` flips units in or out of that set), by ``mode`` ``"zero"`` or ``"mean"``.

    Evaluations run in the background; when requests come faster than evaluations, only the latest runs.
    The model itself is never changed. The view has a toggle for each of the ranking's top units and toggles
    any other by its number (the same ``toggle`` message); toggled units without a toggle show as chips.
    """

    _esm = asset("ablation-panel.js")
    _css = asset("widgets.css")

    k = StrictInt(0, min=0).tag(sync=True, option=True)
    toggled = traitlets.List(StrictInt()).tag(sync=True, option=True)
    mode = Choice(ABLATION_MODES, "zero").tag(sync=True, option=True)
    selected_unit = StrictInt(None, allow_none=True).tag(sync=True, option=True)
    layer = traitlets.Unicode("").tag(sync=True, option=True)  # the ranking's layer
    units = traitlets.Int(0).tag(sync=True)  # number of units in the layer
    order = array_trait("int32", help="the ranking's units, most important first")
    method = traitlets.Unicode("").tag(sync=True)  # the ranking's method, for the label
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    ablated = traitlets.List(traitlets.Int()).tag(sync=True)  # the units removed in `after`
    before = traitlets.Dict().tag(sync=True)  # {accuracy, per_class, loss}
    after = traitlets.Dict().tag(sync=True)  # {accuracy, per_class, loss, ablated, request}
    changed = traitlets.List().tag(sync=True)  # [{index, label, before, after, fixed, image}, ...]
    changed_count = traitlets.Int(0).tag(sync=True)
    request = traitlets.Int(0).tag(sync=True)  # counts evaluation requests; `after.request` says which landed
    ranking = traitlets.Instance(Ranking, allow_none=True).tag(option=True)

    _writable: ClassVar[frozenset[str]] = frozenset({"k", "toggled", "mode", "selected_unit"})
    _handlers: ClassVar[dict[str, str]] = {**Widget._handlers, "toggle": "toggle"}

    def __init__(self, probe: Probe, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs)
        if not isinstance(probe, Probe):
            raise TypeError(f"AblationPanel needs a Probe, got {type(probe).__name__}")
        self._probe = probe
        self._worker = worker_for(probe)
        self._pngs: dict[int, bytes] = {}  # image index -> PNG, for the changed predictions
        ranking = kwargs.pop("ranking", None)
        if ranking is not None and not isinstance(ranking, Ranking):
            raise TypeError(f"ranking must be a Ranking, got {type(ranking).__name__}")
        layer = _layer_of(probe, ranking, kwargs.pop("layer", None))
        # the layer and its unit count are known now, so k and toggles can be set before the ranking lands
        super().__init__(classes=probe.classes, layer=layer, units=probe.layer_info(layer).units)
        self.observe(self._on_change, names=["k", "toggled", "mode"])
        if ranking is not None:
            self.set_ranking(ranking, **kwargs)
            return

        def run(job: Job) -> Ranking:  # on the worker: the probe never runs on two threads at once
            # warn=False: the panel says what matters (accuracy at chance) itself
            try:
                return probe.rank(DEFAULT_METHOD, layer=layer, progress=False, cancel=job.cancel, warn=False)
            except ValueError:  # weight_l1 refuses a layer made by an add (a ResNet block's output)
                return probe.rank(FALLBACK_METHOD, layer=layer, progress=False, cancel=job.cancel, warn=False)

        # its own ranking is long work: the "rank" slot (background lane), not "evaluate" (interactive)
        def done(ranking: Ranking) -> None:
            if self.ranking is None:  # a ranking given meanwhile (the Explorer's list's) wins over this default
                self.set_ranking(ranking, **kwargs)

        self._submit("rank", run, done)

    # -- validation ---------------------------------------------------------------------------------------

    @traitlets.validate("k")
    def _valid_k(self, proposal: dict) -> int:
        if proposal["value"] > self.units:
            raise traitlets.TraitError(f"k must be in 0..{self.units}, got {proposal['value']}")
        return proposal["value"]

    @traitlets.validate("toggled")
    def _valid_toggled(self, proposal: dict) -> list[int]:
        bad = [u for u in proposal["value"] if not 0 <= u < self.units]
        if bad:
            raise traitlets.TraitError(f"toggled units {bad[:5]} out of range 0..{self.units - 1}")
        return sorted(set(proposal["value"]))

    @traitlets.validate("selected_unit")
    def _valid_selected(self, proposal: dict) -> int | None:
        return index_or_none(proposal["value"], self.units, "selected_unit must be")

    # -- requests -----------------------------------------------------------------------------------------

    def set_ranking(self, ranking: Ranking, **state: Any) -> None:
        """Rank by ``ranking`` (its layer becomes the panel's); resets ``k`` and toggles unless given."""
        units = self._probe.layer_info(ranking.layer).units
        if ranking.units != units:
            raise ValueError(f"the ranking has {ranking.units} units but layer {ranking.layer!r} has {units}")
        self._worker.cancel(self._slot("rank"))  # a ranking given now wins over the panel's own, still running
        same_layer = ranking.layer == self.layer
        with self.hold_trait_notifications():
            self.ranking = ranking
            self.units, self.layer, self.method = units, ranking.layer, ranking.method
            self.order = ranking.order
            if not same_layer:
                self.toggled, self.k, self.selected_unit = [], 0, None
                self.before = {}
            for key, value in state.items():
                setattr(self, key, value)
        self.evaluate()

    def toggle(self, unit: Any = None) -> None:
        """Flip ``unit`` in or out of the ablated set."""
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < self.units:
            raise ValueError(f"toggle: unit must be an integer in 0..{self.units - 1}, got {unit!r}")
        self.toggled = sorted(set(self.toggled) ^ {unit})

    def ablated_units(self) -> list[int]:
        """The units removed: the top ``k`` of the ranking, with the toggled ones flipped."""
        top = [] if self.order is None else self.order[: self.k].tolist()
        return sorted(set(top) ^ set(self.toggled))

    def _on_change(self, change: dict) -> None:
        self.evaluate()

    def refresh(self) -> None:
        """Evaluate again from scratch (after the model changed)."""
        self.before = {}
        self._pngs.clear()
        self.evaluate()

    def evaluate(self) -> None:
        """Evaluate the current ablation in the background; a newer request replaces a pending one."""
        self.request += 1
        probe, layer, ablated, mode, request = self._probe, self.layer, self.ablated_units(), self.mode, self.request
        k = self.k
        need_before = not self.before

        def run(job: Job) -> tuple[Evaluation | None, Evaluation | None]:
            base = probe.evaluate(layer=layer, cancel=job.cancel) if need_before else None
            after = probe.evaluate(ablate=ablated, mode=mode, layer=layer, cancel=job.cancel) if ablated else None
            return base, after

        def done(result: tuple[Evaluation | None, Evaluation | None]) -> None:
            base, after = result
            if base is not None:
                self._base = base
                self.before = {**_summary(base), "warnings": _base_warnings(base, len(self.classes))}
            after = after or self._base
            changed = np.flatnonzero(after.predictions != self._base.predictions)
            self.ablated = ablated
            self.after = {**_summary(after), "ablated": ablated, "mode": mode, "k": k, "request": request}
            self.changed_count = len(changed)
            self.changed = self._changed(changed[:MAX_CHANGED_SHOWN], after)

        self._submit("evaluate", run, done)

    def _changed(self, indices: np.ndarray, after: Evaluation) -> list[dict]:
        missing = [int(i) for i in indices if int(i) not in self._pngs]
        if missing:
            pictures = display_images(self._probe, missing)
            self._pngs.update({i: render.png(p) for i, p in zip(missing, pictures)})
        names = self.classes
        out = []
        for i in (int(i) for i in indices):
            label, was, now = int(after.labels[i]), int(self._base.predictions[i]), int(after.predictions[i])
            out.append(
                {
                    "index": i,
                    "label": names[label],
                    "before": names[was],
                    "after": names[now],
                    "fixed": now == label,
                    "image": self._pngs[i],
                }
            )
        return out

    # -- static picture -----------------------------------------------------------------------------------

    def _draw(self) -> Image.Image:
        from matplotlib.figure import Figure

        many = len(self.classes) > ALL_CLASSES_UP_TO
        fig = Figure(figsize=(5.0, 3.4 if many else 2.6), layout="constrained")
        ax = fig.add_subplot()
        if self.before and self.after:
            before = np.array([np.nan if v is None else v for v in self.before["per_class"]], dtype=float)
            after = np.array([np.nan if v is None else v for v in self.after["per_class"]], dtype=float)
            title = (
                f"{len(self.ablated)} units of {self.layer} ablated ({self.mode}): accuracy "
                f"{self.before['accuracy']:.1%} → {self.after['accuracy']:.1%}"
            )
            if many:  # the classes that changed most, as the live panel lists them: bars across, names in full
                shown = classes_changed_most(before, after, TOP_CLASSES)
                y = np.arange(len(shown))
                ax.barh(y - 0.2, before[shown], 0.4, label="before", color="0.7")
                ax.barh(y + 0.2, after[shown], 0.4, label="after", color="C3")
                ax.set_yticks(y, [_short(self.classes[i], 24) for i in shown], fontsize=8)
                ax.invert_yaxis()
                ax.set_xlim(0, 1)
                fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
                title += f"\nthe {len(shown)} of {len(self.classes):,} classes whose accuracy changed most"
            else:
                x = np.arange(len(self.classes))
                ax.bar(x - 0.2, before, 0.4, label="before", color="0.7")
                ax.bar(x + 0.2, after, 0.4, label="after", color="C3")
                ax.set_xticks(x, [_short(name) for name in self.classes])
                ax.set_ylim(0, 1)
                fig.legend(loc="outside upper right", ncols=2, fontsize=8, frameon=False)  # above the bars
            ax.set_title(title, fontsize=9)
            warnings = self.before.get("warnings") or []
            if warnings:
                text = "\n".join(textwrap.fill(f"⚠ {w}", 80) for w in warnings)
                fig.suptitle(text, fontsize=7, color="#b35900", ha="left", x=0.01)
        return figure_png(fig)

    def describe(self) -> str:
        if not (self.before and self.after):
            return f"ablation panel of layer {self.layer}: no result yet"
        text = (
            f"{len(self.ablated)} units of layer {self.layer} ablated ({self.mode}): accuracy "
            f"{self.before['accuracy']:.1%} before, {self.after['accuracy']:.1%} after"
        )
        return text + (f"; {self.changed_count} predictions changed" if self.changed_count else "")


def classes_changed_most(before: np.ndarray, after: np.ndarray, top: int) -> list[int]:
    """The ``top`` classes whose accuracy changed most (by size; ties in class order, classes without images
    last), as the live panel (js/lib/classes.js) lists them."""
    change = np.abs(after - before)
    size = np.where(np.isnan(change), -1.0, change)
    return [int(i) for i in np.lexsort((np.arange(len(size)), -size))[:top]]


def chance_warning(accuracy: float | None, chance: float) -> str | None:
    """What the panel says when the accuracy without ablation is at or below ``chance`` (the accuracy of
    always guessing the most frequent label, as `neuronwidgets.diagnostics` defines it for rankings)."""
    if accuracy is None or accuracy > chance:
        return None
    return (
        f"accuracy without ablation is {accuracy:.1%}, at or below chance ({chance:.1%}, always guessing the most "
        "frequent label): nothing can drop, so every unit scores alike; the labels may not be the model's class "
        "indices"
    )


def _base_warnings(base: Evaluation, classes: int) -> list[str]:
    counts = np.bincount(np.asarray(base.labels, dtype=np.int64), minlength=classes)
    warning = chance_warning(base.accuracy, chance_accuracy(counts, classes))
    return [] if warning is None else [warning]


def _layer_of(probe: Probe, ranking: Ranking | None, layer: str | None) -> str:
    """The panel's layer: the ranking's; without one, ``layer`` or else the probe's layer as it is now."""
    if ranking is not None:
        if layer is not None and layer != ranking.layer:
            raise ValueError(f"layer={layer!r} differs from the ranking's layer {ranking.layer!r}; pass one of them")
        return ranking.layer
    layer = probe.layer if layer is None else layer
    if layer not in probe.layers:
        raise ValueError(f"unknown layer {layer!r}; valid: {', '.join(probe.layers)}")
    return layer


def _short(name: str, width: int = 8) -> str:
    """A class name cut to fit under its bars, as the live panel cuts it."""
    return name if len(name) <= width else name[: width - 1] + "…"


def _summary(ev: Evaluation) -> dict:
    return {"accuracy": ev.accuracy, "per_class": nan_to_none(ev.per_class_accuracy), "loss": ev.loss}
