"""RankedList: the units of a layer in ranked order, with pickers that re-rank in the kernel."""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import traitlets
from PIL import Image

from neuronwidgets.dissection import Dissection
from neuronwidgets.engine.progress import ProgressInfo
from neuronwidgets.methods import MethodSpec, spec, specs
from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking
from neuronwidgets.widgets._arrays import array_trait
from neuronwidgets.widgets._base import StrictInt, Widget, asset, check_kwargs, figure_png, index_or_none
from neuronwidgets.widgets._images import thumbnail
from neuronwidgets.widgets._worker import Job, worker_for

DEFAULT_METHOD = "ablation"
# seconds between two estimates a refining ranking shows: a few a second, so a fast run does not flood the comm
LIVE_INTERVAL = 0.25


def method_info(method: MethodSpec) -> dict[str, Any]:
    """What the front end shows and decides its pickers by, from the method's declaration."""
    return {
        "name": method.name,
        "description": method.description,
        "takes_target": method.takes_target,
        "needs_target": method.needs_target,
        "needs_image": method.needs_image,
    }


def refines_live(method: MethodSpec) -> bool:
    """Whether the method can rank every image in a random order and report its estimate after each round
    (``fraction``, ``seed`` and an ``update`` callback; ablation): the list then shows it refine to the exact
    ranking instead of showing a cheaper preview method first."""
    return {"fraction", "seed", "update"} <= set(method.options)


def sampling_info(ranking: Ranking) -> dict[str, Any]:
    """What the list says about how much of the data a ranking is based on: ``exact`` (None for a method
    that does not say), and for a sampled estimate the images it used (fewest, most, per unit), the population
    its scores are means over, the intervals' confidence and whether they hold for every unit at once, and the
    top set it settled (with ``top=``)."""
    meta = ranking.meta
    if "exact" not in meta:
        return {"exact": None}
    used = np.asarray(meta["images_used"])
    population = int(meta.get("population", used.max()))
    top_set = meta.get("top_set")
    return {
        "exact": bool(meta["exact"]),
        "images_used": [int(used.min()), int(used.max())],
        "population": population,
        "confidence": meta.get("confidence"),
        "simultaneous": bool(meta.get("simultaneous", False)),
        "top_set": None if top_set is None else [int(unit) for unit in top_set],
    }


class LiveEstimates:
    """The estimates of a refining ranking, shown at most once per ``interval`` seconds. One that comes
    sooner waits and is shown at the next estimate or progress report after the interval (the latest wins),
    so the list lags the ranking by at most a progress step. The exact estimate is not shown: it is the
    result, which follows at once."""

    def __init__(
        self,
        show: Callable[[Ranking], None],
        progress: Callable[[ProgressInfo], None],
        interval: float = LIVE_INTERVAL,
    ) -> None:
        self._show = show
        self._progress = progress
        self.interval = interval
        self._pending: Ranking | None = None
        self._shown_at = -math.inf

    def update(self, ranking: Ranking) -> None:
        """The ``update=`` callback of `Probe.rank`: the ranking so far."""
        self._pending = None if ranking.meta.get("exact") else ranking
        self._flush()

    def progress(self, info: ProgressInfo) -> None:
        """The ``progress=`` callback: reported on, and a chance to show an estimate that waited."""
        self._progress(info)
        self._flush()

    def _flush(self) -> None:
        now = time.perf_counter()
        if self._pending is None or now - self._shown_at < self.interval:
            return
        ranking, self._pending, self._shown_at = self._pending, None, now
        self._show(ranking)


LABEL_TOP = 3
"""Concepts a Dissection label's tooltip lists (best first)."""


