"""MonitorView: a `Monitor`'s rankings drawn live while the training cell runs, or a logdir's while the
training script runs in another process.

The kernel handles no front-end messages while a cell runs, so this view only listens: each snapshot the
monitor takes sets the traits from Python, and ipykernel sends those updates at once, mid-cell. Over a logdir
a daemon thread polls the directory and sets the traits the same way.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import traitlets
from PIL import Image

from neuronwidgets.monitor import Monitor, Snapshot
from neuronwidgets.ranking import compare
from neuronwidgets.runlog import RunLog
from neuronwidgets.widgets._base import StrictInt, Widget, asset, check_kwargs, figure_png, nan_to_none


class MonitorView(Widget):
    """The rank of the ``top`` units (of the latest snapshot) over the training steps, the units that died or
    emerged since the first snapshot, and the rank stability between consecutive snapshots.

    ``MonitorView(monitor)`` shows the monitor's history so far and redraws on every new snapshot (it chains
    itself onto ``monitor.on_update``, keeping any callback already there). ``MonitorView.from_logdir(path)``
    shows a run written by ``Monitor(..., logdir=path)``, live while it goes on.
    """

    _esm = asset("monitor.js")
    _css = asset("widgets.css")

    top = StrictInt(8, min=1).tag(sync=True, option=True)
    steps = traitlets.List(traitlets.Int()).tag(sync=True)
    lines = traitlets.List().tag(sync=True)  # [{"unit": u, "ranks": [rank at each step, 0 = most important]}]
    stability = traitlets.List().tag(sync=True)  # Spearman of each snapshot with the previous one (None: NaN)
    died = traitlets.List(traitlets.Int()).tag(sync=True)
    emerged = traitlets.List(traitlets.Int()).tag(sync=True)
    # method, layer, units, every, step, snapshots, seconds, monitor_seconds; over a logdir also logdir and live
    info = traitlets.Dict().tag(sync=True)

    _poller: threading.Thread | None = None  # the logdir's polling thread (class-level: close() runs from __del__)

    def __init__(self, monitor: Monitor | RunLog, **kwargs: Any) -> None:
        check_kwargs(type(self), kwargs)
        if not isinstance(monitor, (Monitor, RunLog)):
            raise TypeError(f"MonitorView needs a Monitor or a RunLog, got {type(monitor).__name__}")
        self.monitor = monitor
        self._ranks: list[np.ndarray] = []  # per snapshot: each unit's rank (kept incrementally: cheap per step)
        self._stability: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the poller and `top` changes redraw one at a time
        super().__init__(**kwargs)
        self.observe(lambda _: self._sync(), names=["top"])
        if isinstance(monitor, Monitor):
            previous = monitor.on_update

            def on_update(snapshot: Snapshot) -> None:
                if previous is not None:
                    previous(snapshot)
                self._on_snapshot()

            monitor.on_update = on_update
        self._sync()

    @classmethod
    def from_logdir(cls, logdir: str | os.PathLike, poll: float = 1.0, **kwargs: Any) -> MonitorView:
        """A view of the run in ``logdir`` (written by ``Monitor(..., logdir=...)``, maybe in another process):
        a daemon thread looks for new snapshots every ``poll`` seconds until the run is finished or the view is
        closed (`close`)."""
        if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
            raise ValueError(f"poll must be a number of seconds > 0, got {poll!r}")
        view = cls(RunLog(logdir), **kwargs)
        if not view.monitor.finished:
            view._poller = threading.Thread(target=view._poll, args=(float(poll),), daemon=True, name="MonitorView")
            view._poller.start()
        return view

    def _poll(self, seconds: float) -> None:
        """Redraw on new snapshots until the run is finished or the view closed; a read error is shown, and
        polling goes on (a file may be replaced while it is read on some systems)."""
        log = self.monitor
        assert isinstance(log, RunLog)
        while not self._stop.wait(seconds):
            try:
                new = log.refresh()
            except Exception as err:  # shown in the widget: nobody else is there to catch it
                self.report(err)
                continue
            if new or log.finished:
                self._on_snapshot()
            if log.finished:
                return

    def close(self) -> None:
        """Stop polling a logdir (if this view does), and close the widget."""
        if self._poller is not None:
            self._stop.set()
            if self._poller is not threading.current_thread():
                self._poller.join()
        super().close()

    def _on_snapshot(self) -> None:
        """Redraw; a display problem is shown in the widget and never stops the training loop."""
        try:
            self._sync()
        except Exception as err:  # the caller is the user's training loop
            self.report(err)

    def _sync(self) -> None:
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        history = list(self.monitor.history)
        for snapshot in history[len(self._ranks) :]:
            if self._ranks:
                previous = history[len(self._ranks) - 1].ranking
                self._stability.append(compare(previous, snapshot.ranking)["spearman"])
            self._ranks.append(np.argsort(snapshot.ranking.order))
        layer = self.monitor.layer
        units = self.monitor.units
        shown: list[int] = history[-1].ranking.order[: self.top].tolist() if history else []
        ranks = np.stack(self._ranks) if self._ranks else np.zeros((0, units), dtype=int)
        with self.hold_sync():
            self.steps = [s.step for s in history]
            self.lines = [{"unit": u, "ranks": ranks[:, u].tolist()} for u in shown]
            self.stability = nan_to_none(self._stability)
            self.died = self.monitor.died()
            self.emerged = self.monitor.emerged()
            info = {
                "method": self.monitor.method,
                "layer": layer,
                "units": units,
                "every": self.monitor.every,
                "step": history[-1].step if history else None,
                "snapshots": len(history),
                "seconds": round(history[-1].seconds, 4) if history else None,
                "monitor_seconds": round(sum(s.seconds for s in history), 3),
            }
            if isinstance(self.monitor, RunLog):
                info.update(logdir=str(self.monitor.path), live=not self.monitor.finished)
            self.info = info

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
