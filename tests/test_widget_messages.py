"""Issue 9, widget side: no shared layer, the public message API, declared methods, checked traits, typed arrays."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import traitlets

import neuronwidgets as nw
from neuronwidgets.methods import specs
from neuronwidgets.widgets import ranked_list
from neuronwidgets.widgets._arrays import array_from_json, array_to_json, array_trait
from neuronwidgets.widgets._images import thumbnail
from tests.test_widgets import EVIL, custom, errors, outbox, update


class LayerWatch(nw.Probe):
    """A Probe that records every assignment to ``layer`` and the thread that made it."""

    def __setattr__(self, name, value):
        if name == "layer" and hasattr(self, "_layer_sets"):
            self._layer_sets.append((value, threading.current_thread().name))
        super().__setattr__(name, value)


@pytest.fixture(scope="module")
def probe():
    model, data = nw.demo.load()
    return nw.Probe(model, data, layer="relu3")


@pytest.fixture
def watched():
    model, data = nw.demo.load()
    probe = LayerWatch(model, data, layer="relu3")
    probe._layer_sets = []
    return probe


# -- 1. no shared mutable layer --------------------------------------------------------------------------------


def test_widgets_never_set_the_probe_layer_and_cells_keep_theirs(watched):
    probe = watched
    expected = probe.rank("activation")  # what a cell gets, single-threaded, on the probe's layer
    ranked = nw.RankedList(probe, method="activation", layer="relu2")
    overlay = nw.ActivationOverlay(probe, layer="conv1", unit=2, k=3)
    panel = nw.AblationPanel(probe, ranking=probe.rank("weight_l1", layer="relu1"))
    results = []
    for _ in range(10):  # a notebook-style loop while the widgets work on other layers
        results.append(probe.rank("activation"))
        update(ranked, method="weight_l1" if len(results) % 2 else "activation")
        update(overlay, unit=len(results) % 16)
        update(panel, k=len(results))
    assert ranked.wait(120) and overlay.wait(60) and panel.wait(60)
    assert probe._layer_sets == []  # not even set and restored
    assert probe.layer == "relu3"
    for result in results:
        assert result.layer == "relu3"
        np.testing.assert_array_equal(result.scores, expected.scores)
    assert ranked.ranking.layer == "relu2" and ranked.info["units"] == 32
    assert overlay.shown["layer"] == "conv1" and overlay.units == 16
    assert panel.after["accuracy"] == pytest.approx(probe.evaluate(ablate=panel.ablated, layer="relu1").accuracy)
    # the user's own change of the probe's layer stands; widgets keep theirs
    probe.layer = "conv2"
    update(ranked, method="activation")
    assert ranked.wait(60) and ranked.ranking.layer == "relu2" and probe.layer == "conv2"


def test_a_thumbnail_is_of_the_widgets_layer(probe):
    ranked = nw.RankedList(probe, method="weight_l1", layer="relu2")
    ranked.wait(30)
    sent = outbox(ranked)
    custom(ranked, {"type": "thumbnail", "unit": 31})
    ranked.wait(30)
    ((data, buffers),) = [(d, b) for d, b in sent if d["content"].get("type") == "thumbnail"]
    assert data["content"]["layer"] == "relu2"
    assert bytes(buffers[0]) == thumbnail(probe, 31, "relu2")
    assert bytes(buffers[0]) != thumbnail(probe, 31, "relu3")
    assert probe.layer == "relu3"


# -- 2. public widget API ----------------------------------------------------------------------------------------


def test_a_users_on_msg_callback_is_called_and_owns_unknown_types(probe):
    ranked = nw.RankedList(probe, method="weight_l1")
    ranked.wait(30)
    sent = outbox(ranked)
    custom(ranked, {"type": "my-own"})
    assert errors(sent) == ["unknown message type 'my-own'; valid: cancel, dismiss, refresh, thumbnail"]
    got = []
    callback = lambda widget, content, buffers: got.append((widget, content, list(buffers)))  # noqa: E731
    ranked.on_msg(callback)
    sent.clear()
    custom(ranked, {"type": "my-own", "x": 1}, [b"\x01"])
    custom(ranked, {"type": "dismiss"})  # the widget's own types are handled and the user sees them too
    assert got == [(ranked, {"type": "my-own", "x": 1}, [b"\x01"]), (ranked, {"type": "dismiss"}, [])]
    assert errors(sent) == []
    custom(ranked, {"type": "thumbnail", "unit": "two"})  # a known type, malformed: still an error
    assert errors(sent)[-1].startswith("thumbnail: unit must be an integer")
    ranked.on_msg(callback, remove=True)
    sent.clear()
    custom(ranked, {"type": "my-own"})
    assert errors(sent) and len(got) == 3


@pytest.mark.parametrize(
    "msg",
    [
        None,
        "text",
        {},
        {"content": None},
        {"content": {"data": None}},
        {"content": {"data": "update"}},
        {"content": {"data": {"method": None}}},
        {"content": {"data": {"method": "update", "state": None}}},
        {"content": {"data": {"method": "update", "state": ["k"]}}},
        {"content": {"data": {"method": "custom", "content": None}}},  # no buffers key either
        {"content": {"data": {"method": "custom", "content": {"type": []}}}, "buffers": []},
        {"content": {"data": {"method": "custom", "content": {"type": "toggle", "unit": 1, "extra": 2}}}},
    ],
)
def test_malformed_messages_never_raise_out(probe, msg):
    panel = nw.AblationPanel(probe, ranking=probe.rank("weight_l1"))
    panel.wait(30)
    sent = outbox(panel)
    panel._handle_msg(msg)
    assert errors(sent) and panel.error
    assert "unhashable" not in panel.error and "Traceback" not in panel.error
    assert panel.k == 0 and probe.layer == "relu3"


def test_front_end_writes_are_guarded_and_put_back(probe):
    panel = nw.AblationPanel(probe, ranking=probe.rank("weight_l1"))
    panel.wait(30)
    sent = outbox(panel)
    panel.set_state({"k": 999})  # the public entry point ipywidgets calls with a front-end update
    assert panel.k == 0 and errors(sent)[-1].startswith("k must be in 0..64")
    restored = [d for d, _ in sent if d.get("method") == "update"]
    assert restored and restored[-1]["state"] == {"k": 0}  # the front end is sent the kernel's value back
    sent.clear()
    panel.set_state({"units": 3, "k": 2})  # a result trait: refused as a whole
    assert errors(sent) == ["the front end may not set units; settable: k, mode, selected_unit, toggled"]
    assert panel.units == 64 and panel.k == 0
    panel.set_state({"k": 2})
    assert panel.k == 2 and panel.wait(30)


# -- 3. methods declare what they need ---------------------------------------------------------------------------


def test_the_list_offers_the_declared_methods_and_their_needs(probe, monkeypatch):
    ranked = nw.RankedList(probe, method="weight_l1")
    ranked.wait(30)
    declared = specs()
    assert [m["name"] for m in ranked.methods] == list(declared)
    for shown in ranked.methods:
        spec = declared[shown["name"]]
        assert shown["description"] == spec.description
        assert (shown["takes_target"], shown["needs_image"]) == (spec.takes_target, spec.needs_image)
    monkeypatch.setattr(ranked, "rerank", lambda: None)  # only the options, not the rankings
    ranked.target, ranked.image = 2, 5
    for name, spec in declared.items():
        ranked.method = name
        expected = {"target": 2} if spec.takes_target else {}
        assert ranked._options() == ({**expected, "image": 5} if spec.needs_image else expected), name


def test_the_preview_shown_first_is_the_declared_one(probe, monkeypatch):
    declared = specs()
    changed = {**declared, "activation": dataclasses.replace(declared["activation"], preview="weight_l1")}
    monkeypatch.setattr(ranked_list, "spec", lambda name: changed[name])
    ranked = nw.RankedList(probe, method="weight_l1", layer="relu2")
    ranked.wait(30)
    infos = []
    ranked.observe(lambda c: infos.append(dict(c["new"])), names=["info"])
    ranked.method = "activation"
    ranked.wait(60)
    assert [(i["method"], i["provisional"]) for i in infos][-2:] == [("weight_l1", True), ("activation", False)]
    assert infos[-2]["estimate_for"] == "activation" and infos[-2]["layer"] == "relu2"
    # a class-specific ranking gets no preview of a class-blind estimate
    infos.clear()
    ranked.target = 1
    ranked.wait(60)
    assert [i["provisional"] for i in infos] == [False]


def test_a_list_that_has_shown_the_preview_shows_it_again_without_ranking_it(probe, monkeypatch):
    declared = specs()
    changed = {**declared, "activation": dataclasses.replace(declared["activation"], preview="weight_l1")}
    monkeypatch.setattr(ranked_list, "spec", lambda name: changed[name])
    ranked = nw.RankedList(probe, method="weight_l1", layer="relu1")
    ranked.wait(30)
    ranked_methods = []
    rank = probe.rank

    def recorded(method, **options):
        ranked_methods.append(method)
        return rank(method, **options)

    monkeypatch.setattr(probe, "rank", recorded)
    infos = []
    ranked.observe(lambda c: infos.append(dict(c["new"])), names=["info"])
    ranked.method = "activation"
    ranked.wait(60)
    assert ranked_methods == ["activation"]
    assert [(i["method"], i["provisional"]) for i in infos] == [("weight_l1", True), ("activation", False)]


class Clocked:
    """A stand-in ranking: only the meta `LiveEstimates` reads."""

    def __init__(self, name, exact=False):
        self.name, self.meta = name, {"exact": exact}


def test_live_estimates_show_a_few_a_second_the_latest_that_waited_and_never_the_exact_one():
    shown, reported = [], []
    live = ranked_list.LiveEstimates(lambda r: shown.append(r.name), reported.append, interval=3600)
    live.update(Clocked("first"))  # the first is shown at once
    live.update(Clocked("second"))  # too soon: waits ...
    live.update(Clocked("third"))  # ... and is replaced by a later one
    live.progress("step")
    assert shown == ["first"] and reported == ["step"]
    live.interval = 0  # the interval has passed: the next progress report shows the estimate that waited
    live.progress("step")
    live.progress("step")
    assert shown == ["first", "third"]
    live.update(Clocked("exact", exact=True))  # the result itself follows: not shown as an estimate
    live.progress("step")
    assert shown == ["first", "third"] and len(reported) == 4


def test_a_sampled_ranking_sends_its_intervals_settled_places_and_images(probe):
    sampled = probe.rank("ablation", top=3, fraction=0.3, seed=0, progress=False, warn=False)
    listed = nw.RankedList(sampled)
    state = listed.get_state(["intervals", "settled"])
    assert state["intervals"]["dtype"] == "float64" and state["intervals"]["shape"] == [probe.units, 2]
    assert state["settled"]["dtype"] == "uint8" and state["settled"]["shape"] == [probe.units]
    np.testing.assert_array_equal(array_from_json(state["intervals"]), sampled.meta["intervals"])
    used = sampled.meta["images_used"]
    assert {k: listed.info[k] for k in ("exact", "images_used", "population", "simultaneous")} == {
        "exact": False,
        "images_used": [used.min(), used.max()],
        "population": len(probe.source),
        "simultaneous": True,
    }
    assert listed.info["top_set"] == sampled.meta["top_set"] and listed.info["confidence"] == 0.95
    # exact: no intervals to draw, and no settled marks without a top set
    exact = nw.RankedList(probe.rank("ablation", progress=False, warn=False))
    assert exact.intervals is None and exact.settled is None and exact.info["exact"] is True
    assert exact.info["images_used"] == [len(probe.source)] * 2
    assert nw.RankedList(probe.rank("taylor", progress=False)).info["exact"] is None


# -- 4. keywords, choices, ranges, typed arrays ------------------------------------------------------------------


@pytest.mark.parametrize("cls", [nw.RankedList, nw.ActivationOverlay, nw.AblationPanel])
def test_keyword_options_are_the_widgets_option_traits(probe, cls):
    valid = sorted(cls.class_trait_names(option=True))
    with pytest.raises(
        TypeError, match=f"unexpected keyword argument\\(s\\) colour, tiles; valid: {', '.join(valid)}$"
    ):
        cls(probe, colour="red", tiles=[])
    assert "error" not in valid and "status" not in valid and "layout" not in valid


def test_explorer_takes_the_lists_options(probe):
    valid = sorted(nw.RankedList.class_trait_names(option=True))
    with pytest.raises(
        TypeError, match=f"Explorer\\(\\) got unexpected keyword argument\\(s\\) scores; valid: {', '.join(valid)}"
    ):
        nw.Explorer(probe, scores=[1.0])


def test_choice_and_range_traits(probe):
    overlay = nw.ActivationOverlay(probe, unit=1, k=2)
    overlay.wait(30)
    with pytest.raises(traitlets.TraitError, match=r"expected any of \['shared', 'image'\], not the str 'log'"):
        overlay.scale = "log"
    with pytest.raises(traitlets.TraitError, match=r"'Accent', .*\.\.\. \(\d+ in all\)"):
        overlay.colormap = EVIL  # names a few of matplotlib's colormaps, not all of them
    with pytest.raises(traitlets.TraitError, match=r"should not be greater than 1\.0"):
        overlay.opacity = 1.5
    with pytest.raises(traitlets.TraitError, match="should not be less than 1"):
        overlay.k = 0
    with pytest.raises(traitlets.TraitError, match="should not be greater than 32"):
        nw.ActivationOverlay(probe, k=33)
    with pytest.raises(traitlets.TraitError, match=r"expected any of \['zero', 'mean'\]"):
        nw.AblationPanel(probe, ranking=probe.rank("weight_l1"), mode="half")
    with pytest.raises(traitlets.TraitError, match="status"):
        overlay.status = "exploded"
    assert overlay.opacity == 0.6 and overlay.k == 2 and overlay.scale == "shared"


def test_arrays_carry_dtype_and_shape():
    big_endian = np.arange(6, dtype=">f8").reshape(2, 3)
    encoded = array_to_json(big_endian)
    assert encoded["dtype"] == "float64" and encoded["shape"] == [2, 3]
    assert bytes(encoded["view"]) == np.arange(6, dtype="<f8").tobytes()  # little-endian, C order
    np.testing.assert_array_equal(array_from_json(encoded), big_endian)
    assert array_to_json(None) is None and array_from_json(None) is None
    with pytest.raises(ValueError, match="cannot send an array of complex128"):
        array_to_json(np.zeros(2, dtype=complex))
    assert bytes(array_to_json(np.arange(4)[::2].astype("int32"))["view"]) == np.array([0, 2], "<i4").tobytes()

    class Holder(traitlets.HasTraits):
        order = array_trait("int32")

    holder = Holder(order=np.array([3, 1, 2], dtype=np.int64))
    assert holder.order.dtype == np.int32 and holder.order.tolist() == [3, 1, 2]
    source = np.array([1, 2], dtype=np.int32)
    holder.order = source
    source[0] = 99  # the trait holds a copy
    assert holder.order.tolist() == [1, 2]
    for bad in ("12", [1.5], np.zeros(2, dtype=complex)):
        with pytest.raises(traitlets.TraitError):
            holder.order = bad


def test_the_panels_order_travels_as_an_int32_array(probe):
    ranking = probe.rank("weight_l1")
    panel = nw.AblationPanel(probe, ranking=ranking, k=3)
    panel.wait(30)
    state = panel.get_state(["order"])["order"]
    assert state["dtype"] == "int32" and state["shape"] == [64]
    np.testing.assert_array_equal(np.frombuffer(state["view"], dtype="<i4"), ranking.order)
    assert panel.ablated == sorted(int(u) for u in ranking.order[:3])


def test_a_fixed_rankings_list_refuses_options_it_would_ignore(probe):
    ranking = probe.rank("weight_l1")
    with pytest.raises(TypeError, match="only selected_unit and labels apply, got layer, method; pass a Probe"):
        nw.RankedList(ranking, method="ablation", layer="relu2")  # would have shown weight_l1 on relu3
    assert nw.RankedList(ranking, selected_unit=2).selected_unit == 2


def test_bools_are_not_indices(probe):
    ranked = nw.RankedList(probe, method="weight_l1")
    ranked.wait(30)
    sent = outbox(ranked)
    update(ranked, selected_unit=True)  # JSON true from a front end: not unit 1
    assert errors(sent) and ranked.selected_unit is None
    with pytest.raises(traitlets.TraitError, match="expected an int, not the bool True"):
        nw.ActivationOverlay(probe, unit=True)
    panel = nw.AblationPanel(probe, ranking=probe.rank("weight_l1"))
    with pytest.raises(traitlets.TraitError):
        panel.toggled = [False]
    panel.k = np.int64(2)
    assert type(panel.k) is int and panel.wait(30)


def test_a_panel_without_a_ranking_ranks_its_own_layer(watched):
    panel = nw.AblationPanel(watched, layer="relu2")
    assert panel.wait(30)
    assert panel.layer == "relu2" and panel.units == 32 and panel.ranking.layer == "relu2"
    explorer = nw.Explorer(watched, method="weight_l1", layer="relu1")
    assert explorer.wait(60) and explorer.panel.layer == "relu1" and explorer.overlay.layer == "relu1"
    assert watched._layer_sets == [] and watched.layer == "relu3"
    with pytest.raises(ValueError, match="differs from the ranking's layer 'relu3'"):
        nw.AblationPanel(watched, ranking=watched.rank("weight_l1"), layer="relu2")
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        nw.AblationPanel(watched, layer="nope")
