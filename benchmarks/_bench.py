"""Small helpers shared by the benchmarks: machine description, peak-memory probes and fresh processes.

Peak memory is read from Linux's ``/proc/self/status`` (``VmHWM``, the resident-set high-water mark) after
resetting that mark with ``/proc/self/clear_refs``, so a warm-up run does not count towards the peak of the
timed run. Where the reset is not possible, ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the peak since
the process started) is used instead and `PeakMemory.method` says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status, or None where that file does not exist."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """The resident set size of this process now (falls back to the peak where /proc is missing)."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else maxrss_bytes()


def maxrss_bytes() -> int:
    """``ru_maxrss`` of this process in bytes (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if platform.system() == "Darwin" else value * 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc), so later growth shows in RSS."""
    gc.collect()
    name = ctypes.util.find_library("c")
    if name and platform.system() == "Linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


@dataclass
class PeakMemory:
    """Measures how far the resident set grows above its level at `start`."""

    baseline: int = 0
    method: str = ""

    def start(self) -> None:
        """Release freed memory, reset the high-water mark if possible, and record the current RSS."""
        release_memory()
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM after reset"
        except OSError:
            self.method = "ru_maxrss"
        self.baseline = rss_bytes()

    def extra(self) -> int:
        """Peak RSS since `start` minus the RSS at `start`, in bytes."""
        kib = _status_kib("VmHWM") if self.method == "VmHWM after reset" else None
        peak = kib * 1024 if kib is not None else maxrss_bytes()
        return max(0, peak - self.baseline)


@dataclass
class Timed(Generic[T]):
    """One timed measurement: the fastest run's result and seconds, and how the machine behaved."""

    result: T
    seconds: float  # wall time of the fastest run
    cpu_seconds: float  # CPU time of this process (all threads) during that run
    extra_bytes: int  # extra peak memory of the first run
    runs: int
    load: float  # 1-minute load average of the machine right after the runs


def timed(prepare: Callable[[], S], run: Callable[[S], T], repeat_below: float = 2.0, max_repeats: int = 3) -> Timed[T]:
    """Time ``run(prepare())`` with `time.perf_counter`; ``prepare`` is not timed.

    Runs once, measuring the extra peak memory; if that took under ``repeat_below`` seconds, runs again (up
    to ``max_repeats`` in all) and keeps the fastest.
    """
    best: Timed[T] | None = None
    extra = 0
    for attempt in range(max_repeats):
        state = prepare()
        memory = PeakMemory()
        if attempt == 0:
            memory.start()
        cpu, begin = time.process_time(), time.perf_counter()
        result = run(state)
        seconds, cpu = time.perf_counter() - begin, time.process_time() - cpu
        if attempt == 0:
            extra = memory.extra()
        del state
        if best is None or seconds < best.seconds:
            best = Timed(result, seconds, cpu, extra, attempt + 1, 0.0)
        if best.seconds >= repeat_below:
            break
    assert best is not None
    best.runs, best.load = attempt + 1, os.getloadavg()[0]
    return best


def zeroed_scores(model: Any, module: Any, images: Any, unit: int) -> Any:
    """The naive loop's step: the whole model's class scores on ``images`` with channel ``unit`` of
    ``module``'s output zeroed by a forward hook (on a copy of the output), the hook removed after."""
    import torch

    def zero(m: Any, i: Any, output: Any) -> Any:
        output = output.clone()
        output[:, unit] = 0
        return output

    handle = module.register_forward_hook(zero)
    try:
        with torch.no_grad():
            return model(images)
    finally:
        handle.remove()


def peak_method() -> str:
    """How `PeakMemory` reads the peak on this machine."""
    return "VmHWM after reset" if os.access(_CLEAR_REFS, os.W_OK) else "ru_maxrss"


def run_fresh(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a new interpreter (multiprocessing 'spawn'); ``func`` must be importable."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(func, args)


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """A description of the machine and software the benchmark ran on."""
    import torch

    try:
        import captum

        captum_version = captum.__version__
    except ImportError:
        captum_version = "not installed"
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1])
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**20, 1) if memory else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "captum": captum_version,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
