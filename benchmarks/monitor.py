"""Benchmark: what `nw.Monitor` (with a `MonitorView` attached) adds to the training loop of the demo model.

The same seeded loop (the demo's DigitsCNN from scratch, Adam, batches of 32 of 240 bundled digits) runs
``--steps`` steps without and with ``monitor.step()`` (layer relu3, ``taylor`` on the other 120 digits,
``every=100``), alternately, ``--repeats`` times each. The overhead is the median cost of a snapshot (with the
view's update) over ``every`` median training steps: medians, because other jobs on a shared machine slow
whole runs by tens of percent (the end-to-end totals are reported too), and torch runs on one thread by
default (two spinning threads on two busy cores inflate small training steps several times). Also checked: the
monitored run ends with the same weights (it must).

Run ``.venv/bin/python benchmarks/monitor.py`` (about a minute on 2 quiet cores); writes
benchmarks/results/monitor.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import neuronwidgets as nw
from neuronwidgets.demo import DigitsCNN

try:
    from benchmarks import _bench
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _bench

OUT = Path(__file__).resolve().parent / "results" / "monitor.md"
EVERY, BATCH, LAYER = 100, 32, "relu3"


def run(initial: DigitsCNN, images: torch.Tensor, labels: torch.Tensor, steps: int, watch: tuple | None) -> dict:
    """Train a copy of ``initial`` for ``steps`` steps; with ``watch``, a monitor and its view are attached."""
    model = copy.deepcopy(initial).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    monitor = view_seconds = None
    if watch is not None:
        monitor = nw.Monitor(model, watch, layer=LAYER, every=EVERY)
        view = nw.MonitorView(monitor)
        update, view_seconds = monitor.on_update, []

        def timed_update(snapshot) -> None:
            start = time.perf_counter()
            update(snapshot)
            view_seconds.append(time.perf_counter() - start)

        monitor.on_update = timed_update
        assert view.info["every"] == EVERY
    wall, cpu, durations = time.perf_counter(), time.process_time(), []
    for _ in range(steps):
        start = time.perf_counter()
        batch = torch.randint(0, len(images), (BATCH,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        durations.append(time.perf_counter() - start)
        if monitor is not None:
            monitor.step()
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "step": statistics.median(durations),
        "state": model.state_dict(),
        "snapshots": [] if monitor is None else [s.seconds for s in monitor.history],
        "view": view_seconds or [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, digits = nw.demo.load()
    images, labels = digits.images[:240], digits.labels[:240]
    watch = (digits.images[240:], digits.labels[240:])
    torch.manual_seed(0)
    initial = DigitsCNN()
    run(initial, images, labels, 10, watch)  # warm-up: first-call costs (tracing, allocations) not counted
    plain, watched = [], []
    for _ in range(args.repeats):
        plain.append(run(initial, images, labels, args.steps, None))
        watched.append(run(initial, images, labels, args.steps, watch))
    same = all(torch.equal(a, b) for a, b in zip(plain[0]["state"].values(), watched[0]["state"].values()))
    step = statistics.median(r["step"] for r in plain)
    snapshot = statistics.median(s for r in watched for s in r["snapshots"])
    view = statistics.median(s for r in watched for s in r["view"])
    ratio = sum(r["wall"] for r in watched) / sum(r["wall"] for r in plain)
    estimated = 100 * (snapshot + view) / (EVERY * step)
    m = _bench.machine()
    lines = [
        "# Monitor overhead",
        "",
        f"Produced by `benchmarks/monitor.py --steps {args.steps} --repeats {args.repeats} --threads {args.threads}`.",
        "",
        f"**every={EVERY} adds {estimated:.1f}% to a training step of the demo model** (one snapshot, "
        f"{1000 * (snapshot + view):.0f} ms, over {EVERY} steps of {1000 * step:.1f} ms). Total wall time of the "
        f"monitored runs over the plain ones: {ratio:.2f} (noisy: other jobs on the machine slow whole runs).",
        "",
        f"Setup: the demo's DigitsCNN from scratch, Adam, batches of {BATCH} of 240 bundled digits; "
        f"`nw.Monitor(model, watch, layer={LAYER!r}, every={EVERY})` ranks by `taylor` on the other 120 digits, "
        "with a `MonitorView` attached (outside a kernel: its updates are computed but not sent).",
        "",
        "| run | wall (s) | CPU (s) | median training step (ms) | snapshots (ms) |",
        "|---|---|---|---|---|",
        *[
            f"| {name} {i + 1} | {r['wall']:.2f} | {r['cpu']:.2f} | {1000 * r['step']:.1f} | "
            f"{', '.join(f'{1000 * s:.0f}' for s in r['snapshots']) or '–'} |"
            for i, (a, b) in enumerate(zip(plain, watched))
            for name, r in (("without monitor", a), (f"with monitor, every={EVERY}", b))
        ],
        "",
        f"- one snapshot (taylor ranking + alive fractions): median {1000 * snapshot:.0f} ms; the view's update: "
        f"median {1000 * view:.1f} ms",
        f"- {args.repeats} alternating runs each; final weights with and without the monitor "
        f"{'identical' if same else 'DIFFERENT'}",
        f"- machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']} ({m['torch_threads']} threads); "
        f"load average at the end {', '.join(f'{x:.2f}' for x in m['load_average'] or [])}; {m['date']}",
        "",
        "The cost scales with the number of watched images and falls as 1/every.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    if not same:
        raise SystemExit("the monitored run ended with different weights")


if __name__ == "__main__":
    main()
