"""Benchmark: the vectorised ACE against the `ace` package (PyPI ace 0.4.2), and the time of a PCACE ranking.

1. ACE: the same problems (default 100; n=300, q=3; y depends on x_1 and x_2 with a strength from 0, pure
   noise, to 2) solved by ``neuronwidgets.methods.ace.ace`` in one batch, in a batch of 20, one at a time,
   and by the package one at a time. Reports the maximal correlation corr(theta, sum phi) and the reference
   variant |corr(phi_1, theta)| of both, their differences, the outer iterations of both, and the time
   ratios (wall and CPU).
2. PCACE: ``pcace.rank`` on layer3 (256 units) of an untrained torchvision resnet18 (``weights=None``), 300
   seeded random images of 3x224x224 (the model's usual input) labelled class 0, q=3, 20 permutations: the
   whole ranking, then the forward pass, the PCA and the ACE phase (21 x 256 problems) again one by one, for
   their CPU time.

Run ``.venv/bin/python benchmarks/ace.py`` (about 5 minutes on 2 cores; needs ``pip install ace==0.4.2``);
writes benchmarks/results/ace.md. ``--size`` sets the image side (default 224), ``--problems`` sets the ACE count.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

import neuronwidgets as nw
from neuronwidgets.methods import pcace
from neuronwidgets.methods.ace import ace

try:
    from benchmarks import _bench
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _bench

# This file is benchmarks/ace.py: take its folder off the path, or `import ace` would import this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

N, Q, SEED = 300, 3, 0
SMALL = 20  # a small batch: our per-call overhead matters there
RESULTS = Path(__file__).resolve().parent / "results" / "ace.md"


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def problems(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strengths (count,), y (count, n) and x (count, q, n)."""
    rng = np.random.default_rng(SEED)
    strength = np.linspace(0.0, 2.0, count)
    x = rng.standard_normal((count, Q, N))
    signal = x[:, 0] + np.sin(2 * x[:, 1])
    y = np.exp(0.5 * (strength[:, None] * signal + rng.standard_normal((count, N))))
    return strength, y, x


def package_solve(y: np.ndarray, x: np.ndarray) -> tuple[float, float, int]:
    """The package's maximal correlation, its |corr(phi_1, theta)| and its outer iterations."""
    from ace import ace as package

    solver = package.ACESolver()
    solver.specify_data_set(list(x), y)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every iteration
        solver.solve()
    phi, theta = np.asarray(solver.x_transforms), np.asarray(solver.y_transform)
    return np.corrcoef(theta, phi.sum(0))[0, 1], abs(np.corrcoef(theta, phi[0])[0, 1]), solver._outer_iters


