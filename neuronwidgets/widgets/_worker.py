"""One background thread per probe, so the kernel stays usable while rankings and evaluations run.

The model is not thread-safe (rankings add hooks to it), so a probe's jobs run one at a time. Jobs are
grouped in slots ("rank", "evaluate", ...): within a slot the latest request wins, a pending older one is
dropped without running, and a running older one is asked to cancel (when it can) or has its result dropped.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from neuronwidgets.engine.progress import Cancelled


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
    def current(self) -> bool:
        """True while no newer job has been submitted to this slot and this one was not cancelled."""
        return self.worker is not None and self.worker.latest(self.slot) is self and not self.cancel.is_set()


class Worker:
    """Runs jobs one at a time on a daemon thread; latest request per slot wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, Job] = {}
        self._latest: dict[str, Job] = {}
        self._running: Job | None = None
        self._thread: threading.Thread | None = None
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
            running = self._running
            if cancel_running and running is not None and running.slot == job.slot:
                running.cancel.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="neuronwidgets-worker", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if dropped is not None:
            dropped.on_cancel()
        return job

    def cancel(self, slot: str) -> bool:
        """Stop the running job of ``slot`` and drop its pending one; True if there was anything to stop."""
        with self._cond:
            pending = self._pending.pop(slot, None)
            running = self._running if self._running is not None and self._running.slot == slot else None
            if running is not None:
                running.cancel.set()
            self._latest.pop(slot, None)
        if pending is not None:
            pending.on_cancel()
        return pending is not None or running is not None

    def pending(self, prefix: str = "") -> bool:
        """True if a job whose slot starts with ``prefix`` waits to run (the running one not counted)."""
        with self._cond:
            return any(slot.startswith(prefix) for slot in self._pending)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued job has finished; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._running is None, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: bool(self._pending), timeout=30.0):
                    self._thread = None
                    return
                slot = next(iter(self._pending))
                job = self._running = self._pending.pop(slot)
            try:
                self._execute(job)
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()

    @staticmethod
    def _execute(job: Job) -> None:
        try:
            result = job.run(job)
        except Cancelled:
            job.on_cancel()
            return
        except Exception as err:  # reported to the widget, which shows it; the thread must survive
            if job.current:
                job.on_error(err)
            return
        if job.current:
            job.on_done(result)
        else:
            job.on_cancel()


_WORKERS: weakref.WeakKeyDictionary[Any, Worker] = weakref.WeakKeyDictionary()
_WORKERS_LOCK = threading.Lock()


def worker_for(probe: Any) -> Worker:
    """The worker shared by every widget of ``probe`` (so they never run the model at the same time)."""
    with _WORKERS_LOCK:
        if probe not in _WORKERS:
            _WORKERS[probe] = Worker()
        return _WORKERS[probe]
