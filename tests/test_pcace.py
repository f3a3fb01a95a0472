"""PCACE against a slow per-unit computation (hook, numpy SVD, ACE one problem at a time), its null and errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.methods import pcace
from neuronwidgets.methods.ace import ace
from tests import reference


class TwoConv(nn.Module):
    """conv-relu-conv-relu-pool-linear, with an in-place ReLU after the second conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TwoConv().double().eval()
    with torch.no_grad():  # unit 3 of conv2 is dead: a constant map on every image
        model.conv2.weight[3] = 0.0
        model.conv2.bias[3] = 0.7
    generator = torch.Generator().manual_seed(1)
    images = torch.rand((70, 3, 8, 8), generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.where(torch.arange(70) % 4 == 3, 1, 0)  # 53 images of class 0, 17 of class 1
    labels[[5, 9, 13, 17]] = 2  # 4 images of class 2
    return model, images, labels


def slow_pcace(model, layer, images, labels, target, count, components, permutations, seed, units):
    """Per unit: numpy standardisation and SVD, then ACE on one problem at a time."""
    chosen = torch.nonzero(labels == target).flatten()[:count]
    maps = reference.layer_output(model, layer, images[chosen]).numpy()
    with torch.no_grad():
        y = model(images[chosen])[:, target].numpy()
    rng = np.random.default_rng(seed)
    shuffled = [rng.permutation(y) for _ in range(permutations)]
    scores, null = [], []
    for unit in units:
        x = maps[:, unit].reshape(len(chosen), -1)
        varies = x.max(0) > x.min(0)
        x = np.where(varies, (x - x.mean(0)) / np.where(varies, x.std(0), 1), 0.0)
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        z = (u[:, :components] * s[:components]).T
        z[s[:components] ** 2 <= 1e-9 * (s**2).sum()] = 0.0
        scores.append(float(ace(y, z).correlation))
        null.append([float(ace(ys, z).correlation) for ys in shuffled])
    return np.array(scores), np.array(null), chosen.numpy()


@pytest.mark.parametrize("layer", ["conv2", "pool"])  # 64 positions > 25 images (Gram path), 16 < 25
def test_matches_a_slow_per_unit_computation(setup, layer):
    model, images, labels = setup
    probe = nw.Probe(model, (images, labels), layer=layer, chunk_size=16)
    ranking = pcace.rank(probe.site(), target=0, max_images=25, permutations=3, seed=5, progress=False)
    units = [0, 3, 4]
    expected, null, chosen = slow_pcace(model, layer, images, labels, 0, 25, 3, 3, 5, units)
    np.testing.assert_allclose(ranking.scores[units], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ranking.meta["null_mean"][units], null.mean(1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ranking.meta["null_p95"][units], np.percentile(null, 95, axis=1), atol=1e-6)
    np.testing.assert_array_equal(ranking.meta["image_indices"], chosen)
    assert ranking.method == "pcace" and ranking.target == 0 and ranking.layer == layer
    assert ranking.scores[3] == 0 and 3 in ranking.meta["dead_units"]  # the dead unit
    meta = ranking.meta
    assert meta["images_used"] == 25 and meta["components"] == 3 and meta["components_used"] == 3
    assert meta["variant"] == "maximal" and meta["seed"] == 5 and meta["site"] == layer
    assert meta["layer_type"] == type(probe.module).__name__
    assert meta["above_null"].dtype == bool and meta["above_null"].shape == (5,)
    np.testing.assert_array_equal(meta["above_null"], ranking.scores > meta["null_p95"])
    ranking.to_json()  # the meta is JSON-convertible


def test_reference_variant_and_null(setup):
    model, images, labels = setup
    probe = nw.Probe(model, (images, labels), layer="relu1", chunk_size=32)
    maximal = pcace.rank(probe.site(), target=1, max_images=None, permutations=4, progress=False)
    ref = pcace.rank(probe.site(), target=1, max_images=None, permutations=4, variant="reference", progress=False)
    assert maximal.meta["images_used"] == 17
    np.testing.assert_allclose(ref.scores, maximal.meta["reference_correlation"])
    np.testing.assert_allclose(maximal.scores, ref.meta["maximal_correlation"])
    assert np.all((maximal.scores >= 0) & (maximal.scores <= 1))
    assert np.all(ref.scores <= maximal.scores + 1e-9)
    assert np.all(maximal.meta["null_mean"] > 0) and np.all(maximal.meta["null_p95"] >= maximal.meta["null_mean"])
    none = pcace.rank(probe.site(), target=1, max_images=None, permutations=0, progress=False)
    np.testing.assert_array_equal(none.scores, maximal.scores)
    assert none.meta["null_mean"] is None and none.meta["above_null"] is None


def test_progress_and_cancel(setup):
    model, images, labels = setup
    probe = nw.Probe(model, (images, labels), layer="conv1", chunk_size=10)
    seen = []
    pcace.rank(probe.site(), target=1, max_images=None, permutations=1, progress=seen.append)
    reading = [info for info in seen if info.description.startswith("pcace: reading")]
    assert [info.done for info in reading] == list(range(1, 8)) and reading[-1].total == 7
    assert seen[-1].done == seen[-1].total  # the ACE phase reports too
    stop = threading.Event()

    def cancel_after_two(info):
        if info.done == 2:
            stop.set()

    with pytest.raises(nw.Cancelled):
        pcace.rank(probe.site(), target=1, progress=cancel_after_two, cancel=stop)
    assert not any(module._forward_hooks for module in model.modules())


def test_errors(setup):
    model, images, labels = setup
    probe = nw.Probe(model, (images, labels), layer="conv2")
    with pytest.raises(ValueError, match=r"pcace needs target=<class index>"):
        probe.rank("pcace", progress=False)
    with pytest.raises(ValueError, match=r"pcace needs at least 10 images of class 2 \('2'\), the data has 4"):
        pcace.rank(probe.site(), target=2, progress=False)
    with pytest.raises(ValueError, match="variant"):
        pcace.rank(probe.site(), target=0, variant="paper", progress=False)
    with pytest.raises(ValueError, match="pcace needs labels"):
        nw.Probe(model, images, layer="conv2").rank("pcace", target=0, progress=False)
    assert not any(module._forward_hooks for module in model.modules())


def test_a_model_that_views_its_maps_gets_the_images_as_they_are(setup):
    """PCACE feeds the images in channels-last layout (faster convs); ``.view`` of a map cannot take that,
    so such a model runs on the images as given, with the same result."""

    class Viewing(TwoConv):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
            return self.fc(x.view(x.shape[0], -1))

    model, images, labels = setup
    viewing = Viewing().double().eval()
    viewing.load_state_dict(model.state_dict())
    with pytest.raises(RuntimeError, match="view"):
        viewing(images.contiguous(memory_format=torch.channels_last))
    expected = nw.Probe(model, (images, labels), layer="relu2").rank("pcace", target=0, progress=False)
    probe = nw.Probe(viewing, (images, labels), layer="relu2", chunk_size=16)
    calls = []
    handle = viewing.register_forward_pre_hook(lambda module, args: calls.append(not args[0].is_contiguous()))
    try:
        got = probe.rank("pcace", target=0, progress=False)
    finally:
        handle.remove()
    np.testing.assert_allclose(got.scores, expected.scores, atol=1e-9)
    assert sum(calls) == 1  # channels-last is tried once, on the first forward, not on every chunk
