"""A Monitor in a DDP training script (2 gloo processes on 127.0.0.1) writes a logdir that MonitorView.from_logdir
follows live from this process; its snapshots equal one process's, and training is bit-identical without it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

import neuronwidgets as nw
from neuronwidgets.runlog import RUN_FILE
from tests import distributed_worker as worker
from tests.test_distributed import results_of, started

RANKS = 2


@pytest.fixture
def one_thread():
    """The one-process reference on one thread, as the ranks run: quicker on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_ddp_script_writes_a_logdir_that_a_view_follows_live(tmp_path: Path, one_thread):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not built")
    logdir, acks = tmp_path / "run", tmp_path / "acks"
    acks.mkdir()
    plan = [
        ("monitored", "ddp training", {"logdir": str(logdir), "acks": str(acks)}),
        ("plain", "ddp training", {"logdir": None}),
    ]
    seen: list[tuple[list[int], bool]] = []  # what the view showed: steps, and whether the run was live

    def acknowledge(steps: list[int]) -> None:
        for step in steps:
            (acks / f"seen-{step}").touch()

    with started(RANKS, tmp_path, plan, limit=120):
        wait_for(lambda: (logdir / RUN_FILE).exists(), 90, "the script's run.json")
        view = nw.MonitorView.from_logdir(logdir, poll=0.05, top=4)
        view.observe(
            lambda change: (seen.append((change["new"], view.monitor.finished is None)), acknowledge(change["new"])),
            names=["steps"],
        )
        acknowledge(view.steps)  # any snapshot drawn before the observer was there
        wait_for(lambda: all((tmp_path / f"monitored-{r}.pkl").exists() for r in range(RANKS)), 90, "the script")
        monitored = results_of(tmp_path, "monitored", RANKS)  # a rank that crashed fails here, with its traceback
        wait_for(lambda: view.info["live"] is False, 10, "the view to see the run finished")
    assert view._poller is not None and not view._poller.is_alive()  # the finished run stopped the polling
    live = [steps for steps, running in seen if running]
    assert live and live[-1] == [2, 4, 6], seen  # drawn while the script ran: it waits for each ack to go on
    assert view.steps == [2, 4, 6] and view.info["snapshots"] == 3

    plain = results_of(tmp_path, "plain", RANKS)
    for rank in range(RANKS):  # training is bit-identical with and without the monitor, on every rank
        for name, value in plain[rank]["state"].items():
            assert torch.equal(monitored[rank]["state"][name], value), (rank, name)
        assert all(torch.equal(v, plain[0]["state"][k]) for k, v in plain[rank]["state"].items())

    # One process, the whole batch at once: the same training up to float64 rounding, and the same snapshots
    model, images, labels, watched = worker.training()
    monitor = nw.Monitor(model, watched, worker.WATCHED_LAYER, every=worker.EVERY)
    worker.train(model, images, labels, monitor)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(plain[0]["state"][name].numpy(), value.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    log = view.monitor
    assert log.run["world_size"] == RANKS and log.units == 64 and log.method == "taylor"
    for got, want in zip(log.history, monitor.history, strict=True):
        assert got.step == want.step
        scale = np.abs(want.ranking.scores).max()
        np.testing.assert_allclose(got.ranking.scores, want.ranking.scores, rtol=1e-10, atol=1e-12 * scale)
        np.testing.assert_array_equal(got.alive, want.alive)
        assert got.ranking.meta["ranks"] == RANKS
    for rank in range(RANKS):  # every rank has the whole snapshot, the one rank 0 wrote
        for (step, scores, alive), written in zip(monitored[rank]["history"], log.history, strict=True):
            assert step == written.step
            np.testing.assert_array_equal(scores, written.ranking.scores)
            np.testing.assert_array_equal(alive, written.alive)
