"""The picture in a displayed widget's output follows its state: outputs re-sent after a quiet period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

import neuronwidgets as nw
from neuronwidgets.widgets import _picture
from neuronwidgets.widgets._debounce import Debouncer
from neuronwidgets.widgets._worker import Job
from tests.test_widgets import update

VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def probe():
    model, data = nw.demo.load()
    return nw.Probe(model, data, layer="relu3")


@pytest.fixture
def outputs(monkeypatch) -> dict[str, list]:
    """What the widgets display and update (display id, data), with a short quiet period."""
    sent: dict[str, list] = {"displays": [], "updates": []}

    def recorder(kind: str) -> Callable[..., None]:
        return lambda data, metadata=None, raw=False, display_id=None: sent[kind].append((display_id, data))

    monkeypatch.setattr(_picture, "display", recorder("displays"))
    monkeypatch.setattr(_picture, "update_display", recorder("updates"))
    monkeypatch.setattr(_picture, "REFRESH_DELAY", 0.05)
    monkeypatch.setattr(_picture, "_cell_running", threading.Event())
    return sent


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def settled(widget, sent: dict[str, list]) -> bool:
    """True once the last update carries the picture of the widget's current state."""
    return eventually(lambda: bool(sent["updates"]) and sent["updates"][-1][1]["image/png"] == widget.snapshot_png())


def test_the_output_gets_the_picture_of_the_last_state(probe, outputs):
    explorer = nw.Explorer(probe, method="weight_l1")
    explorer.wait(60)
    explorer._ipython_display_()
    ((display_id, shown),) = outputs["displays"]
    assert shown[VIEW]["model_id"] == explorer.model_id and shown["image/png"] == explorer.snapshot_png()
    ranked = explorer.ranked_list
    update(ranked, selected_unit=int(ranked.ranking.order[5]))
    explorer.wait(60)
    assert settled(explorer, outputs)
    last_id, last = outputs["updates"][-1]
    assert last_id == display_id and last[VIEW] == shown[VIEW] and last["image/png"] != shown["image/png"]
    # the slider of the panel inside: the Explorer's picture follows
    update(explorer.panel, k=5)
    explorer.wait(60)
    assert settled(explorer, outputs)
    # a change that leaves the picture as it was sends nothing
    count = len(outputs["updates"])
    explorer.overlay.opacity, explorer.overlay.opacity = 0.2, explorer.overlay.opacity
    time.sleep(0.5)
    assert len(outputs["updates"]) == count


def test_every_display_follows_including_a_part_shown_alone(probe, outputs):
    explorer = nw.Explorer(probe, method="weight_l1")
    explorer.wait(60)
    explorer._ipython_display_()
    explorer._ipython_display_()
    explorer.panel._ipython_display_()
    ids = [display_id for display_id, _ in outputs["displays"]]
    update(explorer.panel, k=7)
    explorer.wait(60)
    assert eventually(lambda: {display_id for display_id, _ in outputs["updates"]} == set(ids))
    latest = {display_id: data["image/png"] for display_id, data in outputs["updates"]}
    assert latest[ids[0]] == latest[ids[1]] == explorer.snapshot_png()
    assert latest[ids[2]] == explorer.panel.snapshot_png()


def test_no_update_while_work_runs_or_a_cell_runs(probe, outputs):
    panel = nw.AblationPanel(probe)
    panel.wait(60)
    panel._ipython_display_()
    gate = threading.Event()
    panel._worker.submit(Job("test:block", lambda job: gate.wait(10), lambda _: None, lambda _: None), False)
    panel.mode = "mean"
    time.sleep(0.4)
    assert outputs["updates"] == []
    gate.set()
    panel.wait(60)
    assert settled(panel, outputs)

    _picture._cell_running.set()
    count = len(outputs["updates"])
    panel.mode = "zero"
    panel.wait(60)
    time.sleep(0.4)
    assert len(outputs["updates"]) == count
    _picture._cell_running.clear()
    assert settled(panel, outputs)


def test_a_picture_is_drawn_again_only_after_a_change(probe):
    panel = nw.AblationPanel(probe)
    panel.wait(60)
    first = panel.snapshot()
    assert panel.snapshot() is first
    panel.k = 3
    panel.wait(60)
    assert panel.snapshot() is not first


def test_debouncer_calls_once_after_the_last_touch():
    debouncer, calls = Debouncer(), []
    for _ in range(5):
        debouncer.touch("key", lambda: calls.append(time.monotonic()), 0.1)
        last_touch = time.monotonic()
        time.sleep(0.03)
    debouncer.touch("other", lambda: calls.append(0.0), 0.01)
    assert eventually(lambda: len(calls) == 2, timeout=5)
    assert calls[0] == 0.0 and calls[1] - last_touch >= 0.09


def test_cells_are_tracked_from_the_first_display(monkeypatch):
    from IPython.core.events import EventManager, available_events

    running = threading.Event()
    monkeypatch.setattr(_picture, "_cell_running", running)
    for msg_type, running_now in (("execute_request", True), ("comm_msg", False)):  # a cell, a widget callback
        shell = SimpleNamespace(events=EventManager(None, available_events), parent_header={"msg_type": msg_type})
        monkeypatch.setattr(_picture, "get_ipython", lambda shell=shell: shell)
        running.clear()
        _picture._watch_cells()
        assert running.is_set() is running_now
        shell.events.trigger("post_run_cell", None)
        assert not running.is_set()
        shell.events.trigger("pre_run_cell", None)
        assert running.is_set()


def test_the_overlay_picture_is_titled_like_the_live_view(probe):
    overlay = nw.ActivationOverlay(probe, unit=5, k=4)
    assert overlay.wait()
    assert overlay._title() == "unit 5 · layer relu3 · top 4 images"
    four = overlay.snapshot()
    overlay.image = 3
    assert overlay.wait()
    assert overlay._title() == "unit 5 · layer relu3 · top 4 images and image #3"
    assert overlay.snapshot().width > four.width  # a fifth tile: the chosen image
