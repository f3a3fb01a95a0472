"""Principal components of a layer's channel vectors (Dey et al., "neurons vs principal components").

A layer's activation at one position (or pooled over positions) is a vector with one entry per unit. PCA of
these vectors gives a basis ordered by variance; comparing it with the neuron basis (units sorted by their own
variance) shows how much of the layer a few neurons, or a few components, account for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neuronwidgets.engine import distributed
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.engine.stats import Moments

SAMPLINGS = ("position", "pooled")


@dataclass(frozen=True)
class Components:
    """The layer's principal components, largest variance first."""

    mean: np.ndarray  # (units,) mean channel vector
    vectors: np.ndarray  # (units, k) orthonormal columns
    variances: np.ndarray  # (k,) variance along each component
    neuron_variances: np.ndarray  # (units,) variance of each unit
    total_variance: float
    samples: int
    sampling: str

    @property
    def explained(self) -> np.ndarray:
        """(k,) fraction of the total variance along each component."""
        return self.variances / self.total_variance

    def variance_curves(self) -> dict[str, np.ndarray]:
        """Cumulative fraction of variance explained by the top-k components and by the top-k neurons (the
        neurons sorted by their own variance), for k = 1..units. Same denominator for both."""
        neurons = np.sort(self.neuron_variances)[::-1]
        return {
            "components": np.cumsum(self.variances) / self.total_variance,
            "neurons": np.cumsum(neurons) / self.total_variance,
        }

    def needed(self, fraction: float) -> dict[str, int]:
        """How many components, and how many neurons, reach ``fraction`` of the variance."""
        curves = self.variance_curves()
        return {name: int(np.searchsorted(curve, fraction - 1e-12) + 1) for name, curve in curves.items()}

    def project_out(self, activations: torch.Tensor, indices: list[int], about_mean: bool = True) -> torch.Tensor:
        """``a - U_S U_S^T (a - mean)`` over the channel axis (or ``a - U_S U_S^T a`` with ``about_mean=False``),
        for activations of shape (N, units, ...); returns a new tensor."""
        basis = torch.as_tensor(self.vectors[:, indices], dtype=activations.dtype, device=activations.device)
        moved = activations.movedim(1, -1)
        centred = moved - torch.as_tensor(self.mean, dtype=activations.dtype, device=activations.device)
        source = centred if about_mean else moved
        return (moved - (source @ basis) @ basis.T).movedim(-1, 1)


def channel_samples(activations: torch.Tensor, sampling: str) -> torch.Tensor:
    """(samples, units): every position of every image as one sample, or one spatially pooled vector per image."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
    a = activations.reshape(activations.shape[0], activations.shape[1], -1)
    if sampling == "pooled":
        return a.mean(2)
    return a.transpose(1, 2).reshape(-1, a.shape[1])


def from_moments(moments: Moments, k: int | None, sampling: str) -> Components:
    """Eigendecomposition of the covariance in ``moments``, keeping the top ``k`` components (all if None)."""
    covariance = moments.covariance
    variances, vectors = np.linalg.eigh(covariance)
    order = np.argsort(variances)[::-1]
    variances, vectors = np.clip(variances[order], 0, None), vectors[:, order]
    # A deterministic sign: the largest-magnitude loading of each component is positive.
    signs = np.sign(vectors[np.abs(vectors).argmax(0), np.arange(vectors.shape[1])])
    vectors = vectors * np.where(signs == 0, 1, signs)
    k = len(variances) if k is None else k
    return Components(
        mean=moments.mean,
        vectors=vectors[:, :k],
        variances=variances[:k],
        neuron_variances=np.clip(np.diag(covariance), 0, None),
        total_variance=float(np.trace(covariance)),
        samples=moments.count,
        sampling=sampling,
    )


def layer_components(
    site: Site,
    k: int | None = None,
    sampling: str = "position",
    progress: ProgressOption = None,
    cancel: CancelFlag = None,
) -> Components:
    """Principal components of ``site``'s channel vectors, from one streamed pass (cached per layer)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= site.units):
        raise ValueError(f"k must be between 1 and {site.units} (the layer's units), an int, or None; got {k!r}")

    def compute() -> Moments:
        total: Moments | None = None
        with site.running():
            for chunk, bar in site.chunks(f"components of {site.layer}", progress, cancel, merged=True):
                output = site.sliced("layer output", site.layer_output, chunk.images, bar=bar)
                part = Moments.of(channel_samples(output, sampling))
                total = part if total is None else total.merge(part)
                bar.advance()
        assert total is not None
        return total if site.group is None else distributed.moments(site.group, total)

    return from_moments(site.cached(("moments", sampling), compute), None if k is None else int(k), sampling)
