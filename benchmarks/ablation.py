"""Benchmark: rank every unit of a layer by single-unit zero ablation (accuracy drop), three ways side by side.

1. naive   a forward hook zeroes one channel of the layer, the full model runs on all images; once per unit.
2. Captum  ``captum.attr.LayerFeatureAblation`` with one feature per channel and a forward function that
           returns per-image correctness, so its attribution averaged over images is the accuracy drop.
3. ours    ``neuronwidgets.Probe(...).rank("ablation")``.

Each way runs in a fresh process (multiprocessing 'spawn') so that its extra peak memory can be measured.
Run ``.venv/bin/python benchmarks/ablation.py`` (about 10 minutes on 2 quiet cores, more on a busy machine) or
``--quick`` (demo only, 2 layers, 4 units, under a minute). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import neuronwidgets as nw

try:
    from benchmarks import _bench
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _bench

THREADS = 2  # torch threads in every process (--threads)
CHUNK = 128  # images per forward pass, for the naive loop and for ours (Probe's chunk_size)
SEED = 0
RESNET_IMAGES = 64
PPE_CHOICES = (1, 4, 16)
LAYERS = {"demo": ("relu1", "relu2", "relu3"), "resnet18": ("layer1", "layer3", "layer4")}
TUNE_LAYER = {"demo": "relu2", "resnet18": "layer3"}
RESULTS = Path(__file__).resolve().parent / "results" / "ablation.md"
_START = time.perf_counter()


@dataclass(frozen=True)
class Settings:
    """What one run measures."""

    cases: tuple[str, ...]
    layers: dict[str, tuple[str, ...]]
    sample: dict[str, int | None]  # units timed per layer for naive and Captum (None: all units)
    tune_units: int  # units (plus one group for the rest) in the perturbations_per_eval trial; 0: no trial
    tune_images: dict[str, int]  # images in that trial
    rate_model: str  # the case whose full forwards give the machine's conv FLOP rate
    rate_repeats: int
    repeat_below: dict[str, float]  # timed runs shorter than this many seconds are repeated (3 runs, fastest)
    rounds: dict[str, int]  # extra timings of the three ways in turn, in one more fresh process per layer
    threads: int = THREADS


FULL = Settings(
    cases=("demo", "resnet18"),
    layers=LAYERS,
    sample={"demo": None, "resnet18": 8},
    tune_units=8,
    tune_images={"demo": 120, "resnet18": 16},
    rate_model="resnet18",
    rate_repeats=3,
    repeat_below={"demo": 2.0, "resnet18": 2.0},
    rounds={"demo": 2, "resnet18": 0},
)
QUICK = Settings(
    cases=("demo",),
    layers={"demo": ("relu2", "relu3")},
    sample={"demo": 4},
    tune_units=0,
    tune_images={},
    rate_model="demo",
    rate_repeats=3,
    repeat_below={"demo": 2.0},
    rounds={"demo": 0},
)
PROFILE_CALLS = ("resnet18", "layer3")  # where the time per image by call size is measured
QUICK_PPE = 4  # perturbations_per_eval for --quick, which runs no trial


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the start."""
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- the cases ------------------------------------------------------------------------------------------------


def resnet_images(n: int = RESNET_IMAGES) -> torch.Tensor:
    """``n`` seeded standard-normal float32 images of 3x224x224."""
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))


def resnet_model() -> nn.Module:
    """resnet18 with no pretrained weights, initialised after ``torch.manual_seed(0)``, in eval mode."""
    import torchvision

    torch.manual_seed(SEED)
    return torchvision.models.resnet18(weights=None, num_classes=1000).eval()


def resnet_labels(predictions: torch.Tensor) -> torch.Tensor:
    """The model's own predictions for the first half of the images, seeded random classes for the rest."""
    labels = predictions.clone()
    half = len(labels) // 2
    labels[half:] = torch.randint(0, 1000, (len(labels) - half,), generator=torch.Generator().manual_seed(SEED + 1))
    return labels


