"""Explorer: the ranked list, the activation overlay and the ablation panel of one probe, linked."""

from __future__ import annotations

from typing import Any

import ipywidgets
import traitlets
from PIL import Image

from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking
from neuronwidgets.widgets._base import StrictInt, check_kwargs
from neuronwidgets.widgets._picture import Pictured
from neuronwidgets.widgets.ablation_panel import AblationPanel
from neuronwidgets.widgets.activation_overlay import ActivationOverlay
from neuronwidgets.widgets.ranked_list import RankedList


class Explorer(Pictured, ipywidgets.GridBox):
    """Select a unit in the list and the overlay and the ablation panel follow; the list's layer picker and
    refresh button drive all three. ``selected_unit`` mirrors the list's (observe or link it)."""

    selected_unit = StrictInt(None, allow_none=True)

    def __init__(self, probe: Probe, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs, options_of=RankedList)  # the options go to the list
        if not isinstance(probe, Probe):
            raise TypeError(f"Explorer needs a Probe, got {type(probe).__name__}")
        self.ranked_list = RankedList(probe, **kwargs)
        unit = self.ranked_list.selected_unit
        self.overlay = ActivationOverlay(probe, layer=self.ranked_list.layer, unit=unit or 0)
        ranking = self.ranked_list.ranking
        layer = None if ranking is not None else self.ranked_list.layer  # until the list's ranking lands
        self.panel = AblationPanel(probe, ranking=ranking, layer=layer, selected_unit=unit)
        super().__init__(
            children=[self.ranked_list, self.overlay, self.panel],
            layout=ipywidgets.Layout(
                grid_template_columns="minmax(260px, 1fr) minmax(320px, 1.4fr)",
                grid_template_areas='"list overlay" "list panel"',
                grid_gap="8px",
                width="100%",
            ),
        )
        self.add_class("nw-explorer")
        self.ranked_list.layout.grid_area = "list"
        self.overlay.layout.grid_area = "overlay"
        self.panel.layout.grid_area = "panel"
        traitlets.link((self.ranked_list, "selected_unit"), (self, "selected_unit"))
        self.ranked_list.observe(self._on_select, names=["selected_unit"])
        self.ranked_list.observe(self._on_ranking, names=["ranking"])
        self.ranked_list.observe(self._on_layer, names=["layer"])
        self.ranked_list.on_refresh(self._on_refresh)
        if self.ranked_list.ranking is not None:  # it may have landed before the observers were in place
            self._on_ranking({"new": self.ranked_list.ranking})

    def _on_select(self, change: dict) -> None:
        unit = change["new"]
        if unit is not None and unit < self.overlay.units:
            self.overlay.unit = unit
        if unit is None or unit < self.panel.units:
            self.panel.selected_unit = unit

    def _on_layer(self, change: dict) -> None:
        self.overlay.layer = change["new"]

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
