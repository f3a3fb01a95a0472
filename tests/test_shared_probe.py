"""One probe shared by notebook cells, widgets and threads: every answer is the single-threaded answer for the
layer that was asked for, whatever the others do meanwhile, and the model is bit-identical afterwards."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

import neuronwidgets as nw
from tests.conftest import build, make_data
from tests.test_sacred import assert_same, fingerprint

LAYERS = ("relu1", "conv2", "relu2")
OPERATIONS = ("activation", "taylor", "ablation", "evaluate", "top_images", "maps", "components")


def run(probe: nw.Probe, operation: str, layer: str) -> np.ndarray:
    """One call on ``layer``, reduced to an array to compare."""
    if operation in ("activation", "taylor", "ablation"):
        ranking = probe.rank(operation, layer=layer, progress=False)
        assert ranking.layer == layer
        return ranking.scores
    if operation == "evaluate":
        return probe.evaluate([0, 2], layer=layer).predictions
    if operation == "top_images":
        return probe.top_images(1, 5, layer=layer)
    if operation == "maps":
        return probe.activation_maps(1, [0, 3], layer=layer)
    return probe.components(layer=layer).variances


@pytest.fixture
def shared():
    model, shape = build("plain", seed=11)
    images, labels = make_data(model, 40, shape, seed=12)
    single = nw.Probe(model, (images, labels), chunk_size=16)
    expected = {(op, layer): run(single, op, layer) for op in OPERATIONS for layer in LAYERS}
    return model, nw.Probe(model, (images, labels), layer="relu2", chunk_size=16), expected


@pytest.mark.slow
def test_cells_widgets_and_threads_on_one_probe_get_single_threaded_answers(shared):
    model, probe, expected = shared
    before = fingerprint(model)
    ranked = nw.RankedList(probe, method="activation", layer="relu1")
    panel = nw.AblationPanel(probe, layer="conv2", k=2)
    failures: list[str] = []
    calls = [0]

    def worker(seed: int, owner: bool) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            operation, layer = rng.choice(OPERATIONS), rng.choice(LAYERS)
            if owner and rng.random() < 0.3:
                probe.layer = rng.choice(LAYERS)  # the user moves the default meanwhile
            try:
                got = run(probe, operation, layer)
            except Exception as err:  # collected and reported below
                failures.append(f"{operation} on {layer}: {type(err).__name__}: {err}")
                continue
            calls[0] += 1
            if not np.array_equal(got, expected[(operation, layer)]):
                failures.append(f"{operation} on {layer} differs from the single-threaded answer")

    threads = [threading.Thread(target=worker, args=(seed, seed == 0)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for layer in ("relu2", "conv2", "relu1"):  # the widgets move between layers while the threads work
        ranked.layer = layer
        panel.k = 3 if panel.k == 2 else 2
    for thread in threads:
        thread.join(timeout=300)
    assert ranked.wait(120) and panel.wait(120)
    assert not failures, failures[:5]
    assert calls[0] == 75
    assert ranked.ranking is not None and ranked.ranking.layer == "relu1"
    np.testing.assert_array_equal(ranked.ranking.scores, expected[("activation", "relu1")])
    assert panel.status in ("idle", "cancelled") and not panel.error
    assert_same(before, fingerprint(model))


def test_changing_the_default_layer_during_a_ranking_does_not_change_its_answer(shared):
    _model, probe, expected = shared
    probe.layer = "relu1"
    seen = []

    def move_default(info) -> None:  # runs inside the ranking, between chunks
        probe.layer = "relu2"
        seen.append(info.done)

    ranking = probe.rank("taylor", progress=move_default)
    assert seen and ranking.layer == "relu1" and probe.layer == "relu2"
    np.testing.assert_array_equal(ranking.scores, expected[("taylor", "relu1")])
