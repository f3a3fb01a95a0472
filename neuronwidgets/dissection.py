"""Network dissection (Bau et al., 2017): which concept each unit's strongest activations cover.

NetDissect's rule, for unit k of a layer and concept c of a dataset with per-pixel concept masks L_c:
the threshold T_k is the top-``quantile`` level of the unit's activations over every position of every image
(here: the ceil(quantile * positions)-th largest activation, exactly); the unit's region M_k on an image is
where its map, upsampled bilinearly to the mask's size, exceeds T_k; and

    IoU_{k,c} = sum over images |M_k ∩ L_c| / sum over images |M_k ∪ L_c|.

Two streamed passes over the data: the first keeps each unit's ceil(quantile * positions) largest activations
(merged chunk by chunk with ``topk``: exact, and bounded by that count), the second counts intersections and
areas. Memory is bounded by the chunk and that count, never by the dataset's size.

``transform`` dissects other maps than the units' own, made from them chunk by chunk: e.g. the layer's
activations projected onto its principal components (one map per component), by the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuronwidgets.data import DataSource
from neuronwidgets.engine.cache import ResultCache
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.engine.site import Site

DETECTOR_IOU = 0.04
"""NetDissect's rule: a unit whose best IoU exceeds this detects that concept."""

SLICE_ELEMENTS = 2**24
"""Upsampled values (units x pixels) counted at once: bounds the second pass's memory (64 MiB of float32) and
keeps every count exact in a float32 matmul (sums of at most 2**24 ones)."""


@dataclass(frozen=True, eq=False)
class Dissection:
    """Each unit's IoU with each concept, by NetDissect's rule (see the module's docstring)."""

    layer: str
    concepts: list[str]
    iou: np.ndarray  # (units, concepts) float64
    thresholds: np.ndarray  # (units,) float64: T_k
    intersections: np.ndarray  # (units, concepts) int64: sum over images of |M_k ∩ L_c|
    unions: np.ndarray  # (units, concepts) int64: sum over images of |M_k ∪ L_c|
    quantile: float
    images: int
    best_concepts: np.ndarray = field(init=False, repr=False)  # (units,) index of each unit's best concept

    def __post_init__(self) -> None:
        object.__setattr__(self, "best_concepts", np.argmax(self.iou, axis=1))

    @property
    def units(self) -> int:
        return self.iou.shape[0]

    @property
    def best(self) -> list[tuple[str, float]]:
        """``best[unit]``: the concept with the unit's highest IoU, and that IoU (the first concept on ties)."""
        return [(self.concepts[c], float(self.iou[k, c])) for k, c in enumerate(self.best_concepts)]

    def detectors(self, min_iou: float = DETECTOR_IOU) -> list[tuple[int, str, float]]:
        """``(unit, concept, iou)`` for every unit whose best IoU exceeds ``min_iou`` (NetDissect: 0.04),
        highest IoU first."""
        found = [(k, concept, iou) for k, (concept, iou) in enumerate(self.best) if iou > min_iou]
        return sorted(found, key=lambda row: -row[2])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, for JSON."""
        return {
            "layer": self.layer,
            "quantile": self.quantile,
            "images": self.images,
            "concepts": list(self.concepts),
            "thresholds": self.thresholds.tolist(),
            "iou": self.iou.tolist(),
            "best": [{"unit": k, "concept": c, "iou": iou} for k, (c, iou) in enumerate(self.best)],
        }

    def __repr__(self) -> str:
        found = self.detectors()
        top = ", ".join(f"unit {k} {c} {iou:.2f}" for k, c, iou in found[:3])
        return (
            f"Dissection(layer={self.layer!r}, units={self.units}, concepts={len(self.concepts)}, "
            f"images={self.images}, quantile={self.quantile:g}; {len(found)} detectors (IoU > {DETECTOR_IOU})"
            f"{': ' + top if top else ''}{', ...' if len(found) > 3 else ''})"
        )


class _ImagesOnly(Dataset):
    """A dataset's images without its labels: dissection needs none, and another dataset's labels need not be
    the model's classes."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return item[0] if isinstance(item, (tuple, list)) else item


def check_quantile(quantile: Any) -> float:
    """``quantile`` as a float strictly between 0 and 1, or a clear error."""
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float, np.integer, np.floating)):
        raise TypeError(f"quantile must be a number between 0 and 1 (NetDissect uses 0.005), got {quantile!r}")
    if not 0 < quantile < 1:
        raise ValueError(
            f"quantile must lie strictly between 0 and 1: the share of each unit's activations above its "
            f"threshold (NetDissect uses 0.005); got {quantile!r}"
        )
    return float(quantile)


