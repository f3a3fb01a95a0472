"""Monitor: rankings during training leave the training run bit-for-bit unchanged; compare_models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import neuronwidgets as nw
from neuronwidgets.monitor import Monitor, compare_models
from tests.conftest import build, make_data


def train(model, images, labels, steps, monitor=None):
    """A seeded loop with shuffling and dropout (both draw from torch's global generator) and BatchNorm."""
    torch.manual_seed(123)
    loader = DataLoader(TensorDataset(images, labels), batch_size=8, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    step = 0
    while step < steps:
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            step += 1
            if monitor is not None:
                monitor.step()
            if step == steps:
                break
    return torch.random.get_rng_state()


def test_training_is_unaffected_by_the_monitor():
    model, shape = build("plain", seed=41)
    images, labels = make_data(model, 48, shape, seed=42)
    twin = copy.deepcopy(model)
    watch = DataLoader(TensorDataset(images[:16], labels[:16]), batch_size=8)  # iterating it draws a seed
    seen = []
    monitor = Monitor(twin, watch, layer="relu2", every=3, on_update=seen.append)
    rng_plain = train(model, images, labels, steps=10)
    rng_watched = train(twin, images, labels, steps=10, monitor=monitor)
    assert torch.equal(rng_plain, rng_watched)
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), name  # weights and BatchNorm running statistics
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a.grad, b.grad)
    assert twin.training and all(m.training for m in twin.modules())
    assert monitor.steps == [3, 6, 9] and len(seen) == 3
    assert monitor.ranks().shape == (3, 8)
    assert len(monitor.stability()) == 2 and all(-1 <= s <= 1 for s in monitor.stability())
    assert set(monitor.died()).isdisjoint(monitor.emerged())


def test_monitor_rejects_bad_every():
    model, shape = build("plain")
    with pytest.raises(ValueError, match="every must be at least 1"):
        Monitor(model, make_data(model, 4, shape, seed=0), every=0)


def test_compare_models_reports_agreement_and_movers():
    model, data = nw.demo.load()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.conv3.weight[5].mul_(3.0)
    report = compare_models(model, other, data, "relu3", method="weight_l1", top=3)
    assert report["b"].rank_of(5) == 0
    assert report["moved"][0][0] == 5 and report["moved"][0][2] == 0
    assert 0 < report["agreement"]["spearman"] < 1
    same = compare_models(model, copy.deepcopy(model), data, "relu3", method="weight_l1")
    assert same["agreement"]["spearman"] == pytest.approx(1.0)
    np.testing.assert_array_equal(same["a"].scores, same["b"].scores)


def test_monitor_checks_its_settings_when_made_not_at_step_every():
    model, shape = build("plain")
    images, labels = make_data(model, 8, shape, seed=0)
    data = (images, labels)
    with pytest.raises(ValueError, match=r"unknown method 'taylr'\. Did you mean 'taylor'\? Valid methods: ablation"):
        Monitor(model, data, method="taylr")
    with pytest.raises(TypeError, match="a method name must be a str, got int; valid methods: ablation"):
        Monitor(model, data, method=3)
    with pytest.raises(TypeError, match=r"method 'taylor' got unknown option\(s\) target; valid options: none"):
        Monitor(model, data, options={"target": 1})
    with pytest.raises(TypeError, match=r"unknown option.*progress; valid options: target, mode"):
        Monitor(model, data, method="ablation", options={"progress": True})
    with pytest.raises(ValueError, match=r"target must be a class index.* in 0\.\.4"):
        Monitor(model, data, method="ablation", options={"target": 7})
    with pytest.raises(ValueError, match="taylor needs labels"):
        Monitor(model, images)
    with pytest.raises(TypeError, match="options must be a dict"):
        Monitor(model, data, options=["mode"])
    for every in (True, 2.5, "100"):
        with pytest.raises(TypeError, match="every must be an int"):
            Monitor(model, data, every=every)
    with pytest.raises(TypeError, match="on_update must be a callable"):
        Monitor(model, data, on_update="print")
    with pytest.raises(TypeError, match=r"not its DataParallel wrapper .*: pass model\.module"):
        Monitor(torch.nn.DataParallel(model), data)
    monitor = Monitor(model, data, every=np.int64(2), method="ablation", options={"mode": "mean"})
    with pytest.raises(TypeError, match="step must be an int"):
        monitor.step(1.5)
    assert monitor.step() is None and monitor.step().ranking.method == "ablation"


def test_monitor_ranks_its_own_layer_and_leaves_probe_layer_alone():
    model, shape = build("plain")
    monitor = Monitor(model, make_data(model, 8, shape, seed=0), layer="relu2", every=1)
    monitor.probe.layer = "relu3"  # someone else's choice on the probe: the monitor neither follows nor undoes it
    snapshot = monitor.step()
    assert snapshot.ranking.layer == "relu2" and snapshot.ranking.units == 8 and len(snapshot.alive) == 8
    assert monitor.layer == "relu2" and monitor.probe.layer == "relu3"
