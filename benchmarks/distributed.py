"""Benchmark: an exact ablation ranking in one process against the same ranking shared by 2 processes.

ResNet-18 (random weights, eval mode, float32) at layer3 (256 units) ranks ``--images`` seeded random images of
``--side`` pixels, labelled by the model's own predictions so that ablations change some of them. Each way runs in
fresh spawned processes with one torch thread each, as a user's script does: a fresh `Probe` and one
``rank("ablation")`` (its tracing, checks and start-up exchange included). Two processes form a gloo group on
127.0.0.1 and each ranks its half of the images; the ranking's time is the slower rank's. The two ways are
interleaved, best of ``--repeats``. Every collective's bytes are counted (the all-reduced sums, the all-gathered
status exchanges), and every run's scores are checked against the one-process scores.

Run ``.venv/bin/python benchmarks/distributed.py`` (about 4 minutes on 2 quiet cores); writes
benchmarks/results/distributed.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

try:
    from benchmarks import _bench
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _bench

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.md"
LAYER = "layer3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, size: int, port: int, images: int, side: int, out: str) -> None:
    """One process: build the model and data, join the group (if ``size`` > 1), rank, and pickle what it saw."""
    import torch
    import torchvision

    import neuronwidgets as nw

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    inputs = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        labels = model(inputs).argmax(1)
    sent = {"all_reduce": 0, "all_gather": 0, "calls": 0}
    if size > 1:
        dist = torch.distributed
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size, timeout=timedelta(seconds=300)
        )
        all_reduce, all_gather = dist.all_reduce, dist.all_gather

        def counted_reduce(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            sent["all_reduce"] += tensor.numel() * tensor.element_size()
            sent["calls"] += 1
            return all_reduce(tensor, *args, **kwargs)

        def counted_gather(parts: list, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            sent["all_gather"] += tensor.numel() * tensor.element_size()
            sent["calls"] += 1
            return all_gather(parts, tensor, *args, **kwargs)

        dist.all_reduce, dist.all_gather = counted_reduce, counted_gather  # engine.distributed calls these
        dist.barrier()  # the ranks start timing together
    start = time.perf_counter()
    probe = nw.Probe(model, (inputs, labels), layer=LAYER, group=None if size > 1 else False)
    ranking = probe.rank("ablation", progress=False, warn=False)
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "scores": ranking.scores,
        "engine": ranking.meta.get("engine"),
        "images": ranking.meta.get("images"),
        "peak_rss": _bench.maxrss_bytes(),
        "sent": sent,
    }
    with open(Path(out) / f"rank-{rank}.pkl", "wb") as file:
        pickle.dump(result, file)
    if size > 1:
        torch.distributed.destroy_process_group()


def run(size: int, images: int, side: int) -> list[dict[str, Any]]:
    """Spawn ``size`` processes ranking together; what each rank saw."""
    context = multiprocessing.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        processes = [
            context.Process(target=rank_main, args=(rank, size, port, images, side, out)) for rank in range(size)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(900)
            if process.exitcode != 0:
                raise RuntimeError(f"a rank of the {size}-process run ended with exit code {process.exitcode}")
        return [pickle.loads((Path(out) / f"rank-{rank}.pkl").read_bytes()) for rank in range(size)]


Runs = dict[int, list[list[dict[str, Any]]]]  # processes: per try, what each rank saw


def seconds(ranks: list[dict[str, Any]]) -> float:
    """A try's time: its slower rank's."""
    return max(r["seconds"] for r in ranks)


def report(args: argparse.Namespace, cases: dict[tuple[int, int], Runs], loads: list[float]) -> str:
    main_case = (args.images, args.side)
    runs = cases[main_case]
    one = runs[1][0][0]
    best = {size: min(seconds(ranks) for ranks in tries) for size, tries in runs.items()}
    two = min(runs[2], key=seconds)
    reduced = two[0]["sent"]["all_reduce"]
    gathered = two[0]["sent"]["all_gather"]
    units = len(one["scores"])
    machine = _bench.machine()
    lines = [
        "# One process against two: exact ablation on resnet18 layer3",
        "",
        f"`benchmarks/distributed.py`, {time.strftime('%Y-%m-%d %H:%M %Z')}; {machine['cpu']}, "
        f"{machine['cores']} cores, torch {machine['torch']}; one torch thread per process; gloo on 127.0.0.1.",
        f"resnet18 (random weights), layer3 ({units} units), seeded random images, labels = the model's "
        f"predictions; engine path `{one['engine']}`. Fresh processes each run: a new `Probe` and one "
        f"`rank('ablation')`, timed on the slower rank. Interleaved, best of {args.repeats}; 1-minute load average "
        f"before each run: {', '.join(f'{load:.1f}' for load in loads)}.",
        "",
        "| images | processes | seconds (best) | all runs | throughput vs 1 process | peak RSS per process |",
        "|---|--:|--:|---|--:|--:|",
    ]
    for (images, side), case in cases.items():
        case_best = {size: min(seconds(ranks) for ranks in tries) for size, tries in case.items()}
        for size, tries in case.items():
            all_runs = ", ".join(f"{seconds(ranks):.2f}" for ranks in tries)
            peak = max(r["peak_rss"] for ranks in tries for r in ranks) / 2**20
            lines.append(
                f"| {images} of 3x{side}x{side} | {size} | {case_best[size]:.2f} | {all_runs} | "
                f"{case_best[1] / case_best[size]:.2f}x | {peak:.0f} MiB |"
            )
    small = [case for case in cases if case != main_case]
    lines += [
        "",
        f"On {args.images} images of {args.side}x{args.side}, two processes give {best[1] / best[2]:.2f}x the "
        "throughput of one (the target is at least 0.8 x 2 = 1.6x where the cores allow it; this machine has 2 "
        "cores, shared)."
        + (
            f" On {small[0][0]} images of {small[0][1]}x{small[0][1]} they give "
            f"{min(seconds(r) for r in cases[small[0]][1]) / min(seconds(r) for r in cases[small[0]][2]):.2f}x: "
            "there the fixed part of a ranking (tracing, the checks, the timed pass that picks the engine path), "
            "which every rank pays whole, weighs more."
            if small
            else ""
        ),
        "Every run's scores equal the one-process scores exactly (accuracy drops are counts).",
        "",
        "## What crosses between the ranks",
        "",
        f"Per ranking, each rank sent {reduced:,} bytes into all-reduces and {gathered:,} bytes into all-gathers "
        f"({two[0]['sent']['calls']} collectives). The all-reduced part is the outcome counts: for the unablated "
        f"model and each of the {units} units, the correct images per class (int64) and the summed loss (float64), "
        "and the images per class: about (units + 1) x classes x 8 bytes "
        f"({(units + 1) * 1000 * 8:,} here), whatever the number of images. The all-gathers are the status "
        "exchanges, 4 KiB from each rank, that make a failing rank's error reach every rank and refuse ranks that "
        "make different calls.",
        "",
        "## How it scales",
        "",
        "- Compute per rank is the pass up to the layer and the per-unit passes after it over the rank's shard, "
        "N/R images: it divides by R. The fixed part of a ranking (tracing the model, the checks on one image, "
        "the timed pass that picks the engine path) does not divide, and is paid on every rank at once.",
        "- Communication is one set of all-reduces per ranking of about units x classes x 8 bytes, whatever N "
        "is: 0.5 MiB for 64 units and 1,000 classes, 8 MiB for ResNet-50's layer3 (1,024 units) at 1,000 classes. "
        "On NCCL over NVLink or InfiniBand that is milliseconds; next to a ranking of 50,000 images it is nothing. "
        "So on N GPUs the time is about the fixed part plus the one-GPU time over N, until each shard is so small "
        "that the fixed part dominates.",
        "- Small shards do not make the per-unit calls overhead-bound: the unit loop stacks as many units into one "
        "call as make it worth its fixed cost (the small-work path), so a rank with half the images makes about "
        "half the calls. Splitting the units among the ranks instead would make every rank run the pass up to the "
        "layer on all the images, and would save only what stacking does not already save.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--small", type=int, nargs=2, default=(8, 32), metavar=("IMAGES", "SIDE"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    cases: dict[tuple[int, int], Runs] = {(args.images, args.side): {1: [], 2: []}, tuple(args.small): {1: [], 2: []}}
    loads: list[float] = []
    for repeat in range(args.repeats):
        for (images, side), runs in cases.items():
            for size in (1, 2) if repeat % 2 == 0 else (2, 1):
                loads.append(os.getloadavg()[0])
                ranks = run(size, images, side)
                runs[size].append(ranks)
                print(f"{images} images of {side}x{side}, {size} process(es): {seconds(ranks):.2f} s", flush=True)
    for (images, _), runs in cases.items():
        want = runs[1][0][0]["scores"]
        for size, tries in runs.items():
            for ranks in tries:
                for r in ranks:
                    assert np.array_equal(r["scores"], want), f"a {size}-process run's scores differ"
                    assert r["images"] == images
    text = report(args, cases, loads)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
