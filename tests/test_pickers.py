"""Issue 15, point 2: the overlay picks any unit and can follow a RankedList; the panel toggles any unit."""

from __future__ import annotations

import pytest
import traitlets

import neuronwidgets as nw
from tests.test_widgets import custom, errors, outbox, update


@pytest.fixture(scope="module")
def probe():
    model, data = nw.demo.load()
    return nw.Probe(model, data, layer="relu2")


def changes_of(widget) -> list[str]:
    """The names of the public traits of ``widget`` that change from now on (not ipywidgets' own)."""
    names: list[str] = []

    def record(change: dict) -> None:
        if not change["name"].startswith("_"):
            names.append(change["name"])

    widget.observe(record, names=traitlets.All)
    return names


def test_the_overlays_unit_is_set_from_the_front_end_and_checked(probe):
    overlay = nw.ActivationOverlay(probe, unit=0, k=3)
    assert overlay.wait(30) and "unit" in overlay._writable
    sent = outbox(overlay)
    update(overlay, unit=31)  # the picker's number field, or its next button
    assert overlay.wait(30) and overlay.shown["unit"] == 31 and not errors(sent)
    update(overlay, unit=32)  # the view refuses it first; a message that still comes is refused here
    assert errors(sent) == ["unit must be in 0..31 (layer 'relu2'), got 32"]
    assert overlay.unit == 31


def test_the_overlay_follows_a_ranked_lists_clicks_until_unfollowed(probe):
    ranked = nw.RankedList(probe, method="weight_l1")
    assert ranked.wait(30)
    update(ranked, selected_unit=5)
    overlay = nw.ActivationOverlay(probe, k=3)
    assert overlay.following is None
    touched = changes_of(ranked)
    layer_before = probe.layer
    overlay.follow(ranked)
    assert overlay.following is ranked and overlay.unit == 5  # what the list selects now
    update(ranked, selected_unit=9)  # a click on a row
    assert overlay.unit == 9
    assert overlay.wait(30) and overlay.shown["unit"] == 9
    update(ranked, selected_unit=None)  # nothing selected: the overlay keeps its unit
    assert overlay.unit == 9 and overlay.error == ""
    update(overlay, unit=2)  # the overlay's own picker still works while following
    assert overlay.unit == 2 and ranked.selected_unit is None
    overlay.unfollow()
    assert overlay.following is None
    update(ranked, selected_unit=12)
    assert overlay.unit == 2  # no longer followed
    overlay.unfollow()  # twice: nothing to undo
    # nothing was ever set on the list (its changes were the clicks) or on the probe
    assert set(touched) == {"selected_unit"} and ranked.selected_unit == 12 and ranked.error == ""
    assert probe.layer == layer_before


def test_following_another_list_stops_following_the_first(probe):
    first, second = nw.RankedList(probe, method="weight_l1"), nw.RankedList(probe.rank("weight_l1"))
    overlay = nw.ActivationOverlay(probe, k=3)
    overlay.follow(first)
    overlay.follow(second)  # a list of a finished Ranking works too
    assert overlay.following is second
    update(first, selected_unit=7)
    assert overlay.unit == 0
    update(second, selected_unit=8)
    assert overlay.unit == 8
    overlay.close()  # closing the overlay stops following: the list keeps no handler of it
    update(second, selected_unit=3)
    assert overlay.following is None and overlay.unit == 8
    first.wait(30)


def test_follow_refuses_a_list_of_another_layer_and_what_is_not_a_list(probe):
    overlay = nw.ActivationOverlay(probe, layer="relu3", k=3)
    other = nw.RankedList(probe.rank("weight_l1", layer="relu2"))
    with pytest.raises(ValueError, match=r"ranks layer 'relu2' but this overlay shows layer 'relu3'") as caught:
        overlay.follow(other)
    assert "overlay.layer = 'relu2'" in str(caught.value)  # and says the fix
    for wrong in (probe, probe.rank("weight_l1", layer="relu3"), None):
        with pytest.raises(TypeError, match=f"follow needs a RankedList, got {type(wrong).__name__}"):
            overlay.follow(wrong)
    assert overlay.following is None
    overlay.layer = "relu2"
    overlay.follow(other)
    assert overlay.following is other


def test_a_followed_list_that_changes_layer_takes_the_overlay_along(probe):
    ranked = nw.RankedList(probe, method="weight_l1")
    overlay = nw.ActivationOverlay(probe, k=3)
    overlay.follow(ranked)
    update(ranked, layer="relu3")  # the list's layer picker
    assert overlay.layer == "relu3" and overlay.units == 64
    assert ranked.wait(30)
    update(ranked, selected_unit=50)  # a unit only relu3 has
    assert overlay.unit == 50 and overlay.wait(30)
    assert (overlay.shown["unit"], overlay.shown["layer"]) == (50, "relu3")
    # moved away by hand: a click on the list's layer is not shown as a unit of another layer, and says so
    overlay.layer = "conv1"
    sent = outbox(overlay)
    update(ranked, selected_unit=40)
    assert overlay.unit == 0 and overlay.layer == "conv1"
    assert errors(sent) == [
        "unit 40 selected in the followed list is of layer 'relu3', but this overlay shows layer 'conv1': not shown"
        " (set overlay.layer = 'relu3')"
    ]
    assert ranked.selected_unit == 40 and ranked.error == ""  # the list is not disturbed


def test_an_explorers_overlay_picks_its_own_unit_too(probe):
    explorer = nw.Explorer(probe, method="weight_l1")
    assert explorer.wait(60)
    update(explorer.ranked_list, selected_unit=4)
    assert explorer.overlay.unit == 4
    update(explorer.overlay, unit=20)  # the overlay's picker: the list keeps its selection
    assert explorer.overlay.unit == 20 and explorer.shown["unit"] == 20 and explorer.selected_unit == 4
    update(explorer.ranked_list, selected_unit=6)
    assert explorer.overlay.unit == 6
    assert explorer.wait(60)


def test_the_panel_toggles_a_unit_outside_its_top_16_through_the_front_end_message(probe):
    ranking = probe.rank("weight_l1")
    panel = nw.AblationPanel(probe, ranking=ranking)
    assert panel.wait(30)
    unit = int(ranking.order[28])  # rank 29: the view shows no toggle for it (js/ablation-panel.js TOGGLES)
    custom(panel, {"type": "toggle", "unit": unit})  # the number field's Enter, or its toggle button
    assert panel.toggled == [unit]
    assert panel.wait(30) and panel.ablated == [unit] and panel.after["ablated"] == [unit]
    assert panel.after["accuracy"] == pytest.approx(probe.evaluate(ablate=[unit]).accuracy)
    sent = outbox(panel)
    custom(panel, {"type": "toggle", "unit": 32})  # out of range: refused, nothing changes
    assert errors(sent) == ["toggle: unit must be an integer in 0..31, got 32"]
    assert panel.toggled == [unit]
    update(panel, k=30)  # now in the top k: its toggle keeps it (the chip "unit N kept")
    assert panel.wait(30) and unit not in panel.ablated and len(panel.ablated) == 29
    custom(panel, {"type": "toggle", "unit": unit})  # the chip's ×
    assert panel.wait(30) and panel.toggled == [] and panel.ablated == sorted(int(u) for u in ranking.order[:30])
