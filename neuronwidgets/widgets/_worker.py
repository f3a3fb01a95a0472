"""Background threads per probe, so the kernel stays usable while rankings and evaluations run.

Jobs are grouped in slots ("rank", "evaluate", ...): within a slot the latest request wins, a pending older
one is dropped without running, and a running older one is asked to cancel (when it can) or has its result
dropped. Each probe's worker has lanes, each one thread: long work (rankings) runs on the ``background``
lane, and what a click or a hover asks for (overlays, thumbnails, the slider's evaluation) on a lane per kind,
so it queues neither behind a ranking nor behind another kind (a click's overlay, behind the slider's
evaluation); a feature visualisation, long work a click asks for, has a lane of its own too. The lanes run
the model, but never at the same time: every pass takes the model's lock, which a pass lends between slices to
work waiting for it (`neuronwidgets.engine.guard.yield_model`). Interactive work is `urgent`: it holds the model
from its start to its end, goes before a ranking, and lends the model only to other interactive work; a
visualisation is not, and takes turns with a ranking step by step.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from neuronwidgets.engine.guard import model_lock, urgent
from neuronwidgets.engine.progress import Cancelled

BACKGROUND = "background"
# slot names (the part after a widget's "id:" prefix) whose jobs a user waits for with the mouse in hand; each
# is its own lane
INTERACTIVE_SLOTS = frozenset({"overlay", "thumbnail", "evaluate"})
# slots whose long work has a lane of its own (it queues behind no ranking) but is not urgent: it takes the
# model pass by pass and lends it between passes, as a ranking does
OWN_LANE_SLOTS = INTERACTIVE_SLOTS | {"visualize"}
IDLE_SECONDS = 30.0  # a lane's thread ends after this long without work (a new one starts on demand)


def lane_of(slot: str) -> str:
    """The lane a slot's jobs run on: its name for the slots in `OWN_LANE_SLOTS`, else background."""
    name = slot.rsplit(":", 1)[-1]
    return name if name in OWN_LANE_SLOTS else BACKGROUND


@dataclass(eq=False)
class Job:
    """A unit of background work. ``run(job)`` does the work; callbacks run on the worker thread."""

    slot: str
    run: Callable[[Job], Any]
    on_done: Callable[[Any], None]
    on_error: Callable[[BaseException], None]
    on_cancel: Callable[[], None] = lambda: None
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = 0
    worker: Worker | None = None

    @property
    def lane(self) -> str:
        return lane_of(self.slot)

    @property
    def current(self) -> bool:
        """True while no newer job has been submitted to this slot and this one was not cancelled."""
        return self.worker is not None and self.worker.latest(self.slot) is self and not self.cancel.is_set()


