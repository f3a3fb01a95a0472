"""The widgets' traits and message handlers, with messages delivered as the front end sends them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ipywidgets.widgets.widget import _remove_buffers

import neuronwidgets as nw
from neuronwidgets.widgets._worker import Job, Worker

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def probe():
    model, data = nw.demo.load()
    return nw.Probe(model, data, layer="relu3")


def outbox(widget) -> list:
    """Capture what the widget sends to the front end (custom messages and state updates)."""
    sent: list = []
    widget.comm.send = lambda data=None, metadata=None, buffers=None: sent.append((data, buffers))
    return sent


def update(widget, **state) -> None:
    widget._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})


def custom(widget, content, buffers=()) -> None:
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)})


def errors(sent: list) -> list[str]:
    return [d["content"]["message"] for d, _ in sent if d.get("method") == "custom" and d["content"]["type"] == "error"]


def test_unknown_keywords_name_the_valid_ones(probe):
    for cls in (nw.RankedList, nw.ActivationOverlay, nw.AblationPanel, nw.Explorer):
        with pytest.raises(TypeError, match="valid: "):
            cls(probe, colour="red")
    with pytest.raises(TypeError, match="needs a Ranking or a Probe"):
        nw.RankedList([1, 2, 3])


def test_ranked_list_ranks_in_the_background_and_shows_an_estimate_first(probe):
    shown = []
    ranked = nw.RankedList(probe)
    ranked.observe(lambda c: shown.append(dict(c["new"])), names=["info"])
    assert ranked.wait(60)
    assert ranked.status == "idle" and ranked.error == ""
    assert ranked.info["method"] == "ablation" and ranked.info["units"] == probe.units
    # arrays travel as {view, dtype, shape}: one buffer each, with what the front end needs to decode it
    state = ranked.get_state(["scores", "order"])
    assert state["scores"]["dtype"] == "float64" and state["scores"]["shape"] == [probe.units]
    assert state["order"]["dtype"] == "int32" and state["order"]["shape"] == [probe.units]
    scores = np.frombuffer(state["scores"]["view"], dtype=state["scores"]["dtype"])
    order = np.frombuffer(state["order"]["view"], dtype=state["order"]["dtype"])
    np.testing.assert_allclose(scores, ranked.ranking.scores, rtol=1e-6)
    np.testing.assert_array_equal(order, ranked.ranking.order)
    _, paths, _ = _remove_buffers(ranked.get_state())
    assert ["scores", "view"] in paths and ["order", "view"] in paths
    assert ranked.methods and all(
        set(m) == {"name", "description", "takes_target", "needs_target", "needs_image"} for m in ranked.methods
    )
    # a second list shows ablation's own estimates, with intervals, as they refine, then the exact ranking
    second = nw.RankedList(probe)
    infos, intervals = [], []
    second.observe(lambda c: infos.append(dict(c["new"])), names=["info"])
    second.observe(lambda c: intervals.append(c["new"]), names=["intervals"])
    second.wait(60)
    estimates = [i for i in infos if i["provisional"]]
    assert estimates and all(i["method"] == "ablation" and i["exact"] is False for i in estimates)
    assert all(i["images_used"][0] < i["population"] == len(probe.source) for i in estimates)
    assert infos[-1]["provisional"] is False and infos[-1]["exact"] is True
    assert intervals[0].shape == (probe.units, 2) and intervals[-1] is None  # an exact ranking draws none
    np.testing.assert_array_equal(second.ranking.scores, ranked.ranking.scores)  # the result is the exact one
    assert second.ranking.meta["exact"]
    # no Taylor preview for ablation: a list switching to it ranks ablation only
    # a list that has shown taylor shows it again as the estimate at once, without ranking it again
    third = nw.RankedList(probe, method="taylor")
    assert third.wait(60)
    ranked_methods = []
    rank = probe.rank
    probe.rank = lambda method, **options: (ranked_methods.append(method), rank(method, **options))[1]
    try:
        update(third, method="ablation")
        assert third.wait(60) and third.info["method"] == "ablation"
    finally:
        del probe.rank
    assert ranked_methods == ["ablation"]


def test_ranked_list_front_end_messages(probe):
    ranked = nw.RankedList(probe, method="activation")
    ranked.wait(30)
    sent = outbox(ranked)
    update(ranked, selected_unit=5)
    assert ranked.selected_unit == 5 and ranked.error == ""
    update(ranked, target=3)
    ranked.wait(30)
    assert ranked.ranking.target == 3 and ranked.info["target_name"] == "3"
    before = (ranked.method, ranked.selected_unit, ranked.target)
    # malformed messages: an error comes back and nothing changes
    for bad in (
        {"method": "nope"},
        {"selected_unit": 10_000},
        {"selected_unit": "five"},
        {"target": 99},
        {"layer": EVIL},
        {"scores": b"1234"},  # the front end may not set results
        {"selected_unit": 1, "method": "nope"},  # all or nothing
    ):
        sent.clear()
        update(ranked, **bad)
        assert errors(sent), bad
        assert (ranked.method, ranked.selected_unit, ranked.target) == before
    for content in (None, "text", {"type": 3}, {"type": "explode"}, {"type": "thumbnail", "unit": -1}):
        sent.clear()
        custom(ranked, content)
        assert errors(sent), content
    ranked._handle_msg({"content": {}, "buffers": []})
    ranked._handle_msg({"content": {"data": {"method": "teleport"}}, "buffers": []})
    assert ranked.error
    custom(ranked, {"type": "dismiss"})
    assert ranked.error == ""
    # a thumbnail comes back as a PNG buffer, not base64 in JSON
    sent.clear()
    custom(ranked, {"type": "thumbnail", "unit": 2})
    ranked.wait(30)
    ((data, buffers),) = [(d, b) for d, b in sent if d["content"].get("type") == "thumbnail"]
    assert data["content"] == {"type": "thumbnail", "unit": 2, "layer": "relu3"}
    assert bytes(buffers[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_ranked_list_of_a_fixed_ranking(probe):
    ranking = probe.rank("weight_l1")
    ranked = nw.RankedList(ranking, selected_unit=3)
    assert not ranked.interactive and ranked.selected_unit == 3
    assert ranked.info["method"] == "weight_l1" and ranked.layers == ["relu3"]
    sent = outbox(ranked)
    custom(ranked, {"type": "thumbnail", "unit": 1})
    assert "need a Probe" in errors(sent)[0]


def test_ranking_errors_show_in_the_widget(probe):
    ranked = nw.RankedList(probe, method="activation")
    ranked.wait(30)
    sent = outbox(ranked)
    update(ranked, method="resampling_precision", image=10**6)  # image out of range: refused
    assert errors(sent) and ranked.method == "activation"
    ranked.ranking = None
    model, data = nw.demo.load()
    unlabelled = nw.Probe(model, data.images[:20])
    failing = nw.RankedList(unlabelled, method="selectivity")
    failing.wait(30)
    assert failing.status == "error" and "labels" in failing.error


def test_a_method_for_one_class_asks_for_a_class_and_a_success_clears_a_stale_error(probe):
    ranked = nw.RankedList(probe, method="activation")
    assert ranked.wait(30)
    offered = {m["name"]: m for m in ranked.methods}
    assert offered["pcace"]["needs_target"] and not offered["ablation"]["needs_target"]
    shown = ranked.ranking
    update(ranked, method="pcace")  # "all classes" is chosen: nothing to rank yet
    assert ranked.wait(30)
    assert ranked.prompt == "pcace ranks the units for one class: pick a class"
    assert ranked.status == "idle" and ranked.error == "" and ranked.ranking is shown
    update(ranked, target=3)
    assert ranked.wait(120)
    assert ranked.prompt == "" and ranked.info["method"] == "pcace" and ranked.info["target"] == 3
    ranked.error = "an earlier request failed"  # as a failed request leaves it
    update(ranked, method="activation")  # for class 3: ranked on the worker
    assert ranked.wait(30)
    assert ranked.error == "" and ranked.info["method"] == "activation"
    ranked.error = "an earlier request failed"
    update(ranked, method="pcace")  # cached: shown at once
    assert ranked.error == "" and ranked.info["method"] == "pcace"


def test_cancel_a_long_ranking_keeps_the_kernel_and_the_list(probe):
    ranked = nw.RankedList(probe, method="activation")
    ranked.wait(30)
    shown = ranked.ranking
    update(ranked, method="car")
    deadline = time.monotonic() + 30
    while not ranked.progress and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ranked.status == "running" and ranked.progress["total"] > 0
    assert {"done", "eta", "elapsed", "description"} <= set(ranked.progress)
    custom(ranked, {"type": "cancel"})
    assert ranked.wait(30)
    assert ranked.status == "cancelled" and ranked.ranking is shown


def test_cancel_while_an_estimate_refines_shows_the_ranking_before_again(probe):
    ranked = nw.RankedList(probe, method="activation", layer="relu2")
    ranked.wait(30)
    shown = ranked.ranking
    looked = threading.Event()
    rank = probe.rank

    def held(method, *, update=None, cancel=None, **options):
        def look(estimate):
            update(estimate)
            looked.set()
            cancel.wait(30)  # the ranking stays at its first estimate until the list cancels it

        return rank(method, update=None if update is None else look, cancel=cancel, **options)

    probe.rank = held
    try:
        update(ranked, method="ablation")
        assert looked.wait(30)
        assert ranked.info["provisional"] and ranked.info["exact"] is False and ranked.intervals is not None
        custom(ranked, {"type": "cancel"})
        assert ranked.wait(30)
    finally:
        del probe.rank
    assert ranked.status == "cancelled" and ranked.ranking is shown
    assert ranked.info["provisional"] is False and ranked.info["exact"] is None and ranked.intervals is None


def test_overlay_sends_png_buffers_and_validates(probe):
    overlay = nw.ActivationOverlay(probe, unit=3, k=4, image=7)
    overlay.wait(30)
    assert overlay.status == "idle" and len(overlay.tiles) == 5
    assert overlay.tiles[0]["chosen"] and overlay.tiles[0]["index"] == 7
    assert overlay.shown["unit"] == 3
    state, paths, buffers = _remove_buffers(overlay.get_state())
    assert ["tiles", 0, "map"] in paths and ["colorbar"] in paths
    assert all(bytes(b)[:4] == b"\x89PNG" for b in buffers)
    assert "iVBOR" not in str(state)  # no base64 PNG in the JSON
    vmaxes = {t["vmax"] for t in overlay.tiles}
    assert len(vmaxes) == 1  # shared scale
    sent = outbox(overlay)
    update(overlay, scale="image", colormap="viridis")
    overlay.wait(30)
    assert len({t["vmax"] for t in overlay.tiles}) > 1 and overlay.shown["colormap"] == "viridis"
    for bad in ({"colormap": EVIL}, {"opacity": 2}, {"unit": 64}, {"k": 0}, {"image": -1}, {"tiles": []}):
        sent.clear()
        update(overlay, **bad)
        assert errors(sent), bad
    assert overlay.colormap == "viridis" and overlay.unit == 3
    overlay.layer = "conv1"
    overlay.wait(30)
    assert overlay.units == 16 and overlay.shown["layer"] == "conv1"


def test_overlay_can_hide_the_maps_border(probe):
    """The outer ring of each map (shaped by zero padding) is transparent and left out of the scale and peak."""
    import io

    from PIL import Image

    overlay = nw.ActivationOverlay(probe, layer="relu1", unit=2, k=3)
    assert overlay.wait(30)
    whole = [tile["peak"] for tile in overlay.tiles]
    indices = [tile["index"] for tile in overlay.tiles]
    update(overlay, hide_border=True)
    assert overlay.wait(30) and overlay.shown["hide_border"]
    maps = probe.activation_maps(2, [t["index"] for t in overlay.tiles], layer="relu1")
    inside = maps[:, 1:-1, 1:-1]
    assert overlay.vrange == pytest.approx([float(inside.min()), float(inside.max())])
    assert [t["peak"] for t in overlay.tiles] == pytest.approx([float(m.max()) for m in inside])
    assert [t["index"] for t in overlay.tiles] == indices and whole  # the same images
    for key in ("map", "raw"):
        picture = np.asarray(Image.open(io.BytesIO(bytes(overlay.tiles[0][key]))))
        assert picture.shape[-1] == 4, key
        h = picture.shape[0]
        ring = max(1, h // maps.shape[1])  # one map cell, upsampled
        assert (picture[:ring, :, 3] == 0).all() and (picture[:, -ring:, 3] == 0).all(), key
        assert (picture[ring:-ring, ring:-ring, 3] == 255).all(), key
    assert overlay.snapshot().size[0] > 0  # the saved picture blends the clear ring as the image


def test_overlay_contribution_mode_shows_a_classs_top_images_on_a_signed_scale(probe):
    import io

    from PIL import Image

    overlay = nw.ActivationOverlay(probe, unit=5, k=4)
    assert overlay.wait(30) and overlay.shown["mode"] == "activation"
    assert overlay.classes == probe.classes and overlay.diverging_colormaps[0] == "RdBu_r"
    assert all(tile["total"] is None for tile in overlay.tiles)
    sent = outbox(overlay)
    update(overlay, mode="contribution", target=3)
    assert overlay.wait(60) and not errors(sent)
    assert overlay.shown | {"mode": "contribution", "target": 3, "colormap": "RdBu_r"} == overlay.shown
    indices = [tile["index"] for tile in overlay.tiles]
    assert indices == probe.top_images(5, 4, by="contribution", target=3).tolist()
    maps = probe.contribution_maps(5, indices, target=3)
    assert [tile["total"] for tile in overlay.tiles] == pytest.approx(maps.sum((1, 2)).tolist(), rel=1e-5)
    largest = float(np.abs(maps).max())
    assert overlay.vrange == pytest.approx([-largest, largest])  # symmetric: zero is the colormap's middle
    alphas = []
    for tile, amap in zip(overlay.tiles, maps):  # the raw map, one pixel per cell: red up, blue down
        raw = np.asarray(Image.open(io.BytesIO(bytes(tile["raw"]))).convert("RGB")).astype(int)
        overlaid = np.asarray(Image.open(io.BytesIO(bytes(tile["map"]))))
        assert overlaid.shape[-1] == 4  # clear near zero, opaque at the largest value (`render.fade_near_zero`)
        alphas.append(int(overlaid[..., 3].max()))
        top = np.unravel_index(amap.argmax(), amap.shape)
        assert raw[top][0] > raw[top][2]
        if amap.min() < -0.2 * largest:
            low = np.unravel_index(amap.argmin(), amap.shape)
            assert raw[low][2] > raw[low][0]
    assert max(alphas) > 128 and min(alphas) < max(alphas)  # the largest cell upsampled, and weaker maps fainter
    assert "for class 3" in overlay.describe() and "contribution maps" in overlay.describe()
    assert overlay.snapshot().size[0] > 0
    update(overlay, target=None, scale="image")  # each image's predicted class, a scale per image
    assert overlay.wait(60) and overlay.shown["target"] is None
    assert [t["index"] for t in overlay.tiles] == probe.top_images(5, 4, by="contribution").tolist()
    assert all(t["vmin"] == -t["vmax"] for t in overlay.tiles)
    for bad in ({"target": 10}, {"target": -1}, {"mode": "gradient"}, {"diverging_colormap": EVIL}):
        sent.clear()
        update(overlay, **bad)
        assert errors(sent), bad
    assert errors(sent)[-1].startswith("The 'diverging_colormap' trait")
    update(overlay, mode="activation")
    assert overlay.wait(60) and overlay.shown["colormap"] == "magma" and overlay.shown["target"] is None
    assert [t["index"] for t in overlay.tiles] == probe.top_images(5, 4).tolist()


def test_ablation_panel_latest_request_wins(probe):
    ranking = probe.rank("weight_l1")
    panel = nw.AblationPanel(probe, ranking=ranking)
    panel.wait(30)
    assert panel.before["accuracy"] == pytest.approx(probe.evaluate().accuracy)
    assert panel.after["k"] == 0 and panel.changed_count == 0
    landed = []
    panel.observe(lambda c: landed.append(c["new"]["k"]), names=["after"])
    for k in range(1, 31):
        update(panel, k=k)
    assert panel.wait(60)
    assert panel.after["k"] == 30 and landed[-1] == 30
    assert len(landed) < 30  # stale requests were dropped, not queued
    expected = probe.evaluate(ablate=ranking.order[:30])
    assert panel.after["accuracy"] == pytest.approx(expected.accuracy)
    assert panel.changed_count == int((expected.predictions != probe.evaluate().predictions).sum())
    assert panel.changed and bytes(panel.changed[0]["image"])[:4] == b"\x89PNG"
    custom(panel, {"type": "toggle", "unit": int(ranking.order[0])})
    panel.wait(30)
    assert panel.ablated == sorted(int(u) for u in ranking.order[1:30])
    sent = outbox(panel)
    for bad in ({"k": 65}, {"mode": "half"}, {"toggled": [999]}, {"order": [1]}):
        sent.clear()
        update(panel, **bad)
        assert errors(sent), bad
    custom(panel, {"type": "toggle", "unit": "3"})
    assert errors(sent)[-1].startswith("toggle: unit must be an integer")
    assert panel.k == 30 and panel.mode == "zero"


def test_explorer_links_the_views(probe):
    explorer = nw.Explorer(probe, method="activation")
    explorer.wait(60)
    ranked, overlay, panel = explorer.ranked_list, explorer.overlay, explorer.panel
    assert panel.method == "activation" and overlay.unit == int(ranked.ranking.order[0])
    update(ranked, selected_unit=9)
    assert explorer.selected_unit == 9 and overlay.unit == 9 and panel.selected_unit == 9
    explorer.wait(60)
    assert overlay.shown["unit"] == 9
    update(ranked, layer="relu2")
    explorer.wait(60)
    assert overlay.layer == "relu2" and panel.layer == "relu2" and panel.units == 32
    assert explorer.selected_unit is None
    custom(ranked, {"type": "refresh"})
    assert explorer.wait(60) and panel.before
    update(ranked, target=2)  # a class picked in the list is the one the overlay's contribution mode shows
    update(overlay, mode="contribution")
    assert explorer.wait(60) and overlay.shown["target"] == 2 and overlay.shown["mode"] == "contribution"
    assert explorer.shown["overlay"] == {"mode": "contribution", "target": 2}


def test_static_png_in_the_mime_bundle(probe):
    explorer = nw.Explorer(probe, method="weight_l1")
    data, _ = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["image/png"][:4] == b"\x89PNG"
    for widget in (explorer.ranked_list, explorer.overlay, explorer.panel):
        data, _ = widget._repr_mimebundle_()
        assert data["image/png"][:4] == b"\x89PNG"


def test_worker_runs_one_job_at_a_time_and_drops_stale_ones():
    worker, results, dropped = Worker(), [], []
    gate = threading.Event()

    def job(value, wait=False):
        def run(job: Job):
            if wait:
                gate.wait(5)
            return value

        return Job("slot", run, results.append, lambda e: None, lambda: dropped.append(value))

    worker.submit(job(0, wait=True), cancel_running=False)
    time.sleep(0.1)
    for value in (1, 2, 3):
        worker.submit(job(value), cancel_running=False)
    gate.set()
    assert worker.wait(5)
    assert results == [3]  # 0 finished stale, 1 and 2 never ran
    assert sorted(dropped) == [0, 1, 2]

    # a stale job that fails winds down as cancelled (its widget settles), and its error is not shown
    errors, gate = [], threading.Event()

    def failing(job: Job):
        gate.wait(5)
        raise RuntimeError("stale failure")

    worker.submit(Job("slot", failing, results.append, errors.append, lambda: dropped.append("failed")))
    time.sleep(0.1)
    worker.submit(job(4), cancel_running=False)
    gate.set()
    assert worker.wait(5)
    assert errors == [] and dropped[-1] == "failed" and results[-1] == 4


def test_html_export_shows_the_static_picture(tmp_path):
    """A notebook executed without a browser and exported to HTML shows the widget's PNG, not an empty box."""
    import nbclient
    import nbconvert
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import neuronwidgets as nw\n"
            "model, data = nw.demo.load()\n"
            "nw.Explorer(nw.Probe(model, data, layer='relu3'), method='weight_l1')"
        ),
        nbformat.v4.new_code_cell("nw.RankedList(nw.Probe(model, data, layer='relu3'), method='weight_l1')"),
    ]
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3", store_widget_state=False).execute()
    (output,) = notebook.cells[0].outputs
    assert output["data"]["image/png"]
    assert output["metadata"]["image/png"]["alt"].startswith("weight_l1 ranking of the 64 units of layer relu3")
    assert "activation maps laid over the images" in output["metadata"]["image/png"]["alt"]
    (listed,) = notebook.cells[1].outputs
    alt = listed["metadata"]["image/png"]["alt"]  # the picture in words, for a screen reader
    assert alt.startswith("weight_l1 ranking of the 64 units of layer relu3 (all classes); top: unit ")
    html, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    assert "data:image/png;base64," in html
    classic, _ = nbconvert.HTMLExporter(template_name="classic").from_notebook_node(notebook)
    assert f'alt="{alt}"' in classic  # nbconvert's lab template writes no alt text (7.17); its classic one does


