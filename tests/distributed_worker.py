"""What each spawned rank of tests/test_distributed.py runs: a gloo process group on 127.0.0.1, a scenario, and
its results pickled for the test process to compare (kept out of the test module so that a rank imports little)."""

from __future__ import annotations

import os
import pickle
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

import neuronwidgets as nw
from neuronwidgets.engine.distributed import DistributedError, GroupMismatch

LAYER = "conv2"


def demo(images: int) -> tuple[torch.nn.Module, Any]:
    """The demo model in float64 (so that sums compare to 1e-12) and its first ``images`` test digits."""
    model, data = nw.demo.load()
    return model.double(), Subset(data, range(images))


def data_as(kind: str, data: Subset) -> Any:
    """The same images as a Dataset, a DataLoader or an (images, labels) pair."""
    if kind == "loader":
        return DataLoader(data, batch_size=4)
    if kind == "tensors":
        images, labels = zip(*(data[i] for i in range(len(data))))
        return torch.stack(images), torch.tensor(labels)
    return data


def results(probe: nw.Probe) -> dict[str, Any]:
    """Every supported result, as arrays and numbers, by name."""
    out: dict[str, Any] = {}
    for name, options in [
        ("activation", {}),
        ("activation", {"target": 7}),
        ("selectivity", {}),
        ("taylor", {}),
        ("ablation", {}),
        ("ablation", {"mode": "mean", "target": 3}),
        ("car", {"prune": 3}),
        ("ablation", {"fraction": 0.6, "seed": 1}),
        ("ablation", {"top": 2, "tolerance": 0.02, "seed": 2}),
        ("ablation", {"fraction": 1.0, "seed": 3, "target": 3}),
    ]:
        ranking = probe.rank(name, progress=False, warn=False, **options)
        key = name + "".join(f" {k}={v}" for k, v in options.items())
        out[f"{key}: scores"] = ranking.scores
        if ranking.tiebreak is not None:
            out[f"{key}: tiebreak"] = ranking.tiebreak
        for field in (
            "variance",
            "images_used",
            "preferred_class",
            "class_means",
            "raw",
            "base_accuracy",
            "base_class_accuracy",
            "class_images",
            "drop_matrix",
            "ablated_accuracy",
            "loss_increase",
            "intervals",
            "settled",
            "top_set",
            "drop_unbiased",
            "population",
            "exact",
            "pruning_order",
            "car_at_removal",
            "accuracy_curve",
            "one_shot",
            "class_car",
        ):
            if field in ranking.meta:
                out[f"{key}: {field}"] = np.asarray(ranking.meta[field])
    for name, options in [("evaluate", {"ablate": [0, 3]}), ("evaluate mean", {"ablate": [5], "mode": "mean"})]:
        ev = probe.evaluate(**options)
        for field in ("accuracy", "per_class_accuracy", "loss", "predictions", "labels"):
            out[f"{name}: {field}"] = np.asarray(getattr(ev, field))
    ev = probe.evaluate(ablate_components=[0, 1])
    out["evaluate components: accuracy"], out["evaluate components: loss"] = ev.accuracy, ev.loss
    out["evaluate components: predictions"] = ev.predictions
    components = probe.components(4)
    out["components: vectors"], out["components: variances"] = components.vectors, components.variances
    out["components: samples"] = components.samples
    rankings = [probe.rank("activation", progress=False, warn=False), probe.rank("taylor", progress=False, warn=False)]
    for name, curves in [
        ("faithfulness", nw.faithfulness(probe, rankings, steps=[0, 1, 4], random_orders=2, progress=False)),
        ("completeness", nw.completeness(probe, steps=[0, 2], progress=False)),
    ]:
        out[f"{name}: baseline"] = curves.baseline
        for label, curve in curves.curves.items():
            out[f"{name} {label}: accuracy"] = curve.accuracy
    out["top_images: indices"] = np.stack([probe.top_images(unit, k=5) for unit in range(probe.units)])
    return out