def label_rows(labels: Any, units: int) -> tuple[list[str], list[str]]:
    """Each unit's label text and tooltip from ``labels``: a `Dissection` (best concept and IoU, e.g.
    "red 0.22", and the top concepts in the tooltip), a ``{unit: str}`` mapping (units left out: no label) or a
    sequence of one str per unit. Raises TypeError/ValueError naming what was wrong."""
    if isinstance(labels, Dissection):
        if labels.units != units:
            raise ValueError(f"labels: the Dissection has {labels.units} units, the layer {units}")
        titles = []
        for k in range(units):
            top = np.argsort(-labels.iou[k], kind="stable")[:LABEL_TOP]
            best = ", ".join(f"{labels.concepts[c]} {labels.iou[k, c]:.3f}" for c in top)
            titles.append(f"IoU with concepts (quantile {labels.quantile:g}): {best}")
        return [f"{concept} {iou:.2f}" for concept, iou in labels.best], titles
    if isinstance(labels, Mapping):
        texts = [""] * units
        for unit, text in labels.items():
            if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < units:
                raise ValueError(f"labels: keys must be units in 0..{units - 1}, got {unit!r}")
            if not isinstance(text, str):
                raise TypeError(f"labels: unit {unit}'s label must be a str, got {type(text).__name__}")
            texts[int(unit)] = text
        return texts, list(texts)
    if isinstance(labels, Sequence) and not isinstance(labels, (str, bytes)):
        if len(labels) != units or not all(isinstance(text, str) for text in labels):
            raise ValueError(f"labels: a sequence needs one str per unit ({units}), got {len(labels)} items")
        return list(labels), list(labels)
    raise TypeError(
        f"labels must be a Dissection, a {{unit: str}} mapping, a sequence of str or None, got {type(labels).__name__}"
    )


def ranking_warnings(ranking: Ranking) -> list[str]:
    """What the list says about a ranking that may mislead: ``ranking.meta["warnings"]`` where the method
    gives them; for a ranking without that key, at least whether every unit scored the same."""
    if "warnings" in ranking.meta:
        return [str(w) for w in ranking.meta["warnings"]]
    scores = np.asarray(ranking.scores)
    if scores.size > 1 and np.all(scores == scores[0]):
        return [
            f"every unit scored {scores[0]:.4g}: this ranking does not tell the units apart "
            "(if the accuracy is at chance, the labels may not be the model's class indices)"
        ]
    return []