@pytest.fixture(scope="module")
def wide_probe():
    """A model with 1,000 classes (named as ImageNet's are) whose accuracy is not 0: labels are its predictions."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1000)
    ).eval()
    images = torch.randn(48, 3, 12, 12)
    with torch.no_grad():
        labels = model(images).argmax(1)
    labels[24:] = torch.randint(0, 1000, (24,))
    names = [f"class {i}" for i in range(1000)]
    names[207], names[5] = "golden retriever", EVIL
    return nw.Probe(model, (images, labels), layer="1", classes=names)


def test_ranked_list_says_when_a_ranking_may_mislead(probe):
    ranking = probe.rank("weight_l1")
    assert nw.RankedList(ranking).info["warnings"] == []
    flat = nw.Ranking(np.zeros(5), method="ablation", layer="relu3", meta={})
    assert "every unit scored 0" in nw.RankedList(flat).info["warnings"][0]
    said = nw.Ranking(np.zeros(5), method="ablation", layer="relu3", meta={"warnings": ["labels may not be X"]})
    ranked = nw.RankedList(said)
    assert ranked.info["warnings"] == ["labels may not be X"]  # the method's own words, not the list's
    quiet = nw.Ranking(np.zeros(5), method="ablation", layer="relu3", meta={"warnings": []})
    import warnings

    import torch

    model, data = nw.demo.load()
    at_chance = nw.Probe(model, (data.images[:60], torch.zeros(60, dtype=torch.long)), layer="relu3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = nw.RankedList(at_chance, method="taylor")
        assert listed.wait(60)
    assert listed.info["warnings"] and "chance" in listed.info["warnings"][0]
    assert not [w for w in caught if w.category is nw.RankingWarning]  # shown in the list, not also as stderr
    with pytest.warns(nw.RankingWarning, match="chance"):
        at_chance.rank("taylor", progress=False)  # called directly, the same ranking warns
    assert ranked.snapshot().size[1] > nw.RankedList(quiet).snapshot().size[1]  # said in the picture too


def test_ablation_panel_of_1000_classes(wide_probe):
    from neuronwidgets.widgets.ablation_panel import MAX_CHANGED_SHOWN, chance_warning, classes_changed_most

    panel = nw.AblationPanel(wide_probe, ranking=wide_probe.rank("weight_l1"))
    assert panel.wait(60)
    update(panel, k=8)
    assert panel.wait(60)
    assert len(panel.classes) == 1000 and len(panel.after["per_class"]) == 1000
    assert len(panel.changed) == min(panel.changed_count, MAX_CHANGED_SHOWN)
    labels = {item["label"] for item in panel.changed}
    assert labels <= set(wide_probe.classes)
    # the picture lists the classes that changed most, by name, and stays small
    picture = panel.snapshot()
    assert picture.size[0] <= 600 and picture.size[1] <= 400
    before = np.array([np.nan, 0.5, 1.0, 0.2, 0.0])
    after = np.array([0.0, 0.5, 0.1, 0.3, np.nan])
    assert classes_changed_most(before, after, 3) == [2, 3, 1]  # size of change; ties by class; no images last
    assert classes_changed_most(before, after, 9) == [2, 3, 1, 0, 4]
    said = chance_warning(0.001, 0.25)
    assert said.startswith("accuracy without ablation is 0.1%, at or below chance (25.0%, always guessing")
    assert chance_warning(0.5, 0.25) is None
    assert panel.before["warnings"] == []  # labels are the model's predictions on half the images
    import torch

    # every label the same: always guessing it is right, so no accuracy is above chance (100%)
    same = nw.Probe(wide_probe.model, (torch.randn(8, 3, 12, 12), torch.full((8,), 3)), layer="1")
    same_panel = nw.AblationPanel(same)
    assert same_panel.wait(60)
    assert "at or below chance (100.0%, always guessing the most frequent label)" in same_panel.before["warnings"][0]
    assert same_panel.snapshot().size[1] > 0


def test_ablation_panel_without_a_ranking_on_a_layer_weight_l1_refuses():
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    images = torch_randn(8, 3, 32, 32)
    probe = nw.Probe(model, (images, np.zeros(8, dtype=np.int64)), layer="layer4")
    panel = nw.AblationPanel(probe)  # layer4 is an add: weight_l1 refuses it, the panel ranks by activation
    assert panel.wait(120)
    assert panel.error == "" and panel.method == "activation" and panel.before


def torch_randn(*shape):
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))
