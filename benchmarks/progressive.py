"""Benchmark: sampled ablation against the exact engine and Taylor, on a model trained here.

The model is a small ResNet-style CNN: a stem, two residual stages of 64 channels, then pooling and a
linear classifier. It is trained here, seeded, in about a minute on two cores, on scikit-learn's digits at
32x32, with random shifts, rotations, scales, contrast and noise. It is evaluated on 30,240 images (each of the
360 held-out digits drawn 84 times with fresh augmentations; ``--repeats``), and on the first 6,120 of them. Its
accuracy is about 93%, and the importance of its units is uneven.

The layer is ``stage1``, the output of the first residual stage (64 units). Everything after it (stage 2,
pooling, classifier) is re-run per unit, as in the early and middle layers of real networks. It reports, in
one run:

1. the exact full ranking's time (a fresh probe each time, so the cut's pass counts too; best of 3);
2. the adaptive top-10 at 95%, with tolerances 1, 0 and 2 points, over ``--orders`` seeded image orders:
   the time until the set is declared, the share of the exact work it did, and how often the set is right
   (within the tolerance) or equal to the exact top-10;
3. the progressive estimate (``fraction=1.0``, one look per round): its Spearman with the exact order after
   1%, 5% and 20% of the exact time, next to Taylor's Spearman and time;
4. small cases, ours against the naive loop (a forward hook per unit on the whole model), interleaved, best
   of 3.

Run ``.venv/bin/python benchmarks/progressive.py`` (about 30 minutes on 2 cores); writes
benchmarks/results/progressive.md.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import neuronwidgets as nw

try:
    from benchmarks import _bench
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _bench

RESULTS = Path(__file__).resolve().parent / "results" / "progressive.md"
LAYER = "stage1"
TOP = 10
SEED = 0


# -- the model and its data ---------------------------------------------------------------------------------


class Block(nn.Module):
    """A ResNet basic block: two 3x3 convs with batch norm, and a 1x1 conv on the skip where the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.skip = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.skip(x))


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.stage1 = Block(32, 64, 1)  # 8x8
        self.stage2 = Block(64, 64, 2)  # 4x4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage2(self.stage1(self.stem(x)))).flatten(1))