class RankedList(Widget):
    """The units of a layer ranked by a method, most important first; ``selected_unit`` follows clicks.

    ``RankedList(probe)`` ranks in the kernel (method and class pickers, layer picker, refresh);
    ``RankedList(ranking)`` only shows a finished `Ranking`. Observe or link ``selected_unit``.
    """

    _esm = asset("ranked-list.js")
    _css = asset("widgets.css")

    method = traitlets.Unicode(DEFAULT_METHOD).tag(sync=True, option=True)
    target = StrictInt(None, allow_none=True).tag(sync=True, option=True)
    layer = traitlets.Unicode("").tag(sync=True, option=True)
    selected_unit = StrictInt(None, allow_none=True).tag(sync=True, option=True)
    # the image explained by methods that explain one image (resampling_*)
    image = StrictInt(0, min=0).tag(sync=True, option=True)
    methods = traitlets.List(traitlets.Dict()).tag(sync=True)  # method_info() of each method offered
    classes = traitlets.List(traitlets.Unicode()).tag(sync=True)
    layers = traitlets.List(traitlets.Unicode()).tag(sync=True)
    interactive = traitlets.Bool(False).tag(sync=True)  # False for a fixed Ranking: pickers disabled
    scores = array_trait("float64", help="score of each unit")
    order = array_trait("int32", help="unit indices, most important first")
    intervals = array_trait("float64", help="(units, 2) lower and upper bound of each score of an estimate")
    settled = array_trait("uint8", help="1 for each unit whose place in or out of the top set is settled")
    # method, layer, target, units, provisional, seconds, engine, warnings, and sampling_info()
    info = traitlets.Dict().tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)  # what the list waits for (a class, for a method that needs one)
    # a label per unit (a Dissection, {unit: str} or a str per unit; not synced): shown for its layer only
    labels = traitlets.Any(None, allow_none=True).tag(option=True)
    dissect = traitlets.Bool(False).tag(option=True)  # label every layer shown by dissecting it in the background
    label_texts = traitlets.List(traitlets.Unicode()).tag(sync=True)  # per unit, or [] for no label column
    label_titles = traitlets.List(traitlets.Unicode()).tag(sync=True)  # each label's tooltip
    ranking = traitlets.Instance(Ranking, allow_none=True)  # the Ranking shown (not synced)

    _writable: ClassVar[frozenset[str]] = frozenset({"method", "target", "layer", "selected_unit", "image"})
    _handlers: ClassVar[dict[str, str]] = {
        **Widget._handlers,
        "thumbnail": "_on_thumbnail",
        "cancel": "cancel",
        "refresh": "refresh",
    }

    def __init__(self, ranking_or_probe: Ranking | Probe, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs)
        source = ranking_or_probe
        if not isinstance(source, (Ranking, Probe)):
            raise TypeError(f"RankedList needs a Ranking or a Probe, got {type(source).__name__}")
        self._probe = source if isinstance(source, Probe) else None
        self._worker = worker_for(self._probe) if self._probe is not None else None
        self._cache: dict[tuple, Ranking] = {}
        self._dissections: dict[str, Dissection] = {}
        self._labels_layer: str | None = None  # the layer the labels are of
        self._refresh_callbacks: list[Callable[[], None]] = []
        if isinstance(source, Ranking):
            if set(kwargs) - {"selected_unit", "labels"}:
                raise TypeError(
                    f"RankedList(ranking) shows a finished Ranking: only selected_unit and labels apply, got "
                    f"{', '.join(sorted(set(kwargs) - {'selected_unit', 'labels'}))}; pass a Probe to rank by them"
                )
            super().__init__(method=source.method, target=source.target, layer=source.layer, classes=[])
            known = specs().get(source.method)
            self.methods = [
                {
                    "name": source.method,
                    "description": known.description if known else "",
                    "takes_target": source.target is not None,
                    "needs_image": False,
                }
            ]
            self.layers = [source.layer]
            self._show(source)
            if "selected_unit" in kwargs:
                self.selected_unit = kwargs["selected_unit"]
            self.labels = kwargs.get("labels")
            return
        probe = source
        super().__init__(
            methods=[method_info(m) for m in specs().values()],
            classes=probe.classes,
            layers=probe.layers,
            interactive=True,
            layer=probe.layer,
        )
        with self.hold_trait_notifications():
            for key, value in kwargs.items():
                setattr(self, key, value)
        self.observe(self._on_request, names=["method", "target", "layer", "image"])
        if self.dissect and not callable(getattr(probe.source.dataset, "concept_masks", None)):
            raise ValueError(
                "dissect=True needs the probe's data to have concept_masks(i) (e.g. nw.datasets.shapes); "
                f"{type(probe.source.dataset).__name__} has none: pass labels= instead"
            )
        self.rerank()
        self._label_layer()

    # -- validation ---------------------------------------------------------------------------------------

    @traitlets.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        valid = [m["name"] for m in self.methods] if self.methods else list(specs())
        if proposal["value"] not in valid:
            raise traitlets.TraitError(f"unknown method {proposal['value']!r}; valid: {', '.join(valid)}")
        return proposal["value"]

    @traitlets.validate("target")
    def _valid_target(self, proposal: dict) -> int | None:
        classes = len(self.classes) if self.interactive else None
        return index_or_none(proposal["value"], classes, "target must be a class index")

    @traitlets.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        if self.layers and proposal["value"] not in self.layers:
            raise traitlets.TraitError(f"unknown layer {proposal['value']!r}; valid: {', '.join(self.layers)}")
        return proposal["value"]

    @traitlets.validate("selected_unit")
    def _valid_unit(self, proposal: dict) -> int | None:
        return index_or_none(proposal["value"], self.info.get("units"), "selected_unit must be")

    @traitlets.validate("labels")
    def _valid_labels(self, proposal: dict) -> Any:
        labels = proposal["value"]
        if labels is None:
            return None
        layer = labels.layer if isinstance(labels, Dissection) else self.info.get("layer", self.layer)
        if self.layers and layer not in self.layers:
            raise traitlets.TraitError(
                f"labels are of layer {layer!r}, not one of this list's: {', '.join(self.layers)}"
            )
        units = self.info.get("units") if layer == self.info.get("layer") else None
        if units is None:
            units = self._probe.site(layer).units if self._probe is not None else labels.units
        try:
            label_rows(labels, units)
        except (TypeError, ValueError) as err:
            raise traitlets.TraitError(str(err)) from None
        return labels

    @traitlets.observe("labels")
    def _on_labels(self, change: dict) -> None:
        labels = change["new"]
        self._labels_layer = (
            None
            if labels is None
            else (labels.layer if isinstance(labels, Dissection) else self.info.get("layer", self.layer))
        )
        self._sync_labels()

    @traitlets.validate("image")
    def _valid_image(self, proposal: dict) -> int:
        n = len(self._probe.source) if self._probe is not None else 1
        if not 0 <= proposal["value"] < n:
            raise traitlets.TraitError(f"image must be an index in 0..{n - 1}, got {proposal['value']}")
        return proposal["value"]

    # -- ranking ------------------------------------------------------------------------------------------

    def _on_request(self, change: dict) -> None:
        if change["name"] == "image" and not spec(self.method).needs_image:
            return
        if change["name"] == "layer":
            self.selected_unit = None
        self.rerank()
        if change["name"] == "layer":
            self._label_layer()

    def _options(self) -> dict[str, Any]:
        """The options the current method takes, as its declaration says (class, image)."""
        method = spec(self.method)
        options: dict[str, Any] = {}
        if self.target is not None and method.takes_target:
            options["target"] = self.target
        if method.needs_image:
            options["image"] = self.image
        return options

    def rerank(self) -> None:
        """Rank with the current method, class and layer in the background (cached per combination)."""
        if self._probe is None:
            return
        if spec(self.method).needs_target and self.target is None:
            self._worker.cancel(self._slot("rank"))  # nothing to rank until a class is picked: ask for one
            self.prompt = f"{self.method} ranks the units for one class: pick a class"
            self._settle("idle")
            return
        self.prompt = ""
        options = self._options()
        key = _cache_key(self.layer, self.method, options)
        if key in self._cache:
            self._worker.cancel(self._slot("rank"))
            self._show(self._cache[key])
            self.error = ""  # an error of an earlier request is stale once this one is shown
            self._settle("idle")
            return
        probe, method, layer = self._probe, self.method, self.layer
        declared = spec(method)
        refines = refines_live(declared)
        # the declared cheaper estimate of the same quantity, shown while the ranking runs (not per class), unless
        # the method's own refining estimate comes sooner (`MethodSpec.estimate_first`)
        preview = declared.preview if "target" not in options else None
        # a preview this list has shown already is shown again rather than ranked again
        shown_before = None if preview is None else self._cache.get(_cache_key(layer, preview, {}))

        # warn=False: the list shows the warnings (info["warnings"]); from the worker thread they would land
        # as a stderr box in whichever cell ran last
        def run(job: Job) -> Ranking:
            progress = self._progress_callback(job)
            own_first = refines and declared.estimate_first is not None and declared.estimate_first(probe.site(layer))
            if preview is not None and not own_first:
                first = shown_before
                if first is None:
                    first = probe.rank(preview, layer=layer, progress=progress, cancel=job.cancel, warn=False)
                self._show_provisional(job, first)
            if refines:
                live = self._live_estimates(job, progress)
                return probe.rank(
                    method,
                    layer=layer,
                    fraction=1.0,
                    seed=0,
                    update=live.update,
                    progress=live.progress,
                    cancel=job.cancel,
                    warn=False,
                    **options,
                )
            return probe.rank(method, layer=layer, progress=progress, cancel=job.cancel, warn=False, **options)

        def done(ranking: Ranking) -> None:
            self._cache[key] = ranking
            self._show(ranking)

        previous = self.ranking

        def cancelled() -> None:
            if self.info.get("provisional") and previous is not None:
                self._show(previous)  # the estimate promised an exact ranking that will not come

        self._submit("rank", run, done, on_cancel=cancelled)

    def _live_estimates(self, job: Job, progress: Callable[[ProgressInfo], None]) -> LiveEstimates:
        """The callbacks that show a refining ranking's estimates while ``job`` is current."""
        return LiveEstimates(lambda ranking: self._show_provisional(job, ranking), progress)

    def _show_provisional(self, job: Job, ranking: Ranking) -> None:
        """Show ``ranking`` as an estimate of the one ``job`` computes, unless a newer request replaced it."""
        if job.current:
            with self.hold_sync():
                self._show(ranking, provisional=True)

    def cancel(self) -> None:
        """Stop the ranking in progress; the list keeps what it showed."""
        if self._worker is not None:
            self._worker.cancel(self._slot("rank"))

    def refresh(self) -> None:
        """Forget cached rankings (and dissections) and rank again (after the model changed, e.g. during
        training)."""
        self._cache.clear()
        self._dissections.clear()
        self.rerank()
        self._label_layer()
        for callback in self._refresh_callbacks:
            callback()

    def on_refresh(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every refresh (the Explorer refreshes its other views with it)."""
        self._refresh_callbacks.append(callback)

    def _show(self, ranking: Ranking, provisional: bool = False) -> None:
        """Put ``ranking`` on show: scores, order, a sampled estimate's intervals and settled units, and the
        ``info`` the heading and the status line are made of."""
        if self.selected_unit is not None and self.selected_unit >= ranking.units:
            self.selected_unit = None
        sampling = sampling_info(ranking)
        self.scores = ranking.scores
        self.order = ranking.order
        # an exact ranking's intervals have zero width: nothing to draw
        self.intervals = None if sampling["exact"] in (None, True) else ranking.meta["intervals"]
        self.settled = ranking.meta["settled"] if sampling.get("top_set") is not None else None
        self.info = {
            "method": ranking.method,
            "layer": ranking.layer,
            "target": ranking.target,
            "target_name": self._class_name(ranking.target),
            "units": ranking.units,
            "provisional": provisional,
            "estimate_for": self.method if provisional else None,
            "seconds": ranking.meta.get("seconds"),
            "engine": ranking.meta.get("engine"),
            "warnings": ranking_warnings(ranking),
            **sampling,
        }
        self._sync_labels()
        self.ranking = ranking

    # -- labels -------------------------------------------------------------------------------------------

    def _sync_labels(self) -> None:
        """Send the labels' texts while the list shows their layer's ranking (else no label column)."""
        shown = self.info.get("layer")
        if self.labels is None or shown != self._labels_layer:
            texts: list[str] = []
            titles: list[str] = []
        else:
            texts, titles = label_rows(self.labels, self.info["units"])
        with self.hold_sync():
            self.label_texts, self.label_titles = texts, titles

    def _label_layer(self) -> None:
        """With ``dissect=True``: label the list's layer by its dissection (once per layer, in the background)."""
        if not self.dissect or self._probe is None:
            return
        probe, layer = self._probe, self.layer
        if layer in self._dissections:
            self.labels = self._dissections[layer]
            return

        def run(job: Job) -> Dissection:
            return probe.dissect(layer=layer, progress=self._progress_callback(job), cancel=job.cancel)

        def done(dissection: Dissection) -> None:
            self._dissections[layer] = dissection
            if self.layer == layer:
                self.labels = dissection

        self._submit("labels", run, done)

    def _class_name(self, target: int | None) -> str | None:
        if target is None:
            return None
        return self.classes[target] if target < len(self.classes) else str(target)

    # -- thumbnails -----------------------------------------------------------------------------------------

    def _on_thumbnail(self, unit: Any = None) -> None:
        if self._probe is None:
            raise ValueError("thumbnails need a Probe: RankedList(probe)")
        units = self.info.get("units", 0)
        if isinstance(unit, bool) or not isinstance(unit, int) or not 0 <= unit < units:
            raise ValueError(f"thumbnail: unit must be an integer in 0..{units - 1}, got {unit!r}")
        probe, layer = self._probe, self.layer

        def run(job: Job) -> bytes:
            return thumbnail(probe, unit, layer)

        def done(png: bytes) -> None:
            self.send({"type": "thumbnail", "unit": unit, "layer": layer}, buffers=[png])

        self._worker.submit(Job(self._slot("thumbnail"), run, done, self.report), cancel_running=False)

    # -- static picture -----------------------------------------------------------------------------------

    def _draw(self) -> Image.Image:
        if self.ranking is None:
            return Image.new("RGB", (320, 40), "white")
        highlight = [] if self.selected_unit is None else [self.selected_unit]
        fig = self.ranking.plot(top=min(20, self.ranking.units), highlight=highlight)
        warnings = self.info.get("warnings") or []
        if warnings:  # said in the picture too: a saved notebook should not show a misleading ranking silently
            text = "\n".join(textwrap.fill(f"⚠ {w}", 90) for w in warnings)
            fig.set_figheight(fig.get_figheight() + 0.14 * (text.count("\n") + 1))  # room for it, bars unsquashed
            fig.suptitle(text, fontsize=7, color="#b35900", ha="left", x=0.01)
        return figure_png(fig)

    def describe(self) -> str:
        if self.ranking is None:
            return "ranked list: no ranking yet"
        info, ranking = self.info, self.ranking
        target = "all classes" if info.get("target") is None else f"class {info.get('target_name')}"
        texts = self.label_texts
        top = ", ".join(
            f"unit {unit} ({score:.4g}{', ' + texts[unit] if texts and texts[unit] else ''})"
            for unit, score in ranking.top(5)
        )
        text = f"{ranking.method} ranking of the {ranking.units} units of layer {ranking.layer} ({target}); top: {top}"
        warnings = info.get("warnings") or []
        return text + "".join(f". Warning: {w}" for w in warnings)


def _cache_key(layer: str, method: str, options: dict[str, Any]) -> tuple:
    """What a list's rankings are cached under: the layer, the method and its options."""
    return (layer, method, tuple(sorted(options.items())))
