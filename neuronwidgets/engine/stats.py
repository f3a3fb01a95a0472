"""Statistics kept as sums that merge exactly, so shards (chunks, processes) combine into one result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class OutcomeCounts:
    """Correct predictions and summed cross-entropy per model variant (e.g. one per ablated unit) and class."""

    correct: np.ndarray  # (variants, classes) int64: correct predictions among images of each true class
    loss: np.ndarray  # (variants,) float64: summed cross-entropy
    images: np.ndarray  # (classes,) int64: images of each true class

    @classmethod
    def zeros(cls, variants: int, classes: int) -> OutcomeCounts:
        return cls(
            np.zeros((variants, classes), np.int64),
            np.zeros(variants, np.float64),
            np.zeros(classes, np.int64),
        )

    def count_images(self, labels: torch.Tensor) -> None:
        """Add one chunk's labels to the per-class image counts (once per chunk, not per variant)."""
        self.images += np.bincount(labels.cpu().numpy(), minlength=self.images.shape[0])

    def add(self, variants: list[int], scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Add class scores of shape (len(variants), N, classes) for one chunk with true ``labels`` (N,)."""
        block, _, classes = scores.shape
        hits, loss = image_outcomes(scores, labels)
        per_class = torch.zeros(block, classes, dtype=torch.float64, device=scores.device)
        per_class.index_add_(1, labels, hits.to(torch.float64))
        self.correct[variants] += per_class.round().long().cpu().numpy()
        self.loss[variants] += loss.sum(1).cpu().numpy()

    def merge(self, other: OutcomeCounts) -> OutcomeCounts:
        return OutcomeCounts(self.correct + other.correct, self.loss + other.loss, self.images + other.images)

    @property
    def accuracy(self) -> np.ndarray:
        """(variants,) top-1 accuracy over all images."""
        return self.correct.sum(1) / max(1, int(self.images.sum()))

    @property
    def class_accuracy(self) -> np.ndarray:
        """(variants, classes) accuracy among images of each class; NaN for classes with no images."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.images > 0, self.correct / np.maximum(self.images, 1), np.nan)

    @property
    def mean_loss(self) -> np.ndarray:
        return self.loss / max(1, int(self.images.sum()))


def image_outcomes(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per variant and image, whether the top class is the true one and the cross-entropy (float64), from
    class scores of shape (variants, N, classes) and true ``labels`` (N,)."""
    block, n, classes = scores.shape
    hits = scores.argmax(-1) == labels
    loss = F.cross_entropy(scores.reshape(block * n, classes).double(), labels.repeat(block), reduction="none")
    return hits, loss.reshape(block, n)


def per_image_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype per-image statistics are kept in: the model's precision, at least float32. Means are summed in
    float64 first; float64 models keep float64 (a float32 copy loses up to 1e-7 relative, which an
    ill-conditioned index such as selectivity's amplifies), others keep float32 to halve the memory."""
    return torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else torch.float32


@dataclass
class LayerSummary:
    """One layer's output summarised per image (spatial mean and max per unit) and summed over images.

    Memory is (images x units) for the per-image parts and one map per unit for the sums, never the maps of
    every image.
    """

    count: int
    map_sum: np.ndarray  # (units, *spatial) float64: sum over images of each unit's map
    square_sum: np.ndarray  # (units,) float64: sum over images and positions of the squared activation
    image_mean: np.ndarray  # (images, units): spatial mean of each unit's map, see `per_image_dtype`
    image_max: np.ndarray  # (images, units): spatial maximum of each unit's map
    labels: np.ndarray | None  # (images,) int64

    @classmethod
    def of(cls, activations: torch.Tensor, labels: torch.Tensor | None) -> LayerSummary:
        """Summarise one chunk of activations of shape (N, units, *spatial)."""
        a = activations.detach()
        flat = a.reshape(a.shape[0], a.shape[1], -1).double()
        kept = per_image_dtype(a.dtype)
        return cls(
            count=a.shape[0],
            map_sum=a.double().sum(0).cpu().numpy(),
            square_sum=(flat**2).sum((0, 2)).cpu().numpy(),
            image_mean=flat.mean(2).to(kept).cpu().numpy(),
            image_max=flat.amax(2).to(kept).cpu().numpy(),
            labels=None if labels is None else labels.cpu().numpy().astype(np.int64),
        )

    def merge(self, other: LayerSummary) -> LayerSummary:
        """The summary of both shards, ``self``'s images first."""
        labels = None
        if self.labels is not None and other.labels is not None:
            labels = np.concatenate([self.labels, other.labels])
        return LayerSummary(
            self.count + other.count,
            self.map_sum + other.map_sum,
            self.square_sum + other.square_sum,
            np.concatenate([self.image_mean, other.image_mean]),
            np.concatenate([self.image_max, other.image_max]),
            labels,
        )

    @property
    def positions(self) -> int:
        return int(np.prod(self.map_sum.shape[1:], dtype=np.int64))

    @property
    def mean_map(self) -> np.ndarray:
        """(units, *spatial): each unit's map averaged over images (the value mean-ablation writes)."""
        return self.map_sum / self.count

    @property
    def variance(self) -> np.ndarray:
        """(units,) variance of the activation over images and positions."""
        n = self.count * self.positions
        mean = self.map_sum.reshape(self.map_sum.shape[0], -1).sum(1) / n
        return np.maximum(self.square_sum / n - mean**2, 0.0)


@dataclass
class Moments:
    """First and second moments of vectors (sum and sum of outer products), mergeable across shards."""

    count: int
    total: np.ndarray  # (d,) float64
    outer: np.ndarray  # (d, d) float64

    @classmethod
    def of(cls, samples: torch.Tensor) -> Moments:
        """Moments of ``samples`` of shape (n, d), accumulated in float64."""
        x = samples.detach().double()
        return cls(x.shape[0], x.sum(0).cpu().numpy(), (x.T @ x).cpu().numpy())

    def merge(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total, self.outer + other.outer)

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def covariance(self) -> np.ndarray:
        """The population covariance (divides by the count)."""
        mean = self.mean
        return self.outer / self.count - np.outer(mean, mean)


@dataclass
class TopMaps:
    """Each unit's maps on its ``k`` images of highest peak (ties: the earlier image), kept from the summary's
    pass so that an overlay of a unit's top images needs no forward pass; merges exactly across chunks."""

    index: np.ndarray  # (units, k) int64: image indices, highest peak first
    peak: np.ndarray  # (units, k): those images' peaks, as `LayerSummary.image_max` holds them
    maps: np.ndarray  # (units, k, *spatial) float32: the unit's map on each of them

    @classmethod
    def of(cls, activations: torch.Tensor, peaks: np.ndarray, k: int, start: int = 0) -> TopMaps:
        """The top ``k`` of one chunk of activations (N, units, *spatial) whose first image is ``start``, by
        their ``peaks`` (N, units): the chunk's `LayerSummary.image_max`, not computed again."""
        by_unit = torch.from_numpy(np.ascontiguousarray(peaks.T))  # (units, N)
        order = torch.sort(by_unit, dim=1, descending=True, stable=True).indices[:, :k]  # (units, k)
        device = activations.device
        units = torch.arange(activations.shape[1], device=device).unsqueeze(1)
        maps = activations.detach().transpose(0, 1)[units, order.to(device)]  # only these leave the device
        return cls((order + start).numpy(), torch.gather(by_unit, 1, order).numpy(), maps.float().cpu().numpy())

    def merge(self, other: TopMaps) -> TopMaps:
        """The top ``k`` of both (``other``'s images after ``self``'s)."""
        k = self.index.shape[1]
        index = np.concatenate([self.index, other.index], 1)
        peak = np.concatenate([self.peak, other.peak], 1)
        order = np.lexsort((index, -peak), axis=1)[:, :k]  # by peak, then by image
        maps = np.concatenate([self.maps, other.maps], 1)
        rows = np.arange(index.shape[0])[:, None]
        return TopMaps(index[rows, order], peak[rows, order], maps[rows, order])

    def maps_of(self, unit: int, indices: list[int]) -> dict[int, np.ndarray]:
        """``unit``'s kept maps among ``indices``, by image index (those not kept are left out)."""
        where = {int(i): j for j, i in enumerate(self.index[unit])}
        return {i: self.maps[unit, where[i]] for i in indices if i in where}
