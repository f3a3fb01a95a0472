"""Watch a layer's ranking while a model trains, and compare two checkpoints.

``Monitor.step()`` goes in the training loop; every ``every`` calls it ranks the layer on a fixed set of
monitoring images and keeps the history. Training is unaffected: rankings run in eval mode without touching
gradients or BatchNorm statistics (the engine's guarantees), and the random number generators are restored
afterwards (iterating a DataLoader draws a seed from torch's global generator).

Everything a snapshot needs (``every``, the method, its options, the layer) is checked when the Monitor is
made, so that a typo fails before training starts rather than at step ``every`` inside the loop. The
Monitor owns its probe and passes its layer on every call: it never changes ``probe.layer``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from neuronwidgets.engine import distributed
from neuronwidgets.methods import MethodSpec, check_options
from neuronwidgets.methods import spec as method_spec
from neuronwidgets.probe import Probe
from neuronwidgets.ranking import compare
from neuronwidgets.runlog import History, RunWriter, Snapshot

__all__ = ["Monitor", "Snapshot", "compare_models"]


def _check_every(every: Any) -> int:
    """``every`` as an int >= 1 (bools refused: ``every=True`` is a slip, not one step)."""
    if isinstance(every, (bool, np.bool_)) or not isinstance(every, (int, np.integer)):
        raise TypeError(f"every must be an int (rank every N training steps), got {every!r} ({type(every).__name__})")
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    return int(every)


def _check_options(spec: MethodSpec, options: Any, probe: Probe) -> dict[str, Any]:
    """``options`` as a dict of keyword options that method ``spec`` takes on ``probe``'s data (names, target,
    labels: the checks `Probe.rank` makes, made once up front)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict of keyword options for {spec.name!r}, got {type(options).__name__}")
    check_options(spec, options, num_classes=probe.num_classes, has_labels=probe.site().has_labels)
    return dict(options)


@contextmanager
def _rng_preserved(model: nn.Module):
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        yield


