"""What rankings of one model share (layer statistics, traced splits, the cut's values), kept per model version."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from neuronwidgets.engine.guard import model_lock, model_version

T = TypeVar("T")
MIN_DEFAULT_MEMORY = 256 * 2**20
MAX_DEFAULT_MEMORY = 4 * 2**30
DEFAULT_SHARE = 16  # the default budget is this fraction of the device's memory
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def default_memory(device: torch.device) -> int:
    """The default budget: 1/16 of the device's memory (the machine's RAM for the CPU, the GPU's for CUDA),
    within 256 MiB and 4 GiB; 256 MiB where the size cannot be read."""
    total = 0
    try:
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
        elif device.type == "cpu":
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError, RuntimeError):  # no sysconf (Windows), no such name (macOS)
        total = 0
    return min(MAX_DEFAULT_MEMORY, max(MIN_DEFAULT_MEMORY, total // DEFAULT_SHARE))


def memory_budget(value: int | str | None, device: torch.device | None = None) -> int:
    """Bytes from ``value``: an int, a string such as ``"512MB"`` or ``"2 GiB"``, or None for the default
    (`default_memory` of ``device``, the CPU if None); refused when it is not a size."""
    if value is None:
        return default_memory(device or torch.device("cpu"))
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        number = text.rstrip("KMGIB")
        unit = text[len(number) :]
        try:
            if unit not in _UNITS:
                raise ValueError(unit)
            value = int(float(number) * _UNITS[unit])
        except ValueError:
            raise ValueError(
                f"memory must be a number of bytes or a size such as '512MB' or '2GiB', got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"memory must be a number of bytes (0 or more) or a size such as '512MB', got {value!r}")
    return value


class ResultCache:
    """Results keyed by what they were computed from; all are dropped once the model's parameters or buffers
    change (training, an edit). Safe to share between threads: a result is computed under the model's lock,
    so two threads asking for the same one compute it once."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._version: tuple | None = None
        self._results: dict[Hashable, Any] = {}
        self._pinned = threading.local()  # .results: this thread's results while `pinned`

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Within the block this thread reads the model's version once, at its start: a ranking asks the
        cache a dozen times, and each read walks every module (0.25 ms on MobileNet-v2, 5% of a small ranking).
        What the block computes is kept under that version, so a change to the model meanwhile (by another
        thread) still drops it, at the next read outside a block."""
        outer = getattr(self._pinned, "results", None)
        if outer is None:
            self._pinned.results = self._current()
        try:
            yield
        finally:
            if outer is None:
                self._pinned.results = None

    def _current(self) -> dict[Hashable, Any]:
        pinned = getattr(self._pinned, "results", None)
        if pinned is not None:
            return pinned
        version = model_version(self._model)
        with self._lock:
            if version != self._version:
                self._version, self._results = version, {}
            return self._results

    def get(self, key: Hashable) -> Any | None:
        return self._current().get(key)

    def put(self, key: Hashable, value: Any) -> None:
        results = self._current()
        with self._lock:
            results[key] = value

    def forget(self, which: Callable[[Hashable], bool]) -> None:
        """Drop the results whose key ``which`` accepts."""
        results = self._current()
        with self._lock:
            for key in [k for k in results if which(k)]:
                del results[key]

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        with model_lock(self._model):
            results = self._current()
            value = results.get(key)
            if value is None:
                value = compute()
                with self._lock:  # kept under the version it was computed from
                    results[key] = value
            return value
