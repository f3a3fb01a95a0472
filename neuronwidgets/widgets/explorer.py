"""Explorer: the ranked list, the activation overlay and the ablation panel of one probe, linked.

The Explorer is one anywidget whose traits reference its three views (``IPY_MODEL_<id>`` strings, ipywidgets'
``widget_serialization``); its front end (``js/explorer.js``) asks the widget manager for their models and
renders each with that view's own code, in one grid. So it runs wherever an anywidget runs (JupyterLab,
Notebook 7, marimo's ``mo.ui.anywidget``), while the linking stays in Python. Its own traits repeat the views'
state, so ``get_state()`` (what marimo's ``.value`` returns) says what the three views show.
"""

from __future__ import annotations

from typing import Any, ClassVar

import anywidget
import traitlets
from ipywidgets import widget_serialization
from PIL import Image

from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking
from neuronwidgets.widgets._base import Keyed, StrictInt, Widget, asset, check_kwargs, check_update
from neuronwidgets.widgets._picture import Pictured
from neuronwidgets.widgets.ablation_panel import AblationPanel
from neuronwidgets.widgets.activation_overlay import ActivationOverlay
from neuronwidgets.widgets.ranked_list import RankedList

# The Explorer's traits that are a view's trait, linked both ways: name -> (the view's attribute, its trait).
# js/explorer.js repeats a view's change of one of them on the Explorer's model (marimo re-runs the cells that
# read `.value` only on a change of the Explorer's own model).
LINKED: dict[str, tuple[str, str]] = {
    "selected_unit": ("ranked_list", "selected_unit"),
    "method": ("ranked_list", "method"),
    "target": ("ranked_list", "target"),
    "layer": ("ranked_list", "layer"),
    "k": ("panel", "k"),
    "mode": ("panel", "mode"),
    "toggled": ("panel", "toggled"),
}


def _view(instance_of: type[Widget]) -> traitlets.Instance:
    """A trait holding one of the Explorer's views (set once: the links are to it), sent to the front end as
    ``IPY_MODEL_<id>``."""
    return traitlets.Instance(instance_of, read_only=True).tag(sync=True, **widget_serialization)


