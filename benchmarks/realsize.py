"""Real-size benchmark: ResNet-50, 1,000 classes, 1,024 images of 224x224, on the CPU.

What a user waits for, in one run: building the probe, the Explorer's first state in the kernel, the preview
(`taylor`), the exact ranking of layer4 (closed form) and of layer3 (1,024 units: a stated sample of units timed
and extrapolated), a unit click's overlay while a ranking runs, the slider's accuracy, peak memory; and what
autocast (bfloat16) changes, in time and in the answer. Random weights (no downloads), but the labels equal the
model's own predictions on half of the images, so accuracy is about 50% and ablations move it.

    python benchmarks/realsize.py [--images 1024] [--sample 4] [--out benchmarks/results/realsize.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import neuronwidgets as nw
from benchmarks._bench import PeakMemory, machine

CHUNK = 64
CLICKS = 5  # unit clicks timed while a ranking runs


def build(images: int, arch: str = "resnet50", size: int = 224, seed: int = 0):
    """A random-weight torchvision model and images whose labels are its own predictions on every other image."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    data = torch.randn((images, 3, size, size), generator=generator)
    with torch.no_grad():
        predicted = torch.cat([model(data[i : i + CHUNK]).argmax(1) for i in range(0, images, CHUNK)])
    random = torch.randint(0, 1000, (images,), generator=generator)
    labels = torch.where(torch.arange(images) % 2 == 0, predicted, random)
    return model, data, labels


def clock(func):
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f}"


def wait_for(condition, widgets=(), timeout: float = 1800.0, step: float = 0.01) -> float:
    """Seconds until ``condition()`` holds (polling); raise after ``timeout``, or at once if one of ``widgets``
    shows an error (it would never hold then)."""
    start = time.perf_counter()
    while not condition():
        failed = [f"{type(w).__name__}: {w.error}" for w in widgets if w.error]
        if failed or time.perf_counter() - start > timeout:
            states = [f"{type(w).__name__} status={w.status} error={w.error!r}" for w in widgets]
            raise TimeoutError(f"condition not reached ({'; '.join(failed) or 'timeout'}): {'; '.join(states)}")
        time.sleep(step)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--arch", default="resnet50", help="a torchvision classification model (random weights)")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    parser.add_argument("--parts", default="rankings,explorer,autocast", help="which parts to run (comma list)")
    parser.add_argument("--sample", type=int, default=4, help="layer3 units timed for the extrapolation")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "realsize.md"))
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []  # (what, figure, load during it)

    def record(what: str, figure: str) -> None:
        rows.append((what, figure, load()))
        print(f"{what}: {figure}  (load {rows[-1][2]})", flush=True)

    model, images, labels = build(args.images, args.arch, args.size)
    categories = [f"class {i}" for i in range(1000)]
    peak = PeakMemory()
    peak.start()
    probe, seconds = clock(lambda: nw.Probe(model, (images, labels), layer="layer4", classes=categories))
    record("Probe(...) (layer discovery on one image)", f"{seconds:.2f} s")

    with torch.no_grad():
        _, forward_seconds = clock(lambda: [model(images[i : i + CHUNK]) for i in range(0, args.images, CHUNK)])
    record(f"one full forward pass over {args.images} images (reference)", f"{forward_seconds:.1f} s")

    parts = set(args.parts.split(","))
    exact, seconds = clock(lambda: probe.rank("ablation", layer="layer4", progress=False))
    record(
        f"exact: ablation, layer4 ({exact.units} units, {exact.meta['engine']})",
        f"{seconds:.1f} s ({seconds / forward_seconds:.2f} forward passes); base accuracy "
        f"{exact.meta['base_accuracy']:.3f}",
    )
    if "explorer" in parts:
        explorer_rows(probe, record)
    if "autocast" in parts:
        autocast_rows(model, images, labels, exact, record)
    if "rankings" in parts:
        rankings_rows(model, images, labels, categories, probe, args, record)
    record("peak resident memory above the start (everything above)", f"{peak.extra() / 2**30:.2f} GiB")
    write(args, rows)


def rankings_rows(model, images, labels, categories, probe: nw.Probe, args, record) -> None:
    """The preview of layer4 and layer3, and layer3's exact unit loop (a sample of units, extrapolated)."""
    _, seconds = clock(lambda: probe.rank("taylor", layer="layer4", progress=False))
    record("preview: taylor, layer4", f"{seconds:.1f} s")
    _, seconds = clock(lambda: probe.rank("taylor", layer="layer3", progress=False))
    record("preview: taylor, layer3", f"{seconds:.1f} s")

    # the pass up to the layer is paid once per ranking: run it (with one unit) before timing the unit loop,
    # and keep the cut in memory so the timed call does not pay it again
    wide = nw.Probe(model, (images, labels), layer="layer3", classes=categories, memory="8GiB")
    site = wide.site("layer3")
    _, first = clock(lambda: site.ablation_outcomes(units=[0], progress=False))
    sample = list(range(1, args.sample + 1))
    _, seconds = clock(lambda: site.ablation_outcomes(units=sample, progress=False))
    per_unit = seconds / len(sample)
    record(
        f"exact: ablation, layer3, {len(sample)} of {site.units} units timed ({site.ablator().path})",
        f"{per_unit:.1f} s per unit after the pass to the layer ({first:.1f} s with one unit), so all "
        f"{site.units} units: about {(first + per_unit * site.units) / 3600:.1f} h",
    )


