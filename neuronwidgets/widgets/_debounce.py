"""Call something once things have been quiet for a while, on one shared daemon thread."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable


class Debouncer:
    """``touch(key, callback, delay)`` calls ``callback`` on the debouncer's thread ``delay`` seconds after the
    last ``touch`` of ``key``; touching again postpones it. One thread serves every key and stops when idle."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Hashable, tuple[float, Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None

    def touch(self, key: Hashable, callback: Callable[[], None], delay: float) -> None:
        with self._cond:
            self._due[key] = (time.monotonic() + delay, callback)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="neuronwidgets-debounce", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._due and not self._cond.wait_for(lambda: bool(self._due), timeout=30.0):
                    self._thread = None
                    return
                key, (when, callback) = min(self._due.items(), key=lambda item: item[1][0])
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)  # a touch may postpone it or bring another key first
                    continue
                del self._due[key]
            with contextlib.suppress(Exception):  # a failing callback must not stop the others
                callback()


DEBOUNCER = Debouncer()
