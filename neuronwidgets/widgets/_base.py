"""What every neuronwidgets widget shares: keyword checks, guarded front-end messages, errors shown in
the widget, background work with progress, and a static picture for saved notebooks and HTML exports."""

from __future__ import annotations

import io
import math
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import numpy as np
import traitlets
from PIL import Image

from neuronwidgets.engine.progress import ProgressInfo
from neuronwidgets.widgets._picture import Pictured
from neuronwidgets.widgets._worker import Job, Worker

STATIC = Path(__file__).resolve().parent.parent / "static"
_PROGRESS_INTERVAL = 0.1  # seconds between progress updates sent to the front end
METHODS = ("update", "request_state", "custom")  # the comm message methods ipywidgets handles


class BadMessage(ValueError):
    """A message from the front end that cannot be honoured; it changes nothing."""


class Choice(traitlets.Enum):
    """`traitlets.Enum` whose error names at most a few of many choices (e.g. matplotlib's colormaps)."""

    SHOWN = 8

    def _choices_str(self, as_rst: bool = False) -> str:
        choices = list(self.values or ())
        text = ", ".join(repr(c) for c in choices[: self.SHOWN])
        return f"[{text}, ... ({len(choices)} in all)]" if len(choices) > self.SHOWN else f"[{text}]"


class StrictInt(traitlets.Int):
    """`traitlets.Int` that refuses bools (``True`` is not unit 1) and takes numpy integers as ints."""

    def validate(self, obj: Any, value: Any) -> Any:
        if isinstance(value, (bool, np.bool_)):
            self.error(obj, value)
        if isinstance(value, np.integer):
            value = int(value)
        return super().validate(obj, value)


def check_kwargs(cls: type, kwargs: dict[str, Any], options_of: type[traitlets.HasTraits] | None = None) -> None:
    """Reject keyword arguments that are not option traits (tagged ``option=True``) of ``options_of``
    (default ``cls``), with a TypeError that names the valid ones."""
    valid = (options_of or cls).class_trait_names(option=True)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(
            f"{cls.__name__}() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid))}"
        )


def message_of(err: BaseException) -> str:
    """A readable one-line message for an exception."""
    text = str(err) or type(err).__name__
    return text if isinstance(err, (ValueError, TypeError, traitlets.TraitError)) else f"{type(err).__name__}: {text}"


def figure_png(fig: Any, dpi: int = 80) -> Image.Image:
    """A matplotlib Figure rendered (Agg, no pyplot) to a PIL image."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def titled(picture: np.ndarray, title: str, dpi: int = 80) -> Image.Image:
    """A uint8 (H, W, 3) picture at its own size with a one-line title above it (matplotlib, no pyplot)."""
    from matplotlib.figure import Figure

    height, width = picture.shape[:2]
    header = 22
    fig = Figure(figsize=(width / dpi, (height + header) / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, height / (height + header)))
    ax.imshow(picture, interpolation="nearest")
    ax.set_axis_off()
    fig.text(0.5, 1 - 0.5 * header / (height + header), title, ha="center", va="center", fontsize=9)
    return figure_png(fig, dpi)


def index_or_none(value: int | None, count: int | None, what: str) -> int | None:
    """A trait validator's check: ``value`` unchanged if it is None or an index below ``count`` (any index
    while ``count`` is unknown); else a TraitError that starts with ``what`` and gives the valid range."""
    if value is not None and count is not None and not 0 <= value < count:
        raise traitlets.TraitError(f"{what} in 0..{count - 1} or None, got {value}")
    return value


def nan_to_none(values: Any) -> list[float | None]:
    """Floats for JSON, with NaN (e.g. a class without images) as None."""
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(values, dtype=float).tolist()]


class Keyed(traitlets.HasTraits):
    """A ``_key`` trait that names the model for the front end, whose views of one model carry over a
    re-created view's DOM (``js/lib/lasting.js``); every widget with a `lasting` view has one."""

    _key = traitlets.Unicode().tag(sync=True)

    @traitlets.default("_key")
    def _new_key(self) -> str:
        return uuid.uuid4().hex