def load_case(case: str, labels: Sequence[int] | None = None) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model in eval mode, images, labels) of a case; resnet18 labels are passed in (computed once)."""
    if case == "demo":
        model, data = nw.demo.load()
        return model, data.images.clone(), data.labels.clone()
    model, images = resnet_model(), resnet_images()
    if labels is None:
        with torch.no_grad():
            labels = resnet_labels(model(images).argmax(1)).tolist()
    return model, images, torch.tensor(list(labels), dtype=torch.int64)


def sample_units(channels: int, count: int | None) -> list[int]:
    """``count`` evenly spaced units of ``channels`` (all of them for None or count >= channels)."""
    if count is None or count >= channels:
        return list(range(channels))
    return sorted({int(u) for u in np.linspace(0, channels - 1, count).round()})


# -- the three ways -------------------------------------------------------------------------------------------


def naive_outcomes(
    model: nn.Module, module: nn.Module, images: torch.Tensor, labels: torch.Tensor, units: Sequence[int]
) -> dict[str, Any]:
    """Correct predictions without ablation, then per unit: a forward hook zeroes the channel in place and the
    full model runs on all images (in chunks of CHUNK). Also returns the class scores and split timings."""
    n = len(labels)
    with torch.no_grad():
        begin = time.perf_counter()
        base = sum(
            int((model(images[s : s + CHUNK]).argmax(1) == labels[s : s + CHUNK]).sum()) for s in range(0, n, CHUNK)
        )
        base_seconds = time.perf_counter() - begin
        correct, logits = [], []
        for unit in units:

            def zero(mod: nn.Module, inputs: object, output: torch.Tensor, unit: int = unit) -> None:
                output[:, unit] = 0

            handle = module.register_forward_hook(zero)
            try:
                scores = torch.cat([model(images[s : s + CHUNK]) for s in range(0, n, CHUNK)])
            finally:
                handle.remove()
            logits.append(scores)
            correct.append(int((scores.argmax(1) == labels).sum()))
        unit_seconds = time.perf_counter() - begin - base_seconds
    return {
        "base_correct": base,
        "correct": np.array(correct),
        "logits": torch.stack(logits).numpy(),
        "base_seconds": base_seconds,
        "unit_seconds": unit_seconds,
    }


def captum_drops(
    model: nn.Module,
    module: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    units: Sequence[int],
    channels: int,
    ppe: int,
) -> np.ndarray:
    """Accuracy drop of each of ``units`` by Captum's LayerFeatureAblation (all images in one call).

    The layer mask (1, C, 1, 1) gives each unit of ``units`` its own feature id; any other channels share one
    extra id (ablated together once; ignored). The forward function returns per-image correctness, so the
    attribution of a channel, averaged over images, is ``acc(model) - acc(model with the channel zeroed)``.
    """
    from captum.attr import LayerFeatureAblation

    units = list(units)
    mask = torch.full((1, channels, 1, 1), len(units), dtype=torch.int64)
    mask[0, units, 0, 0] = torch.arange(len(units))

    def correct(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (model(x).argmax(1) == y).to(torch.float32)

    with torch.no_grad():
        attribution = LayerFeatureAblation(correct, module).attribute(
            images,
            layer_baselines=0.0,
            additional_forward_args=(labels,),
            layer_mask=mask,
            perturbations_per_eval=ppe,
        )
    per_channel = attribution.reshape(len(labels), channels, -1)[:, units, 0]
    return per_channel.double().sum(0).numpy() / len(labels)


def suffix_pass_seconds(probe: nw.Probe, repeats: int = 3) -> float:
    """Fastest of ``repeats`` unablated passes of the network after the layer over the probe's cached cut values."""
    ablator, best = probe.site().ablator(), math.inf
    with torch.no_grad():
        for _ in range(repeats):
            begin = time.perf_counter()
            for values, _chunk, _bar in probe.site().crossings("suffix", progress=False):
                ablator.scores(values)
            best = min(best, time.perf_counter() - begin)
    return best


CALL_SIZES = (8, 16, 32, 64, 128, 256)  # images per call of the network after the frontier