def refusals(probe: nw.Probe) -> dict[str, Any]:
    """The messages of what is refused under a process group."""
    said = {}
    for name, call in [
        ("pcace", lambda: probe.rank("pcace", target=3, progress=False)),
        ("contribution", lambda: probe.top_images(0, by="contribution", progress=False)),
    ]:
        said[name] = outcome(call)["raised"]
    return said


def methods(
    rank: int, size: int, images: int, kind: str, chunk_size: int, ranks: int, layer: str, share: str
) -> dict[str, Any] | None:
    """Every result on ``images`` shared by the first ``ranks`` ranks (a group of their own where that is
    fewer than all: the others only take part in making it), exact ablation's work shared as ``share`` says
    (`distributed.SHARE_UNITS`)."""
    from neuronwidgets.engine import distributed
    from tests.test_sacred import fingerprint

    distributed.SHARE_UNITS = share

    group = None if ranks == size else torch.distributed.new_group(list(range(ranks)), backend="gloo")
    if rank >= ranks:
        return None
    model, data = demo(images)
    before = fingerprint(model)
    probe = nw.Probe(model, data_as(kind, data), layer=layer, chunk_size=chunk_size, group=group)
    out = {"results": results(probe), "refusals": refusals(probe), "shard": probe.site().shard("", True)}
    out["units shared"] = probe.site()._shares_units(probe.units)
    steps = {}
    for name, options in [
        ("ablation", {"mode": "mean"}),
        ("car", {"prune": 1}),
        ("taylor", {}),
        ("ablation", {"fraction": 1.0, "seed": 0}),
    ]:
        seen: list[Any] = []
        probe.rank(name, progress=seen.append, warn=False, **options)
        steps[f"{name} {options}"] = (seen[-1].done, seen[-1].total)  # this rank's share of the work, counted in full
    out["progress"] = steps
    unseeded = probe.rank("ablation", fraction=0.5, progress=False, warn=False)
    out["unseeded"] = (unseeded.meta["seed"], unseeded.meta["intervals"])
    out["fingerprints"] = (before, fingerprint(model))
    return out


def outcome(call: Any) -> dict[str, Any]:
    """What ``call()`` raised (type, message) and how long it took."""
    start = time.perf_counter()
    try:
        call()
        raised = None
    except Exception as err:
        raised = (type(err).__name__, str(err), isinstance(err, DistributedError), isinstance(err, GroupMismatch))
    return {"raised": raised, "seconds": time.perf_counter() - start}


def errors(rank: int, size: int, timeout: float) -> dict[str, Any]:
    """Refusals at the start, a rank that fails, ranks that make different calls, and a rank that never comes."""
    from tests.test_sacred import fingerprint

    model, data = demo(8)
    before = fingerprint(model)
    out = {}
    out["images differ"] = outcome(lambda: nw.Probe(model, demo(7 + rank)[1], layer=LAYER))
    out["layer differs"] = outcome(lambda: nw.Probe(model, data, layer=["conv2", "conv3"][rank % 2]))
    out["too few images"] = outcome(lambda: nw.Probe(model, demo(size - 1)[1], layer=LAYER))
    images, labels = data_as("tensors", data)
    if rank == size - 1:
        images = images.clone()
        images[-1, 0, 3, 3] = float("nan")  # in the last rank's shard only
    bad = nw.Probe(model, (images, labels), layer=LAYER)
    out["bad data"] = outcome(lambda: bad.rank("activation", progress=False))
    probe = nw.Probe(model, data, layer=LAYER)
    out["after a failure"] = outcome(lambda: probe.evaluate([1]))
    out["calls differ"] = outcome(lambda: probe.rank(["activation", "taylor"][rank % 2], progress=False))
    short = torch.distributed.new_group(backend="gloo", timeout=timedelta(seconds=timeout))
    slow = nw.Probe(model, data, layer=LAYER, group=short)
    if rank == 0:
        out["a rank never comes"] = outcome(lambda: slow.rank("ablation", progress=False))
    else:
        time.sleep(timeout + 3)  # alive, but never making the call
    out["fingerprints"] = (before, fingerprint(model))
    return out


