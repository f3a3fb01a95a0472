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
    assert set(listed) == {
        "ablation",
        "car",
        "selectivity",
        "weight_l1",
        "taylor",
        "activation",
        "resampling_correlation",
        "resampling_precision",
        "pcace",
    }
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
    raw = model.conv2.weight.detach().abs().sum((1, 2, 3))
    bn = model.bn2
    expected = (raw * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).abs()).detach().numpy()
    for layer in ("conv2", "bn2", "relu2"):
        probe.layer = layer
        ranking = probe.rank("weight_l1")
        np.testing.assert_allclose(ranking.scores, expected)
        assert ranking.meta["filter"] == "conv2" and ranking.meta["batchnorm"] == "bn2"
        np.testing.assert_allclose(probe.rank("weight_l1", fold_batchnorm=False).scores, raw.numpy())


def test_weight_l1_inside_a_block_and_its_error_for_a_residual_sum():
    model, shape = build("resnet18")
    images, labels = make_data(model, 2, shape, seed=1)
    probe = nw.Probe(model, (images, labels), layer="layer2.1.bn1")
    expected = model.layer2[1].conv1.weight.detach().abs().sum((1, 2, 3)).numpy()
    np.testing.assert_allclose(probe.rank("weight_l1", fold_batchnorm=False).scores, expected)
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
    # the time left is estimated from the steps after the first (which includes tracing and warm-up): no ETA
    # until that step has ended (slices of it report their share without one), then always one
    before = [info for info in seen if info.warmup is None or info.done <= info.warmup[0]]
    after = [info for info in seen if info.warmup is not None and info.done > info.warmup[0]]
    assert before and after and all(info.eta is None for info in before)
    assert all(info.eta is not None and info.eta >= 0 for info in after)
    assert probe.classes == [str(i) for i in range(10)]


def greedy_car_by_hooks(model, layer, images, labels, prune):
    """The textbook greedy loop: full model and a plain hook for every candidate, every round."""
    pruned = []
    fill = torch.zeros_like(reference.layer_output(model, layer, images)[0])
    for _ in range(prune):
        base = reference.accuracy(reference.scores_with(model, layer, images, pruned, fill), labels)
        best = None
        for unit in range(fill.shape[0]):
            if unit in pruned:
                continue
            scores = reference.scores_with(model, layer, images, [*pruned, unit], fill)
            car = base - reference.accuracy(scores, labels)
            loss = float(torch.nn.functional.cross_entropy(scores, labels))
            if best is None or (car, loss) < best[0]:
                best = ((car, loss), unit)
        pruned.append(best[1])
    return pruned


@pytest.mark.parametrize("name,layer", [("plain", "relu2"), ("residual", "block1.bn1"), ("untraceable", "relu")])
def test_greedy_car_matches_the_exhaustive_loop(name, layer):
    model, shape = build(name, seed=11)
    images, labels = make_data(model, 25, shape, seed=12)
    probe = nw.Probe(model, (images, labels), layer=layer, chunk_size=10)
    prune = probe.units - 1
    ranking = probe.rank("car", progress=False)
    assert ranking.meta["pruning_order"] == greedy_car_by_hooks(model, layer, images, labels, prune)
    assert ranking.order[-1] == ranking.meta["pruning_order"][0]  # first pruned = least important
    one_shot = probe.rank("ablation", progress=False)
    np.testing.assert_allclose(ranking.meta["one_shot"], one_shot.scores)
    np.testing.assert_allclose(ranking.meta["class_car"], one_shot.meta["drop_matrix"])
    engine = {key: one_shot.meta[key] for key in ("engine", "engine_note")}
    assert {key: ranking.meta[key] for key in engine} == engine  # e.g. why the untraceable model used hooks


def test_car_floor_per_step_and_errors():
    model, data = nw.demo.load()
    probe = nw.Probe(model, data, layer="relu3")
    seen = []
    ranking = probe.rank("car", prune=12, per_step=4, floor=0.9, progress=seen.append)
    assert len(ranking.meta["pruning_order"]) == 12
    assert all(a >= 0.9 for a in ranking.meta["accuracy_curve"])
    assert len(ranking.meta["accuracy_curve"]) == 4  # baseline + 3 rounds of 4 units
    assert seen[-1].done == seen[-1].total and seen[-1].eta == 0
    with pytest.raises(ValueError, match=r"floor=1\.01 is above the model's accuracy"):
        probe.rank("car", prune=2, floor=1.01)
    with pytest.raises(ValueError, match="prune must be between 1 and 63"):
        probe.rank("car", prune=64)


@pytest.mark.parametrize("schedule", ["growing", "fixed"])
def test_resampling_scores_match_numpy(schedule):
    from neuronwidgets.methods.resampling import perturbations

    model, shape = build("residual", seed=13)
    images, labels = make_data(model, 4, shape, seed=14)
    probe = nw.Probe(model, (images, labels), layer="block1.bn2", chunk_size=16)
    correlation = probe.rank("resampling_correlation", image=2, schedule=schedule, copies=40, progress=False)
    precision = probe.rank("resampling_precision", image=2, schedule=schedule, copies=40, threshold=-np.inf)
    copies = perturbations(images[2], 40, 0.1, schedule, torch.Generator().manual_seed(0))
    assert torch.equal(copies[0], images[2])
    acts = reference.layer_output(model, "block1.bn2", copies).numpy().reshape(40, probe.units, -1)
    with torch.no_grad():
        logits = model(copies)
    y = logits.softmax(1)[:, int(logits[0].argmax())].numpy()
    for unit in range(probe.units):
        rs = [np.corrcoef(acts[:, unit, j], y)[0, 1] for j in range(acts.shape[2]) if acts[:, unit, j].std() > 0]
        assert correlation.scores[unit] == pytest.approx(np.mean(np.abs(rs)), rel=1e-9)
        assert precision.scores[unit] == pytest.approx(1 / acts[:, unit].var(0).mean(), rel=1e-9)
    top = {which: set(np.argsort(-precision.meta[which], kind="stable")[:5]) for which in ("correlation", "precision")}
    assert precision.meta["overlap"] == len(top["correlation"] & top["precision"]) / 10


def test_resampling_needs_an_image_and_keeps_eligibility():
    model, data = nw.demo.load()
    probe = nw.Probe(model, data, layer="relu2")
    with pytest.raises(ValueError, match="pass image=<index into the data>"):
        probe.rank("resampling_correlation")
    ranking = probe.rank("resampling_precision", image=data[0][0], progress=False)
    eligible = ranking.meta["eligible"]
    assert (ranking.scores[~eligible] == 0).all() and (ranking.scores[eligible] > 0).all()