def concept_dataset(dataset: Any, site: Site) -> tuple[Any, Site]:
    """The dataset whose concept masks are counted (``None``: the probe's data) and a site that reads its images
    in order. Another dataset than the probe's gets a site of its own (same model and layer, its own cache)."""
    own = site.source.dataset
    chosen = own if dataset is None else dataset
    if not callable(getattr(chosen, "concept_masks", None)):
        what = "the probe's data" if dataset is None else f"the dataset ({type(dataset).__name__})"
        raise TypeError(
            f"dissect needs a dataset with concept_masks(i) -> {{concept: (H, W) bool mask}} for each image i, "
            f"and {what} has none: pass one, e.g. probe.dissect(nw.datasets.shapes(1000))"
        )
    if chosen is own:
        return chosen, site
    source = DataSource(_ImagesOnly(chosen), chunk_size=site.source.chunk_size)
    other = Site(
        site.model,
        source,
        site.info,
        classes=site.classes,
        has_labels=False,
        device=site.device,
        dtype=site.dtype,
        cache=ResultCache(site.model),
        memory=site.memory,
        autocast=site.autocast,
    )
    return chosen, other


Transform = Callable[[torch.Tensor], torch.Tensor]
"""(n, units, h, w) maps of a chunk -> (n, m, h', w') maps to dissect instead (the same m for every chunk)."""


def _maps(site: Site, images: torch.Tensor, bar: Progress, transform: Transform | None = None) -> torch.Tensor:
    """The layer's output as (n, units, h, w) maps (a (n, units) output is a 1x1 map), in float32 or finer;
    with ``transform``, the maps it makes of them."""
    output = site.sliced("layer output", site.layer_output, images, bar=bar)
    if output.ndim == 2:
        output = output[:, :, None, None]
    if output.ndim != 4:
        raise ValueError(f"dissect needs maps (N, units, H, W) from layer {site.layer!r}, got {tuple(output.shape)}")
    output = output if output.dtype in (torch.float32, torch.float64) else output.float()
    if transform is None:
        return output
    made = transform(output)
    if not isinstance(made, torch.Tensor) or made.ndim != 4 or made.shape[0] != output.shape[0]:
        got = tuple(made.shape) if isinstance(made, torch.Tensor) else type(made).__name__
        raise ValueError(f"dissect's transform must map (n, units, h, w) maps to (n, m, h, w) maps, got {got}")
    return made if made.dtype in (torch.float32, torch.float64) else made.float()


def _masks(dataset: Any, indices: Sequence[int], concepts: list[str], size: tuple[int, int]) -> torch.Tensor:
    """(n, concepts, H, W) bool: every concept's mask of each image, checked."""
    stacked = np.zeros((len(indices), len(concepts), *size), bool)
    for row, i in enumerate(indices):
        masks = dataset.concept_masks(i)
        if not isinstance(masks, dict) or set(masks) != set(concepts):
            got = sorted(masks) if isinstance(masks, dict) else type(masks).__name__
            raise ValueError(
                f"concept_masks({i}) must give a dict with the same concepts as image 0's {concepts}, got {got}"
            )
        for column, concept in enumerate(concepts):
            mask = np.asarray(masks[concept])
            if mask.shape != size:
                raise ValueError(
                    f"concept_masks({i})[{concept!r}] has shape {mask.shape}; every mask must be (H, W) = {size}, "
                    "as image 0's are"
                )
            if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
                raise ValueError(
                    f"concept_masks({i})[{concept!r}] must be a bool (or 0/1) mask, got dtype {mask.dtype}"
                )
            stacked[row, column] = mask
    return torch.from_numpy(stacked)


def _first_masks(dataset: Any) -> tuple[list[str], tuple[int, int]]:
    """The concepts (in the order image 0 gives them) and the masks' (H, W)."""
    masks = dataset.concept_masks(0)
    if not isinstance(masks, dict) or not masks:
        raise ValueError(f"concept_masks(0) must give a non-empty dict {{concept: (H, W) mask}}, got {masks!r:.80}")
    shape = np.shape(next(iter(masks.values())))
    if len(shape) != 2:
        raise ValueError(f"concept masks must be (H, W) arrays, got shape {shape}")
    return [str(name) for name in masks], (int(shape[0]), int(shape[1]))


