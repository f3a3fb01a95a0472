"""The static picture in a displayed widget's output, kept at the widget's last state for saved notebooks.

A widget's output carries an ``image/png`` next to the live view: where no kernel runs (an HTML export,
nbviewer, GitHub) that picture is what shows. A picture taken only at display time would show the state when
the cell ran, so the widget is displayed with a display id and `LivePicture` re-sends the output with a new
picture (``update_display_data``) a couple of seconds after the state last changed.

The trade-off. JupyterLab (jupyterlab_widgets 3, ``WidgetRenderer.renderModel``) answers such an update by
building a new view of the widget and detaching the old one without removing it, which would lose the list's
scroll position, the keyboard focus and the decoded images. The front end therefore carries a view over its
re-creation (``js/lib/lasting.js``): the new view takes over the old view's DOM before the browser paints and
puts back its scroll positions and focus, so nothing visible happens. What remains:

- an update is sent only after ``REFRESH_DELAY`` s without a change, never while the probe's worker is busy
  or a cell runs (``Probe`` work and training loops are not slowed), and only if the picture changed; so a
  notebook saved within that delay of the last change holds the previous picture (the next save, or
  JupyterLab's autosave, catches up);
- the update marks the notebook as modified, as any changed output does;
- a drag on a slider held still for longer than the delay ends when the view is carried over;
- only the ``MAX_DISPLAYS`` most recent displays of one widget are kept up to date (the kernel cannot tell
  which old outputs still exist);
- JupyterLab keeps each detached view object (empty, a few listeners) until the output is cleared.

JupyterLab itself never shows the picture: a notebook reopened without the widget's kernel shows
"Error displaying widget: model not found" (its widget renderer has no fallback), unless the widget state
was saved with the notebook (Settings → Save Widget State Automatically), which shows the widget itself.
"""

from __future__ import annotations

import contextlib
import io
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets
import traitlets
from IPython import get_ipython
from IPython.display import display, update_display
from PIL import Image

from neuronwidgets.widgets._debounce import DEBOUNCER

REFRESH_DELAY = 2.0  # seconds without a state change before the picture is re-sent
MAX_DISPLAYS = 16

_cell_running = threading.Event()
_watched_shells: set[int] = set()


class Pictured:
    """Mixin for widgets with a static picture: ``snapshot()`` draws it; displaying the widget shows the live
    view with that picture as ``image/png``, kept at the last state by a `LivePicture`."""

    _live: LivePicture | None = None

    def snapshot(self) -> Image.Image:
        """A picture of the widget's current state (what a saved notebook shows without a kernel)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The picture in words: its alt text in an HTML export (output metadata ``image/png.alt``)."""
        return ""

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the widget's background work is done; False on timeout."""
        raise NotImplementedError

    def snapshot_png(self, timeout: float = 5.0) -> bytes:
        """`snapshot` as PNG bytes, after waiting up to ``timeout`` s for running work."""
        self.wait(timeout)
        buffer = io.BytesIO()
        self.snapshot().save(buffer, format="PNG")
        return buffer.getvalue()

    def _view_bundle(self, **kwargs: Any) -> tuple[dict, dict]:
        """The ipywidgets mime bundle (the live view and a text repr), without a picture."""
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return dict(data), dict(metadata or {})

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict]:
        return with_png(self._view_bundle(**kwargs), self.snapshot_png, self.describe)

    def _ipython_display_(self) -> None:
        if self._live is None:
            self._live = LivePicture(self)
        self._live.display()


def with_png(
    bundle: tuple[dict, dict], make_png: Callable[[], bytes], describe: Callable[[], str] = str
) -> tuple[dict, dict]:
    """A widget's mime bundle plus an ``image/png`` fallback for places without a live kernel, with the
    picture's description as its alt text (nbconvert's HTML export reads ``metadata["image/png"]["alt"]``)."""
    data, metadata = dict(bundle[0]), dict(bundle[1])
    with contextlib.suppress(Exception):  # a picture is a fallback: never let it break the live widget
        data["image/png"] = make_png()
        alt = describe()
        if alt:
            metadata["image/png"] = {**metadata.get("image/png", {}), "alt": alt}
    return data, metadata


class LivePicture:
    """Displays one widget with display ids and re-sends its outputs with a fresh picture once its state
    (its own traits and those of the widgets inside it) has been quiet for ``REFRESH_DELAY`` seconds."""

    def __init__(self, widget: Pictured) -> None:
        self._widget = widget
        self._lock = threading.Lock()
        self._shown: dict[str, bytes] = {}  # display id -> the PNG its output carries, oldest first
        for part in _tree(widget):
            part.observe(self._changed, names=traitlets.All)
        _watch_cells()

    def display(self) -> None:
        """Show the widget as a new output whose picture follows its state."""
        data, metadata = self._widget._repr_mimebundle_()
        display_id = uuid.uuid4().hex
        display(data, metadata=metadata, raw=True, display_id=display_id)
        with self._lock:
            self._shown[display_id] = data.get("image/png", b"")
            while len(self._shown) > MAX_DISPLAYS:
                del self._shown[next(iter(self._shown))]

    def _changed(self, _change: Any = None) -> None:
        DEBOUNCER.touch(self, self._refresh, REFRESH_DELAY)

    def _refresh(self) -> None:
        """On the debouncer's thread: re-send the outputs whose picture is out of date."""
        widget = self._widget
        if getattr(widget, "comm", None) is None:
            return  # closed: its outputs are gone
        if _cell_running.is_set() or not widget.wait(0):
            self._changed()  # busy: the state is still moving; look again after another quiet period
            return
        png = widget.snapshot_png(timeout=0)
        data, metadata = with_png(widget._view_bundle(), lambda: png, widget.describe)
        with self._lock:
            stale = [display_id for display_id, shown in self._shown.items() if shown != png]
            for display_id in stale:
                self._shown[display_id] = png
        for display_id in stale:
            update_display(data, metadata=metadata, raw=True, display_id=display_id)


def _tree(widget: Any) -> Iterator[ipywidgets.Widget]:
    """The widget and every widget inside it (through ``children``)."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _tree(child)


def _watch_cells() -> None:
    """Track whether the kernel runs a cell (IPython's pre/post_run_cell), once per shell."""
    shell = get_ipython()
    if shell is None or id(shell) in _watched_shells:
        return
    _watched_shells.add(id(shell))
    shell.events.register("pre_run_cell", lambda *_: _cell_running.set())
    shell.events.register("post_run_cell", lambda *_: _cell_running.clear())
    header = getattr(shell, "parent_header", None) or {}
    if header.get("msg_type", "execute_request") == "execute_request":
        _cell_running.set()  # displayed by the cell that runs now (not by a widget's callback)