class Widget(Pictured, Keyed, anywidget.AnyWidget):
    """Base of the widgets: front-end messages are validated before anything changes.

    Subclasses list the traits the front end may set in ``_writable`` and the custom message types they
    handle in ``_handlers`` (type -> method name; the method takes the message's other fields as keywords),
    and draw their static picture in ``_draw``. Custom messages arrive through the public ``on_msg``, so a
    user's own ``widget.on_msg(callback)`` is called too; a message type the widget does not know is reported
    as an error only while no user callback is registered (then it is theirs to handle).
    """

    error = traitlets.Unicode("").tag(sync=True)
    status = Choice(("idle", "running", "error", "cancelled"), "idle").tag(sync=True)
    progress = traitlets.Dict().tag(sync=True)  # {description, done, total, elapsed, eta} while running

    _writable: ClassVar[frozenset[str]] = frozenset()
    _handlers: ClassVar[dict[str, str]] = {"dismiss": "_on_dismiss"}
    _worker: Worker | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last_progress = 0.0
        self._version = 0  # counts trait changes: the drawn picture is reused while it stays the same
        self._drawn: tuple[int, Image.Image] | None = None
        self._user_callbacks: list[Callable[..., Any]] = []
        self._jobs: dict[str, Job] = {}  # slot -> the latest job _submit sent there, until it ends
        self._jobs_lock = threading.RLock()  # callbacks land from both lanes' threads
        super().on_msg(self._on_custom_msg)
        self.observe(self._bump, names=traitlets.All)

    def _bump(self, _change: dict) -> None:
        self._version += 1

    # -- messages from the front end ------------------------------------------------------------------

    def on_msg(self, callback: Callable[..., Any], remove: bool = False) -> None:
        """(Un)register ``callback(widget, content, buffers)`` for custom messages from the front end, as
        in ipywidgets; while one is registered, message types the widget does not know are left to it."""
        super().on_msg(callback, remove=remove)
        if remove and callback in self._user_callbacks:
            self._user_callbacks.remove(callback)
        elif not remove and callback not in self._user_callbacks:
            self._user_callbacks.append(callback)

    def _handle_msg(self, msg: Any) -> None:
        """A guard around ipywidgets' own handling: a malformed message is reported and changes nothing."""
        try:
            super()._handle_msg(_well_formed(msg))
        except Exception as err:  # the caller is the kernel's comm dispatch: nothing may escape
            self.report(err)

    def set_state(self, sync_data: Any) -> None:
        """Apply a state update from the front end, all or nothing: keys outside ``_writable`` are refused,
        values the traits refuse are reported, and the front end is sent back the kernel's values."""
        keys = [k for k in sync_data if k in self.keys] if isinstance(sync_data, dict) else []
        try:
            check_update(sync_data, self._writable)
            super().set_state(sync_data)
        except (traitlets.TraitError, TypeError, ValueError) as err:  # BadMessage is a ValueError
            self.report(err)
            if keys:
                self.send_state(keys)  # put the front end back on the kernel's values

    def _on_custom_msg(self, _widget: Any, content: Any, _buffers: list) -> None:
        """Run the handler of a custom message's ``type``; unknown types are left to user callbacks."""
        try:
            kind = content.get("type") if isinstance(content, dict) else None
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                if self._user_callbacks:
                    return
                if not isinstance(kind, str):
                    raise BadMessage("a custom message must be an object with a string 'type'")
                raise BadMessage(f"unknown message type {kind!r}; valid: {', '.join(sorted(self._handlers))}")
            params = {k: v for k, v in content.items() if k != "type"}
            getattr(self, handler)(**params)
        except Exception as err:  # shown in the widget, not as a traceback in some output area
            self.report(err)

    def _on_dismiss(self) -> None:
        self.error = ""
        if self.status == "error":
            self.status = "idle"

    def report(self, err: BaseException | str) -> None:
        """Show an error in the widget (trait ``error``) and send it as an ``error`` message."""
        text = err if isinstance(err, str) else message_of(err)
        self.error = text
        self.send({"type": "error", "message": text})

    # -- background work --------------------------------------------------------------------------------

    def _submit(
        self,
        slot: str,
        run: Callable[[Job], Any],
        on_done: Callable[[Any], None],
        cancel_running: bool = True,
        on_cancel: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> Job:
        """Run ``run`` on the probe's worker; ``status``/``error`` follow it; only the latest result lands.

        The widget counts the jobs it submitted this way (``_jobs``, one per slot): ``status`` stays
        "running" while any of them is live, and settles when the last one ends. Jobs submitted straight to
        the worker (thumbnails) leave ``status`` alone, so they can never keep it at "running". ``on_cancel`` and
        ``on_error`` (before the error is shown) run when the job ends cancelled or failed."""
        assert self._worker is not None
        job = Job(self._slot(slot), run, on_done=lambda _: None, on_error=lambda _: None)
        job.on_done, job.on_error, job.on_cancel = self._landing(job, on_done, on_cancel, on_error)
        with self._jobs_lock:
            self._jobs[job.slot] = job
            self.status = "running"
            self.progress = {}
        return self._worker.submit(job, cancel_running)

    def _landing(
        self,
        job: Job,
        on_done: Callable[[Any], None],
        on_cancel: Callable[[], None] | None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> tuple[Callable[[Any], None], Callable[[BaseException], None], Callable[[], None]]:
        """The done, failed and cancelled callbacks of ``job``: each lands its outcome, then settles."""

        def done(result: Any) -> None:
            with self.hold_sync():
                try:
                    on_done(result)
                    self.error = ""  # a later request succeeded: an earlier one's error is stale
                finally:
                    self._finish(job, "idle")

        def failed(err: BaseException) -> None:
            with self.hold_sync():
                try:
                    if on_error is not None:
                        on_error(err)
                finally:
                    self._finish(job, "error")
                    self.report(err)

        def cancelled() -> None:
            try:
                if on_cancel is not None:
                    on_cancel()
            finally:
                self._finish(job, "cancelled" if self.status == "running" else self.status)

        return done, failed, cancelled

    def _slot(self, name: str) -> str:
        """Slots are per widget: two widgets of one probe never replace each other's requests."""
        return f"{id(self)}:{name}"

    def _finish(self, job: Job, status: str) -> None:
        """``job`` has ended (done, failed or cancelled): forget it, then settle ``status``."""
        with self._jobs_lock:
            if self._jobs.get(job.slot) is job:
                del self._jobs[job.slot]
            self._settle(status)

    def _settle(self, status: str) -> None:
        """Show ``status`` unless a live job of this widget still runs or waits (it will settle it); an
        error is shown at once. Jobs that were cancelled or replaced do not count: they only wind down."""
        with self._jobs_lock:
            live = [job for job in self._jobs.values() if job.current]
            if live and status != "error":
                return
            self.status = status
            self.progress = {}

    def _progress_callback(self, job: Job) -> Callable[[ProgressInfo], None]:
        """A `Probe.rank(progress=...)` callback that shows the progress of ``job`` while it is current."""

        def update(info: ProgressInfo) -> None:
            now = time.perf_counter()
            finished = info.total is not None and info.done >= info.total
            if not job.current or (now - self._last_progress < _PROGRESS_INTERVAL and not finished):
                return
            self._last_progress = now
            self.progress = {
                "description": info.description,
                "done": info.done,
                "total": info.total,
                "elapsed": round(info.elapsed, 2),
                "eta": None if info.eta is None else round(info.eta, 1),
            }

        return update

    def wait(self, timeout: float | None = 60.0) -> bool:
        """Block until the widget's background work is done (for scripts and tests); False on timeout."""
        return True if self._worker is None else self._worker.wait(timeout)

    # -- static picture ---------------------------------------------------------------------------------

    def snapshot(self) -> Image.Image:
        """A picture of the widget's current state (what a saved notebook shows without a kernel), drawn
        again only after a trait changed."""
        version, drawn = self._version, self._drawn
        if drawn is None or drawn[0] != version:
            drawn = self._drawn = (version, self._draw())
        return drawn[1]

    def _draw(self) -> Image.Image:
        raise NotImplementedError


def check_update(sync_data: Any, writable: frozenset[str], whose: str = "") -> None:
    """A BadMessage unless ``sync_data`` (a state update from the front end) is an object whose keys are all
    in ``writable``; ``whose`` names the owner in the message (e.g. "the Explorer's ")."""
    if not isinstance(sync_data, dict):
        raise BadMessage("an update message must carry a 'state' object")
    refused = sorted(set(sync_data) - writable, key=str)
    if refused:
        raise BadMessage(
            f"the front end may not set {whose}{', '.join(map(str, refused))}; settable: {', '.join(sorted(writable))}"
        )


def _well_formed(msg: Any) -> dict:
    """``msg`` if it has the shape of a comm message ipywidgets handles (with ``buffers`` a list), else a
    BadMessage saying what is missing."""
    content = msg.get("content") if isinstance(msg, dict) else None
    data = content.get("data") if isinstance(content, dict) else None
    if not isinstance(data, dict):
        raise BadMessage("a widget message must carry a 'data' object")
    method = data.get("method")
    if method not in METHODS:
        raise BadMessage(f"unknown message method {method!r}; valid: {', '.join(METHODS)}")
    return {**msg, "buffers": list(msg.get("buffers") or [])}


def asset(name: str) -> Path | str:
    """The built front-end module ``static/<name>``, or a module that says how to build it."""
    path = STATIC / name
    if path.is_file():
        return path
    return (
        "export default { render({ el }) { el.textContent = "
        "'neuronwidgets: the front end is not built; run npm ci && npm run build'; } };"
    )
