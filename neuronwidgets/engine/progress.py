"""Progress reporting and cancellation for long work, checked between chunks of data."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class Cancelled(Exception):
    """Raised between chunks when the caller asked to stop; the model is left untouched."""


@dataclass(frozen=True)
class ProgressInfo:
    """A snapshot of long work: steps done out of total, seconds elapsed and the estimated seconds left.

    ``done`` may be fractional: a step split into parts (a unit ablated on a slice of a chunk's images)
    advances by the parts' share. ``warmup`` is ``(done, elapsed)`` when the first step ended: that step
    carries one-off costs (tracing, filling caches, oneDNN's first-call set-up) that can make it twenty times
    slower than the rest, so the rate is measured from its end."""

    description: str
    done: float
    total: int | None
    elapsed: float
    warmup: tuple[float, float] | None = None

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def eta(self) -> float | None:
        """Seconds left, extrapolated from the rate since the first step ended (the first *timed* step, not
        the warm-up); None until a step after the first is done. Without ``warmup``, from the whole time."""
        if not self.total or self.done == 0:
            return None
        left = max(0.0, self.total - self.done)
        if self.warmup is None:
            return self.elapsed * left / self.done
        done, elapsed = self.warmup
        if self.done <= done:
            return None
        return (self.elapsed - elapsed) * left / (self.done - done)


ProgressCallback = Callable[[ProgressInfo], None]
CancelFlag = threading.Event | Callable[[], bool] | None
ProgressOption = bool | ProgressCallback | None


def check_progress(progress: object) -> None:
    """Refuse a ``progress`` option other than None, a bool or a callable, before any work starts."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return
    raise TypeError(
        f"progress must be None or True (a tqdm bar on long work), False (none) or a callable receiving "
        f"ProgressInfo, got {progress!r:.60} ({type(progress).__name__})"
    )


def check_cancel(cancel: object) -> None:
    """Refuse a ``cancel`` option other than None, a threading.Event or a callable, before any work starts
    (a flag that cannot be read would otherwise fail only when the first chunk is done)."""
    if cancel is None or isinstance(cancel, threading.Event) or callable(cancel):
        return
    raise TypeError(
        f"cancel must be None, a threading.Event (set it to stop) or a callable returning True to stop, got "
        f"{cancel!r:.60} ({type(cancel).__name__})"
    )


class Progress:
    """Counts steps, forwards them to a callback or a tqdm bar, and raises `Cancelled` when asked to.

    ``progress``: ``None``/``True`` shows a tqdm bar on stderr if the work takes more than two seconds,
    ``False`` is silent, a callable receives a `ProgressInfo` after every step.
    ``cancel``: a ``threading.Event`` or a callable returning True to stop at the next step.
    ``clock``: seconds as a float (tests pass a fake one).
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        check_progress(progress)
        check_cancel(cancel)
        self.description = description
        self.total = total
        self.done: float = 0
        self._clock = clock
        self._start = clock()
        self._warmup: tuple[float, float] | None = None
        self._cancel = cancel
        self._callback: ProgressCallback | None = None
        self._bar = None
        if callable(progress):
            self._callback = progress
        elif progress is None or progress is True:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, delay=2.0, leave=False, unit="step")
        self.check()

    def check(self) -> None:
        """Raise `Cancelled` if cancellation was requested."""
        flag = self._cancel
        if flag is None:
            return
        requested = flag.is_set() if isinstance(flag, threading.Event) else bool(flag())
        if requested:
            self.close()
            raise Cancelled(f"{self.description}: cancelled after {self.done:g} of {self.total} steps")

    def advance(self, steps: float = 1) -> None:
        """Record finished steps, report them, then honour a pending cancellation."""
        self.done += steps
        if abs(self.done - round(self.done)) < 1e-6:  # parts of steps add up to whole steps despite rounding
            self.done = round(self.done)
        if self._warmup is None and self.done > 0:
            self._warmup = (self.done, self._clock() - self._start)
        if self._bar is not None:
            self._bar.update(steps)
        if self._callback is not None:
            self._callback(self.info())
        self.check()

    def within_step(self, fraction: float) -> None:
        """Report that ``fraction`` of the step under way is done (a slice of a chunk), without counting it:
        the caller's `advance` does. Before the first step ends there is no rate yet, so no ETA either."""
        if self._callback is None:
            return
        done, elapsed = self.done + min(max(fraction, 0.0), 1.0), self._clock() - self._start
        warmup = self._warmup if self._warmup is not None else (done, elapsed)
        self._callback(ProgressInfo(self.description, done, self.total, elapsed, warmup))

    def info(self) -> ProgressInfo:
        return ProgressInfo(self.description, self.done, self.total, self._clock() - self._start, self._warmup)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @classmethod
    def within(
        cls, description: str, total: int | None, progress: ProgressOption | Progress, cancel: CancelFlag
    ) -> Progress:
        """A new `Progress`, or ``progress`` itself when the caller already counts a larger piece of work
        (then closing this one is left to that caller)."""
        check_cancel(cancel)
        if isinstance(progress, Progress):
            return _Shared(progress)
        return cls(description, total, progress, cancel)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Shared(Progress):
    """A view of an outer `Progress`: advances it, and leaves closing it to its owner."""

    def __init__(self, outer: Progress) -> None:
        self._outer = outer

    def advance(self, steps: float = 1) -> None:
        self._outer.advance(steps)

    def check(self) -> None:
        self._outer.check()

    def within_step(self, fraction: float) -> None:
        self._outer.within_step(fraction)

    def info(self) -> ProgressInfo:
        return self._outer.info()

    def close(self) -> None:
        pass