def call_size_profile(probe: nw.Probe, repeats: int = 3) -> dict[int, float]:
    """Seconds per image of one call of the network after the frontier (pushdown path), by images per call
    (best of ``repeats``); calls larger than the chunk repeat its images, as batching units together would."""
    ablator = probe.site().ablator()
    assert ablator.split is not None and ablator.split.frontier is not None
    frontier = ablator.split.frontier
    values = next(probe.site().crossings("profile", progress=False))[0]
    profile = {}
    with torch.no_grad():
        xs = frontier.chain(values[0].clone())
        ys = [op(xs[i]) for op, i in zip(frontier.ops, frontier.inputs_of)]
        n = len(values[0])
        for size in CALL_SIZES:
            batch = [torch.cat([v] * -(-size // n))[:size] for v in (*ys, *values[1:])]
            frontier.rest(*batch)  # warm-up
            best = math.inf
            for _ in range(repeats):
                begin = time.perf_counter()
                frontier.rest(*batch)
                best = min(best, time.perf_counter() - begin)
            profile[size] = best / size
    return profile


def ours_class_scores(probe: nw.Probe, units: Sequence[int]) -> np.ndarray:
    """Class scores (units, images, classes) with each unit zeroed, from the engine's cached cut values."""
    ablator, fill, units = probe.site().ablator(), probe.site().fill("zero"), list(units)
    parts = []
    with torch.no_grad():
        for values, chunk, _bar in probe.site().crossings("bench", progress=False):
            part = torch.empty(len(units), len(chunk.images), probe.num_classes)
            for block, images, scores in ablator.each_unit(values, units, fill):
                part[[units.index(u) for u in block], images] = scores
            parts.append(part)
    return torch.cat(parts, dim=1).numpy()


# -- workers (each runs in a fresh process) --------------------------------------------------------------------


def way_worker(job: dict[str, Any]) -> dict[str, Any]:
    """Time one way on one layer in this (fresh) process; returns timings, extra peak memory and outputs."""
    torch.set_num_threads(job["threads"])
    model, images, labels = load_case(job["case"], job["labels"])
    layer, way, units, channels = job["layer"], job["way"], job["units"], job["channels"]
    module = model.get_submodule(layer)
    out: dict[str, Any] = {}
    if way == "naive":
        naive_outcomes(model, module, images[:4], labels[:4], units[:1])  # warm-up
        timing = _bench.timed(
            lambda: None, lambda _: naive_outcomes(model, module, images, labels, units), job["repeat_below"]
        )
        out.update(timing.result)
    elif way == "captum":
        captum_drops(model, module, images[:4], labels[:4], units[:1], channels, job["ppe"])  # warm-up
        timing = _bench.timed(
            lambda: None,
            lambda _: captum_drops(model, module, images, labels, units, channels, job["ppe"]),
            job["repeat_below"],
        )
        out["drops"] = timing.result
    else:
        small = nw.Probe(model, (images[:4], labels[:4]), layer=layer, chunk_size=CHUNK)  # warm-up
        small.site().ablation_outcomes(units=[0, 1], progress=False)
        small.rank("taylor", progress=False)
        del small
        setup: list[float] = []

        def prepare() -> nw.Probe:
            begin = time.perf_counter()
            probe = nw.Probe(model, (images, labels), layer=layer, chunk_size=CHUNK)
            setup.append(time.perf_counter() - begin)
            return probe

        timing = _bench.timed(prepare, lambda p: (p, p.rank("ablation", progress=False)), job["repeat_below"])
        probe, ranking = timing.result
        taylor = _bench.timed(lambda: probe, lambda p: p.rank("taylor", progress=False))
        loss = nw.Ranking(scores=ranking.meta["loss_increase"], method="loss_increase", layer=layer)
        loop_memory = _bench.PeakMemory()  # the unit loop alone, with the cut's values already cached
        loop_memory.start()
        logits = ours_class_scores(probe, units)
        loop_extra = loop_memory.extra()
        crossings = probe.site().crossings("size", progress=False)
        crossing_bytes = sum(v.numel() * v.element_size() for values, _, _ in crossings for v in values)
        out.update(
            call_profile=call_size_profile(probe) if job["profile_calls"] else None,
            scores=np.asarray(ranking.scores),
            loss_increase=np.asarray(ranking.meta["loss_increase"]),
            base_accuracy=ranking.meta["base_accuracy"],
            engine=ranking.meta["engine"],
            engine_note=ranking.meta["engine_note"],
            logits=logits,
            loop_extra_bytes=loop_extra,
            suffix_seconds=suffix_pass_seconds(probe),
            probe_setup_seconds=min(setup),
            crossing_bytes=crossing_bytes,
            taylor_seconds=taylor.seconds,
            rho_taylor_drop=nw.compare(ranking, taylor.result)["spearman"],
            rho_taylor_loss=nw.compare(loss, taylor.result)["spearman"],
        )
    out.update(
        seconds=timing.seconds,
        cpu_seconds=timing.cpu_seconds,
        extra_bytes=timing.extra_bytes,
        runs=timing.runs,
        load=timing.load,
        memory_method=_bench.peak_method(),
    )
    return out


def rounds_worker(job: dict[str, Any]) -> dict[str, list[Any]]:
    """Time the three ways in turn, ``job["rounds"]`` times, in this fresh process: on a shared machine each way
    then gets runs spread over the same stretch of time. Naive: (base, loop) seconds; the others: seconds."""
    torch.set_num_threads(job["threads"])
    model, images, labels = load_case(job["case"], job["labels"])
    layer, units, channels, ppe = job["layer"], job["units"], job["channels"], job["ppe"]
    module = model.get_submodule(layer)
    naive_outcomes(model, module, images[:4], labels[:4], units[:1])  # warm-up
    captum_drops(model, module, images[:4], labels[:4], units[:1], channels, ppe)
    small = nw.Probe(model, (images[:4], labels[:4]), layer=layer, chunk_size=CHUNK)
    small.site().ablation_outcomes([0, 1], progress=False)
    out: dict[str, list[Any]] = {"naive": [], "captum": [], "ours": []}
    for _ in range(job["rounds"]):
        result = naive_outcomes(model, module, images, labels, units)
        out["naive"].append((result["base_seconds"], result["unit_seconds"]))
        begin = time.perf_counter()
        captum_drops(model, module, images, labels, units, channels, ppe)
        out["captum"].append(time.perf_counter() - begin)
        probe = nw.Probe(model, (images, labels), layer=layer, chunk_size=CHUNK)
        begin = time.perf_counter()
        probe.rank("ablation", progress=False)
        out["ours"].append(time.perf_counter() - begin)
        del probe
    return out


def tune_worker(job: dict[str, Any]) -> dict[int, float]:
    """Seconds of Captum's LayerFeatureAblation per perturbations_per_eval on a small sample (fresh process)."""
    torch.set_num_threads(job["threads"])
    model, images, labels = load_case(job["case"], job["labels"])
    module = model.get_submodule(job["layer"])
    images, labels = images[: job["images"]], labels[: job["images"]]
    for ppe in PPE_CHOICES:  # warm-up
        captum_drops(model, module, images[:2], labels[:2], job["units"][:1], job["channels"], ppe)
    times = {}
    for ppe in PPE_CHOICES:
        begin = time.perf_counter()
        captum_drops(model, module, images, labels, job["units"], job["channels"], ppe)
        times[ppe] = time.perf_counter() - begin
    return times


# -- FLOPs ----------------------------------------------------------------------------------------------------


def flops(fn: Any, *args: Any) -> int:
    """FLOPs (2 per multiply-add of conv/matmul ops) counted by FlopCounterMode for ``fn(*args)``."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def _best_seconds(model: nn.Module, images: torch.Tensor, repeats: int) -> float:
    """Fastest of ``repeats`` forward passes (after one warm-up pass)."""
    times = []
    with torch.no_grad():
        model(images)
        for _ in range(repeats):
            begin = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - begin)
    return min(times)


def measure_rate(settings: Settings) -> dict[str, Any]:
    """The machine's conv FLOP rate: FLOPs of full forwards of the rate model over their best time."""
    if settings.rate_model == "resnet18":
        model, images = resnet_model(), resnet_images()
    else:
        model, images, _ = load_case(settings.rate_model)
    seconds = _best_seconds(model, images, settings.rate_repeats)
    count = flops(model, images)
    demo, demo_images, _ = load_case("demo")
    demo_seconds = _best_seconds(demo, demo_images, 3)
    return {
        "rate": count / seconds,
        "model": settings.rate_model,
        "flops": count,
        "seconds": seconds,
        "images": len(images),
        "demo_rate": flops(demo, demo_images) / demo_seconds,
    }


@dataclass
class LayerFacts:
    """What the parent process knows about a layer before the timed runs."""

    units: int
    act_bytes: int  # the layer's output for all images
    suffix_flops: float  # per image: the network after the layer
    full_flops: float  # per image: the whole network


def layer_facts(case: str, layers: Sequence[str], labels: Sequence[int] | None) -> dict[str, LayerFacts]:
    """Unit counts, activation sizes and per-image FLOPs of the case's layers (counted on a few images)."""
    model, images, labels_t = load_case(case, labels)
    few = images[:8]
    probe = nw.Probe(model, (few, labels_t[:8]), layer=layers[0], chunk_size=CHUNK)
    full = flops(model, few) / len(few)
    facts = {}
    for layer in layers:
        probe.layer = layer
        ablator = probe.site().ablator()
        if ablator.split is not None:
            with torch.no_grad():
                values = ablator.crossing(few)
            suffix = flops(ablator.split.suffix, *[v.clone() for v in values]) / len(few)
        else:
            suffix = math.nan
        info = probe.layer_info()
        act = len(images) * math.prod(info.shape) * torch.finfo(torch.float32).bits // 8
        facts[layer] = LayerFacts(info.units, act, suffix, full)
    return facts


# -- the run --------------------------------------------------------------------------------------------------


def run(settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All cases and layers; returns one row per layer and run-wide facts."""
    log(f"measuring the conv FLOP rate ({settings.rate_model} forwards)")
    rates = [measure_rate(settings)]
    log(f"rate {rates[0]['rate'] / 1e9:.1f} GFLOP/s ({rates[0]['images']} images in {rates[0]['seconds']:.2f} s)")
    pending: list[tuple[Any, ...]] = []
    tuning: dict[str, dict[int, float]] = {}
    for case in settings.cases:
        model, images, labels_t = load_case(case)
        labels = labels_t.tolist() if case == "resnet18" else None  # computed once, passed to every process
        n_images = len(images)
        del model, images, labels_t
        facts = layer_facts(case, settings.layers[case], labels)
        ppe = QUICK_PPE
        if settings.tune_units:
            tune_layer = TUNE_LAYER[case]
            channels = (
                facts[tune_layer].units
                if tune_layer in facts
                else layer_facts(case, [tune_layer], labels)[tune_layer].units
            )
            log(f"{case}: trying perturbations_per_eval {PPE_CHOICES} on {tune_layer}")
            job = {
                "case": case,
                "labels": labels,
                "layer": tune_layer,
                "units": sample_units(channels, settings.tune_units),
                "channels": channels,
                "images": settings.tune_images[case],
                "threads": settings.threads,
            }
            tuning[case] = times = _bench.run_fresh(tune_worker, job)
            ppe = min(times, key=times.__getitem__)
            log(f"{case}: " + ", ".join(f"ppe={k}: {v:.2f} s" for k, v in times.items()) + f" -> {ppe}")
        for layer in settings.layers[case]:
            fact = facts[layer]
            units = sample_units(fact.units, settings.sample[case])
            job = {
                "case": case,
                "labels": labels,
                "layer": layer,
                "units": units,
                "channels": fact.units,
                "ppe": ppe,
                "threads": settings.threads,
                "repeat_below": settings.repeat_below[case],
                "profile_calls": (case, layer) == PROFILE_CALLS,
            }
            results = {}
            for way in ("naive", "captum", "ours"):
                what = "all" if way == "ours" else f"{len(units)} of"
                log(f"{case} {layer}: {way} ({what} {fact.units} units)")
                results[way] = _bench.run_fresh(way_worker, {**job, "way": way})
                log(f"{case} {layer}: {way} took {results[way]['seconds']:.2f} s (load {results[way]['load']:.1f})")
            if settings.rounds[case]:
                log(f"{case} {layer}: {settings.rounds[case]} more rounds of the three ways in turn")
                more = _bench.run_fresh(rounds_worker, {**job, "rounds": settings.rounds[case]})
                for way, times in more.items():
                    results[way]["rounds"] = times
                log(f"{case} {layer}: " + ", ".join(f"{w} {_fmt_rounds(t)}" for w, t in more.items()))
            pending.append((case, layer, n_images, fact, units, ppe, results))
    log("measuring the conv FLOP rate again")
    rates.append(measure_rate(settings))
    log(f"rate {rates[1]['rate'] / 1e9:.1f} GFLOP/s ({rates[1]['images']} images in {rates[1]['seconds']:.2f} s)")
    rate = max(rates, key=lambda r: r["rate"])  # the faster measurement gives the stricter floor
    rows = [make_row(*row, rate["rate"]) for row in pending]
    info = {
        "rate": rate,
        "rates": [r["rate"] for r in rates],
        "threads": settings.threads,
        "repeat_below": settings.repeat_below,
        "rounds": settings.rounds,
        "tuning": tuning,
        "ppe": QUICK_PPE if not tuning else None,
        "memory_method": _bench.peak_method(),
        "sample": settings.sample,
        "tune_units": settings.tune_units,
        "tune_images": settings.tune_images,
    }
    return rows, info


def _fmt_rounds(times: list[Any]) -> str:
    return "/".join(f"{sum(t) if isinstance(t, (tuple, list)) else t:.2f}" for t in times) + " s"


def make_row(
    case: str,
    layer: str,
    n_images: int,
    fact: LayerFacts,
    units: list[int],
    ppe: int,
    results: dict[str, dict[str, Any]],
    rate: float,
) -> dict[str, Any]:
    """One table row: timings (extrapolated where sampled), memory, agreement and the Taylor preview."""
    naive, captum, ours = results["naive"], results["captum"], results["ours"]
    channels, sampled = fact.units, len(units)
    extrapolated = sampled < channels
    naive_runs = [(naive["base_seconds"], naive["unit_seconds"]), *naive.get("rounds", [])]
    naive_s = min(base + loop * channels / sampled for base, loop in naive_runs)
    # Captum evaluates the layer once, the unablated model once and one forward per feature (sampled + rest).
    captum_s = min([captum["seconds"], *captum.get("rounds", [])])
    captum_s = captum_s * (channels + 2) / (sampled + 3) if extrapolated else captum_s
    naive_drops = (naive["base_correct"] - naive["correct"]) / n_images
    ours_drops = ours["scores"][units]
    diff = np.abs(ours["logits"] - naive["logits"])
    floor = fact.suffix_flops * n_images * channels / rate
    return {
        "case": case,
        "layer": layer,
        "units": channels,
        "sampled": sampled,
        "extrapolated": extrapolated,
        "engine": ours["engine"],
        "engine_note": ours["engine_note"],
        "naive_s": naive_s,
        "captum_s": captum_s,
        "ppe": ppe,
        "ours_s": min([ours["seconds"], *ours.get("rounds", [])]),
        "ours_runs": ours["runs"],
        "probe_setup_s": ours["probe_setup_seconds"],
        "floor_s": floor,
        "suffix_floor_s": ours["suffix_seconds"] * channels,
        "forward_s": naive["base_seconds"],
        "act_bytes": fact.act_bytes,
        "crossing_bytes": ours["crossing_bytes"],
        "naive_extra": naive["extra_bytes"],
        "captum_extra": captum["extra_bytes"],
        "ours_extra": ours["extra_bytes"],
        "ours_loop_extra": ours["loop_extra_bytes"],
        "call_profile": ours["call_profile"],
        "acc_ours_naive": float(np.abs(ours_drops - naive_drops).max()),
        "logit_abs": float(diff.max()),
        "logit_rel": float(diff.max() / max(np.abs(naive["logits"]).max(), 1e-30)),
        "acc_captum_naive": float(np.abs(captum["drops"] - naive_drops).max()),
        "base_accuracy": ours["base_accuracy"],
        "nonzero_drops": int(np.count_nonzero(ours["scores"])),
        "max_drop": float(np.max(ours["scores"])),
        "taylor_s": ours["taylor_seconds"],
        "rho_drop": ours["rho_taylor_drop"],
        "rho_loss": ours["rho_taylor_loss"],
        "load": {way: r["load"] for way, r in results.items()},
        "cpu_per_wall": {way: r["cpu_seconds"] / r["seconds"] for way, r in results.items()},
        "runs": {way: r["runs"] + len(r.get("rounds", [])) for way, r in results.items()},
        "suffix_gflop": fact.suffix_flops / 1e9,
        "full_gflop": fact.full_flops / 1e9,
    }


# -- report ---------------------------------------------------------------------------------------------------


def _s(seconds: float, estimated: bool = False) -> str:
    text = f"{seconds:.3g}" if seconds < 10 else f"{seconds:.0f}"
    return f"~{text}\\*" if estimated else text


def _mb(count: float) -> str:
    return f"{count / 2**20:.1f}"


def _rho(value: float) -> str:
    return "n/a (constant)" if value is None or math.isnan(value) else f"{value:.3f}"


def _join(per_way: dict[str, Any], spec: str) -> str:
    return " / ".join(format(per_way[way], spec) for way in ("naive", "captum", "ours"))


def tables(rows: list[dict[str, Any]]) -> str:
    """The markdown tables: time, memory, agreement and the Taylor preview, run conditions."""
    lines = [
        "### Time (all units of the layer; \\* = extrapolated from the sampled units)",
        "",
        "| case | layer | units | engine | naive (s) | Captum (s) | ours (s) | naive / ours | Captum / ours "
        "| FLOP floor (s) | ours % of floor | units x suffix pass (s) | ours % of that | ours in full forward passes |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['layer']} | {r['units']} | {r['engine']} | {_s(r['naive_s'], r['extrapolated'])} "
            f"| {_s(r['captum_s'], r['extrapolated'])} (ppe={r['ppe']}) | {_s(r['ours_s'])} "
            f"| {r['naive_s'] / r['ours_s']:.1f}x | {r['captum_s'] / r['ours_s']:.1f}x | {_s(r['floor_s'])} "
            f"| {100 * r['ours_s'] / r['floor_s']:.0f}% | {_s(r['suffix_floor_s'])} "
            f"| {100 * r['ours_s'] / r['suffix_floor_s']:.0f}% | {r['ours_s'] / r['forward_s']:.1f} |"
        )
    lines += [
        "",
        "### Extra peak memory (MB above the RSS after loading model and data)",
        "",
        "| case | layer | cached activations (MB) | naive | Captum | ours | ours / activations "
        "| ours above naive / activations | ours, unit loop alone | unit loop / activations |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        act = r["act_bytes"]
        lines.append(
            f"| {r['case']} | {r['layer']} | {_mb(act)} | {_mb(r['naive_extra'])} | {_mb(r['captum_extra'])} "
            f"| {_mb(r['ours_extra'])} | {r['ours_extra'] / act:.2f}x "
            f"| {(r['ours_extra'] - r['naive_extra']) / act:.2f}x "
            f"| {_mb(r['ours_loop_extra'])} "
            f"| {r['ours_loop_extra'] / act:.2f}x |"
        )
    lines += [
        "",
        "### Agreement (on the units the naive loop ran) and the Taylor preview",
        "",
        "| case | layer | units compared | max abs diff of accuracy drop, ours vs naive | max abs diff of "
        "class scores, ours vs naive (relative) | max abs diff of accuracy drop, Captum vs naive "
        "| base accuracy | units with a drop != 0 | Taylor (s) | Spearman Taylor vs accuracy drop "
        "| Spearman Taylor vs loss increase |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['layer']} | {r['sampled']} | {r['acc_ours_naive']:.3g} "
            f"| {r['logit_abs']:.3g} ({r['logit_rel']:.2g}) | {r['acc_captum_naive']:.3g} "
            f"| {r['base_accuracy']:.3f} | {r['nonzero_drops']} of {r['units']} | {_s(r['taylor_s'])} "
            f"| {_rho(r['rho_drop'])} | {_rho(r['rho_loss'])} |"
        )
    lines += [
        "",
        "### Run conditions (load = the machine's 1-min load average after each timed run, our own process "
        "included; CPU/wall = CPU seconds of the process per wall second, = threads when it had the cores to "
        "itself)",
        "",
        "| case | layer | load naive / Captum / ours | CPU/wall naive / Captum / ours "
        "| timed runs naive / Captum / ours |",
        "|---|---|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['layer']} | {_join(r['load'], '.1f')} | {_join(r['cpu_per_wall'], '.2f')} "
            f"| {_join(r['runs'], 'd')} |"
        )
    return "\n".join(lines)


def _conditions(rows: list[dict[str, Any]], threads: int) -> str:
    """A sentence on whether the timed runs had the CPU to themselves (judged by their CPU/wall ratio)."""
    ratios = [ratio for r in rows for ratio in r["cpu_per_wall"].values()]
    starved = [
        f"{r['case']}/{r['layer']} {way}"
        for r in rows
        for way, ratio in r["cpu_per_wall"].items()
        if ratio < 0.75 * threads
    ]
    if not starved:
        return (
            f"Every timed run kept its {threads} threads busy (CPU/wall {min(ratios):.2f}-{max(ratios):.2f}), so "
            "the machine was quiet enough for the times to be trusted."
        )
    return (
        f"**The machine was shared during this run**: {len(starved)} of {len(ratios)} timed runs "
        f"({', '.join(starved)}) got less than {0.75 * threads:.1f} CPU seconds per wall second (see Run "
        f"conditions). With {threads} threads per process every parallel op then waits for a descheduled thread, "
        "which slows many small ops (ours, the demo model) far more than a few large ones (naive, Captum). Treat "
        "those times as rough."
    )


def _rounds_text(rounds: dict[str, int]) -> str:
    cases = [f"{c} ({n} rounds)" for c, n in rounds.items() if n]
    if not cases:
        return ""
    return (
        f"For {', '.join(cases)}, one more fresh process per layer then times the three ways in turn, round after "
        "round, so that on a shared machine each way's runs are spread over the same stretch of time."
    )


def _call_size_note(row: dict[str, Any]) -> str:
    """What the time per image by call size says about slicing chunks and batching units."""
    profile = row["call_profile"]
    base = profile[64]
    sizes = ", ".join(f"{size}: {1000 * t:.2f}" for size, t in profile.items())
    return (
        f"- Call size, {row['case']}/{row['layer']}: ms per image of one call of the network after the frontier, "
        f"by images per call (best of 3; above the chunk's 64 images the call repeats them, as batching 2 or 4 "
        f"units into one call would): {sizes}. Relative to 64 images: 8 images {profile[8] / base:.2f}x, 16 "
        f"{profile[16] / base:.2f}x, 128 {profile[128] / base:.2f}x, 256 {profile[256] / base:.2f}x. Small calls "
        "cost more per image (oneDNN reorders a conv's weights on every call): that is the time the unit loop "
        "pays for slicing the chunk to keep its memory within 1/8 of the cached values (on a larger dataset the "
        "slices grow). The engine does not batch units into one call."
    )


def report(rows: list[dict[str, Any]], info: dict[str, Any], machine: dict[str, Any], seconds: float) -> str:
    """The full markdown report."""
    rate, threads = info["rate"], info["threads"]
    sample = ", ".join(
        f"{case}: {'all units' if n is None else f'{n} evenly spaced units per layer'}"
        for case, n in info["sample"].items()
    )
    tuning = "; ".join(
        f"{case}: "
        + ", ".join(f"{k}: {v:.2f} s" for k, v in times.items())
        + f" (best {min(times, key=times.__getitem__)})"
        for case, times in info["tuning"].items()
    )
    if info["tuning"]:
        trial = ", ".join(f"{c}/{TUNE_LAYER[c]} with {n} images" for c, n in info["tune_images"].items())
        tuning = f"trial with {info['tune_units']} units + 1 group for the rest on {trial}: {tuning}"
    else:
        tuning = f"no trial in this run (--quick); ppe={QUICK_PPE}"
    setups = ", ".join(f"{r['case']}/{r['layer']} {r['probe_setup_s']:.2f} s" for r in rows)
    notes = [f"- {r['case']}/{r['layer']}: engine note: {r['engine_note']}" for r in rows if r["engine_note"]]
    notes += [_call_size_note(r) for r in rows if r.get("call_profile")]
    load = machine["load_average"]
    rates = " and ".join(f"{r / 1e9:.1f}" for r in info["rates"])
    return f"""# Single-unit zero ablation: naive hook loop vs Captum vs neuronwidgets

Date: {machine["date"]}. Machine: {machine["cpu"]}, {machine["cores"]} cores, {machine["memory_gib"]} GiB; \
Python {machine["python"]}, torch {machine["torch"]} (`torch.set_num_threads({threads})` in every process), \
captum {machine["captum"]}. Load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; whole run \
{seconds / 60:.1f} min.

{_conditions(rows, threads)}

Task: score every unit (channel) of a layer by the top-1 accuracy lost when that unit alone is zeroed.

Cases: **demo** = `nw.demo.load()` (DigitsCNN, 360 test digits 1x32x32). **resnet18** = \
`torchvision.models.resnet18(weights=None, num_classes=1000)` after `torch.manual_seed(0)`, eval mode; 64 \
seeded `randn` images 3x224x224; labels = the model's own predictions on images 0-31, seeded random classes \
on 32-63.

## Method

- **naive**: per unit, `module.register_forward_hook` zeroes the channel in place (`output[:, u] = 0`) and the \
full model runs on all images in chunks of {CHUNK} under `torch.no_grad()`; plus one unablated pass for the \
base accuracy.
- **Captum**: `LayerFeatureAblation(forward_func, layer_module).attribute(images, layer_baselines=0.0, \
additional_forward_args=(labels,), layer_mask=mask, perturbations_per_eval=ppe)` with \
`forward_func(x, y) = (model(x).argmax(1) == y).float()` (per-image correctness) and `mask` of shape \
(1, C, 1, 1) holding the channel ids, so a channel's attribution averaged over images is exactly the accuracy \
drop. All images in one call. ppe = the best of {PPE_CHOICES} in a trial on a small sample (see Notes).
- **ours**: `probe = nw.Probe(model, (images, labels), layer=..., chunk_size={CHUNK})` (not timed: it runs one \
forward pass to discover the layers; {setups}), then `probe.rank("ablation", progress=False)` timed: tracing, \
the cut's values and every unit. Engine path in the table.
- Each way runs in a fresh process (multiprocessing 'spawn'): load model and data, warm up (the method on 4 \
images), then time the run with `time.perf_counter`; runs shorter than \
{", ".join(f"{t:g} s ({c})" for c, t in info["repeat_below"].items())} are repeated, 3 runs in all (memory: first \
run). {_rounds_text(info["rounds"])} The fastest run counts.
- **Extra peak memory**: after the warm-up, freed memory is returned to the OS (`malloc_trim`), the RSS \
high-water mark is reset (`/proc/self/clear_refs`) and the RSS read; extra = peak RSS during the timed run \
minus that RSS (method here: {info["memory_method"]}; the fallback is `ru_maxrss`). It includes the pass through \
the network up to the layer, which every way pays. *Unit loop alone* = the same measurement around a second \
pass over the sampled units with the cut's values already cached (their memory is then part of the baseline): \
what the engine adds to one forward pass. It takes each chunk's images in slices so that the values it builds \
per unit stay within 1/8 of the cached values (see `Ablator.work_slices`). Cached activations = the layer's \
output for all images in float32. Part of every figure is fixed: oneDNN reorders a conv's weights on every \
call (9.4 MB for one of resnet18's 512x512x3x3 convs), whatever the batch size.
- **FLOP floor** = FLOPs of the network after the layer (`FlopCounterMode` on `probe.site().ablator().split.suffix`, \
conv/matmul FLOPs, 2 per multiply-add) x images x units / the machine's conv FLOP rate. Rate: full \
{rate["model"]} forwards on {rate["images"]} images ({rate["flops"] / 1e9:.1f} GFLOP), best of a few, measured \
before and after the runs ({rates} GFLOP/s); the faster is used: {rate["rate"] / 1e9:.1f} GFLOP/s. The demo \
model's small convs only reach {rate["demo_rate"] / 1e9:.1f} GFLOP/s, so the demo floors are optimistic. On \
the `closed_form` path the engine does not re-run the suffix, and on `pushdown` it skips the first convs after \
the layer, so it can beat the floor; the deep convs also run faster than a full forward's average. A stricter \
reference: *units x suffix pass* = units x the time of one unablated pass of the suffix over all images \
(`ablator.scores` on the cached cut values, best of 3), i.e. what re-running the suffix per unit would cost. \
Ours' time also includes tracing and the pass up to the layer, which neither reference counts. *Full forward \
passes* = ours over the naive way's unablated pass of the whole model over all images.
- **Agreement**: accuracy drops and the class scores of every image with each unit zeroed (ours: \
`ablator.each_unit` on the probe's cached cut values), against the naive loop on the units it ran; relative = \
max abs diff / max abs class score. Captum vs naive: accuracy drops.
- **Taylor**: `probe.rank("taylor")` (one forward and backward pass per chunk) timed on the same probe; \
Spearman (`nw.compare`) against the exact accuracy drops and against `meta["loss_increase"]` of the ablation.

## Results

{tables(rows)}

## Notes

- Sampling: {sample}. Sampled naive time = base pass + (loop time / sampled units) x all units; sampled Captum \
time = measured x (C + 2) / (S + 3) (one layer pass, one unablated pass, one pass per feature: S sampled units \
plus one group holding the other channels). Ours always ran all units.
- Captum perturbations_per_eval: {tuning}.
""" + ("\n".join(notes) + "\n" if notes else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo model only, 2 layers, 4 units (about a minute)")
    parser.add_argument(
        "--resnet-units", type=int, default=FULL.sample["resnet18"], help="units per resnet18 layer for naive/Captum"
    )
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads in every process")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"markdown report path (default: {RESULTS}; with --quick: none)"
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    sample = settings.sample if args.quick else {**settings.sample, "resnet18": args.resnet_units}
    settings = Settings(**{**settings.__dict__, "sample": sample, "threads": args.threads})
    torch.set_num_threads(settings.threads)
    machine = _bench.machine()
    begin = time.perf_counter()
    rows, info = run(settings)
    text = report(rows, info, machine, time.perf_counter() - begin)
    print(tables(rows))
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
