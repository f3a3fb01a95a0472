"""The Explorer as one anywidget: its state references its three views, its own traits are the views' state
(what marimo's ``mo.ui.anywidget(explorer).value`` reads), linked both ways, and the model stays untouched."""

from __future__ import annotations

import anywidget
import pytest
import torch
import traitlets
from ipywidgets.widgets.widget import _remove_buffers

import neuronwidgets as nw
from neuronwidgets.widgets._base import STATIC
from neuronwidgets.widgets.explorer import LINKED
from tests.test_widgets import errors, outbox, update


@pytest.fixture(scope="module")
def probe():
    model, data = nw.demo.load()
    return nw.Probe(model, data, layer="relu3")


@pytest.fixture
def explorer(probe):
    explorer = nw.Explorer(probe, method="activation")
    assert explorer.wait(60)
    return explorer


def state(widget) -> dict:
    """The widget's state as the front end gets it (marimo's ``.value`` is this, less ipywidgets' own keys)."""
    return _remove_buffers(widget.get_state())[0]


def test_its_state_references_the_three_views(explorer):
    assert isinstance(explorer, anywidget.AnyWidget)
    assert explorer._esm == (STATIC / "explorer.js").read_text()  # the bundle of js/explorer.js
    assert explorer._css == (STATIC / "widgets.css").read_text()
    sent = state(explorer)
    for name in ("ranked_list", "overlay", "panel"):
        assert sent[name] == f"IPY_MODEL_{getattr(explorer, name).model_id}"
    assert explorer.children == (explorer.ranked_list, explorer.overlay, explorer.panel)
    with pytest.raises(traitlets.TraitError, match="read-only"):
        explorer.panel = explorer.panel  # the links are to these views
    assert sent["_key"] and sent["_key"] not in {view._key for view in explorer.children}


def test_its_own_traits_are_the_views_state(explorer):
    ranked, overlay, panel = explorer.children
    sent = state(explorer)
    assert {name: sent[name] for name in LINKED} == {
        "selected_unit": None,
        "method": "activation",
        "target": None,
        "layer": "relu3",
        "k": 0,
        "mode": "zero",
        "toggled": [],
    }
    assert sent["shown"] == {
        "ranking": {"method": "activation", "layer": "relu3", "target": None, "units": 64, "provisional": False},
        "unit": int(ranked.ranking.order[0]),
        "overlay": {"mode": "activation", "target": None},
        "accuracy": {"before": panel.before["accuracy"], "after": panel.before["accuracy"], "ablated": []},
    }
    # a click in the list and a slider move, as the views' front ends send them
    update(ranked, selected_unit=9)
    update(panel, k=3)
    assert explorer.wait(60)
    sent = state(explorer)
    assert sent["selected_unit"] == 9 and sent["k"] == 3 and sent["shown"]["unit"] == 9
    assert sent["shown"]["accuracy"]["ablated"] == panel.ablated and len(panel.ablated) == 3
    assert sent["shown"]["accuracy"]["after"] == panel.after["accuracy"]
    assert overlay.unit == 9 and panel.selected_unit == 9


def test_a_view_change_is_sent_on_the_explorers_model_too(explorer):
    sent = outbox(explorer)
    update(explorer.ranked_list, selected_unit=4)
    assert {"method": "update", "state": {"selected_unit": 4}, "buffer_paths": []} in [d for d, _ in sent]


def test_setting_the_explorers_traits_drives_the_views(explorer):
    ranked, overlay, panel = explorer.children
    explorer.selected_unit = 7
    assert ranked.selected_unit == 7 and overlay.unit == 7 and panel.selected_unit == 7
    explorer.k, explorer.mode, explorer.toggled = 2, "mean", [5, 1]
    assert (panel.k, panel.mode, panel.toggled) == (2, "mean", [1, 5])
    assert explorer.toggled == [1, 5]  # as the panel keeps it
    explorer.layer = "relu2"
    assert explorer.wait(60)
    assert overlay.layer == panel.layer == "relu2" and explorer.selected_unit is None
    assert explorer.shown["ranking"]["layer"] == "relu2" and explorer.shown["ranking"]["units"] == 32


def test_a_value_a_view_refuses_changes_nothing(explorer):
    ranked, _, panel = explorer.children
    for name, bad in [("k", 999), ("selected_unit", 64), ("layer", "nope"), ("method", "magic"), ("mode", "x")]:
        before = (getattr(explorer, name), ranked.selected_unit, panel.k)
        with pytest.raises(traitlets.TraitError):
            setattr(explorer, name, bad)
        assert (getattr(explorer, name), ranked.selected_unit, panel.k) == before, name


def test_front_end_updates_of_the_explorer_are_checked(explorer):
    """The Explorer's front end repeats the views' changes; the kernel takes the linked traits only, and says
    what it refused in the view concerned."""
    ranked, _, panel = explorer.children
    explorer_sent, panel_sent, list_sent = outbox(explorer), outbox(panel), outbox(ranked)
    update(ranked, selected_unit=3)
    update(explorer, selected_unit=3)  # the repeat: nothing more happens
    assert explorer.selected_unit == 3 and not errors(list_sent)
    update(explorer, k=999)
    assert panel.k == 0 and errors(panel_sent) == ["k must be in 0..64, got 999"]
    assert explorer_sent[-1][0] == {"method": "update", "state": {"k": 0}, "buffer_paths": []}
    update(explorer, shown={}, ranked_list=None)
    assert errors(list_sent)[-1].startswith("the front end may not set the Explorer's ranked_list, shown;")
    assert isinstance(explorer.ranked_list, nw.RankedList)


def test_the_model_is_untouched(probe):
    model = probe.model
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    training = model.training
    explorer = nw.Explorer(probe, method="weight_l1")
    explorer.selected_unit, explorer.k = 5, 4
    assert explorer.wait(60)
    update(explorer.panel, mode="mean")
    assert explorer.wait(60) and explorer.shown["accuracy"]["after"] is not None
    assert model.training == training
    assert all(torch.equal(weights[name], value) for name, value in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def test_marimo_value_is_the_explorers_state(explorer):
    """What `mo.ui.anywidget(explorer).value` returns, read by marimo's own function (no marimo runtime)."""
    pytest.importorskip("marimo")
    from marimo._plugins.ui._impl.from_anywidget import get_anywidget_state

    update(explorer.ranked_list, selected_unit=11)
    value = get_anywidget_state(explorer)
    assert value["selected_unit"] == 11 and value["shown"]["unit"] == 11
    assert value["ranked_list"] == f"IPY_MODEL_{explorer.ranked_list.model_id}"
    assert "_esm" not in value and "layout" not in value