class Explorer(Pictured, Keyed, anywidget.AnyWidget):
    """Select a unit in the list and the overlay and the ablation panel follow; the list's layer picker and
    refresh button drive all three.

    ``selected_unit``, ``method``, ``target`` and ``layer`` are the list's, ``k``, ``mode`` and ``toggled``
    the panel's, linked both ways (observe them, link them, or set them to drive the views); ``shown`` says
    what the views show: the ranking (method, layer, class, units, provisional), the overlay's unit (and its
    mode and class) and the panel's accuracy before and after the ablation. A class picked in the list is the
    class the overlay's contribution mode shows.
    """

    _esm = asset("explorer.js")
    _css = asset("widgets.css")

    ranked_list = _view(RankedList)
    overlay = _view(ActivationOverlay)
    panel = _view(AblationPanel)
    selected_unit = StrictInt(None, allow_none=True).tag(sync=True)
    method = traitlets.Unicode().tag(sync=True)
    target = StrictInt(None, allow_none=True).tag(sync=True)
    layer = traitlets.Unicode().tag(sync=True)
    k = StrictInt(0).tag(sync=True)
    mode = traitlets.Unicode().tag(sync=True)
    toggled = traitlets.List(StrictInt()).tag(sync=True)
    shown = traitlets.Dict().tag(sync=True)  # {ranking: {...}, unit, overlay: {mode, target}, accuracy}

    _writable: ClassVar[frozenset[str]] = frozenset(LINKED)

    def __init__(self, probe: Probe, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs, options_of=RankedList)  # the options go to the list
        if not isinstance(probe, Probe):
            raise TypeError(f"Explorer needs a Probe, got {type(probe).__name__}")
        ranked_list = RankedList(probe, **kwargs)
        unit = ranked_list.selected_unit
        overlay = ActivationOverlay(probe, layer=ranked_list.layer, unit=unit or 0, target=ranked_list.target)
        ranking = ranked_list.ranking
        layer = None if ranking is not None else ranked_list.layer  # until the list's ranking lands
        panel = AblationPanel(probe, ranking=ranking, layer=layer, selected_unit=unit)
        views = {"ranked_list": ranked_list, "overlay": overlay, "panel": panel}
        for name, view in views.items():
            self.set_trait(name, view)  # before the comm opens: its first message carries them
        state = {name: getattr(views[view], trait) for name, (view, trait) in LINKED.items()}
        super().__init__(**state, shown=_shown(ranked_list, overlay, panel))
        for name, (view, trait) in LINKED.items():
            traitlets.link((views[view], trait), (self, name))
        ranked_list.observe(self._on_select, names=["selected_unit"])
        ranked_list.observe(self._on_ranking, names=["ranking"])
        ranked_list.observe(self._on_layer, names=["layer"])
        ranked_list.observe(self._on_target, names=["target"])
        ranked_list.on_refresh(self._on_refresh)
        ranked_list.observe(self._on_shown, names=["info"])
        overlay.observe(self._on_shown, names=["unit", "mode", "target"])
        panel.observe(self._on_shown, names=["before", "after"])
        if ranked_list.ranking is not None:  # it may have landed before the observers were in place
            self._on_ranking({"new": ranked_list.ranking})

    @property
    def children(self) -> tuple[RankedList, ActivationOverlay, AblationPanel]:
        """The three views, as a Box's children (the saved picture follows their state too)."""
        return (self.ranked_list, self.overlay, self.panel)

    # -- state from the front end -------------------------------------------------------------------------

    @traitlets.validate(*LINKED)
    def _valid_linked(self, proposal: dict) -> Any:
        """A linked trait takes what its view's trait takes (checked before anything changes, so a refused
        value leaves the Explorer and the view as they were)."""
        view_name, trait = LINKED[proposal["trait"].name]
        view = getattr(self, view_name)
        return view.traits()[trait]._validate(view, proposal["value"])

    def set_state(self, sync_data: Any) -> None:
        """Apply a state update from the front end (its view repeats a view's change of a linked trait),
        all or nothing: other keys and refused values change nothing, are reported in the view they
        concern, and the front end is sent back the kernel's values."""
        keys = [k for k in sync_data if k in self.keys] if isinstance(sync_data, dict) else []
        try:
            check_update(sync_data, self._writable, "the Explorer's ")
            super().set_state(sync_data)
        except (traitlets.TraitError, TypeError, ValueError) as err:  # BadMessage is a ValueError
            concerned = [LINKED[k][0] for k in keys if k in LINKED]
            getattr(self, concerned[0] if concerned else "ranked_list").report(err)
            if keys:
                self.send_state(keys)

    # -- linking --------------------------------------------------------------------------------------------

    def _on_select(self, change: dict) -> None:
        unit = change["new"]
        if unit is not None and unit < self.overlay.units:
            self.overlay.unit = unit
        if unit is None or unit < self.panel.units:
            self.panel.selected_unit = unit

    def _on_layer(self, change: dict) -> None:
        self.overlay.layer = change["new"]

    def _on_target(self, change: dict) -> None:
        if change["new"] is not None:  # "all classes" leaves the overlay's class as it is
            self.overlay.target = change["new"]

    def _on_ranking(self, change: dict) -> None:
        ranking: Ranking | None = change["new"]
        if ranking is None or ranking.layer != self.ranked_list.layer:
            return
        self.panel.set_ranking(ranking)
        if self.ranked_list.selected_unit is None:
            self.overlay.unit = int(ranking.order[0])  # show the most important unit until one is picked

    def _on_refresh(self) -> None:
        self.overlay.refresh()
        self.panel.refresh()

    def _on_shown(self, _change: dict) -> None:
        self.shown = _shown(self.ranked_list, self.overlay, self.panel)

    # -- background work and picture -------------------------------------------------------------------------

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the background work of all three views is done (they share one worker)."""
        return self.ranked_list.wait(timeout)

    def snapshot(self) -> Image.Image:
        """The three views' pictures side by side: the list left, the overlay over the panel right."""
        left = self.ranked_list.snapshot()
        top, bottom = self.overlay.snapshot(), self.panel.snapshot()
        width = left.width + max(top.width, bottom.width) + 8
        picture = Image.new("RGB", (width, max(left.height, top.height + bottom.height + 8)), "white")
        picture.paste(left, (0, 0))
        picture.paste(top, (left.width + 8, 0))
        picture.paste(bottom, (left.width + 8, top.height + 8))
        return picture

    def describe(self) -> str:
        """The three views' pictures in words, in the picture's order (list, overlay, panel)."""
        return ". ".join(view.describe() for view in self.children)


def _shown(ranked_list: RankedList, overlay: ActivationOverlay, panel: AblationPanel) -> dict[str, Any]:
    """What the three views show now, as JSON: the list's ranking, the overlay's unit, the panel's accuracy."""
    info, before, after = ranked_list.info, panel.before, panel.after
    return {
        "ranking": {key: info.get(key) for key in ("method", "layer", "target", "units", "provisional")},
        "unit": overlay.unit,
        "overlay": {"mode": overlay.mode, "target": overlay.target},
        "accuracy": {
            "before": before.get("accuracy"),
            "after": after.get("accuracy"),
            "ablated": list(after.get("ablated", [])),
        },
    }
