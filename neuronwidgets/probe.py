"""Probe: a live model, its data and a default layer; the public face of the engine, methods and analyses.

The work itself lives elsewhere: `engine.site` (one layer's passes and ablation), `methods` (the rankings),
`evaluation` and `components`. Every call that works on a layer takes ``layer=``; `Probe.layer` is only the
default, and only its owner changes it.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from neuronwidgets import contribution
from neuronwidgets.components import Components, layer_components
from neuronwidgets.data import DataSource, choose_classes
from neuronwidgets.diagnostics import RankingWarning, ranking_warnings
from neuronwidgets.display import Display
from neuronwidgets.display import resolve as resolve_display
from neuronwidgets.dissection import Dissection, Transform, dissect
from neuronwidgets.engine import distributed
from neuronwidgets.engine.cache import ResultCache, memory_budget
from neuronwidgets.engine.guard import evaluating, model_device, model_dtype
from neuronwidgets.engine.indices import as_index, as_indices
from neuronwidgets.engine.layers import FirstPass, LayerInfo, default_layer, discover, unknown_layer_message
from neuronwidgets.engine.progress import CancelFlag, ProgressOption, check_cancel, check_progress
from neuronwidgets.engine.site import Site
from neuronwidgets.evaluation import Evaluation, evaluate
from neuronwidgets.methods import check_options
from neuronwidgets.methods import spec as method_spec
from neuronwidgets.ranking import Ranking
from neuronwidgets.visualize import DEFAULT_STEPS, Visualization
from neuronwidgets.visualize import visualize as visualize_unit

# Under a process group: methods whose passes merge over the ranks (`engine.distributed.SUPPORTED`), and methods
# that read no shard of the data (the weights, or one image), which each rank computes whole.
_MERGED_METHODS = ("activation", "selectivity", "taylor", "ablation", "car")
_LOCAL_METHODS = ("weight_l1", "resampling_correlation", "resampling_precision")
_AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _autocast_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or value in _AUTOCAST.values():
        return value
    if isinstance(value, str) and value in _AUTOCAST:
        return _AUTOCAST[value]
    raise ValueError(
        f"autocast must be None, torch.bfloat16 or torch.float16 (or 'bfloat16', 'float16'), got {value!r}"
    )


def _refuse_compiled(model: nn.Module) -> None:
    """TorchScript modules run compiled code that forward hooks and torch.fx cannot see into (a traced model
    even replays its training-mode BatchNorm updates), so they are refused before anything runs."""
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            where = "the model" if not name else f"its submodule {name!r}"
            raise TypeError(
                f"{where} is a TorchScript module ({type(module).__name__}, from torch.jit.trace or "
                "torch.jit.script); neuronwidgets needs the Python nn.Module it was made from: pass that "
                "module instead (load it from its class and state_dict)"
            )


class Probe:
    """A model, data and the layer whose units (channels) are ranked.

    ``data`` may be a Dataset, a DataLoader (not shuffling), a tensor of images (N, C, H, W), one image
    (C, H, W), or a pair ``(images, labels)``. The model must return class scores of shape (N, classes).
    It is never changed: rankings run in eval mode and restore every module's train flag, remove their
    hooks and leave weights, buffers and device as they were, also after an error or an interrupt.

    ``classes``: names, one per output, or a torchvision weights enum member (its ``meta["categories"]``);
    default: the dataset's ``classes`` where their number matches the outputs (else "0", "1", ... with a
    warning; the reason is kept in `classes_note`). ``display``: how images are shown, see
    `neuronwidgets.display` (default: un-normalised by the ``Normalize`` found in the dataset's transform).
    ``memory``: how much of the layer's cut (the values after the layer that ablation re-runs from, all chunks)
    is kept between passes, in bytes or as ``"512MB"``/``"2GiB"`` (default: 1/16 of the memory of the model's
    device, RAM or GPU, within 256 MiB and 4 GiB). Below it, repeated evaluations (the ablation slider) and the
    unit loop reuse them; above it, each pass streams the data again. The unit loop's working memory is kept to
    1/8 of what is cached (at least 1 MiB), the maps kept for overlays to 1/4. ``autocast``:
    ``torch.bfloat16`` or ``torch.float16`` (or their names) runs every forward pass under `torch.autocast`,
    faster on GPUs (and CPUs with bfloat16 units) at the cost of exactness: rankings are then estimates (see the
    README for the measured effect); default None, the model's own precision. ``group``: a torch.distributed
    process group whose ranks share the data (default: the default group where one is initialised, as under
    torchrun; False: this process alone): each rank reads its shard and the statistics are all-reduced, so
    results equal one process's (`neuronwidgets.engine.distributed`; what is supported: README, "Across
    processes"). Every rank must create the Probe with the same model, data and layer, and make the same calls.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        layer: str | None = None,
        *,
        classes: Sequence[str] | Any = None,
        display: Any = None,
        device: str | torch.device | None = None,
        chunk_size: int = 128,
        memory: int | str | None = None,
        autocast: torch.dtype | str | None = None,
        group: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        _refuse_compiled(model)
        if device is not None and not isinstance(device, (str, torch.device)):
            raise TypeError(f"device must be a str or torch.device such as 'cpu' or 'cuda:0', got {device!r}")
        self.model = model
        self.autocast = _autocast_dtype(autocast)
        self.group = distributed.resolve(group, model_device(model))
        with distributed.guarded(self.group, "creating a Probe"):  # a rank that fails here stops them all
            self._setup(data, layer, classes, display, device, chunk_size, memory)

    def _setup(
        self, data: Any, layer: str | None, classes: Any, display: Any, device: Any, chunk_size: int, memory: Any
    ) -> None:
        self.source = DataSource(data, chunk_size=chunk_size)
        self.device = model_device(self.model)
        self.memory = memory_budget(memory, self.device)
        if device is not None and torch.device(device) != self.device:
            raise ValueError(
                f"the model is on {self.device} but device={device!r} was asked for; neuronwidgets never "
                f"moves your model: call model.to({str(device)!r}) first"
            )
        self.dtype = model_dtype(self.model)
        self._infos, self.num_classes, self._first_pass = self._discover()
        self._classes: list[str] = []
        names, self.classes_note = choose_classes(classes, self.source.classes, self.num_classes)
        if classes is None and self.source.classes and names != self.source.classes:
            warnings.warn(self.classes_note, stacklevel=3)
        self.classes = names
        self.display: Display = resolve_display(display, self.source.dataset, self._channels)
        self._layer = ""
        self.layer = layer if layer is not None else default_layer(self._infos, dict(self.model.named_modules()))
        self._cache = ResultCache(self.model)
        if self.group is not None:
            self._agree()

    def _agree(self) -> None:
        """Refuse, on every rank, ranks whose model, data or layer differ: their sums would not add up."""
        assert self.group is not None
        if len(self.source) < self.group.size:
            raise ValueError(
                f"{len(self.source)} images cannot be shared by {self.group.size} ranks: give every rank at least one"
            )
        layers = json.dumps([[info.name, list(info.shape)] for info in self._infos.values()]).encode()
        facts = {"images": len(self.source), "classes": self.num_classes, "labels": self._has_labels}
        facts["layer names and shapes (digest)"] = hashlib.sha256(layers).hexdigest()[:16]
        facts.update(layer=self.layer, units=self.units)
        self.group.agree("creating a Probe", facts)

    # -- the model and its layers ---------------------------------------------------------------------------

    def _discover(self) -> tuple[dict[str, LayerInfo], int, FirstPass]:
        first = self.source.first()
        self._has_labels = first.labels is not None
        self._channels = int(first.images.shape[1])
        images = first.images.to(self.device, self.dtype)
        try:
            with evaluating(self.model), torch.no_grad():
                infos, output, first_pass = discover(self.model, images)
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
        return infos, int(output.shape[1]), first_pass

    @property
    def layers(self) -> list[str]:
        """Names of the layers whose units can be ranked, in the order they run."""
        return [info.name for info in self._infos.values() if info.inspectable]

    def layer_info(self, layer: str | None = None) -> LayerInfo:
        """What one forward pass showed about ``layer`` (default: `layer`): type, output shape, units."""
        name = self.layer if layer is None else layer
        self._check_layer(name)
        return self._infos[name]

    def _check_layer(self, name: Any) -> None:
        if not isinstance(name, str):
            raise TypeError(f"layer must be a module name (str), got {type(name).__name__}")
        if name not in self._infos or not self._infos[name].inspectable:
            exists = name in dict(self.model.named_modules())
            raise ValueError(unknown_layer_message(name, self._infos, exists))

    @property
    def layer(self) -> str:
        """The layer whose units are ranked; settable to any name in `layers`."""
        return self._layer

    @layer.setter
    def layer(self, name: str) -> None:
        self._check_layer(name)
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

    # -- one layer -----------------------------------------------------------------------------------------

    def site(self, layer: str | None = None) -> Site:
        """``layer`` (default: `layer`, read once now) as a `Site`: what the engine and methods work on. A site
        keeps its layer however `layer` changes later, e.g. from another thread."""
        name = self.layer if layer is None else layer
        self._check_layer(name)
        return Site(
            self.model,
            self.source,
            self._infos[name],
            classes=self._classes,
            has_labels=self._has_labels,
            device=self.device,
            dtype=self.dtype,
            cache=self._cache,
            memory=self.memory,
            autocast=self.autocast,
            group=self.group,
            first_pass=self._first_pass,
        )

    def images(self, indices: Any) -> torch.Tensor:
        """The images at ``indices`` (ints) as the model sees them (a CPU tensor)."""
        return self.site().images(indices)

    def display_images(self, indices: Any) -> np.ndarray:
        """uint8 (n, H, W, 3) pictures of the images at ``indices`` (ints), by `display`'s rule (its ``rule``
        says which)."""
        return self.display.pictures(as_indices(indices, "images", len(self.source), "the data"), self.images)

    # -- public analyses ------------------------------------------------------------------------------------

    def rank(
        self,
        method: str,
        *,
        layer: str | None = None,
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
        warn: bool = True,
        **options: Any,
    ) -> Ranking:
        """Rank the units of ``layer`` (default: `layer`) by ``method`` (see `neuronwidgets.methods()`); larger
        = more important.

        ``progress``: None/True for a tqdm bar on long work, False for none, or a callable receiving
        `ProgressInfo`. ``cancel``: a threading.Event (or callable) that stops the work between chunks.
        ``warn``: issue a `RankingWarning` for each of ``meta["warnings"]`` (a result that may mislead, e.g.
        accuracy at chance); False for callers that show them themselves, as the widgets do.
        """
        spec = method_spec(method)
        check_options(spec, options, num_classes=self.num_classes, has_labels=self._has_labels)
        check_progress(progress)
        check_cancel(cancel)
        site = self.site(layer)
        self._refuse_across_processes(spec.name, options)
        start = time.perf_counter()
        what = distributed.describe(f"rank({spec.name!r})", layer=site.layer, **options)
        with self._cache.pinned(), distributed.guarded(self.group, what):
            ranking = spec.rank(site, progress=progress, cancel=cancel, **options)
        ranking.meta.setdefault("seconds", round(time.perf_counter() - start, 4))
        ranking.meta.setdefault("layer_type", site.info.type)
        ranking.meta.setdefault("images", len(self.source))
        ranking.meta.setdefault("options", {k: v for k, v in options.items() if k != "target"})
        ranking.meta["warnings"] = ranking_warnings(ranking, self.num_classes)
        for note in ranking.meta["warnings"] if warn else ():
            warnings.warn(f"{spec.name} ranking of {site.layer!r}: {note}", RankingWarning, stacklevel=2)
        if self.group is not None:
            ranking.meta["ranks"] = self.group.size
        return ranking

    def _refuse_across_processes(self, method: str, options: dict[str, Any]) -> None:
        """Under a process group, refuse a method that would give one rank's share of the answer."""
        if self.group is None:
            return
        if method not in _MERGED_METHODS + _LOCAL_METHODS:
            raise NotImplementedError(
                f"rank({method!r}) is not supported across processes yet; under a process group these are: "
                f"{', '.join(distributed.SUPPORTED)}, and rank() of {', '.join(map(repr, _LOCAL_METHODS))}"
            )

    def evaluate(
        self,
        ablate: Any = (),
        mode: str | None = None,
        *,
        layer: str | None = None,
        ablate_components: Any = (),
        sampling: str = "position",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: ProgressOption = False,
        cancel: CancelFlag = None,
    ) -> Evaluation:
        """Accuracy, per-class accuracy, loss and predictions of the model with parts of ``layer`` removed.

        ``ablate``: units to zero (``mode="zero"``, the default for units) or set to their mean map
        (``"mean"``). ``ablate_components``: indices of principal components (see `components`) projected
        out about the mean (``mode="mean"``, the default for components) or through the origin (``"zero"``).
        ``transform``: any function of the layer output (N, units, ...) returning a new tensor, applied first.
        The model itself is not changed.
        """
        site = self.site(layer)
        call = distributed.describe(
            "evaluate()",
            layer=site.layer,
            ablate=ablate,
            mode=mode,
            ablate_components=ablate_components,
            sampling=sampling,
            transform=transform,
        )
        with distributed.guarded(self.group, call):
            return evaluate(
                site,
                ablate,
                mode,
                ablate_components=ablate_components,
                sampling=sampling,
                transform=transform,
                progress=progress,
                cancel=cancel,
            )

    def components(
        self,
        k: int | None = None,
        sampling: str = "position",
        *,
        layer: str | None = None,
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
    ) -> Components:
        """Principal components of the layer's channel vectors, from one streamed pass (cached).

        ``sampling="position"`` takes every spatial position of every image as a sample; ``"pooled"`` takes one
        spatially averaged vector per image. ``k`` keeps the top k components (default: all).
        """
        site = self.site(layer)
        with distributed.guarded(self.group, distributed.describe("components()", layer=site.layer, sampling=sampling)):
            return layer_components(site, k, sampling, progress, cancel)

    def dissect(
        self,
        dataset: Any = None,
        *,
        layer: str | None = None,
        quantile: float = 0.005,
        transform: Transform | None = None,
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
    ) -> Dissection:
        """Each unit's IoU with each concept of ``dataset`` by NetDissect's rule (`neuronwidgets.dissection`):
        the unit's region is where its upsampled map exceeds its top-``quantile`` level over all the data.

        ``dataset``: a map-style dataset of model inputs with ``concept_masks(i) -> {concept: (H, W) bool}``,
        such as `nw.datasets.shapes`; default: the probe's data, where it has them. Two streamed passes.
        ``transform``: dissect the maps it makes of each chunk's (n, units, h, w) maps instead (e.g. the
        projections onto principal components).
        """
        check_progress(progress)
        check_cancel(cancel)
        site = self.site(layer)
        return dissect(site, dataset, quantile=quantile, transform=transform, progress=progress, cancel=cancel)

    def activation_maps(self, unit: int, images: Any, *, layer: str | None = None) -> np.ndarray:
        """(n, h, w) maps of ``unit`` for ``images`` (indices into the data, or a tensor of images)."""
        site = self.site(layer)
        unit = as_index(unit, "units", site.units, f"layer {site.layer!r}")
        if isinstance(images, torch.Tensor):
            maps = site.output(images)[:, unit].float().cpu().numpy()
        else:  # the unit's top images' maps, kept by the layer's summary pass; the model runs for the others
            indices = [i % len(self.source) for i in as_indices(images, "images", len(self.source), "the data")]
            top = site.top_maps()
            known = {} if top is None else top.maps_of(unit, indices)
            missing = [i for i in dict.fromkeys(indices) if i not in known]
            if missing:
                computed = site.output(site.images(missing))[:, unit].float().cpu().numpy()
                known.update(zip(missing, computed))
            maps = np.stack([known[i] for i in indices])
        return maps.reshape(-1, 1, 1) if maps.ndim == 1 else maps

    def contribution_maps(self, unit: int, images: Any, *, target: int | None, layer: str | None = None) -> np.ndarray:
        """(n, h, w) maps of where ``unit`` adds to class ``target``'s score (the model's logit) for ``images``
        (indices into the data, or a tensor of images): activation x d(score)/d(activation) per position of
        the layer, so each map sums to the unit's first-order term. ``target=None``: each image's predicted
        class. One forward and backward pass; the model's parameters are not differentiated."""
        site = self.site(layer)
        unit = as_index(unit, "units", site.units, f"layer {site.layer!r}")
        target = contribution.check_target(target, self.num_classes)
        if not isinstance(images, torch.Tensor):
            images = site.images(images)
        return contribution.maps(site, unit, images, target)

    def top_images(
        self,
        unit: int,
        k: int = 9,
        *,
        layer: str | None = None,
        by: str = "activation",
        target: int | None = None,
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
    ) -> np.ndarray:
        """Indices of the ``k`` images on which ``unit`` reaches its highest activation (spatial maximum,
        ``by="activation"``), or adds most to class ``target``'s score (its contribution map summed,
        ``by="contribution"``; ``target=None``: each image's predicted class). Each is one pass over the data
        (cached; ``progress`` and ``cancel`` as in `rank`), then free for every unit."""
        site = self.site(layer)
        unit = as_index(unit, "units", site.units, f"layer {site.layer!r}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int of at least 1, got {k!r}")
        check_progress(progress)
        check_cancel(cancel)
        if by == "activation":
            if target is not None:
                raise ValueError('target= applies to by="contribution" only; by="activation" ranks by peak activation')
            with distributed.guarded(self.group, distributed.describe("top_images()", layer=site.layer)):
                values = site.summary(progress, cancel).image_max[:, unit]
        elif by == "contribution":
            target = contribution.check_target(target, self.num_classes)
            values = contribution.totals(site, target, progress, cancel)[:, unit]
        else:
            raise ValueError(f'by must be "activation" or "contribution", got {by!r}')
        return np.argsort(-values, kind="stable")[:k]

    def visualize(
        self,
        unit: int,
        *,
        layer: str | None = None,
        objective: str = "channel",
        negative: bool = False,
        steps: int = DEFAULT_STEPS,
        size: int | tuple[int, int] | None = None,
        seed: int = 0,
        progress: ProgressOption = None,
        cancel: CancelFlag = None,
    ) -> Visualization:
        """Feature visualisation: the input that maximises ``unit``'s mean activation (``objective="channel"``)
        or its value at the map's centre (``"neuron"``); ``negative=True`` minimises it. ``size``: (H, W) or
        one side (default: the data's). Seeded and cached per layer, unit and options; see
        `neuronwidgets.visualize` for the method and its measured cost."""
        return visualize_unit(
            self.site(layer),
            self.display,
            self._cache,
            unit,
            objective=objective,
            negative=negative,
            steps=steps,
            size=size,
            seed=seed,
            progress=progress,
            cancel=cancel,
        )
