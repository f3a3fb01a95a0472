"""Benchmark: the exact engine against the naive loop on small work, over the torchvision test matrix.

Each family of `tests/test_zoo.py` is built small, with random weights, in float32 and eval mode, as that
matrix builds it. The heavy families (vgg, alexnet, convnext, inception_v3) are left out, as in CI. At its four
layers (early, middle, in-block, last), an exact ablation ranking of 8 images at 64x64 is timed against the naive
loop, which re-runs the whole model with a forward hook zeroing one unit at a time. The two are interleaved, best
of 2, at one thread and at torch's default number of threads (the machine's cores). Our time is the ranking on a
fresh probe each time (nothing cached): tracing, the pass up to the layer and the checks; the probe's own first
pass, made when it is created, is not timed. The naive loop is timed on up to 16 units and extrapolated to all of
them, since its cost per unit is one full forward pass.

Run ``.venv/bin/python benchmarks/small_work.py`` (2-20 minutes on 2 cores, by the CPU); writes
benchmarks/results/small_work.md.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import torch

import neuronwidgets as nw
from tests.test_zoo import FAMILIES

try:
    from benchmarks import _bench
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _bench

RESULTS = Path(__file__).resolve().parent / "results" / "small_work.md"
IMAGES, SIDE, NAIVE_UNITS, RUNS = 8, 64, 16, 2


def naive_seconds(model: torch.nn.Module, layer: str, images: torch.Tensor, units: int) -> float:
    """Seconds of the naive loop over all ``units``, from a timed sample of them (one full forward each)."""
    module = model.get_submodule(layer)
    sample = list(range(0, units, max(1, units // NAIVE_UNITS)))[:NAIVE_UNITS]
    start = time.perf_counter()
    with torch.no_grad():
        model(images)  # the unablated pass, which the naive loop needs too
    for unit in sample:
        _bench.zeroed_scores(model, module, images, unit)
    seconds = time.perf_counter() - start
    return seconds / (len(sample) + 1) * (units + 1)


def case(name: str, role: str, layer: str, threads: list[int]) -> dict:
    """One layer timed at each of ``threads`` (torch's intra-op threads), the settings interleaved."""
    family = FAMILIES[name]
    torch.manual_seed(0)
    model = family.build().float().eval()
    side = max(SIDE, family.size)
    images = torch.randn(IMAGES, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(images).argmax(1)
    ours: dict[int, list[float]] = {t: [] for t in threads}
    naive: dict[int, list[float]] = {t: [] for t in threads}
    path: dict[int, str] = {}
    units = 0
    for _ in range(RUNS):
        for t in threads:
            torch.set_num_threads(t)
            probe = nw.Probe(model, (images, labels), layer=layer)
            begin = time.perf_counter()
            ranking = probe.rank("ablation", progress=False, warn=False)
            ours[t].append(time.perf_counter() - begin)
            path[t], units = ranking.meta["engine"], ranking.units
            naive[t].append(naive_seconds(model, layer, images, units))
    return {
        "case": f"{name} {role} `{layer}`",
        "units": units,
        "path": path,
        "ours": {t: min(v) for t, v in ours.items()},
        "naive": {t: min(v) for t, v in naive.items()},
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    machine = _bench.machine()
    threads = sorted({1, torch.get_num_threads()})
    rows = []
    for name, family in FAMILIES.items():
        if family.heavy:
            continue
        for role, layer in family.layers.items():
            rows.append(case(name, role, layer, threads))
            r = rows[-1]
            print(r["case"], ", ".join(f"{t} threads: {r['naive'][t] / r['ours'][t]:.2f}x" for t in threads))
    lines = [
        "# Small work: the exact engine against the naive loop over the torchvision matrix",
        "",
        "Produced by `benchmarks/small_work.py`: see its docstring for what is timed. Wall-clock seconds on a shared",
        f"machine ({machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {machine['date']}).",
        f"{IMAGES} images of 3x{SIDE}x{SIDE} (larger where the family needs it), random weights, float32; each layer",
        f"at {' and '.join(str(t) for t in threads)} of torch's threads, interleaved.",
        "",
    ]
    for t in threads:
        slower = [r for r in rows if r["naive"][t] < r["ours"][t]]
        lines.append(
            f"- **{t} thread{'s' if t > 1 else ''}: {len(rows) - len(slower)} of {len(rows)} layers** at least as fast "
            "as the naive loop; slower: "
            + (", ".join(f"{r['case']} ({r['naive'][t] / r['ours'][t]:.2f}x)" for r in slower) or "none")
            + "."
        )
    header = " | ".join(f"ours, naive (s), naive / ours at {t} thread{'s' if t > 1 else ''}" for t in threads)
    lines += [
        "",
        f"| family, role, layer | units | engine path | {header} | load |",
        "|---|--:|---|" + "--:|" * len(threads) + "--:|",
    ]
    for r in rows:
        paths = sorted(set(r["path"].values()))
        cells = " | ".join(
            f"{r['ours'][t]:.3f}, {r['naive'][t]:.3f}: **{r['naive'][t] / r['ours'][t]:.2f}x**" for t in threads
        )
        lines.append(f"| {r['case']} | {r['units']} | {' / '.join(paths)} | {cells} | {r['load']:.2f} |")
    args.output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
