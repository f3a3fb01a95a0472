"""The ActivationOverlay's feature visualisation tile: asked for by a message, computed on the probe's worker,
sent as a PNG buffer, cancelled, dropped when stale, shown again from the cache, in the Explorer too."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers
from PIL import Image

import neuronwidgets as nw
from neuronwidgets.widgets._worker import lane_of
from tests.test_widgets import custom, errors, outbox, update


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: a visualisation feeds one image at a time (see neuronwidgets/visualize.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def probe():
    model, data = nw.demo.load()
    return nw.Probe(model, data, layer="relu3")


def ask(overlay) -> None:
    """Press the tile's button, as the view sends it: the unit and layer shown."""
    custom(overlay, {"type": "visualize", "unit": overlay.unit, "layer": overlay.layer})


def best_mean(probe, unit: int, layer: str) -> tuple[int, float]:
    """The image with the largest mean of ``unit``'s map, by a plain forward hook over all the data."""
    maps = []
    module = dict(probe.model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, out: maps.append(out[:, unit].flatten(1).mean(1)))
    try:
        with torch.no_grad():
            probe.model(probe.source.take(list(range(len(probe.source)))).images)
    finally:
        handle.remove()
    means = torch.cat(maps)
    return int(means.argmax()), float(means.max())


def test_the_tile_is_computed_on_request_and_sent_as_a_png_buffer(probe):
    overlay = nw.ActivationOverlay(probe, unit=3, k=2)
    assert overlay.wait(60) and overlay.visual == {}  # nothing computed until asked for
    sent = outbox(overlay)
    ask(overlay)
    assert overlay.visual == {"unit": 3, "layer": "relu3", "state": "running"} and overlay.status == "running"
    assert overlay.wait(60) and not errors(sent) and overlay.status == "idle"
    visual = overlay.visual
    expected = probe.visualize(3, layer="relu3")  # the probe's cache: the very result the tile shows
    assert visual["state"] == "done" and (visual["unit"], visual["layer"]) == (3, "relu3")
    assert visual["activation"] == expected.activation and visual["steps"] == expected.steps
    index, best = best_mean(probe, 3, "relu3")
    assert visual["best_index"] == index and visual["best"] == pytest.approx(best, rel=1e-5)
    assert visual["activation"] > visual["best"]
    picture = np.asarray(Image.open(io.BytesIO(bytes(visual["image"]))).convert("RGB"))
    assert np.array_equal(picture, expected.image)
    state, paths, buffers = _remove_buffers(overlay.get_state())
    assert bytes(buffers[paths.index(["visual", "image"])]) == bytes(visual["image"])
    assert "iVBOR" not in str(state)  # a binary buffer, never base64
    assert "its feature visualisation: what excites it, mean" in overlay.describe()
    assert overlay.snapshot().size[0] > 0
    # another unit: the tile is cleared; back to unit 3, its visualisation is shown again from the cache
    update(overlay, unit=4)
    assert overlay.visual == {}
    assert overlay.wait(60) and overlay.visual == {}
    update(overlay, unit=3)
    assert overlay.wait(60) and overlay.visual == visual
    overlay.layer = "relu2"  # the layer is set in Python (or by a followed list)
    assert overlay.visual == {} and overlay.wait(60) and overlay.visual == {}


def test_stale_requests_and_results_are_dropped(probe):
    overlay = nw.ActivationOverlay(probe, unit=5, k=2)
    assert overlay.wait(60)
    sent = outbox(overlay)
    custom(overlay, {"type": "visualize", "unit": 6, "layer": "relu3"})  # pressed while unit 6 was shown
    assert overlay.visual == {} and not errors(sent)
    for bad in ({"unit": "5", "layer": "relu3"}, {"unit": True, "layer": "relu3"}, {"unit": 5}):
        custom(overlay, {"type": "visualize", **bad})
        assert errors(sent)[-1].startswith("a visualize message names the unit shown"), bad
    overlay.error = ""
    started, gate = threading.Event(), threading.Event()
    visualize = probe.visualize

    def held(unit, **options):
        started.set()
        gate.wait(30)
        return visualize(unit, **options)

    probe.visualize = held
    try:
        ask(overlay)
        assert started.wait(30)
        update(overlay, unit=6)  # while unit 5's visualisation runs
        assert overlay.visual == {}
        gate.set()
        assert overlay.wait(60)
    finally:
        del probe.visualize
    assert overlay.visual == {} and overlay.status == "idle" and overlay.shown["unit"] == 6  # dropped
    update(overlay, unit=5)  # asked for before: computed again on coming back, its run having been dropped
    assert overlay.visual["state"] == "running"
    assert overlay.wait(60) and overlay.visual["state"] == "done" and overlay.visual["unit"] == 5