# A short training run for tests/test_monitor_distributed.py: the demo model in float64, full-batch SGD on the
# first TRAINED images (each rank its half), the Monitor watching the next WATCHED.
TRAINED, WATCHED, STEPS, EVERY, WATCHED_LAYER = 32, 24, 6, 2, "relu3"


def training(images: int = TRAINED + WATCHED) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Any]:
    """The model, the training images and labels, and the monitoring data."""
    model, data = demo(images)
    x, y = data_as("tensors", data)
    x = x.double()
    return model, x[:TRAINED], y[:TRAINED], (x[TRAINED:], y[TRAINED:])


def train(
    model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, monitor: Any = None, seen: Any = None
) -> None:
    """`STEPS` of SGD with momentum on the whole of ``images`` (under DDP, on this rank's share); ``seen(step)``
    after each snapshot. BatchNorm stays on its running statistics (eval mode), so that a rank's gradient is its
    share of the full batch's and two ranks train as one process."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.eval()
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        if monitor is not None and monitor.step() is not None and seen is not None:
            seen(monitor.history[-1].step)


def ddp_training(rank: int, size: int, logdir: str | None, acks: str | None = None) -> dict[str, Any]:
    """`train` under DistributedDataParallel, each rank on its contiguous share of the batch; with ``logdir``, a
    Monitor on every rank writing there. With ``acks``, rank 0 waits after each snapshot until the test's reader
    has written ``acks/seen-<step>``: the reader provably saw it while the script ran."""
    from torch.nn.parallel import DistributedDataParallel

    model, images, labels, watched = training()
    share = slice(rank * TRAINED // size, (rank + 1) * TRAINED // size)
    ddp = DistributedDataParallel(model)
    monitor = None if logdir is None else nw.Monitor(model, watched, WATCHED_LAYER, every=EVERY, logdir=logdir)

    def seen(step: int) -> None:
        deadline = time.monotonic() + 30
        while rank == 0 and acks is not None and not (Path(acks) / f"seen-{step}").exists():
            assert time.monotonic() < deadline, f"the reader never saw step {step}"
            time.sleep(0.01)

    train(ddp, images[share], labels[share], monitor, seen)
    if monitor is not None:
        monitor.close()
    history = [] if monitor is None else [(s.step, s.ranking.scores, s.alive) for s in monitor.history]
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "history": history}


SCENARIOS = {"methods": methods, "errors": errors, "ddp training": ddp_training}


def main(rank: int, size: int, port: int, out: str, plan: list[tuple[str, str, dict[str, Any]]]) -> None:
    """One rank: join the group, run each ``(name, scenario, options)`` of ``plan`` in turn, and pickle what
    each returned (or its traceback) to ``out/<name>-<rank>.pkl``. One group for the whole plan: each process
    starting costs seconds (importing torch), each scenario milliseconds."""
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    import neuronwidgets.engine.ablate
    import neuronwidgets.engine.progressive

    neuronwidgets.engine.ablate.SETUP_SECONDS_PER_MODULE = 0.0  # as tests/conftest.py: the traced engine
    neuronwidgets.engine.progressive.LOOK_COST = 0  # a look after every round, as the test's reference takes
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size, timeout=timedelta(seconds=60)
    )
    for name, scenario, options in plan:
        try:
            result: Any = SCENARIOS[scenario](rank, size, **options)
        except BaseException:
            result = {"crashed": traceback.format_exc()}
        path = Path(out) / f"{name}-{rank}.pkl"
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(result))
        partial.replace(path)  # whole or absent: the test process waits for the file and then reads it
    # no destroy_process_group: the errors scenario leaves a group timed out; the processes just exit