class Monitor(History):
    """Rank ``layer`` of a training model every ``every`` steps; attach with one line per loop.

    ``method`` is any ranking method (default ``taylor``: one forward and backward pass over the monitoring
    data, the cheapest faithful preview); keep the monitoring data small (a few hundred images).
    ``on_update`` is called with each new `Snapshot` (widgets use it to redraw while the cell runs).

    ``logdir``: a new directory where each snapshot is also written (`neuronwidgets.runlog`), for
    ``MonitorView.from_logdir`` in another process; `close()` (or leaving a ``with`` block) marks the run
    finished. Under a torch.distributed process group (a DDP script: make the Monitor on every rank, with the
    same data and the unwrapped ``ddp_model.module``) each rank ranks its shard of the monitoring data, every
    rank gets the whole snapshot, and rank 0 alone writes; ``group=`` as for `Probe`.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        layer: str | None = None,
        *,
        every: int = 100,
        method: str = "taylor",
        options: dict[str, Any] | None = None,
        on_update: Callable[[Snapshot], None] | None = None,
        logdir: str | os.PathLike | None = None,
        group: Any = None,
    ) -> None:
        self.every = _check_every(every)
        spec = method_spec(method)  # an unknown name lists the valid methods
        self.method = spec.name
        if on_update is not None and not callable(on_update):
            raise TypeError(f"on_update must be a callable taking a Snapshot, or None; got {type(on_update).__name__}")
        if logdir is not None and not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(
                f"logdir must be a directory path (str or os.PathLike) or None, got {type(logdir).__name__}"
            )
        _refuse_wrapped(model)
        with _rng_preserved(model):
            self.probe = Probe(model, data, layer, group=group)
        self.layer = self.probe.layer  # every snapshot ranks this layer, whatever probe.layer is set to later
        self.units = self.probe.layer_info(self.layer).units
        self.options = _check_options(spec, options, self.probe)
        self.on_update = on_update
        self.history: list[Snapshot] = []
        self._steps = 0
        self.logdir = None if logdir is None else os.fspath(logdir)
        self._writer: RunWriter | None = None
        group = self.probe.group
        if self.logdir is not None:
            with distributed.guarded(group, "creating a Monitor"):  # a logdir refused on rank 0 stops every rank
                if group is None or group.rank == 0:
                    self._writer = RunWriter(self.logdir, self._run_facts())

    def _run_facts(self) -> dict[str, Any]:
        """What every snapshot of this monitor shares, for ``run.json``."""
        group = self.probe.group
        return {
            "method": self.method,
            "options": self.options,
            "layer": self.layer,
            "units": self.units,
            "every": self.every,
            "model": type(self.probe.model).__name__,
            "images": len(self.probe.source),
            "world_size": 1 if group is None else group.size,
        }

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        """Mark the logdir's run finished (readers stop polling); without a logdir, nothing to do."""
        if self._writer is not None:
            self._writer.finish()

    def step(self, step: int | None = None) -> Snapshot | None:
        """Count one training step (or set the count to ``step``); rank when the count is a multiple of
        ``every``. Returns the new snapshot, if one was taken."""
        if step is not None and (isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer))):
            raise TypeError(f"step must be an int (the training step) or None, got {step!r}")
        self._steps = self._steps + 1 if step is None else int(step)
        if self._steps % self.every:
            return None
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """Rank now, whatever the step count (under a process group: on every rank, as `step` does)."""
        start = time.perf_counter()
        with (
            _rng_preserved(self.probe.model),
            distributed.guarded(self.probe.group, f"a Monitor snapshot of {self.layer!r}"),
        ):
            ranking = self.probe.rank(self.method, layer=self.layer, progress=False, **self.options)
            alive = (self.probe.site(self.layer).summary().image_max > 0).mean(0)  # gathered over the ranks
            snapshot = Snapshot(self._steps, ranking, alive, time.perf_counter() - start)
            if self._writer is not None:  # inside the guard: a failed write stops every rank, not just rank 0
                self._writer.write(snapshot)
        self.history.append(snapshot)
        if self.on_update is not None:
            self.on_update(snapshot)
        return snapshot


def _refuse_wrapped(model: Any) -> None:
    """Refuse a (Distributed)DataParallel wrapper, whose forward and backward synchronise gradients across ranks
    (a ranking's backward pass would join the training's reductions): the Monitor ranks the model inside it."""
    if type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
        raise TypeError(
            f"Monitor needs the model itself, not its {type(model).__name__} wrapper (whose forward and backward "
            "synchronise gradients across ranks): pass model.module"
        )


def compare_models(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    layer: str,
    method: str = "ablation",
    top: int = 10,
    **options: Any,
) -> dict[str, Any]:
    """Rank the same layer of two models (two checkpoints, before and after fine-tuning) on the same data.

    Returns both rankings, their agreement (`compare`), and the units whose rank moved most.
    """
    spec = method_spec(method)
    probe_a, probe_b = Probe(model_a, data, layer), Probe(model_b, data, layer)
    _check_options(spec, options, probe_a)  # before either model is ranked
    a = probe_a.rank(method, layer=layer, progress=False, **options)
    b = probe_b.rank(method, layer=layer, progress=False, **options)
    if a.units != b.units:
        raise ValueError(f"layer {layer!r} has {a.units} units in model_a but {b.units} in model_b")
    rank_a, rank_b = np.argsort(a.order), np.argsort(b.order)
    moves = rank_a - rank_b  # positive = more important in model_b
    movers = np.argsort(-np.abs(moves), kind="stable")[:top]
    return {
        "a": a,
        "b": b,
        "agreement": compare(a, b, k=min(top, a.units)),
        "moved": [(int(u), int(rank_a[u]), int(rank_b[u])) for u in movers],
    }