def test_cancel_keeps_the_kernel_and_the_tile_says_so(probe):
    overlay = nw.ActivationOverlay(probe, unit=7, k=2)
    assert overlay.wait(60)
    started = threading.Event()
    visualize = probe.visualize

    def held(unit, *, cancel, **options):
        started.set()
        cancel.wait(30)  # runs until cancelled
        return visualize(unit, cancel=cancel, **options)

    probe.visualize = held
    try:
        ask(overlay)
        assert started.wait(30) and overlay.status == "running"
        custom(overlay, {"type": "cancel"})
        assert overlay.wait(30)
    finally:
        del probe.visualize
    assert overlay.visual == {"unit": 7, "layer": "relu3", "state": "cancelled"} and overlay.status == "cancelled"
    assert overlay.shown["unit"] == 7 and len(overlay.tiles) == 2  # the images stay
    ask(overlay)  # asked for again: it runs to the end
    assert overlay.wait(60) and overlay.visual["state"] == "done" and overlay.status == "idle"


def test_an_error_shows_in_the_widget_and_the_tile(probe):
    overlay = nw.ActivationOverlay(probe, unit=8, k=2)
    assert overlay.wait(60)
    sent = outbox(overlay)

    def broken(unit, **options):
        raise RuntimeError("out of memory")

    probe.visualize = broken
    try:
        ask(overlay)
        assert overlay.wait(30)
    finally:
        del probe.visualize
    assert overlay.visual == {"unit": 8, "layer": "relu3", "state": "error"} and overlay.status == "error"
    assert errors(sent) == ["RuntimeError: out of memory"] and overlay.error == "RuntimeError: out of memory"


def test_a_visualisation_queues_behind_no_ranking(probe):
    """Its own lane: a click's visualisation runs while a ranking waits (the model taken step by step)."""
    assert lane_of("12:visualize") == "visualize"
    ranked = nw.RankedList(probe, method="activation")
    assert ranked.wait(60)
    overlay = nw.ActivationOverlay(probe, unit=9, k=2)
    assert overlay.wait(60)
    started, gate = threading.Event(), threading.Event()
    rank = probe.rank

    def held(method, **options):
        started.set()
        gate.wait(60)
        return rank(method, **options)

    probe.rank = held
    try:
        update(ranked, method="weight_l1")
        assert started.wait(30)
        ask(overlay)
        done = threading.Event()
        overlay.observe(lambda c: done.set() if c["new"].get("state") == "done" else None, names=["visual"])
        assert done.wait(60)  # while the ranking still waits
        assert not gate.is_set() and ranked.status == "running"
    finally:
        gate.set()
        ranked.wait(60)
        del probe.rank


def test_the_explorers_overlay_shows_the_tile(probe):
    explorer = nw.Explorer(probe, method="activation")
    assert explorer.wait(60)
    overlay = explorer.overlay
    ask(overlay)
    assert explorer.wait(60) and overlay.visual["state"] == "done" and overlay.visual["unit"] == overlay.unit
    unit = overlay.unit
    other = next(u for u in explorer.ranked_list.ranking.order.tolist() if u != unit)
    update(explorer.ranked_list, selected_unit=other)
    assert overlay.visual == {}
    assert explorer.wait(60) and overlay.visual == {}
    update(explorer.ranked_list, selected_unit=unit)
    assert explorer.wait(60) and overlay.visual["state"] == "done" and overlay.visual["unit"] == unit
    assert "feature visualisation" in explorer.describe()