def click(explorer: nw.Explorer, unit: int) -> float:
    """Seconds from selecting ``unit`` in the list to its overlay's new tiles."""
    overlay, before = explorer.overlay, list(explorer.overlay.tiles)
    explorer.ranked_list.selected_unit = unit
    views = (explorer.ranked_list, overlay, explorer.panel)
    return wait_for(lambda: overlay.tiles != before and overlay.shown.get("unit") == unit, views)


def explorer_rows(probe: nw.Probe, record) -> None:
    """The widgets in the kernel: first state, a unit click during a long ranking, the slider."""
    explorer, seconds = clock(lambda: nw.Explorer(probe, method="taylor", layer="layer4"))
    record("Explorer(probe) returns (its first state is sent)", f"{seconds:.2f} s")
    ranked, overlay, panel = explorer.ranked_list, explorer.overlay, explorer.panel
    views = (ranked, overlay, panel)
    seconds = wait_for(lambda: ranked.ranking is not None and bool(overlay.tiles), views)
    record("Explorer: first ranking and overlay shown (taylor, layer4)", f"{seconds:.1f} s more")
    explorer.wait(3600)
    idle = sorted(click(explorer, unit) for unit in range(1, 1 + CLICKS))
    record(
        f"unit click -> overlay, nothing else running ({len(idle)} clicks)",
        f"median {idle[len(idle) // 2]:.2f} s, longest {idle[-1]:.2f} s",
    )
    ranked.method = "ablation"  # a long ranking (layer4: closed form, about one pass) starts on the worker
    time.sleep(1.0)
    clicks = []
    for unit in range(7, 7 + CLICKS):
        if ranked.status != "running":
            break
        seconds = click(explorer, unit)
        clicks.append((seconds, ranked.status == "running"))
        time.sleep(1.0)
    during = sorted(seconds for seconds, running in clicks if running)
    if during:
        record(
            f"unit click -> overlay, while the ablation ranking runs ({len(during)} clicks)",
            f"median {during[len(during) // 2]:.2f} s, longest {during[-1]:.2f} s",
        )
    else:
        record("unit click -> overlay, while the ablation ranking runs", "the ranking ended before a click")
    explorer.wait(3600)
    request = panel.request
    panel.k = 5
    seconds = wait_for(lambda: panel.after.get("request", -1) > request and panel.status != "running", views)
    record("slider k=5 -> accuracy shown (layer4)", f"{seconds:.2f} s")


def autocast_rows(model, images, labels, exact: nw.Ranking, record) -> None:
    """bfloat16 autocast against float32: time and agreement of the layer4 ablation ranking."""
    fast = nw.Probe(model, (images, labels), layer="layer4", autocast="bfloat16")
    ranking, seconds = clock(lambda: fast.rank("ablation", progress=False))
    agreement = nw.compare(exact, ranking)
    drop = np.abs(ranking.scores - exact.scores).max()
    record(
        "autocast bfloat16: ablation, layer4",
        f"{seconds:.1f} s (float32: {exact.meta['seconds']:.1f} s); Spearman {agreement['spearman']:.3f} with "
        f"float32, top-10 overlap {agreement['top_k_overlap']:.2f}, largest score difference {drop:.4f}, base "
        f"accuracy {ranking.meta['base_accuracy']:.3f} (float32 {exact.meta['base_accuracy']:.3f})",
    )


def write(args, rows) -> None:
    info = machine()
    lines = [
        f"# Real-size benchmark: {args.arch}, 1,000 classes, {args.size}x{args.size}, CPU",
        "",
        f"`python benchmarks/realsize.py --images {args.images} --sample {args.sample} --parts {args.parts}`, "
        f"{args.arch} at {args.size}x{args.size}, random weights, labels equal "
        "to the model's own predictions on every other image. Machine: "
        f"{info.get('cpu', '?')}, {info.get('cores', os.cpu_count())} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Load is the 1- and 5-minute load average when each figure was taken.",
        "",
        "| what | figure | load |",
        "|---|---|---|",
        *[f"| {what} | {figure} | {when} |" for what, figure, when in rows],
        "",
        "The unit click runs on its own lane while the ranking lends the model between slices of about 0.25 s; "
        "the overlay of a unit's top images reuses the maps the layer's summary pass kept. The slider reuses the "
        "cut's values when they fit in `Probe(memory=...)` (default: 1/16 of the machine's memory, within 256 "
        "MiB and 4 GiB; layer4's 1,024 x 2,048 x 7 x 7 float32 values are 400 MiB).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    main()
