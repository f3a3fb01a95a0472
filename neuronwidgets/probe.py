"""Probe: a live model, its data and one layer; runs rankings and evaluations, caching what they share."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from neuronwidgets.components import SAMPLINGS, Components, channel_samples, from_moments
from neuronwidgets.data import Chunk, DataSource
from neuronwidgets.engine.ablate import Ablator, with_units
from neuronwidgets.engine.capture import capture
from neuronwidgets.engine.guard import evaluating, model_device, model_dtype, model_version
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.engine.stats import LayerSummary, Moments, OutcomeCounts
from neuronwidgets.layers import LayerInfo, default_layer, discover, unknown_layer_message
from neuronwidgets.methods import get as get_method
from neuronwidgets.ranking import Ranking

ABLATION_MODES = ("zero", "mean")
_CACHE_BYTES = 256 * 2**20  # keep the cut's values of all chunks in memory only below this size


@dataclass(frozen=True)
class Evaluation:
    """The model's accuracy on the probe's data, with some units of the layer replaced (or none)."""

    accuracy: float
    per_class_accuracy: np.ndarray  # (classes,), NaN for classes without images
    loss: float  # mean cross-entropy
    predictions: np.ndarray  # (images,) predicted class per image
    labels: np.ndarray  # (images,) true class per image
    ablated: tuple[int, ...]
    mode: str
    ablated_components: tuple[int, ...] = ()

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels


def _compose(steps: list[Callable[[torch.Tensor], torch.Tensor]]) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(activations: torch.Tensor) -> torch.Tensor:
        for step in steps:
            activations = step(activations)
        return activations

    return apply


class Probe:
    """A model, data and the layer whose units (channels) are ranked.

    ``data`` may be a Dataset, a DataLoader (not shuffling), a tensor of images (N, C, H, W), one image
    (C, H, W), or a pair ``(images, labels)``. The model must return class scores of shape (N, classes).
    It is never changed: rankings run in eval mode and restore every module's train flag, remove their
    hooks and leave weights, buffers and device as they were, also after an error or an interrupt.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        layer: str | None = None,
        *,
        classes: Sequence[str] | None = None,
        device: str | torch.device | None = None,
        chunk_size: int = 128,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.source = DataSource(data, chunk_size=chunk_size)
        self.device = model_device(model)
        if device is not None and torch.device(device) != self.device:
            raise ValueError(
                f"the model is on {self.device} but device={device!r} was asked for; neuronwidgets never "
                f"moves your model: call model.to({str(device)!r}) first"
            )
        self.dtype = model_dtype(model)
        self._infos, self.num_classes = self._discover()
        self._classes: list[str] = []
        from_data = self.source.classes or []
        # A dataset's own class list is only a default: ignore it if it does not match the model's outputs.
        self.classes = (
            list(classes) if classes is not None else (from_data if len(from_data) == self.num_classes else [])
        )
        self._layer = ""
        self.layer = layer if layer is not None else default_layer(self._infos, dict(model.named_modules()))
        self._cache: dict[tuple, Any] = {}

    # -- the model and its layers ---------------------------------------------------------------------------

    def _discover(self) -> tuple[dict[str, LayerInfo], int]:
        first = self.source.first()
        self._has_labels = first.labels is not None
        images = first.images.to(self.device, self.dtype)
        try:
            with evaluating(self.model), torch.no_grad():
                infos, output = discover(self.model, images)
        except Exception as err:
            raise ValueError(
                f"the model failed on an image of shape {tuple(images.shape[1:])} from your data "
                f"({type(err).__name__}: {err}). Check that the images have the size and channels the model "
                "expects."
            ) from err
        if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[1] < 2:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"the model must return class scores of shape (N, classes), got {got}. Wrap it in a module "
                "whose forward returns the logits tensor."
            )
        return infos, int(output.shape[1])

    @property
    def layers(self) -> list[str]:
        """Names of the layers whose units can be ranked, in the order they run."""
        return [info.name for info in self._infos.values() if info.inspectable]

    def layer_info(self, layer: str | None = None) -> LayerInfo:
        return self._infos[layer or self.layer]

    @property
    def layer(self) -> str:
        """The layer whose units are ranked; settable to any name in `layers`."""
        return self._layer

    @layer.setter
    def layer(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"layer must be a module name (str), got {type(name).__name__}")
        if name not in self._infos or not self._infos[name].inspectable:
            exists = name in dict(self.model.named_modules())
            raise ValueError(unknown_layer_message(name, self._infos, exists))
        self._layer = name

    @property
    def module(self) -> nn.Module:
        return self.model.get_submodule(self.layer)

    @property
    def units(self) -> int:
        """Number of units (channels) of the current layer."""
        return self._infos[self.layer].units

    @property
    def classes(self) -> list[str]:
        """Class names, one per output of the model ("0", "1", ... unless given)."""
        return list(self._classes)

    @classes.setter
    def classes(self, names: Sequence[str]) -> None:
        names = [str(n) for n in names] or [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names given, but the model has {self.num_classes} outputs")
        self._classes = names

    def __repr__(self) -> str:
        info = self._infos[self.layer]
        return (
            f"Probe({type(self.model).__name__}, layer={self.layer!r} ({info.type}, {info.units} units), "
            f"images={len(self.source)}, classes={self.num_classes}, device={self.device})"
        )

    # -- data ---------------------------------------------------------------------------------------------

    def chunks(
        self,
        description: str,
        progress: ProgressOption | Progress = None,
        cancel: CancelFlag = None,
        steps_per_chunk: int = 1,
    ) -> Iterator[tuple[Chunk, Progress]]:
        """Every chunk of the data on the model's device, with a `Progress` counting ``steps_per_chunk``
        steps per chunk (the caller advances it)."""
        total = self.source.num_chunks * steps_per_chunk
        with Progress.within(description, total, progress, cancel) as bar:
            for chunk in self.source.chunks():
                yield self._to_device(chunk), bar

    def _to_device(self, chunk: Chunk) -> Chunk:
        labels = chunk.labels
        if labels is not None:
            bad = (labels < 0) | (labels >= self.num_classes)
            if bad.any():
                where = (bad.nonzero().flatten()[:5] + chunk.start).tolist()
                raise ValueError(
                    f"labels must lie in 0..{self.num_classes - 1} (the model has {self.num_classes} outputs); "
                    f"images {where} have labels {labels[bad][:5].tolist()}"
                )
            labels = labels.to(self.device)
        return Chunk(chunk.start, chunk.images.to(self.device, self.dtype), labels)

    def require_labels(self, what: str) -> None:
        """Raise a clear error if the data has no labels and ``what`` needs them."""
        if not self._has_labels:
            raise ValueError(
                f"{what} needs labels, but the data has none: pass a labelled Dataset, a DataLoader of "
                "(images, labels) or a pair (images, labels)"
            )

    def require_class(self, target: int | None, images_per_class: np.ndarray) -> None:
        """Raise a clear error if ``target`` is a class with no image in the data (``images_per_class``)."""
        if target is not None and images_per_class[target] == 0:
            raise ValueError(f"no image of class {target} ({self.classes[target]!r}) in the data")

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """The images at ``indices`` as the model sees them (a CPU tensor)."""
        return self.source.take(indices).images

    # -- cached computations ------------------------------------------------------------------------------

    def _cached(self, key: tuple, compute) -> Any:
        full_key = (*key, self.layer, model_version(self.model))
        if full_key not in self._cache:
            self._cache = {k: v for k, v in self._cache.items() if k[-1] == full_key[-1]}
            self._cache[full_key] = compute()
        return self._cache[full_key]

    def ablator(self) -> Ablator:
        """The ablation engine for the current layer (traced once per layer and model version)."""

        def build() -> Ablator:
            with evaluating(self.model):
                return Ablator(self.model, self.layer, self.module)

        return self._cached(("ablator",), build)

    def summary(self, progress: ProgressOption = None, cancel: CancelFlag = None) -> LayerSummary:
        """Per-image and summed statistics of the layer's output over all the data (one pass, cached)."""

        def compute() -> LayerSummary:
            total: LayerSummary | None = None
            with evaluating(self.model), torch.no_grad():
                for chunk, bar in self.chunks(f"reading {self.layer}", progress, cancel):
                    part = LayerSummary.of(capture(self.model, self.module, chunk.images), chunk.labels)
                    total = part if total is None else total.merge(part)
                    bar.advance()
            assert total is not None
            return total

        return self._cached(("summary",), compute)

    def fill(self, mode: str) -> torch.Tensor:
        """What an ablated unit's output is set to: zeros, or its mean map over the data."""
        if mode not in ABLATION_MODES:
            raise ValueError(f"unknown ablation mode {mode!r}; valid modes: {', '.join(ABLATION_MODES)}")
        shape = self._infos[self.layer].shape
        if mode == "zero":
            return torch.zeros(shape, device=self.device, dtype=self.dtype)
        return torch.from_numpy(self.summary().mean_map).to(self.device, self.dtype)

    def crossings(
        self,
        description: str,
        progress: ProgressOption | Progress = None,
        cancel: CancelFlag = None,
        steps_per_chunk: int = 1,
    ) -> Iterator[tuple[list[torch.Tensor], Chunk, Progress]]:
        """The values at the cut after the layer, per chunk; kept in memory between calls when small."""
        ablator = self.ablator()
        key = ("crossings", id(ablator))
        full_key = (*key, self.layer, model_version(self.model))
        cached = self._cache.get(full_key)
        collected: list | None = [] if cached is None else None
        size = 0
        with evaluating(self.model), torch.no_grad():
            if cached is not None:
                with Progress.within(description, len(cached) * steps_per_chunk, progress, cancel) as bar:
                    for values, chunk in cached:
                        yield values, chunk, bar
                return
            for chunk, bar in self.chunks(description, progress, cancel, steps_per_chunk):
                values = ablator.crossing(chunk.images)
                if collected is not None:
                    kept = {id(t): t for t in (*values, chunk.images)}.values()
                    size += sum(t.numel() * t.element_size() for t in kept)
                    collected = collected if size <= _CACHE_BYTES else None
                    if collected is not None:
                        collected.append((values, chunk))
                yield values, chunk, bar
        if collected is not None:
            self._cached(key, lambda: collected)

    def _kept_cut_bytes(self, values: list[torch.Tensor], chunk: Chunk) -> int | None:
        """Bytes of the cut's values of all chunks, estimated from one chunk, where `crossings` keeps them in
        memory; None where it streams them."""
        per_image = sum(v.numel() * v.element_size() for v in values) / max(1, len(chunk.images))
        total = int(per_image * len(self.source))
        return total if total <= _CACHE_BYTES else None

    # -- public analyses ------------------------------------------------------------------------------------

    def rank(
        self, method: str, *, progress: ProgressOption = None, cancel: CancelFlag = None, **options: Any
    ) -> Ranking:
        """Rank the units of the layer by ``method`` (see `neuronwidgets.methods()`); larger = more important.

        ``progress``: None/True for a tqdm bar on long work, False for none, or a callable receiving
        `ProgressInfo`. ``cancel``: a threading.Event (or callable) that stops the work between chunks.
        """
        func = get_method(method)
        valid = [p for p in inspect.signature(func).parameters if p not in ("probe", "progress", "cancel")]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(
                f"method {method!r} got unknown option(s) {', '.join(unknown)}; valid options: "
                f"{', '.join(valid) or 'none'}"
            )
        target = options.get("target")
        if target is not None and not (isinstance(target, (int, np.integer)) and 0 <= target < self.num_classes):
            raise ValueError(f"target must be a class index in 0..{self.num_classes - 1}, got {target!r}")
        start = time.perf_counter()
        ranking = func(self, progress=progress, cancel=cancel, **options)
        info = self._infos[self.layer]
        ranking.meta.setdefault("seconds", round(time.perf_counter() - start, 4))
        ranking.meta.setdefault("layer_type", info.type)
        ranking.meta.setdefault("images", len(self.source))
        ranking.meta.setdefault("options", {k: v for k, v in options.items() if k != "target"})
        return ranking

    def evaluate(
        self,
        ablate: Sequence[int] = (),
        mode: str | None = None,
        *,
        ablate_components: Sequence[int] = (),
        sampling: str = "position",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: ProgressOption = False,
        cancel: CancelFlag = None,
    ) -> Evaluation:
        """Accuracy, per-class accuracy, loss and predictions of the model with parts of the layer removed.

        ``ablate``: units to zero (``mode="zero"``, the default for units) or set to their mean map
        (``"mean"``). ``ablate_components``: indices of principal components (see `components`) projected
        out about the mean (``mode="mean"``, the default for components) or through the origin (``"zero"``).
        ``transform``: any function of the layer output (N, units, ...) returning a new tensor, applied first.
        The model itself is not changed.
        """
        self.require_labels("evaluate()")
        units = self.check_units(ablate)
        picked = [int(i) for i in ablate_components]
        if mode is not None and mode not in ABLATION_MODES:
            raise ValueError(f"unknown ablation mode {mode!r}; valid modes: {', '.join(ABLATION_MODES)}")
        unit_mode = mode or "zero"
        steps: list[Callable[[torch.Tensor], torch.Tensor]] = [transform] if transform is not None else []
        if picked:
            basis = self.components(sampling=sampling)
            bad = [i for i in picked if not 0 <= i < basis.vectors.shape[1]]
            if bad:
                raise ValueError(f"components {bad[:5]} out of range: the layer has components 0..{self.units - 1}")
            about_mean = (mode or "mean") == "mean"
            steps.append(lambda a: basis.project_out(a, picked, about_mean))
        if units:
            fill = self.fill(unit_mode)
            steps.append(partial(with_units, units=units, fill=fill))
        ablator = self.ablator()
        counts = OutcomeCounts.zeros(1, self.num_classes)
        predictions, labels = [], []
        for values, chunk, bar in self.crossings("evaluating", progress, cancel):
            scores = ablator.transformed(values, _compose(steps)) if steps else ablator.scores(values)
            assert chunk.labels is not None
            counts.count_images(chunk.labels)
            counts.add([0], scores.unsqueeze(0), chunk.labels)
            predictions.append(scores.argmax(1).cpu().numpy())
            labels.append(chunk.labels.cpu().numpy())
            bar.advance()
        return Evaluation(
            accuracy=float(counts.accuracy[0]),
            per_class_accuracy=counts.class_accuracy[0],
            loss=float(counts.mean_loss[0]),
            predictions=np.concatenate(predictions),
            labels=np.concatenate(labels),
            ablated=tuple(units),
            mode=unit_mode,
            ablated_components=tuple(picked),
        )

    def components(
        self,
        k: int | None = None,
        sampling: str = "position",
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
    ) -> Components:
        """Principal components of the layer's channel vectors, from one streamed pass (cached).

        ``sampling="position"`` takes every spatial position of every image as a sample; ``"pooled"`` takes one
        spatially averaged vector per image. ``k`` keeps the top k components (default: all).
        """
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")

        def compute() -> Moments:
            total: Moments | None = None
            with evaluating(self.model), torch.no_grad():
                for chunk, bar in self.chunks(f"components of {self.layer}", progress, cancel):
                    part = Moments.of(channel_samples(capture(self.model, self.module, chunk.images), sampling))
                    total = part if total is None else total.merge(part)
                    bar.advance()
            assert total is not None
            return total

        if k is not None and not 1 <= k <= self.units:
            raise ValueError(f"k must be between 1 and {self.units} (the layer's units), got {k}")
        return from_moments(self._cached(("moments", sampling), compute), k, sampling)

    def check_units(self, units: Any) -> list[int]:
        """Validate unit indices for the current layer; returns them as a sorted list of unique ints."""
        if isinstance(units, (int, np.integer)):
            units = [units]
        try:
            values = sorted({int(u) for u in units})
        except (TypeError, ValueError) as err:
            raise TypeError(f"units must be integers, got {units!r}") from err
        bad = [u for u in values if not 0 <= u < self.units]
        if bad:
            raise ValueError(f"units {bad[:5]} out of range: layer {self.layer!r} has units 0..{self.units - 1}")
        return values

    def activation_maps(self, unit: int, images: Sequence[int] | torch.Tensor) -> np.ndarray:
        """(n, h, w) maps of ``unit`` for ``images`` (indices into the data, or a tensor of images)."""
        (unit,) = self.check_units([unit])
        batch = images if isinstance(images, torch.Tensor) else self.images(images)
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        with evaluating(self.model), torch.no_grad():
            out = capture(self.model, self.module, batch.to(self.device, self.dtype))
        maps = out[:, unit]
        if maps.ndim == 1:
            maps = maps.reshape(-1, 1, 1)
        return maps.float().cpu().numpy()

    def top_images(self, unit: int, k: int = 9) -> np.ndarray:
        """Indices of the ``k`` images on which ``unit`` reaches its highest activation (spatial maximum)."""
        (unit,) = self.check_units([unit])
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        peaks = self.summary().image_max[:, unit]
        return np.argsort(-peaks, kind="stable")[:k]

    def ablation_outcomes(
        self,
        units: Sequence[int] | None = None,
        mode: str = "zero",
        base: Sequence[int] = (),
        progress: ProgressOption | Progress = None,
        cancel: CancelFlag = None,
    ) -> tuple[OutcomeCounts, OutcomeCounts]:
        """Outcomes with the ``base`` units replaced, and with each of ``units`` replaced on top of them:
        ``(base, per_unit)``, one variant per entry of ``units`` (default: all units not in ``base``).

        ``progress`` may be an outer `Progress` that counts one step per unit and chunk.
        """
        self.require_labels("ablation")
        base = self.check_units(base) if len(base) else []
        rest = [u for u in range(self.units) if u not in set(base)]
        units = rest if units is None else self.check_units(units)
        fill = self.fill(mode)
        ablator = self.ablator()
        before = OutcomeCounts.zeros(1, self.num_classes)
        per_unit = OutcomeCounts.zeros(len(units), self.num_classes)
        position = {u: i for i, u in enumerate(units)}
        for values, chunk, bar in self.crossings(f"ablating {self.layer}", progress, cancel, len(units)):
            assert chunk.labels is not None
            before.count_images(chunk.labels)
            per_unit.count_images(chunk.labels)
            scores = ablator.replaced(values, base, fill) if base else ablator.scores(values)
            before.add([0], scores.unsqueeze(0), chunk.labels)
            chunk_images = len(chunk.labels)
            kept = self._kept_cut_bytes(values, chunk)
            for block, images, scores in ablator.each_unit(values, units, fill, base, cached_bytes=kept):
                labels = chunk.labels[images]
                per_unit.add([position[u] for u in block], scores, labels)
                bar.advance(len(block) * len(labels) / chunk_images)
        return before, per_unit
