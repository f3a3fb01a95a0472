"""The papers' findings against the truth on the shapes demo (issue 14): its images come with every concept's
pixels, so what a unit or a component detects is measured, not guessed.

Writes its own section of results/findings.md (between the markers below; `findings.py` keeps it when it
rewrites the digits sections). Run ``.venv/bin/python benchmarks/shapes_findings.py``. Not assertions with
fixed numbers: a report of what this model shows.
"""

from __future__ import annotations

import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import neuronwidgets as nw
from neuronwidgets.datasets import COLOURS, SHAPES

OUT = Path(__file__).parent / "results" / "findings.md"
START = "<!-- shapes findings: start (benchmarks/shapes_findings.py) -->"
END = "<!-- shapes findings: end -->"
LAYERS = ["relu2", "relu3"]
QUANTILES = [0.005, 0.05]  # NetDissect's, and a coarser one (see `quantile_note`)
PERMUTATIONS = 100_000
RNG = np.random.default_rng(0)


def section(text: str) -> str:
    """The shapes section of a findings.md text, markers included ("" if it has none)."""
    if START not in text or END not in text:
        return ""
    return text[text.index(START) : text.index(END) + len(END)]


def write_section(body: str) -> None:
    """Put ``body`` between the markers in findings.md: in place of the old section, or appended."""
    text = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
    block = f"{START}\n{body}\n{END}"
    old = section(text)
    text = text.replace(old, block) if old else text.rstrip("\n") + "\n\n" + block + "\n"
    OUT.write_text(text, encoding="utf-8")


def permutation_p(positions: np.ndarray, chosen: np.ndarray) -> float:
    """One-sided p-value that the ``chosen`` units' mean position is this low by chance: the share of random
    sets of as many units whose mean position is at most theirs (Monte Carlo, the observed set counted)."""
    observed = positions[chosen].mean()
    draws = np.argsort(RNG.random((PERMUTATIONS, len(positions))), axis=1)[:, : int(chosen.sum())]
    return float((1 + np.sum(positions[draws].mean(axis=1) <= observed + 1e-12)) / (PERMUTATIONS + 1))


