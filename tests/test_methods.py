"""Each ranking method against an independent computation (hooks, numpy, autograd on a copy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import neuronwidgets as nw
from tests import reference
from tests.conftest import build, make_data


@pytest.fixture(params=["plain", "residual", "resnet18"])
def setup(request):
    model, shape = build(request.param, seed=7)
    images, labels = make_data(model, 19, shape, seed=8)
    return model, images, labels


def test_methods_registry_lists_every_method_with_a_description():
    listed = nw.methods()
    assert set(listed) == {"ablation", "selectivity", "weight_l1", "taylor", "activation"}
    assert all(isinstance(text, str) and len(text) > 10 for text in listed.values())


def test_taylor_matches_autograd_on_a_copy(setup):
    model, images, labels = setup
    probe = nw.Probe(model, (images, labels), chunk_size=5)
    for layer in probe.layers[:4]:
        probe.layer = layer
        expected = reference.taylor(model, layer, images, labels)
        np.testing.assert_allclose(probe.rank("taylor", progress=False).scores, expected, rtol=1e-8, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())


def test_activation_and_selectivity_match_numpy(setup):
    model, images, labels = setup
    probe = nw.Probe(model, (images, labels), chunk_size=4)
    for layer in probe.layers[:5]:
        probe.layer = layer
        acts = reference.layer_output(model, layer, images).numpy()
        per_image = acts.reshape(acts.shape[0], acts.shape[1], -1).mean(2)
        np.testing.assert_allclose(probe.rank("activation", progress=False).scores, per_image.mean(0), rtol=1e-6)
        target = int(labels[0])
        np.testing.assert_allclose(
            probe.rank("activation", target=target, progress=False).scores,
            per_image[labels.numpy() == target].mean(0),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            probe.rank("selectivity", progress=False).scores,
            reference.selectivity(acts, labels.numpy()),
            rtol=1e-5,
            atol=1e-7,
        )


def test_weight_l1_finds_the_filter_through_bn_and_relu():
    model, shape = build("plain")
    images, labels = make_data(model, 5, shape, seed=1)
    probe = nw.Probe(model, (images, labels))
    expected = model.conv2.weight.detach().abs().sum((1, 2, 3)).numpy()
    for layer in ("conv2", "bn2", "relu2"):
        probe.layer = layer
        ranking = probe.rank("weight_l1")
        np.testing.assert_allclose(ranking.scores, expected)
        assert ranking.meta["filter"] == "conv2"


def test_weight_l1_inside_a_block_and_its_error_for_a_residual_sum():
    model, shape = build("resnet18")
    images, labels = make_data(model, 2, shape, seed=1)
    probe = nw.Probe(model, (images, labels), layer="layer2.1.bn1")
    expected = model.layer2[1].conv1.weight.detach().abs().sum((1, 2, 3)).numpy()
    np.testing.assert_allclose(probe.rank("weight_l1").scores, expected)
    probe.layer = "layer2"
    with pytest.raises(ValueError, match="mixes several inputs"):
        probe.rank("weight_l1")


def test_top_images_and_activation_maps_match_hooks():
    model, shape = build("residual")
    images, labels = make_data(model, 17, shape, seed=3)
    probe = nw.Probe(model, (images, labels), layer="block1.bn2", chunk_size=5)
    acts = reference.layer_output(model, "block1.bn2", images)
    peaks = acts.flatten(2).amax(2)
    for unit in range(probe.units):
        np.testing.assert_array_equal(probe.top_images(unit, k=4), torch.argsort(-peaks[:, unit], stable=True)[:4])
    maps = probe.activation_maps(2, [3, 0, 9])
    np.testing.assert_allclose(maps, acts[[3, 0, 9], 2].numpy(), rtol=1e-6)
    np.testing.assert_allclose(probe.activation_maps(2, images[:2]), acts[:2, 2].numpy(), rtol=1e-6)


def test_every_data_form_gives_the_same_ranking():
    model, shape = build("plain")
    images, labels = make_data(model, 21, shape, seed=5)
    forms = [
        (images, labels),
        (images.numpy(), labels.numpy()),
        TensorDataset(images, labels),
        DataLoader(TensorDataset(images, labels), batch_size=4),
        [(image, int(label)) for image, label in zip(images, labels)],
    ]
    rankings = [nw.Probe(model, data, layer="relu2").rank("ablation", progress=False) for data in forms]
    for ranking in rankings[1:]:
        np.testing.assert_array_equal(ranking.scores, rankings[0].scores)
    unlabelled = nw.Probe(model, images, layer="relu2").rank("activation", progress=False)
    single = nw.Probe(model, images[0], layer="relu2").rank("activation", progress=False)
    assert unlabelled.units == single.units == 8


def test_demo_ranking_meta_and_progress_reports():
    model, data = nw.demo.load()
    probe = nw.Probe(model, data, layer="relu3")
    seen = []
    ranking = probe.rank("ablation", progress=seen.append)
    assert ranking.meta["engine"] == "closed_form"
    assert ranking.meta["base_accuracy"] >= 0.95
    assert ranking.meta["drop_matrix"].shape == (64, 10)
    assert seen and seen[-1].done == seen[-1].total and seen[-1].fraction == 1.0
    assert all(info.eta is not None and info.eta >= 0 for info in seen)
    assert probe.classes == [str(i) for i in range(10)]
