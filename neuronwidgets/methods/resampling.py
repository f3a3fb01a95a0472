"""Input resampling (Lengerich et al. 2017): perturb one image many times and watch each unit.

Two local rankings from the same passes: how closely a unit's activation tracks the model's output across the
perturbed copies (correlation), and how stable it stays (precision, the inverse variance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neuronwidgets.engine.guard import evaluating
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.ranking import Ranking

if TYPE_CHECKING:
    from neuronwidgets.probe import Probe

SCHEDULES = ("growing", "fixed")
OUTPUTS = ("probability", "logit")


def perturbations(
    image: torch.Tensor, count: int, sigma: float, schedule: str, generator: torch.Generator
) -> torch.Tensor:
    """``count`` copies of ``image`` (C, H, W); copy 0 is the image itself.

    ``growing`` (the authors' code): ``x * (1 + p * sigma * eps)``, multiplicative noise whose scale grows
    with the copy index p. ``fixed``: ``x + sigma * eps``, additive noise of one scale.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    noise = torch.randn((count, *image.shape), generator=generator, dtype=torch.float64).to(image.dtype)
    if schedule == "growing":
        scale = (torch.arange(count, dtype=image.dtype) * sigma).reshape(-1, *([1] * image.ndim))
        copies = image * (1 + scale * noise)
    else:
        copies = image + sigma * noise
    copies[0] = image
    return copies


@dataclass(frozen=True)
class _Resampled:
    correlation: np.ndarray
    precision: np.ndarray
    eligible: np.ndarray
    outputs: np.ndarray
    output_class: int


def _run(
    probe: Probe,
    image: torch.Tensor,
    copies: int,
    sigma: float,
    schedule: str,
    output: str,
    target: int | None,
    seed: int,
    progress: ProgressOption,
    cancel: CancelFlag,
    threshold: float,
) -> _Resampled:
    generator = torch.Generator().manual_seed(seed)
    batch = perturbations(image.to(probe.dtype).cpu(), copies, sigma, schedule, generator)
    activations, scores = [], []
    captured: list[torch.Tensor] = []
    step = probe.source.chunk_size
    with evaluating(probe.model), torch.no_grad(), Progress("resampling", -(-copies // step), progress, cancel) as bar:
        handle = probe.module.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
        try:
            for start in range(0, copies, step):
                captured.clear()
                scores.append(probe.model(batch[start : start + step].to(probe.device)).double().cpu())
                activations.append(captured[0].double().cpu())
                bar.advance()
        finally:
            handle.remove()
    logits = torch.cat(scores)
    klass = int(logits[0].argmax()) if target is None else target
    y = (logits.softmax(1) if output == "probability" else logits)[:, klass].numpy()
    a = torch.cat(activations).numpy()
    a = a.reshape(a.shape[0], a.shape[1], -1)  # (copies, units, positions)
    centred = a - a.mean(0)
    y_centred = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (centred * y_centred[:, None, None]).sum(0) / np.sqrt((centred**2).sum(0) * (y_centred**2).sum())
        defined = np.isfinite(r)
        counts = defined.sum(1)
        correlation = np.where(counts > 0, np.where(defined, np.abs(r), 0).sum(1) / np.maximum(counts, 1), 0.0)
        variance = a.var(0).mean(1)
        eligible = a.mean((0, 2)) >= threshold
        precision = np.where(eligible, 1.0 / variance, 0.0)
    return _Resampled(correlation, precision, eligible, y, klass)


def _image(probe: Probe, image: Any) -> tuple[torch.Tensor, Any]:
    if image is None:
        raise ValueError("input resampling explains one image: pass image=<index into the data> or an image tensor")
    if isinstance(image, (int, np.integer)):
        return probe.images([int(image)])[0], int(image)
    tensor = torch.as_tensor(image)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise ValueError(f"image must be an index or one image of shape (C, H, W), got shape {tuple(tensor.shape)}")
    return tensor, "tensor"


def _rank(
    which: str,
    probe: Probe,
    image: Any,
    target: int | None,
    copies: int,
    sigma: float,
    schedule: str,
    output: str,
    top_k: int,
    threshold: float,
    seed: int,
    progress: ProgressOption,
    cancel: CancelFlag,
) -> Ranking:
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; valid outputs: {', '.join(OUTPUTS)}")
    if copies < 3:
        raise ValueError(f"copies must be at least 3 to estimate a correlation, got {copies}")
    tensor, source = _image(probe, image)
    result = _run(probe, tensor, copies, sigma, schedule, output, target, seed, progress, cancel, threshold)
    k = min(top_k, probe.units)
    by_correlation = set(np.argsort(-result.correlation, kind="stable")[:k].tolist())
    by_precision = set(np.argsort(-result.precision, kind="stable")[:k].tolist())
    scores = result.correlation if which == "correlation" else result.precision
    return Ranking(
        scores=scores,
        method=f"resampling_{which}",
        layer=probe.layer,
        target=target,
        meta={
            "image": source,
            "output": output,
            "output_class": result.output_class,
            "copies": copies,
            "sigma": sigma,
            "schedule": schedule,
            "seed": seed,
            "eligibility_threshold": threshold,
            "eligible": result.eligible,
            "correlation": result.correlation,
            "precision": result.precision,
            "outputs": result.outputs,
            "top_k": k,
            # |S_R ∩ S_P| / (|S_R| + |S_P|), as in the authors' code; at most 0.5.
            "overlap": len(by_correlation & by_precision) / (2 * k),
        },
    )


def rank_correlation(
    probe: Probe,
    *,
    image: Any = None,
    target: int | None = None,
    copies: int = 50,
    sigma: float = 0.1,
    schedule: str = "growing",
    output: str = "probability",
    top_k: int = 5,
    seed: int = 0,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Ranking:
    """Mean over positions of |Pearson correlation| between the unit and the output, across noisy copies of one image.

    The output is the softmax probability (or logit) of the class predicted for the clean image, or of
    ``target``. Positions where the unit does not vary are left out. Cost: ``copies`` forward passes.
    ``meta["overlap"]`` compares the top-``top_k`` sets of correlation and precision.
    """
    return _rank(
        "correlation", probe, image, target, copies, sigma, schedule, output, top_k, 0.1, seed, progress, cancel
    )


def rank_precision(
    probe: Probe,
    *,
    image: Any = None,
    target: int | None = None,
    copies: int = 50,
    sigma: float = 0.1,
    schedule: str = "growing",
    threshold: float = 0.1,
    top_k: int = 5,
    seed: int = 0,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Ranking:
    """Inverse mean variance of the unit across noisy copies of one image: how stable it stays.

    Only units whose mean activation is at least ``threshold`` are eligible (others score 0), as in the
    authors' code; a perfectly stable eligible unit scores infinity. Cost: ``copies`` forward passes.
    """
    return _rank(
        "precision",
        probe,
        image,
        target,
        copies,
        sigma,
        schedule,
        "probability",
        top_k,
        threshold,
        seed,
        progress,
        cancel,
    )