def _thresholds(site: Site, bar: Progress, quantile: float, transform: Transform | None) -> torch.Tensor:
    """Pass 1: T_k, the ceil(quantile * positions)-th largest activation of each unit over all the data."""
    kept: torch.Tensor | None = None
    keep, first = 0, (0, 0, 0)
    for chunk, _ in site.chunks(f"dissecting {site.layer}: thresholds", bar):
        maps = _maps(site, chunk.images, bar, transform)
        if kept is None:  # every image's map has this size (checked below), so the count is known now
            first = tuple(maps.shape[1:])
            keep = math.ceil(quantile * len(site.source) * first[1] * first[2])
        elif tuple(maps.shape[1:]) != first:
            raise ValueError(
                f"layer {site.layer!r} gives maps of shape {tuple(maps.shape[1:])} for images from {chunk.start} "
                f"on, but {first} for the first: dissect needs images of one size"
            )
        values = maps.transpose(0, 1).reshape(maps.shape[1], -1)
        merged = values if kept is None else torch.cat([kept, values], dim=1)
        kept = merged if merged.shape[1] <= keep else merged.topk(keep, dim=1, sorted=False).values
        bar.advance()
    assert kept is not None and kept.shape[1] == keep
    return kept.min(dim=1).values


def dissect(
    site: Site,
    dataset: Any = None,
    *,
    quantile: float = 0.005,
    transform: Transform | None = None,
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Dissection:
    """See `Probe.dissect`; ``transform`` dissects the maps it makes of each chunk's maps instead (see
    `Transform`), e.g. projections onto principal components."""
    quantile = check_quantile(quantile)
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be a function of a chunk's (n, units, h, w) maps, got {transform!r}")
    dataset, site = concept_dataset(dataset, site)
    concepts, size = _first_masks(dataset)
    concept_area = torch.zeros(len(concepts), dtype=torch.float64)
    with (
        site.running(),
        Progress.within(f"dissecting {site.layer}", 2 * site.source.num_chunks, progress, cancel) as bar,
    ):
        thresholds = _thresholds(site, bar, quantile, transform)
        units = thresholds.shape[0]  # the transform's maps, or the layer's units
        intersections = torch.zeros(units, len(concepts), dtype=torch.float64)
        unit_area = torch.zeros(units, dtype=torch.float64)
        for chunk, _ in site.chunks(f"dissecting {site.layer}: IoU", bar):
            maps = _maps(site, chunk.images, bar, transform)
            rows = max(1, SLICE_ELEMENTS // (max(units, len(concepts)) * size[0] * size[1]))
            for begin in range(0, len(chunk), rows):
                part = maps[begin : begin + rows]
                indices = range(chunk.start + begin, chunk.start + begin + len(part))
                counts = _count(part, thresholds, _masks(dataset, indices, concepts, size).to(site.device), size)
                intersections += counts[0]
                unit_area += counts[1]
                concept_area += counts[2]
            bar.advance()
    unions = unit_area[:, None] + concept_area[None, :] - intersections
    iou = torch.where(unions > 0, intersections / unions.clamp(min=1), torch.zeros_like(unions))
    return Dissection(
        layer=site.layer,
        concepts=concepts,
        iou=iou.numpy(),
        thresholds=thresholds.double().cpu().numpy(),
        intersections=intersections.round().long().numpy(),
        unions=unions.round().long().numpy(),
        quantile=quantile,
        images=len(site.source),
    )


def _count(
    maps: torch.Tensor, thresholds: torch.Tensor, masks: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For some images: |M_k ∩ L_c| (units, concepts), |M_k| (units,) and |L_c| (concepts,), summed over them."""
    # Counting runs outside any autocast: a float16 matmul would round counts above 2048.
    with torch.autocast(maps.device.type, enabled=False):
        upsampled = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        regions = (upsampled > thresholds[None, :, None, None]).transpose(0, 1).reshape(maps.shape[1], -1)
        concepts = masks.transpose(0, 1).reshape(masks.shape[1], -1)
        intersections = regions.float() @ concepts.float().T  # exact: each sum is of at most 2**24 ones
    return (
        intersections.double().cpu(),
        regions.sum(1, dtype=torch.float64).cpu(),
        concepts.sum(1, dtype=torch.float64).cpu(),
    )
