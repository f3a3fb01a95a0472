"""MonitorView: a `Monitor`'s rankings drawn live while the training cell runs.

The kernel handles no front-end messages while a cell runs, so this view only listens: each snapshot the
monitor takes sets the traits from Python, and ipykernel sends those updates at once, mid-cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets
from PIL import Image

from neuronwidgets.monitor import Monitor, Snapshot
from neuronwidgets.ranking import compare
from neuronwidgets.widgets._base import StrictInt, Widget, asset, check_kwargs, figure_png, nan_to_none


class MonitorView(Widget):
    """The rank of the ``top`` units (of the latest snapshot) over the training steps, the units that died or
    emerged since the first snapshot, and the rank stability between consecutive snapshots.

    ``MonitorView(monitor)`` shows the monitor's history so far and redraws on every new snapshot (it chains
    itself onto ``monitor.on_update``, keeping any callback already there).
    """

    _esm = asset("monitor.js")
    _css = asset("widgets.css")

    top = StrictInt(8, min=1).tag(sync=True, option=True)
    steps = traitlets.List(traitlets.Int()).tag(sync=True)
    lines = traitlets.List().tag(sync=True)  # [{"unit": u, "ranks": [rank at each step, 0 = most important]}]
    stability = traitlets.List().tag(sync=True)  # Spearman of each snapshot with the previous one (None: NaN)
    died = traitlets.List(traitlets.Int()).tag(sync=True)
    emerged = traitlets.List(traitlets.Int()).tag(sync=True)
    info = traitlets.Dict().tag(sync=True)  # method, layer, units, every, step, snapshots, seconds, monitor_seconds

    def __init__(self, monitor: Monitor, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs)
        if not isinstance(monitor, Monitor):
            raise TypeError(f"MonitorView needs a Monitor, got {type(monitor).__name__}")
        self.monitor = monitor
        self._ranks: list[np.ndarray] = []  # per snapshot: each unit's rank (kept incrementally: cheap per step)
        self._stability: list[float] = []
        super().__init__(**kwargs)
        self.observe(lambda _: self._sync(), names=["top"])
        previous = monitor.on_update

        def on_update(snapshot: Snapshot) -> None:
            if previous is not None:
                previous(snapshot)
            self._on_snapshot()

        monitor.on_update = on_update
        self._sync()

    def _on_snapshot(self) -> None:
        """Redraw; a display problem is shown in the widget and never stops the training loop."""
        try:
            self._sync()
        except Exception as err:  # the caller is the user's training loop
            self.report(err)

    def _sync(self) -> None:
        history = self.monitor.history
        for snapshot in history[len(self._ranks) :]:
            if self._ranks:
                previous = history[len(self._ranks) - 1].ranking
                self._stability.append(compare(previous, snapshot.ranking)["spearman"])
            self._ranks.append(np.argsort(snapshot.ranking.order))
        layer = self.monitor.layer
        units = self.monitor.probe.layer_info(layer).units
        shown: list[int] = history[-1].ranking.order[: self.top].tolist() if history else []
        ranks = np.stack(self._ranks) if self._ranks else np.zeros((0, units), dtype=int)
        with self.hold_sync():
            self.steps = [s.step for s in history]
            self.lines = [{"unit": u, "ranks": ranks[:, u].tolist()} for u in shown]
            self.stability = nan_to_none(self._stability)
            self.died = self.monitor.died()
            self.emerged = self.monitor.emerged()
            self.info = {
                "method": self.monitor.method,
                "layer": layer,
                "units": units,
                "every": self.monitor.every,
                "step": history[-1].step if history else None,
                "snapshots": len(history),
                "seconds": round(history[-1].seconds, 4) if history else None,
                "monitor_seconds": round(sum(s.seconds for s in history), 3),
            }

    def _draw(self) -> Image.Image:
        """Rank over steps of the shown units, as a matplotlib picture (for saved notebooks)."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.5, 3.0), layout="constrained")
        ax = fig.add_subplot()
        for line in self.lines:
            ax.plot(self.steps, [r + 1 for r in line["ranks"]], marker="o", markersize=3, label=f"unit {line['unit']}")
        ax.invert_yaxis()
        ax.set_xlabel("training step")
        ax.set_ylabel("rank (1 = most important)")
        ax.set_title(f"{self.info.get('method', '')} · {self.info.get('layer', '')} · {len(self.steps)} snapshots")
        if self.lines:
            ax.legend(fontsize="x-small", ncol=2)
        return figure_png(fig)
