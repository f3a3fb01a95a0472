"""MonitorView: the traits a Monitor's snapshots set while the training loop runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import traitlets

import neuronwidgets as nw
from neuronwidgets.demo import DigitsCNN


@pytest.fixture
def training():
    """An untrained demo CNN, its optimiser, and the bundled digits (training and watched halves)."""
    torch.manual_seed(0)
    _, data = nw.demo.load()
    model = DigitsCNN()
    return model, torch.optim.SGD(model.parameters(), lr=0.05), data.images, data.labels


def train(model, optimizer, images, labels, steps: int, monitor: nw.Monitor) -> None:
    model.train()
    for i in range(steps):
        batch = slice(16 * i % 240, 16 * i % 240 + 16)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
        monitor.step()


def test_view_follows_the_monitor_and_keeps_its_callback(training):
    model, optimizer, images, labels = training
    seen = []
    monitor = nw.Monitor(model, (images[240:], labels[240:]), layer="relu3", every=2, on_update=seen.append)
    view = nw.MonitorView(monitor, top=4)
    assert view.steps == [] and view.lines == [] and view.info["step"] is None
    assert view.info == {**view.info, "method": "taylor", "layer": "relu3", "units": 64, "every": 2}
    pushes = []
    view.observe(lambda change: pushes.append(change["new"]), names=["steps"])
    train(model, optimizer, images, labels, 6, monitor)
    assert len(seen) == 3 and pushes == [[2], [2, 4], [2, 4, 6]]  # one update per snapshot, mid-loop
    ranks = monitor.ranks()
    assert [line["unit"] for line in view.lines] == monitor.history[-1].ranking.order[:4].tolist()
    for line in view.lines:
        assert line["ranks"] == ranks[:, line["unit"]].tolist()
    assert view.lines[0]["ranks"][-1] == 0
    np.testing.assert_allclose(view.stability, monitor.stability())
    assert view.died == monitor.died() and view.emerged == monitor.emerged()
    assert view.info["step"] == 6 and view.info["snapshots"] == 3 and view.info["monitor_seconds"] > 0
    view.top = 2
    assert len(view.lines) == 2


def test_view_of_a_monitor_with_history_and_errors(training):
    model, optimizer, images, labels = training
    monitor = nw.Monitor(model, (images[240:], labels[240:]), layer="relu2", every=1)
    train(model, optimizer, images, labels, 2, monitor)
    view = nw.MonitorView(monitor)
    assert view.steps == [1, 2] and len(view.lines) == 8 and len(view.stability) == 1
    data, _ = view._repr_mimebundle_()
    assert data["image/png"][:4] == b"\x89PNG"
    with pytest.raises(TypeError, match="valid: top"):
        nw.MonitorView(monitor, colour="red")
    with pytest.raises(TypeError, match="needs a Monitor"):
        nw.MonitorView(model)
    with pytest.raises(traitlets.TraitError, match="'top' trait of a MonitorView instance should not be less than 1"):
        view.top = 0


def test_a_display_error_never_stops_training(training, monkeypatch):
    model, optimizer, images, labels = training
    monitor = nw.Monitor(model, (images[240:], labels[240:]), layer="relu3", every=1)
    view = nw.MonitorView(monitor)
    monkeypatch.setattr(view, "_sync", lambda: 1 / 0)
    train(model, optimizer, images, labels, 2, monitor)
    assert monitor.steps == [1, 2] and "ZeroDivisionError" in view.error