class Worker:
    """Runs a probe's jobs on lanes (one daemon thread each, started on demand); latest request per slot wins.
    ``model``: what interactive jobs hold from start to end (None: they take its lock pass by pass)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, model: Any = None) -> None:
        self.idle_seconds = idle_seconds
        self.model = model
        self._cond = threading.Condition()
        self._pending: dict[str, Job] = {}
        self._latest: dict[str, Job] = {}
        self._running: dict[str, Job] = {}  # lane -> its running job
        self._threads: dict[str, threading.Thread] = {}
        self._ids = itertools.count(1)

    def latest(self, slot: str) -> Job | None:
        with self._cond:
            return self._latest.get(slot)

    def submit(self, job: Job, cancel_running: bool = True) -> Job:
        """Queue ``job``, replacing a pending job of its slot; ``cancel_running`` also stops a running one."""
        with self._cond:
            job.id, job.worker = next(self._ids), self
            dropped = self._pending.pop(job.slot, None)
            self._pending[job.slot] = job
            self._latest[job.slot] = job
            running = self._running.get(job.lane)
            if cancel_running and running is not None and running.slot == job.slot:
                running.cancel.set()
            self._start(job.lane)
            self._cond.notify_all()
        if dropped is not None:
            dropped.on_cancel()
        return job

    def cancel(self, slot: str) -> bool:
        """Stop the running job of ``slot`` and drop its pending one; True if there was anything to stop."""
        with self._cond:
            pending = self._pending.pop(slot, None)
            running = self._running.get(lane_of(slot))
            running = running if running is not None and running.slot == slot else None
            if running is not None:
                running.cancel.set()
            self._latest.pop(slot, None)
            self._cond.notify_all()
        if pending is not None:
            pending.on_cancel()
        return pending is not None or running is not None

    def pending(self, prefix: str = "") -> bool:
        """True if a job whose slot starts with ``prefix`` waits to run (the running ones not counted)."""
        with self._cond:
            return any(slot.startswith(prefix) for slot in self._pending)

    def busy(self, prefix: str = "") -> bool:
        """True if a job whose slot starts with ``prefix`` waits or runs."""
        with self._cond:
            jobs = [*self._pending.values(), *self._running.values()]
            return any(job.slot.startswith(prefix) for job in jobs)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued job has finished; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._running, timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Drop every pending job and cancel the running ones; wait up to ``timeout`` s for them to end (they
        stop at their next chunk). True if none runs any more."""
        with self._cond:
            self._pending.clear()
            self._latest.clear()
            for job in self._running.values():
                job.cancel.set()
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._running, timeout)

    def threads(self) -> list[threading.Thread]:
        """The lanes' threads that are alive (for tests: they end after ``idle_seconds`` without work)."""
        with self._cond:
            return [t for t in self._threads.values() if t.is_alive()]

    def _start(self, lane: str) -> None:
        """Start ``lane``'s thread unless it runs (the condition is held)."""
        thread = self._threads.get(lane)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=self._loop, args=(lane,), name=f"neuronwidgets-{lane}", daemon=True)
            self._threads[lane] = thread
            thread.start()

    def _next(self, lane: str) -> Job | None:
        """The oldest pending job of ``lane``, taken out of the queue (the condition is held)."""
        slot = next((s for s, job in self._pending.items() if job.lane == lane), None)
        return None if slot is None else self._pending.pop(slot)

    def _loop(self, lane: str) -> None:
        while True:
            with self._cond:
                has_work = lambda: any(job.lane == lane for job in self._pending.values())  # noqa: E731
                if not self._cond.wait_for(has_work, timeout=self.idle_seconds):
                    if self._threads.get(lane) is threading.current_thread():
                        del self._threads[lane]
                    return
                job = self._next(lane)
                assert job is not None
                self._running[lane] = job
            try:
                self._execute(job)
            finally:
                with self._cond:
                    del self._running[lane]
                    self._cond.notify_all()

    def _execute(self, job: Job) -> None:
        try:
            if job.lane not in INTERACTIVE_SLOTS:
                result = job.run(job)
            else:  # a click's work: before a ranking, and one wait for the model rather than one per pass
                with urgent(), _holding(self.model):
                    result = job.run(job)
        except Cancelled:
            job.on_cancel()
            return
        except Exception as err:  # reported to the widget, which shows it; the thread must survive
            if job.current:
                job.on_error(err)
            else:
                job.on_cancel()  # replaced meanwhile: its error is stale, but it must still wind down
            return
        if job.current:
            job.on_done(result)
        else:
            job.on_cancel()


@contextmanager
def _holding(model: Any) -> Iterator[None]:
    """The block holds ``model``'s lock (nothing for None)."""
    if model is None:
        yield
        return
    with model_lock(model):
        yield


_WORKERS: weakref.WeakKeyDictionary[Any, Worker] = weakref.WeakKeyDictionary()
_WORKERS_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, stop the work still running on the lanes' daemon threads: a thread still inside
    torch while the interpreter shuts down aborts the process ("terminate called without an active
    exception", exit code 134), after a script or a test run that was otherwise fine."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
    for worker in workers:
        worker.stop()


def worker_for(probe: Any) -> Worker:
    """The worker shared by every widget of ``probe`` (so its widgets' requests share its lanes)."""
    with _WORKERS_LOCK:
        if probe not in _WORKERS:
            _WORKERS[probe] = Worker(model=probe.model)
        return _WORKERS[probe]
