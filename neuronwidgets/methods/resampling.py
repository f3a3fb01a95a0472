"""Input resampling (Lengerich et al. 2017): perturb one image many times and watch each unit.

Two local rankings from the same passes: how closely a unit's activation tracks the model's output across the
perturbed copies (correlation), and how stable it stays (precision, the inverse variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neuronwidgets.data import as_float_images
from neuronwidgets.engine.guard import yield_model
from neuronwidgets.engine.hooks import forward_hooks, recorder
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking

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
class Resampling:
    """How one image is resampled, shared by both rankings; checked when made, before any forward pass."""

    copies: int = 50
    sigma: float = 0.1
    schedule: str = "growing"
    output: str = "probability"
    target: int | None = None
    threshold: float = 0.1
    top_k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if _not_int(self.copies) or self.copies < 3:
            raise ValueError(f"copies must be an int of at least 3 to estimate a correlation, got {self.copies!r}")
        if _not_real(self.sigma) or not math.isfinite(self.sigma) or self.sigma <= 0:
            raise ValueError(f"sigma must be a finite number above 0 (the noise scale), got {self.sigma!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}; valid outputs: {', '.join(OUTPUTS)}")
        if _not_real(self.threshold) or math.isnan(self.threshold):
            raise ValueError(f"threshold must be a number (-inf makes every unit eligible), got {self.threshold!r}")
        if _not_int(self.top_k) or self.top_k < 1:
            raise ValueError(f"top_k must be an int of at least 1, got {self.top_k!r}")
        if _not_int(self.seed):
            raise ValueError(f"seed must be an int, got {self.seed!r}")


def _not_int(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer))


def _not_real(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))


@dataclass(frozen=True)
class _Resampled:
    correlation: np.ndarray
    precision: np.ndarray
    eligible: np.ndarray
    outputs: np.ndarray
    output_class: int
    constant_output: bool  # the output did not vary across the copies: every correlation is undefined


def _run(site: Site, image: torch.Tensor, how: Resampling, progress: ProgressOption, cancel: CancelFlag) -> _Resampled:
    generator = torch.Generator().manual_seed(int(how.seed))
    batch = perturbations(image.to(site.dtype).cpu(), how.copies, how.sigma, how.schedule, generator)
    activations, scores = [], []
    captured: list[torch.Tensor] = []

    def scores_and_maps(copies: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores and the layer's output for some of the copies; the hook is on for this forward only,
        so that the model can be lent between slices (to a click's overlay)."""
        captured.clear()
        with forward_hooks([(site.module, recorder(captured))]):
            out = site.model(copies.to(site.device)).double().cpu()
        return out, captured[0].double().cpu()

    step = site.source.chunk_size
    steps = -(-how.copies // step)
    with site.running(), Progress("resampling", steps, progress, cancel) as bar:
        for start in range(0, how.copies, step):
            logits, maps = site.sliced("resampling", scores_and_maps, batch[start : start + step], bar=bar)
            scores.append(logits)
            activations.append(maps)
            bar.advance()
            yield_model(site.model)  # between steps, work waiting for the model (a click's overlay) runs first
    logits = torch.cat(scores)
    if not torch.isfinite(logits).all():
        raise ValueError(
            "the model's scores on the noisy copies are not all finite (NaN or inf): lower sigma, or check the image"
        )
    klass = int(logits[0].argmax()) if how.target is None else how.target
    y = (logits.softmax(1) if how.output == "probability" else logits)[:, klass].numpy()
    constant = is_constant(y)
    a = torch.cat(activations).numpy()
    a = a.reshape(a.shape[0], a.shape[1], -1)  # (copies, units, positions)
    centred = a - a.mean(0)
    y_centred = y - y.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (centred * y_centred[:, None, None]).sum(0) / np.sqrt((centred**2).sum(0) * (y_centred**2).sum())
        defined = np.isfinite(r)
        counts = defined.sum(1)
        correlation = np.where(counts > 0, np.where(defined, np.abs(r), 0).sum(1) / np.maximum(counts, 1), 0.0)
        if constant:  # a correlation with rounding noise means nothing
            correlation = np.zeros_like(correlation)
        variance = a.var(0).mean(1)
        eligible = a.mean((0, 2)) >= how.threshold
        precision = np.where(eligible, 1.0 / variance, 0.0)
    return _Resampled(correlation, precision, eligible, y, klass, constant)


def is_constant(y: np.ndarray) -> bool:
    """Whether ``y`` varies by no more than float64 rounding of its largest value (e.g. a softmax probability
    saturated at 1 on every copy)."""
    spread = float(np.ptp(y)) if y.size else 0.0
    scale = max(float(np.abs(y).max(initial=0.0)), float(np.finfo(np.float64).tiny))
    return bool(spread <= 64 * float(np.finfo(np.float64).eps) * scale)


def _image(site: Site, image: Any) -> tuple[torch.Tensor, Any]:
    """The image to explain, from an index into the data or a tensor, and how ``meta`` names it."""
    if image is None:
        raise ValueError("input resampling explains one image: pass image=<index into the data> or an image tensor")
    if isinstance(image, (int, np.integer)) and not isinstance(image, (bool, np.bool_)):
        tensor, source = site.images([image])[0], int(image)
    elif isinstance(image, (torch.Tensor, np.ndarray)):
        tensor, source = torch.as_tensor(image), "tensor"
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3:
            raise ValueError(f"image must be an index or one image of shape (C, H, W), got shape {tuple(tensor.shape)}")
        tensor = as_float_images(tensor, "an image tensor")
    else:
        raise TypeError(f"image must be an int index into the data or an image tensor (C, H, W), got {image!r}")
    if not torch.isfinite(tensor).all():
        raise ValueError("the image contains NaN or inf values; resampling needs a finite image")
    return tensor, source


def _rank(which: str, site: Site, image: Any, how: Resampling, progress: ProgressOption, cancel: CancelFlag) -> Ranking:
    tensor, source = _image(site, image)
    result = _run(site, tensor, how, progress, cancel)
    k = min(how.top_k, site.units)
    by_correlation = set(np.argsort(-result.correlation, kind="stable")[:k].tolist())
    by_precision = set(np.argsort(-result.precision, kind="stable")[:k].tolist())
    scores = result.correlation if which == "correlation" else result.precision
    return Ranking(
        scores=scores,
        method=f"resampling_{which}",
        layer=site.layer,
        target=how.target,
        meta={
            "image": source,
            "output": how.output,
            "output_class": result.output_class,
            "copies": how.copies,
            "sigma": how.sigma,
            "schedule": how.schedule,
            "seed": how.seed,
            "eligibility_threshold": how.threshold,
            "eligible": result.eligible,
            "correlation": result.correlation,
            "precision": result.precision,
            "outputs": result.outputs,
            # Every correlation is undefined: the scores are all 0 and `Probe.rank` warns (suggesting logits).
            "constant_output": result.constant_output,
            "top_k": k,
            # |S_R ∩ S_P| / (|S_R| + |S_P|), as in the authors' code; at most 0.5.
            "overlap": len(by_correlation & by_precision) / (2 * k),
        },
    )


def rank_correlation(
    site: Site,
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
    how = Resampling(copies, sigma, schedule, output, target, top_k=top_k, seed=seed)
    return _rank("correlation", site, image, how, progress, cancel)


def rank_precision(
    site: Site,
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
    how = Resampling(copies, sigma, schedule, target=target, threshold=threshold, top_k=top_k, seed=seed)
    return _rank("precision", site, image, how, progress, cancel)
