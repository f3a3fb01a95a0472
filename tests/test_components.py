"""Principal components of a layer (Dey et al.) against numpy, and component ablation against a hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuronwidgets as nw
from neuronwidgets.engine.stats import Moments
from tests import reference
from tests.conftest import build, make_data


@pytest.fixture
def residual():
    model, shape = build("residual", seed=21)
    images, labels = make_data(model, 30, shape, seed=22)
    return model, images, labels


@pytest.mark.parametrize("sampling", ["position", "pooled"])
def test_components_match_numpy_pca(residual, sampling):
    model, images, labels = residual
    probe = nw.Probe(model, (images, labels), layer="block1", chunk_size=7)
    acts = reference.layer_output(model, "block1", images).numpy()
    if sampling == "position":
        samples = acts.transpose(0, 2, 3, 1).reshape(-1, acts.shape[1])
    else:
        samples = acts.reshape(acts.shape[0], acts.shape[1], -1).mean(2)
    covariance = np.cov(samples, rowvar=False, bias=True)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    basis = probe.components(sampling=sampling)
    np.testing.assert_allclose(basis.variances, eigenvalues[::-1], rtol=1e-8, atol=1e-12)
    for j in range(acts.shape[1]):  # same directions up to sign
        assert abs(abs(basis.vectors[:, j] @ eigenvectors[:, ::-1][:, j]) - 1) < 1e-6
    np.testing.assert_allclose(basis.mean, samples.mean(0), rtol=1e-10)
    curves = basis.variance_curves()
    np.testing.assert_allclose(curves["neurons"], np.cumsum(np.sort(samples.var(0))[::-1]) / np.trace(covariance))
    assert (curves["components"] >= curves["neurons"] - 1e-12).all()  # PCA is optimal for variance
    assert curves["components"][-1] == pytest.approx(1.0)
    assert basis.needed(0.8)["components"] <= basis.needed(0.8)["neurons"]
    assert probe.components(2, sampling=sampling).vectors.shape == (6, 2)


def test_moments_merge_exactly():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(13, 4, generator=generator), torch.rand(9, 4, generator=generator) + 0.5
    merged, whole = Moments.of(a).merge(Moments.of(b)), Moments.of(torch.cat([a, b]))
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.outer, whole.outer, rtol=1e-15)
    np.testing.assert_allclose(merged.covariance, np.cov(torch.cat([a, b]).numpy(), rowvar=False, bias=True))


@pytest.mark.parametrize("about_mean", [True, False])
def test_component_ablation_matches_an_explicit_projection(residual, about_mean):
    model, images, labels = residual
    probe = nw.Probe(model, (images, labels), layer="block1", chunk_size=8)
    basis = probe.components()
    picked = [0, 2]
    u = torch.as_tensor(basis.vectors[:, picked])
    mu = torch.as_tensor(basis.mean).reshape(1, -1, 1, 1)

    def project(module, inputs, output):
        centred = output - mu if about_mean else output
        return output - torch.einsum("nchw,ck,dk->ndhw", centred, u, u)

    handle = model.block1.register_forward_hook(project)
    with torch.no_grad():
        expected = model(images)
    handle.remove()
    ev = probe.evaluate(ablate_components=picked, mode="mean" if about_mean else "zero")
    np.testing.assert_array_equal(ev.predictions, expected.argmax(1).numpy())
    assert ev.loss == pytest.approx(float(torch.nn.functional.cross_entropy(expected, labels)), rel=1e-9)
    assert ev.ablated_components == (0, 2)
    everything = probe.evaluate(ablate_components=range(probe.units))  # every direction: all units at their mean
    fill = torch.as_tensor(basis.mean).reshape(-1, 1, 1).expand(probe.layer_info().shape)
    expected_all = reference.scores_with(model, "block1", images, list(range(probe.units)), fill)
    assert everything.loss == pytest.approx(float(torch.nn.functional.cross_entropy(expected_all, labels)), rel=1e-9)


def test_component_errors(residual):
    model, images, labels = residual
    probe = nw.Probe(model, (images, labels), layer="block1")
    with pytest.raises(ValueError, match=r"components \[6\] out of range"):
        probe.evaluate(ablate_components=[6])
    with pytest.raises(ValueError, match="unknown sampling 'pixels'"):
        probe.components(sampling="pixels")
    with pytest.raises(ValueError, match="k must be between 1 and 6"):
        probe.components(0)