def compare_ace(count: int) -> dict:
    strength, y, x = problems(count)
    load = os.getloadavg()[0]
    start = _clock()
    ours = ace(y, x)
    ours_time = _since(start)
    start = _clock()
    ace(y[:: count // SMALL][:SMALL], x[:: count // SMALL][:SMALL])
    small_time = _since(start)
    start = _clock()
    alone = [ace(y[i], x[i]) for i in range(count)]
    alone_time = _since(start)
    start = _clock()
    theirs = np.array([package_solve(y[i], x[i]) for i in range(count)])
    package_time = _since(start)
    return {
        "batch_vs_alone": max(abs(float(a.correlation) - float(b)) for a, b in zip(alone, ours.correlation)),
        "strength": strength,
        "ours": ours,
        "theirs": theirs,
        "ours_time": ours_time,
        "small_time": small_time,
        "alone_time": alone_time,
        "package_time": package_time,
        "load": (load, os.getloadavg()[0]),
    }


def time_pcace(size: int) -> dict:
    """The whole ranking, then its three phases again one by one (for their CPU time)."""
    torch.manual_seed(SEED)
    model = torchvision.models.resnet18(weights=None).eval()
    generator = torch.Generator().manual_seed(SEED)
    images = torch.randn((300, 3, size, size), generator=generator)
    labels = torch.zeros(300, dtype=torch.long)
    probe = nw.Probe(model, (images, labels), layer="layer3")
    load = os.getloadavg()[0]
    start = _clock()
    ranking = pcace.rank(probe.site(), target=0, progress=False)
    total = _since(start)
    start = _clock()
    maps, logits, _ = pcace.collect(probe.site(), 0, 300, False, None)
    forward = _since(start)
    start = _clock()
    scores, _ = pcace.principal_scores(maps, 3)
    pca = _since(start)
    rng = np.random.default_rng(0)
    responses = np.stack([logits, *(rng.permutation(logits) for _ in range(20))])
    start = _clock()
    ace(responses[:, None, :], scores)
    ace_time = _since(start)
    return {
        "size": size,
        "units": probe.units,
        "shape": probe.layer_info().shape,
        "ranking": ranking,
        "total": total,
        "forward": forward,
        "pca": pca,
        "ace": ace_time,
        "load": (load, os.getloadavg()[0]),
    }


def _row(name: str, time_: tuple[float, float], count: int) -> str:
    return f"| {name} | {time_[0]:.3f} | {time_[1]:.3f} | {1e3 * time_[1] / count:.1f} |"


def report(result: dict, timing: dict, machine: dict) -> str:
    ours, theirs, strength = result["ours"], result["theirs"], result["strength"]
    count = len(strength)
    diff = np.abs(ours.correlation - theirs[:, 0])
    ref_diff = np.abs(ours.reference_correlation - theirs[:, 1])
    package_cpu = result["package_time"][1]
    small_share = package_cpu * SMALL / count  # the package's time for 20 problems, pro rata
    ranking = timing["ranking"]
    problems = (ranking.meta["permutations"] + 1) * timing["units"]
    buckets = [("s = 0 (noise)", strength == 0), ("0 < s < 0.5", (strength > 0) & (strength < 0.5))]
    buckets.append(("s >= 0.5", strength >= 0.5))
    lines = [
        "# ACE and PCACE benchmark",
        "",
        "Produced by `benchmarks/ace.py`. Wall-clock and CPU seconds on a shared machine: when other jobs run,",
        "wall time exceeds CPU time; the CPU time is the better guide to an idle machine for single-threaded work.",
        "",
        "## Machine",
        "",
        f"- {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; Python {machine['python']},",
        f"  torch {machine['torch']} ({machine['torch_threads']} threads), numpy {np.__version__}",
        f"- load average at the end: {', '.join(f'{v:.2f}' for v in machine['load_average'])}; 1-minute load at the "
        f"start and end of section 1: {result['load'][0]:.2f}, {result['load'][1]:.2f}; of section 2: "
        f"{timing['load'][0]:.2f}, {timing['load'][1]:.2f}",
        f"- date: {machine['date']}",
        "",
        f"## 1. ACE: ours vs the `ace` package (0.4.2), n={N}, q={Q}, {count} problems",
        "",
        "y = exp(0.5 (s (x_1 + sin 2x_2) + e)), x ~ N(0, 1) and e ~ N(0, 1), with s evenly spaced from 0 (pure",
        "noise) to 2. The package (pure Python) solves one problem at a time.",
        "",
        "| | wall (s) | CPU (s) | CPU per problem (ms) |",
        "|---|---|---|---|",
        _row(f"ours, all {count} in one batch", result["ours_time"], count),
        _row(f"ours, {SMALL} of them (every {count // SMALL}th) in one batch", result["small_time"], SMALL),
        _row("ours, one problem at a time", result["alone_time"], count),
        _row("`ace` package, one problem at a time", result["package_time"], count),
        "",
        f"**Speed ratio (CPU, package / ours): {package_cpu / result['ours_time'][1]:.0f}x for the batch of "
        f"{count}; {small_share / result['small_time'][1]:.0f}x for a batch of {SMALL}; "
        f"{package_cpu / result['alone_time'][1]:.0f}x one problem at a time.** A batch runs until its slowest "
        "problem has converged, so small batches pay Python overhead per step. The batch and the one-at-a-time "
        f"results differ by at most {result['batch_vs_alone']:.1e}.",
        "",
        "Agreement with the package (absolute difference of the correlations):",
        "",
        "| problems | count | corr(theta, sum phi): max | median | abs corr(phi_1, theta): max | median |",
        "|---|---|---|---|---|---|",
    ]
    for name, mask in buckets:
        lines.append(
            f"| {name} | {int(mask.sum())} | {diff[mask].max():.1e} | {np.median(diff[mask]):.1e} | "
            f"{ref_diff[mask].max():.1e} | {np.median(ref_diff[mask]):.1e} |"
        )
    lines += [
        f"| all | {count} | {diff.max():.1e} | {np.median(diff):.1e} | {ref_diff.max():.1e} | "
        f"{np.median(ref_diff):.1e} |",
        "",
        f"The outer iteration counts are equal in {int((ours.iterations == theirs[:, 2]).sum())} of {count} problems.",
        "",
        "Every 5th problem:",
        "",
        "| s | ours | package | ours (phi_1) | package (phi_1) | outer iterations: ours | package |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in range(0, count, 5):
        lines.append(
            f"| {strength[i]:.2f} | {ours.correlation[i]:.4f} | {theirs[i, 0]:.4f} | "
            f"{ours.reference_correlation[i]:.4f} | {theirs[i, 1]:.4f} | {ours.iterations[i]} | {theirs[i, 2]:.0f} |"
        )
    lines += [
        "",
        "Both iterate as Friedman's mace.f, which package 0.4.2 follows: theta starts as standardised y and the",
        "phi_j as the least-squares linear fit of theta on the centred x_j, with R^2 set to 0; in the inner loop",
        "each new phi_j (the centred smooth of theta - sum of the other phi against x_j) is kept only if it",
        "raises R^2 = 1 - e^2, and the passes stop once one raises R^2 by at most 0.01 (at most 20 passes; one",
        "if q = 1); each outer step sets theta to the standardised smooth of sum phi against y, and the fit",
        "stops once R^2 has moved by at most 0.01 over the last three outer steps (so at least three run), or",
        "after 20. Ours applies these rules per problem while solving a batch (a problem that has stopped is",
        "frozen), so the two differ only by rounding, noise included, and take the same steps. (Before",
        "this, ours stopped when an outer step no longer lowered e^2, as METHODS.md describes, and differed by",
        "up to 0.26 on weak signals.) The SuperSmoothers agree to about 1e-12 (tests/test_ace.py).",
        "",
        f"## 2. PCACE on resnet18 `layer3` ({timing['units']} units)",
        "",
        f"torchvision resnet18(weights=None), eval mode, 300 seeded N(0, 1) images of 3x{timing['size']}x"
        f"{timing['size']}, all labelled class 0; target 0; layer3 output {timing['shape']}; q=3, 20 permutations,",
        f"so ACE solves {problems} problems (n=300 each). The whole ranking ran once; then each phase again",
        "on its own, for its CPU time (ACE is single-threaded; torch runs the forward on "
        f"{machine['torch_threads']} threads).",
        "",
        "| phase | wall (s) | CPU (s) |",
        "|---|---|---|",
        f"| forward pass (300 images, full model, hook on layer3) | {timing['forward'][0]:.1f} | "
        f"{timing['forward'][1]:.1f} |",
        f"| PCA of 256 units (standardise, eigh) | {timing['pca'][0]:.1f} | {timing['pca'][1]:.1f} |",
        f"| ACE, {problems} problems | {timing['ace'][0]:.1f} | {timing['ace'][1]:.1f} |",
        f"| **whole ranking** (`pcace.rank`) | **{timing['total'][0]:.1f}** | **{timing['total'][1]:.1f}** |",
        "",
        f"Per unit (whole ranking): {1e3 * timing['total'][0] / timing['units']:.0f} ms wall; ACE "
        f"{1e3 * timing['ace'][0] / timing['units']:.0f} ms per unit (score and 20 shuffles), "
        f"{1e3 * timing['ace'][1] / problems:.1f} ms CPU per ACE problem.",
        "",
        f"Units above their null's 95th percentile: {int(ranking.meta['above_null'].sum())} of {timing['units']}; "
        f"median score {np.median(ranking.scores):.3f}, median null mean {np.median(ranking.meta['null_mean']):.3f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side for the PCACE timing (default 224)")
    parser.add_argument("--problems", type=int, default=100, help="ACE problems to compare (default 100)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = compare_ace(args.problems)
    timing = time_pcace(args.size)
    text = report(result, timing, _bench.machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