def spearman_p(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided permutation p-value (NaN for a constant ``y``)."""
    if np.all(y == y[0]):
        return float("nan"), float("nan")
    rho = stats.spearmanr(x, y).statistic
    shuffled = np.array([stats.spearmanr(x, RNG.permutation(y)).statistic for _ in range(10_000)])
    return float(rho), float((1 + np.sum(np.abs(shuffled) >= abs(rho) - 1e-12)) / (len(shuffled) + 1))


def concept_kind(name: str) -> str:
    return "shape" if name in SHAPES else "colour" if name in COLOURS else "texture"


def kinds(dissection: nw.Dissection, rows: np.ndarray) -> str:
    """How many of ``rows``' best concepts are shapes / colours / textures."""
    found = [concept_kind(dissection.best[int(row)][0]) for row in rows]
    return "/".join(str(found.count(kind)) for kind in ("shape", "colour", "texture"))


def quantile_note(probe: nw.Probe, data: nw.datasets.ShapesDataset) -> str:
    """How much of an image a shape covers, and how many map positions per image a quantile keeps: what a
    unit's region is compared with."""
    masks = [data.concept_masks(i) for i in range(200)]
    share = float(np.mean([sum(m[k].mean() for k in SHAPES) for m in masks]))  # one shape per image
    sizes = {layer: probe.activation_maps(0, [0], layer=layer).shape[1:] for layer in LAYERS}
    kept = ", ".join(
        f"{layer} ({h}x{w} maps): {QUANTILES[0] * h * w:.2f} positions per image on average at {QUANTILES[0]:g}, "
        f"{QUANTILES[1] * h * w:.1f} at {QUANTILES[1]:g}"
        for layer, (h, w) in sizes.items()
    )
    return (
        f"A shape covers {100 * share:.1f}% of its image on average (200 images). A unit's region is the share "
        f"`quantile` of all positions: {kept}. At NetDissect's 0.005 a region is far smaller than a shape, so IoUs "
        f"stay low however well a unit follows a concept, and a label rests on few positions; at {QUANTILES[1]:g} "
        f"it is about a third of a shape. Every figure is given at both."
    )


def dissection_table(dissections: dict[tuple[str, float], nw.Dissection]) -> list[str]:
    lines = [
        "| layer | quantile | units | best concept a shape / colour / texture | detectors (best IoU > 0.04) "
        "| mean best IoU | top 3 units by IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for (layer, quantile), d in dissections.items():
        kinds = [concept_kind(c) for c, _ in d.best]
        top = ", ".join(f"{k} {c} {iou:.2f}" for k, c, iou in d.detectors(0)[:3])
        lines.append(
            f"| {layer} | {quantile:g} | {d.units} | {kinds.count('shape')} / {kinds.count('colour')} / "
            f"{kinds.count('texture')} | {len(d.detectors())} | {d.iou.max(axis=1).mean():.3f} | {top} |"
        )
    return lines


def car_vs_colour(probe: nw.Probe, dissections: dict[tuple[str, float], nw.Dissection], found: dict) -> list[str]:
    lines = [
        "",
        "### Are colour-selective units pruned first by CAR? (Abbasi-Asl & Yu: 17/20 of AlexNet conv1's first "
        "20 pruned filters colour-selective)",
        "",
        'Position 1 = pruned first (greedy CAR, `probe.rank("car")`, no fine-tuning). Colour units: those whose '
        "best concept is a colour. The p-value is one-sided (colour units pruned earlier than a random set of as "
        f"many units), from {PERMUTATIONS:,} random sets; Mann-Whitney U is of the colour units' positions against "
        "the others' (U / (n1 n2) < 0.5: colour units earlier).",
        "",
        "| layer | quantile | colour units | their mean position (chance) | U / (n1 n2) | p (earlier) "
        "| colour units among the first third pruned (expected) |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in LAYERS:
        car = probe.rank("car", layer=layer, progress=False)
        order = list(car.meta["pruning_order"]) + [u for u in car.order[::-1] if u not in car.meta["pruning_order"]]
        positions = np.empty(car.units)
        positions[order] = np.arange(1, car.units + 1)
        third = car.units // 3
        for quantile in QUANTILES:
            d = dissections[(layer, quantile)]
            colour = np.array([concept_kind(c) == "colour" for c, _ in d.best])
            n = int(colour.sum())
            if n == 0 or n == car.units:
                found["car"][(layer, quantile)] = (n, car.units, float("nan"), float("nan"))
                lines.append(f"| {layer} | {quantile:g} | {n} | - | - | - | - |")
                continue
            u = stats.mannwhitneyu(positions[colour], positions[~colour]).statistic / (n * (car.units - n))
            early = int(colour[order[:third]].sum())
            p = permutation_p(positions, colour)
            found["car"][(layer, quantile)] = (n, car.units, positions[colour].mean(), p)
            lines.append(
                f"| {layer} | {quantile:g} | {n} of {car.units} | {positions[colour].mean():.1f} "
                f"({(car.units + 1) / 2:.1f}) | {u:.2f} | {p:.3f} | {early} of {third} ({third * n / car.units:.1f}) |"
            )
    return lines


def zhou(probe: nw.Probe, found: dict) -> list[str]:
    lines = [
        "",
        "### Do class-selective units carry large class drops? (Zhou et al. 2018)",
        "",
        'Selectivity: Zhou\'s class selectivity index (`probe.rank("selectivity")`); class drop: the accuracy '
        'lost on one class when the unit alone is zeroed (`probe.rank("ablation").meta["drop_matrix"]`). '
        "Spearman across units, two-sided permutation p (10,000 shuffles); 'same class': units whose preferred "
        "class is the class they hurt most (chance 1 in 4), among units that hurt some class.",
        "",
        "| layer | base acc. | largest class drop | Spearman(selectivity, largest class drop) (p) "
        "| Spearman(selectivity, overall drop) (p) | Spearman(selectivity, loss increase) (p) | same class |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in LAYERS:
        selectivity = probe.rank("selectivity", layer=layer, progress=False)
        ablation = probe.rank("ablation", layer=layer, progress=False, warn=False)
        drops = np.asarray(ablation.meta["drop_matrix"])
        largest = drops.max(axis=1)
        loss = np.asarray(ablation.meta["loss_increase"])
        cells = [spearman_p(selectivity.scores, y) for y in (largest, ablation.scores, loss)]
        hurting = largest > 0
        same = np.asarray(selectivity.meta["preferred_class"])[hurting] == drops.argmax(axis=1)[hurting]
        found["zhou"][layer] = (largest.max(), int(hurting.sum()), len(largest), *cells[0], *cells[2])
        lines.append(
            f"| {layer} | {ablation.meta['base_accuracy']:.4f} | {largest.max():.4f} | "
            + " | ".join("undefined (every drop 0)" if np.isnan(r) else f"{r:.2f} ({p:.3f})" for r, p in cells)
            + f" | {int(same.sum())} of {int(hurting.sum())} |"
        )
    return lines


def components_vs_units(probe: nw.Probe, found: dict) -> list[str]:
    lines = [
        "",
        "### Do principal components align with concepts better than single units? (Dey et al.)",
        "",
        "Each component's map is the layer's centred activation projected onto it, dissected by the same rule "
        "(`probe.dissect(transform=...)`). A component's sign is arbitrary (a unit's is not: a ReLU unit is "
        "non-negative), so each is dissected in both directions. 'best of both' counts the better direction: two "
        "tries, which favours components; 'tail' counts the direction whose top-quantile threshold is higher (its "
        "longer tail), chosen without the masks. k = the number of components holding 80% of the variance; the "
        "top-k units are those of largest variance (Dey's neuron basis order). One-sided Mann-Whitney p: the "
        "components' best IoUs (tail) higher than the top-k units'. Kinds: shape / colour / texture of the best "
        "concepts.",
        "",
        "| layer | quantile | k (80%) | mean best IoU: top-k components, tail (best of both) | top-k units "
        "| all units | kinds: components (tail) vs top-k units | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer in LAYERS:
        components = probe.components(layer=layer, progress=False)
        k = components.needed(0.8)["components"]
        basis = torch.as_tensor(components.vectors[:, :k])
        signed = torch.cat([basis, -basis], dim=1)
        mean = torch.as_tensor(components.mean)

        def project(maps: torch.Tensor, signed: torch.Tensor = signed, mean: torch.Tensor = mean) -> torch.Tensor:
            centred = maps - mean.to(maps)[None, :, None, None]
            return torch.einsum("nchw,cj->njhw", centred, signed.to(maps))

        top_units = np.argsort(-components.neuron_variances, kind="stable")[:k]
        for quantile in QUANTILES:
            pcs = probe.dissect(layer=layer, quantile=quantile, transform=project, progress=False)
            best = pcs.iou.max(axis=1)
            tail = np.where(pcs.thresholds[:k] >= pcs.thresholds[k:], np.arange(k), np.arange(k, 2 * k))
            units = probe.dissect(layer=layer, quantile=quantile, progress=False)
            unit_best = units.iou.max(axis=1)[top_units]
            p = stats.mannwhitneyu(best[tail], unit_best, alternative="greater").pvalue
            both = np.maximum(best[:k], best[k:]).mean()
            found["pcs"][(layer, quantile)] = (k, best[tail].mean(), both, unit_best.mean(), p)
            lines.append(
                f"| {layer} | {quantile:g} | {k} of {probe.site(layer).units} | {best[tail].mean():.3f} "
                f"({both:.3f}) | {unit_best.mean():.3f} "
                f"| {units.iou.max(axis=1).mean():.3f} | {kinds(pcs, tail)} vs {kinds(units, top_units)} | {p:.3f} |"
            )
    return lines


def verdict(ps: list[float]) -> str:
    """What the p-values say together (NaN: not testable, left out)."""
    ps = [p for p in ps if not np.isnan(p)]
    below = sum(p < 0.05 for p in ps)
    if below == 0:
        return "No (no p below 0.05)"
    return "Yes (every p below 0.05)" if below == len(ps) else f"Mixed ({below} of {len(ps)} p below 0.05)"


def car_line(layer: str, quantile: float, n: int, units: int, mean: float, p: float) -> str:
    if np.isnan(p):
        return f"{layer} at {quantile:g}: {n} colour units of {units}, nothing to test"
    return (
        f"{layer} at {quantile:g}: {n} colour unit{'s' if n != 1 else ''} of {units}, mean pruning position "
        f"{mean:.1f} (chance {(units + 1) / 2:.1f}), p = {p:.3f}"
    )


def summary(found: dict) -> list[str]:
    """The three questions' one-line answers, from the figures measured (quantile 0.05 first: see above)."""
    car = sorted(found["car"].items(), key=lambda item: -item[0][1])
    zhou = found["zhou"]
    pcs = sorted(found["pcs"].items(), key=lambda item: -item[0][1])
    return [
        "",
        "### In short",
        "",
        f"- **Colour units pruned first by CAR? {verdict([v[3] for _, v in car])}.** "
        + "; ".join(car_line(layer, q, *values) for (layer, q), values in car)
        + ".",
        f"- **Class-selective units carry large class drops? "
        f"{verdict([v[4] for v in zhou.values()])}.** "
        + "; ".join(
            f"{layer}: {hurting} of {units} units change any class's accuracy when zeroed (largest class drop "
            f"{100 * largest:.1f} points), Spearman(selectivity, largest class drop) "
            + ("undefined" if np.isnan(rho) else f"{rho:.2f} (p = {p:.3f})")
            + f", with the loss increase {rho_loss:.2f} (p = {p_loss:.3f})"
            for layer, (largest, hurting, units, rho, p, rho_loss, p_loss) in zhou.items()
        )
        + "."
        + (
            " Zeroing one unit changes almost no prediction of this model, so the test has little power."
            if all(v[1] < 5 for v in zhou.values())
            else ""
        ),
        f"- **Components align with concepts better than units? {verdict([v[4] for _, v in pcs])}.** "
        "Mean best IoU, top-k components (sign by tail) vs top-k units: "
        + "; ".join(
            f"{layer} at {q:g} (k = {k}): {tail:.3f} vs {unit:.3f}, p = {p:.3f} ({both:.3f} with the better sign)"
            for (layer, q), (k, tail, both, unit, p) in pcs
        )
        + ".",
    ]


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    model, data = nw.demo.load("shapes")
    probe = nw.Probe(model, data)
    dissections = {
        (layer, quantile): probe.dissect(layer=layer, quantile=quantile, progress=False)
        for layer in LAYERS
        for quantile in QUANTILES
    }
    found: dict = {"car": {}, "zhou": {}, "pcs": {}}
    tables = [
        "",
        "### Dissection labels (`probe.dissect`)",
        "",
        *dissection_table(dissections),
        *car_vs_colour(probe, dissections, found),
        *zhou(probe, found),
        *components_vs_units(probe, found),
    ]
    body = [
        "## Dissection, CAR, selectivity and components on the shapes demo (issue 14)",
        "",
        quantile_note(probe, data),
        *summary(found),
        *tables,
    ]
    header = [
        "",
        f"Generated {datetime.date.today()} by `benchmarks/shapes_findings.py` on {platform.machine()}, torch "
        f"{torch.__version__}, 1 thread, in {time.perf_counter() - start:.0f} s. Demo: the shapes CNN "
        f'(`nw.demo.load("shapes")`), its {len(data)} held-out images; the label is the shape, so colour and '
        "texture are concepts the model need not use.",
    ]
    text = "\n".join(body[:1] + header + body[1:])
    write_section(text)
    print(text)


if __name__ == "__main__":
    main()
