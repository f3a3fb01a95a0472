"""A Monitor's logdir: snapshots round-trip exactly, a reader never sees half a snapshot, bad logdirs are refused
clearly, several runs compare, and MonitorView.from_logdir follows a run live and stops when told."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

import neuronwidgets as nw
from neuronwidgets.monitor import Monitor
from neuronwidgets.runlog import RUN_FILE, RunLog, compare_runs
from tests.conftest import build, make_data

pytestmark = pytest.mark.filterwarnings("ignore::neuronwidgets.RankingWarning")  # untrained models: not the point


def train(model, images, labels, steps, monitor):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for i in range(steps):
        batch = slice(8 * i % 32, 8 * i % 32 + 8)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
        monitor.step()


@pytest.fixture
def setup():
    model, shape = build("plain", seed=3)
    images, labels = make_data(model, 48, shape, seed=4)
    return model, images[:32], labels[:32], (images[32:], labels[32:])


def assert_same_history(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a.step, a.seconds) == (b.step, b.seconds)
        assert (a.ranking.method, a.ranking.layer, a.ranking.target) == (
            b.ranking.method,
            b.ranking.layer,
            b.ranking.target,
        )
        np.testing.assert_array_equal(a.ranking.scores, b.ranking.scores)
        np.testing.assert_array_equal(a.ranking.order, b.ranking.order)
        assert (a.ranking.tiebreak is None) == (b.ranking.tiebreak is None)
        if b.ranking.tiebreak is not None:
            np.testing.assert_array_equal(a.ranking.tiebreak, b.ranking.tiebreak)
        np.testing.assert_array_equal(a.alive, b.alive)
        assert a.alive.dtype == b.alive.dtype


@pytest.mark.parametrize("method, options", [("taylor", {}), ("ablation", {"mode": "mean", "target": 1})])
def test_snapshots_round_trip_exactly(setup, tmp_path, method, options):
    model, images, labels, watch = setup
    logdir = tmp_path / "run"
    with Monitor(model, watch, layer="relu2", every=2, method=method, options=options, logdir=logdir) as monitor:
        assert not RunLog(logdir).finished and RunLog(logdir).history == []  # readable before the first snapshot
        train(model, images, labels, 4, monitor)
        monitor.snapshot()  # a second snapshot at step 4: both are kept
    log = RunLog(logdir)
    assert log.finished and log.steps == [2, 4, 4]
    assert_same_history(log.history, monitor.history)
    assert (log.method, log.layer, log.units, log.every, log.options) == (method, "relu2", 8, 2, options)
    assert log.run["model"] == "PlainCNN" and log.run["world_size"] == 1 and log.run["images"] == 16
    np.testing.assert_array_equal(log.ranks(), monitor.ranks())
    assert log.stability() == monitor.stability()
    assert (log.died(), log.emerged()) == (monitor.died(), monitor.emerged())
    assert sorted(p.name for p in logdir.iterdir()) == [RUN_FILE] + [
        f"snapshot-00000{i}.{ext}" for i in range(3) for ext in ("json", "npz")
    ]
    assert {p.stat().st_mode & 0o777 for p in logdir.iterdir()} == {0o644}  # readable by whoever watches
    record = json.loads((logdir / "snapshot-000000.json").read_text())  # open format: plain JSON and npz
    assert record["step"] == 2 and record["arrays"] == "snapshot-000000.npz"
    with np.load(logdir / "snapshot-000000.npz") as arrays:
        assert set(arrays) == {"scores", "order", "alive"} | ({"tiebreak"} if method == "ablation" else set())


def test_a_reader_never_sees_half_a_snapshot(setup, tmp_path):
    model, images, labels, watch = setup
    with Monitor(model, watch, every=1, logdir=tmp_path) as monitor:
        train(model, images, labels, 2, monitor)
    log = RunLog(tmp_path)
    assert log.steps == [1, 2]
    (tmp_path / ".snapshot-000002.json.x1y2.tmp").write_text('{"step": 3, "arr')  # a write under way
    (tmp_path / "snapshot-000002.npz").write_bytes(b"PK")  # its npz, renamed, its JSON not yet
    (tmp_path / "snapshot-000003.json").write_text("{}")  # after a gap: not loaded before the one missing
    assert log.refresh() == 0 and RunLog(tmp_path).steps == [1, 2]
    (tmp_path / "snapshot-000002.npz").unlink()
    (tmp_path / "snapshot-000001.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"snapshot-000001\.json names snapshot-000001\.npz, which is missing"):
        RunLog(tmp_path)


def test_bad_logdirs_are_refused_clearly(setup, tmp_path):
    model, _, _, watch = setup
    with pytest.raises(FileNotFoundError, match=r"no logdir '.*nowhere': expected a directory written by nw\.Monitor"):
        RunLog(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"holds no run\.json: expected a directory written by nw\.Monitor"):
        RunLog(tmp_path)
    Monitor(model, watch, logdir=tmp_path / "run")
    with pytest.raises(FileExistsError, match=r"already holds a run \(run\.json\); give each run its own logdir"):
        Monitor(model, watch, logdir=tmp_path / "run")
    run = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    (tmp_path / "run" / RUN_FILE).write_text(json.dumps({**run, "version": 99}))
    with pytest.raises(ValueError, match=r"format version 99; this neuronwidgets reads version 1 only"):
        RunLog(tmp_path / "run")
    (tmp_path / "run" / RUN_FILE).write_text(json.dumps({"version": 1}))
    with pytest.raises(ValueError, match="is not a neuronwidgets run"):
        RunLog(tmp_path / "run")
    with pytest.raises(TypeError, match="logdir must be a directory path"):
        Monitor(model, watch, logdir=3)


def test_compare_runs(setup, tmp_path):
    model, _, _, watch = setup
    for name, method in [("a", "taylor"), ("b", "activation"), ("c", "taylor")]:
        with Monitor(model, watch, every=2, method=method, logdir=tmp_path / name) as monitor:
            monitor.step(2)
    report = compare_runs(tmp_path / "a", tmp_path / "b", tmp_path / "c", k=3)
    assert [run.method for run in report["runs"]] == ["taylor", "activation", "taylor"]
    assert report["agreement"][0] is None and report["agreement"][2]["spearman"] == pytest.approx(1.0)
    assert report["agreement"][1]["k"] == 3
    with pytest.raises(ValueError, match="at least two logdirs"):
        compare_runs(tmp_path / "a")
    Monitor(model, watch, logdir=tmp_path / "empty")
    with pytest.raises(ValueError, match=r"no snapshots yet in .*empty: nothing to compare"):
        compare_runs(tmp_path / "a", tmp_path / "empty")


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_view_of_a_finished_run_draws_it(setup, tmp_path):
    model, images, labels, watch = setup
    with Monitor(model, watch, layer="relu2", every=1, logdir=tmp_path) as monitor:
        train(model, images, labels, 3, monitor)
    view = nw.MonitorView.from_logdir(tmp_path, top=3)
    assert view._poller is None  # nothing to wait for
    assert (
        view.steps == [1, 2, 3]
        and [line["unit"] for line in view.lines] == monitor.history[-1].ranking.order[:3].tolist()
    )
    np.testing.assert_allclose(view.stability, monitor.stability())
    assert view.info["live"] is False and view.info["logdir"] == str(tmp_path) and view.info["units"] == 8
    assert view._repr_mimebundle_()[0]["image/png"][:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="poll must be a number of seconds > 0"):
        nw.MonitorView.from_logdir(tmp_path, poll=0)
    with pytest.raises(FileNotFoundError, match="no logdir"):
        nw.MonitorView.from_logdir(tmp_path / "x")


def test_view_follows_a_live_run_and_stops(setup, tmp_path):
    model, images, labels, watch = setup
    monitor = Monitor(model, watch, every=1, logdir=tmp_path / "live")
    view = nw.MonitorView.from_logdir(tmp_path / "live", poll=0.01)
    assert view.steps == [] and view.info["live"] is True and view._poller.is_alive()
    train(model, images, labels, 1, monitor)
    wait_for(lambda: view.steps == [1])
    train(model, images, labels, 1, monitor)
    wait_for(lambda: view.steps == [1, 2])
    monitor.close()
    view._poller.join(20)
    assert not view._poller.is_alive() and view.info["live"] is False and view.steps == [1, 2]

    never_finished = nw.MonitorView.from_logdir(tmp_path / "live", poll=0.01)  # finished: no thread
    assert never_finished._poller is None
    Monitor(model, watch, logdir=tmp_path / "stopped")  # its script never closes it
    view = nw.MonitorView.from_logdir(tmp_path / "stopped", poll=0.01)
    poller = view._poller
    view.close()
    assert not poller.is_alive() and view.info["live"] is True
    assert "MonitorView" not in [t.name for t in threading.enumerate()]