def augment(digits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Digits (N, 8, 8) in 0..16 as (N, 1, 32, 32) images: scaled up, randomly shifted (up to 4 pixels),
    rotated (up to 15 degrees), scaled (0.85-1.15), with random contrast and Gaussian noise."""
    n = digits.shape[0]
    x = F.interpolate(digits[:, None].float() / 16, size=32, mode="bilinear", align_corners=False)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle, scale = uniform(-15, 15) * math.pi / 180, uniform(0.85, 1.15)
    shift = torch.stack([uniform(-0.25, 0.25), uniform(-0.25, 0.25)], 1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, align_corners=False)
    x = x * uniform(0.5, 1.5)[:, None, None, None]
    x = x + 0.35 * torch.randn(x.shape, generator=generator)
    return (x - 0.2) / 0.45


def trained_model(epochs: int, repeats: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """The model trained on augmented training digits, and the evaluation images and labels: each held-out
    digit ``repeats`` times, freshly augmented each time."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images, labels = torch.from_numpy(digits.images), torch.from_numpy(digits.target).long()
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0, stratify=digits.target)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = SmallResNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps = epochs * math.ceil(len(train) / 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=steps)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.from_numpy(train)[torch.randperm(len(train), generator=generator)]
        for begin in range(0, len(order), 64):
            batch = order[begin : begin + 64]
            loss = F.cross_entropy(model(augment(images[batch], generator)), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    test_index = torch.from_numpy(test).repeat(repeats)
    evaluation = augment(images[test_index], torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        accuracy = float((model(evaluation).argmax(1) == labels[test_index]).float().mean())
    info = {"train_seconds": time.perf_counter() - start, "accuracy": accuracy, "epochs": epochs}
    return model, evaluation, labels[test_index], info


# -- measurements -------------------------------------------------------------------------------------------


def positions(ranking: nw.Ranking) -> np.ndarray:
    """Each unit's place in the ranking (0 = first), ties broken as the ranking breaks them."""
    place = np.empty(ranking.units, np.int64)
    place[ranking.order] = np.arange(ranking.units)
    return place


def spearman(a: nw.Ranking, b: nw.Ranking) -> float:
    """Spearman correlation of two rankings' orders (ties broken by their tiebreaks, then unit index)."""
    return float(np.corrcoef(positions(a), positions(b))[0, 1])


def spearman_unbiased(a: nw.Ranking, exact: nw.Ranking) -> float:
    """`spearman` of a sampled ranking ordered by its plain mean drops (``meta["drop_unbiased"]``) instead of
    its scores: what the estimate would be without the shrinkage toward the loss increase."""
    plain = nw.Ranking(scores=a.meta["drop_unbiased"], tiebreak=a.tiebreak, method=a.method, layer=a.layer)
    return spearman(plain, exact)


def right_within(top_set: list[int], exact: nw.Ranking, tolerance: float) -> bool:
    """Whether every declared unit's exact drop is at least the exact k-th largest drop less ``tolerance``."""
    kth = np.sort(exact.scores)[::-1][len(top_set) - 1]
    return bool(np.all(exact.scores[top_set] >= kth - tolerance - 1e-12))


def fresh(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, layer: str) -> nw.Probe:
    return nw.Probe(model, (images, labels), layer=layer)


def rank_timed(probe: nw.Probe, **options) -> tuple[nw.Ranking, float]:
    start = time.perf_counter()
    ranking = probe.rank("ablation", progress=False, warn=False, **options)
    return ranking, time.perf_counter() - start


def adaptive(case, exact, exact_seconds, tolerance, orders) -> dict:
    rows = []
    for seed in range(orders):
        ranking, seconds = rank_timed(fresh(*case), top=TOP, tolerance=tolerance, seed=seed)
        used = ranking.meta["images_used"]
        rows.append(
            {
                "seconds": seconds,
                "work": float(used.sum() / (used.size * len(case[1]))),
                "right": right_within(ranking.meta["top_set"], exact, tolerance),
                "equal": set(ranking.meta["top_set"]) == set(exact.order[:TOP].tolist()),
            }
        )
        print(f"  tolerance {tolerance:.2f} order {seed}: {seconds:.1f} s, work {rows[-1]['work']:.1%}", flush=True)
    share = np.array([r["seconds"] for r in rows]) / exact_seconds
    return {
        "tolerance": tolerance,
        "orders": orders,
        "median_share": float(np.median(share)),
        "max_share": float(share.max()),
        "median_work": float(np.median([r["work"] for r in rows])),
        "right": sum(r["right"] for r in rows),
        "equal": sum(r["equal"] for r in rows),
        "load": os.getloadavg()[0],
    }


def progressive(case, exact, exact_seconds) -> dict:
    looks: list[tuple[float, nw.Ranking]] = []
    probe = fresh(*case)
    start = time.perf_counter()
    final, seconds = rank_timed(
        probe, fraction=1.0, seed=SEED, update=lambda r: looks.append((time.perf_counter() - start, r))
    )
    timeline = [
        (t, spearman(r, exact), spearman_unbiased(r, exact), int(r.meta["images_used"].max())) for t, r in looks
    ]
    taylor_seconds = math.inf
    for _ in range(2):  # best of two, the first warming the backward pass up
        taylor_probe = fresh(*case)
        begin = time.perf_counter()
        taylor = taylor_probe.rank("taylor", progress=False, warn=False)
        taylor_seconds = min(taylor_seconds, time.perf_counter() - begin)
    same_time = [r for t, r in looks if t <= taylor_seconds]
    return {
        "timeline": timeline,
        "first_look": looks[0][0],
        "first_images": int(looks[0][1].meta["images_used"].max()),
        "looks": len(looks),
        "seconds": seconds,
        "final_equal": bool(np.array_equal(final.scores, exact.scores)),
        "taylor_seconds": taylor_seconds,
        "taylor_spearman": spearman(taylor, exact),
        "at_taylor_time": spearman(same_time[-1], exact) if same_time else None,
        "load": os.getloadavg()[0],
    }


def naive_drops(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor, units: int) -> np.ndarray:
    """The naive loop: the whole model once per unit, with a forward hook zeroing that unit."""
    module = model.get_submodule(layer)
    with torch.no_grad():
        base = (model(images).argmax(1) == labels).float().mean()
    correct = [
        (_bench.zeroed_scores(model, module, images, unit).argmax(1) == labels).float().mean() for unit in range(units)
    ]
    return np.array([float(base - c) for c in correct])


def small_cases() -> list[dict]:
    """Ours (exact) against the naive loop on small work, interleaved, best of 3."""
    cases = []
    torch.manual_seed(SEED)
    resnet = torchvision.models.resnet18(weights=None).eval()
    for layer, n, side in (("layer3", 32, 32), ("layer2", 16, 64), ("layer1", 8, 64)):
        generator = torch.Generator().manual_seed(SEED)
        images = torch.randn(n, 3, side, side, generator=generator)
        with torch.no_grad():
            labels = resnet(images).argmax(1)
        ours, naive = [], []
        for _ in range(3):
            probe = nw.Probe(resnet, (images, labels), layer=layer)
            begin = time.perf_counter()
            units = probe.rank("ablation", progress=False, warn=False).units
            ours.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            naive_drops(resnet, layer, images, labels, units)
            naive.append(time.perf_counter() - begin)
        cases.append(
            {
                "case": f"resnet18 {layer}, {n} images of 3x{side}x{side}",
                "ours": min(ours),
                "naive": min(naive),
                "engine": probe.site(layer).ablator().path,
                "load": os.getloadavg()[0],
            }
        )
        print(f"  small {cases[-1]}", flush=True)
    return cases


# -- the report ---------------------------------------------------------------------------------------------


def demo_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    """The bundled demo model on the issue's simulation data: the 1,797 scikit-learn digits and four
    one-pixel shifts of them (8,985 images), layer relu2 (32 units)."""
    from sklearn.datasets import load_digits

    from neuronwidgets.demo.data import preprocess

    digits = load_digits()
    base = preprocess(digits.images)
    shifted = [torch.roll(base, shift, dim) for shift, dim in ((1, 2), (-1, 2), (1, 3), (-1, 3))]
    labels = torch.from_numpy(digits.target).long().repeat(5)
    model, _ = nw.demo.load()
    return model.eval(), torch.cat([base, *shifted]), labels, "relu2"


def study(name: str, case: tuple, orders: int, other_orders: int) -> dict:
    """Every measurement of one model and layer."""
    memory = _bench.PeakMemory()
    memory.start()
    exact, first_seconds = rank_timed(fresh(*case))  # the process's first ranking of it: warms it up
    peak = memory.extra()
    exact_seconds = min(first_seconds, *(rank_timed(fresh(*case))[1] for _ in range(2)))
    drops = np.sort(exact.scores)[::-1]
    result = {
        "name": name,
        "layer": case[3],
        "images": len(case[1]),
        "units": exact.units,
        "engine": exact.meta["engine"],
        "accuracy": exact.meta["base_accuracy"],
        "nonzero": int(np.sum(exact.scores != 0)),
        "largest": float(drops[0]),
        "tenth": float(drops[TOP - 1]),
        "eleventh": float(drops[TOP]),
        "exact_seconds": exact_seconds,
        "exact_load": os.getloadavg()[0],
        "memory": peak,
    }
    print(f"{name} exact: {result}", flush=True)
    result["progressive"] = progressive(case, exact, exact_seconds)
    print(f"{name} progressive: {result['progressive']}", flush=True)
    result["adaptive"] = [adaptive(case, exact, exact_seconds, 0.01, orders)]
    # The load changes within minutes: time the exact ranking again after the longest series. Every share is
    # then recomputed over the faster of the two exact times, which can only make the shares larger.
    again = rank_timed(fresh(*case))[1]
    result["exact_again"], result["exact_again_load"] = again, os.getloadavg()[0]
    for tolerance in (0.0, 0.02):
        result["adaptive"].append(adaptive(case, exact, exact_seconds, tolerance, other_orders))
    if again < exact_seconds:
        for row in result["adaptive"]:
            row["median_share"] *= exact_seconds / again
            row["max_share"] *= exact_seconds / again
        result["exact_seconds"] = again
    result["progressive"]["at"] = estimate_at(result["progressive"]["timeline"], result["exact_seconds"])
    return result


def estimate_at(timeline: list[tuple[float, float, float, int]], exact_seconds: float) -> dict:
    """The last look's (Spearman, the plain means' Spearman, images per unit) within each share of the exact
    ranking's time."""
    at = {}
    for share in (0.01, 0.05, 0.20):
        before = [row[1:] for row in timeline if row[0] <= share * exact_seconds]
        at[share] = before[-1] if before else (None, None, 0)
    return at


def report(machine: dict, model_info: dict, studies: list[dict], small: list[dict]) -> str:
    lines = [
        "# Sampled ablation benchmark",
        "",
        "Produced by `benchmarks/progressive.py`. Wall-clock seconds on a shared 2-core machine; the 1-minute load",
        "is given with each part.",
        "",
        "## Machine",
        "",
        f"- {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python {machine['python']},",
        f"  torch {machine['torch']} ({machine['torch_threads']} threads)",
        f"- date: {machine['date']}",
        "",
        "## Models",
        "",
        "- **trained ResNet**: a small ResNet-style CNN (stem, two residual stages of 64 channels), trained here "
        f"in {model_info['train_seconds']:.0f} s ({model_info['epochs']} epochs, seeded) on augmented digits; "
        f"evaluated on the 360 held-out digits, each drawn {model_info['repeats']} times with fresh augmentations "
        f"({360 * model_info['repeats']:,} images, the size of a real validation set: CIFAR's is 10,000, "
        "ImageNet's 50,000), and on the first 6,120 of them. Sampling saves more the more images there are: a "
        "unit at the top-k boundary needs about the same number of images whatever the population.",
        "- **demo**: the bundled demo model on the issue's simulation data (the 1,797 digits and four one-pixel",
        "  shifts of them).",
        "",
    ]
    for st in studies:
        lines += study_section(st)
    lines += [
        "## Small work: ours (exact) against the naive loop",
        "",
        "| case | ours (s) | naive (s) | ratio | engine | load |",
        "|---|---|---|---|---|---|",
    ]
    for c in small:
        lines.append(
            f"| {c['case']} | {c['ours']:.3f} | {c['naive']:.3f} | {c['naive'] / c['ours']:.2f}x | {c['engine']} | "
            f"{c['load']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def study_section(st: dict) -> list[str]:
    prog = st["progressive"]
    exact_seconds = st["exact_seconds"]
    lines = [
        f"## {st['name']}: layer `{st['layer']}`",
        "",
        f"{st['images']} images, accuracy {st['accuracy']:.1%}, {st['units']} units, engine path `{st['engine']}`. "
        f"Exact drops: {st['nonzero']} of {st['units']} units change the accuracy; the largest is "
        f"{st['largest']:.2%}, the 10th {st['tenth']:.2%}, the 11th {st['eleventh']:.2%}.",
        "",
        f"Exact full ranking (a fresh probe, so the cut's pass counts; best of 3, the first also warming the "
        f"process up): **{exact_seconds:.1f} s** "
        f"(load {st['exact_load']:.2f}; timed again after the 1-point series: {st['exact_again']:.1f} s at load "
        f"{st['exact_again_load']:.2f}; shares are of the faster); peak extra memory {st['memory'] / 2**20:.0f} MiB.",
        "",
        f"### Adaptive top-{TOP} at 95%",
        "",
        'Each order is a fresh probe and another seed. "Right": every declared unit\'s exact drop is within the',
        'tolerance of the exact 10th largest (what the method promises). "Equal": the declared set is the exact',
        "top-10 set.",
        "",
        "| tolerance | orders | time / exact: median | worst | work done: median | right | equal | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in st["adaptive"]:
        lines.append(
            f"| {a['tolerance'] * 100:.0f} pt | {a['orders']} | {a['median_share']:.1%} | {a['max_share']:.1%} | "
            f"{a['median_work']:.1%} | {a['right']} of {a['orders']} | {a['equal']} of {a['orders']} | "
            f"{a['load']:.2f} |"
        )
    at_taylor = prog["at_taylor_time"]
    lines += [
        "",
        "### Progressive estimate against Taylor",
        "",
        f"`fraction=1.0`, one look per round: the first estimate after {prog['first_look']:.1f} s "
        f"({prog['first_images']} images per unit), {prog['looks']} looks, done in {prog['seconds']:.1f} s "
        f"({prog['seconds'] / exact_seconds:.2f}x the exact ranking's time); final scores equal to the exact "
        f"ones: {prog['final_equal']}.",
        "",
        "The estimate is each unit's mean drop pulled toward what its loss increase predicts, by its noise",
        "(`shrunk_drops`); the plain means' Spearman is beside it.",
        "",
        "| after (share of the exact time) | Spearman with the exact order | plain means | images per unit |",
        "|---|---|---|---|",
    ]
    for share, (rho, plain, images) in prog["at"].items():
        shown = "no estimate yet" if rho is None else f"{rho:.3f} | {plain:.3f}"
        lines.append(f"| {share:.0%} | {shown if rho is not None else shown + ' | –'} | {images} |")
    lines += [
        "",
        f"Taylor: Spearman **{prog['taylor_spearman']:.3f}** in {prog['taylor_seconds']:.1f} s "
        f"({prog['taylor_seconds'] / exact_seconds:.1%} of the exact time); the progressive estimate at that "
        f"time: {'none yet' if at_taylor is None else f'{at_taylor:.3f}'} (load {prog['load']:.2f}).",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20, help="image orders for the 1-point tolerance")
    parser.add_argument("--other-orders", type=int, default=3, help="image orders for the other cases")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=84, help="augmented draws of each held-out digit")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", nw.RankingWarning)
    machine = _bench.machine()
    model, images, labels, model_info = trained_model(args.epochs, args.repeats)
    model_info["repeats"] = args.repeats
    print(f"trained: {model_info}", flush=True)
    whole_set, small_set = (model, images, labels, LAYER), (model, images[:6120], labels[:6120], LAYER)
    studies = [
        study(f"trained ResNet, {len(labels):,} images", whole_set, args.orders, args.other_orders),
        study("trained ResNet, 6,120 images", small_set, args.other_orders, args.other_orders),
        study("demo", demo_case(), args.other_orders, args.other_orders),
    ]
    small = small_cases()
    text = report(machine, model_info, studies, small)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
