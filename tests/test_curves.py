"""Faithfulness and completeness curves, and Zhou et al.'s attribute correlations, against direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import neuronwidgets as nw
from neuronwidgets.attributes import class_correlation
from tests import reference
from tests.conftest import build, make_data


@pytest.fixture
def probe_and_data():
    model, shape = build("plain", seed=31)
    images, labels = make_data(model, 40, shape, seed=32)
    return nw.Probe(model, (images, labels), layer="relu2", chunk_size=16), model, images, labels


def test_faithfulness_points_are_cumulative_ablations(probe_and_data):
    probe, model, images, labels = probe_and_data
    ranking = probe.rank("taylor", progress=False)
    curves = nw.faithfulness(probe, ranking, steps=[0, 2, 5, 8], random_orders=2, seed=3, progress=False)
    assert set(curves.curves) == {"taylor, ranked", "taylor, reverse", "random"}
    fill = torch.zeros(probe.layer_info().shape, dtype=torch.float64)
    ranked = curves.curves["taylor, ranked"]
    for k, accuracy in zip(ranked.ks, ranked.accuracy):
        expected = reference.scores_with(model, "relu2", images, ranking.order[:k].tolist(), fill)
        assert accuracy == pytest.approx(reference.accuracy(expected, labels))
    rng = np.random.default_rng(3)
    orders = [rng.permutation(8) for _ in range(2)]
    expected_random = np.mean(
        [[probe.evaluate(order[:k].tolist()).accuracy for k in (0, 2, 5, 8)] for order in orders], axis=0
    )
    np.testing.assert_allclose(curves.curves["random"].accuracy, expected_random)
    x = np.array([0, 2, 5, 8]) / 8
    assert ranked.auc == pytest.approx(np.trapezoid(ranked.accuracy, x))
    assert curves.baseline == ranked.accuracy[0]
    assert curves.to_dict()["curves"]["random"]["ks"] == [0, 2, 5, 8]
    assert len(curves.plot().axes[0].lines) == 3 + 1


def test_faithfulness_follows_the_rankings_layer_and_rejects_mixed_layers_and_bad_steps(probe_and_data):
    probe, *_ = probe_and_data
    ranking = probe.rank("activation", progress=False)
    on_own_layer = nw.faithfulness(probe, ranking, steps=[0, 3], random_orders=0, progress=False)
    probe.layer = "relu1"  # the probe's default layer does not matter: the ranking says which layer
    elsewhere = nw.faithfulness(probe, ranking, steps=[0, 3], random_orders=0, progress=False)
    assert elsewhere.layer == on_own_layer.layer == "relu2"
    for label, curve in on_own_layer.curves.items():
        np.testing.assert_array_equal(elsewhere.curves[label].accuracy, curve.accuracy)
    other = probe.rank("activation", progress=False)
    with pytest.raises(ValueError, match=r"ranking is of layer 'relu1'.*curves are of layer 'relu2'"):
        nw.faithfulness(probe, [ranking, other])
    with pytest.raises(ValueError, match="steps must be counts between 0 and 6"):
        nw.faithfulness(probe, other, steps=[0, 9])


def test_completeness_curves(probe_and_data):
    probe, model, images, labels = probe_and_data
    curves = nw.completeness(probe, steps=[0, 1, 3, 8], progress=False)
    assert set(curves.curves) == {
        "components, descending",
        "neurons, descending",
        "components, ascending",
        "neurons, ascending",
    }
    basis = probe.components()
    top = np.argsort(-basis.neuron_variances, kind="stable")[:3].tolist()
    fill = torch.as_tensor(basis.mean).reshape(-1, 1, 1).expand(probe.layer_info().shape)
    expected = reference.scores_with(model, "relu2", images, top, fill)
    assert curves.curves["neurons, descending"].accuracy[2] == pytest.approx(reference.accuracy(expected, labels))
    assert curves.curves["components, descending"].accuracy[1] == probe.evaluate(ablate_components=[0]).accuracy
    assert curves.curves["components, ascending"].accuracy[1] == probe.evaluate(ablate_components=[7]).accuracy
    everything = [c.accuracy[-1] for c in curves.curves.values()]
    assert max(everything) - min(everything) < 1e-12  # removing all 8 directions is the same in any basis
    assert curves.extra["needed_80"]["components"] <= curves.extra["needed_80"]["neurons"]


def test_attribute_correlations_match_scipy():
    model, data = nw.demo.load()
    probe = nw.Probe(model, data, layer="relu2")
    report = nw.attribute_correlations(probe, progress=False)
    units = report["units"]
    images = data.images
    acts = reference.layer_output(model, "relu2", images).double().numpy()
    means = acts.reshape(len(images), 32, -1).mean(2)
    with torch.no_grad():
        probabilities = model(images).double().softmax(1).numpy()
    with np.errstate(invalid="ignore"):  # a dead unit has no correlation: numpy says NaN, we say 0
        expected = np.nan_to_num(
            [[np.corrcoef(means[:, u], probabilities[:, k])[0, 1] for k in range(10)] for u in range(32)]
        )
    np.testing.assert_allclose(class_correlation(means, probabilities), expected, atol=1e-6)
    np.testing.assert_allclose(units["max_class_correlation"], expected.max(1), atol=1e-5)
    for damage in ("overall_drop", "max_class_drop", "classes_hurt"):
        rho = report["correlations"]["selectivity"][damage]
        assert rho == pytest.approx(spearmanr(units["selectivity"], units[damage]).statistic)
    assert set(report["correlations"]) == {"selectivity", "max_class_correlation", "weight_l1"}
    drops = probe.rank("ablation", progress=False).meta["drop_matrix"]
    pairs = spearmanr(units["class_correlation"].ravel(), drops.ravel()).statistic
    assert report["pairs"]["class_correlation_vs_class_drop"] == pytest.approx(pairs)
