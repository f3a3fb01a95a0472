"""Passes over a chunk run in timed slices with the model lent between them (neuronwidgets.engine.slicing): the
answers are those of whole chunks, a click is let in within a chunk, and the model is free while data loads."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.engine import slicing
from neuronwidgets.engine.guard import evaluating, model_lock
from neuronwidgets.engine.slicing import Pace, concat, outputs_match, rows_of, slices_exact
from tests.conftest import build, make_data
from tests.test_sacred import assert_same, fingerprint

SLICED_METHODS = [
    ("taylor", {}),
    ("ablation", {}),
    ("activation", {}),
    ("selectivity", {}),
    ("pcace", {"target": 0}),
]


def every_image_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of one image each: a slice's time budget of 0 s."""
    monkeypatch.setattr(slicing, "SLICE_SECONDS", 0.0)


def whole_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slicing, "SLICE_SECONDS", math.inf)
    monkeypatch.setattr(slicing, "FIRST_SLICE", 10**9)


def test_pace_sizes_slices_from_the_last_timed_one():
    pace = Pace(seconds=0.5)
    assert pace.size(100) == slicing.FIRST_SLICE  # speed unknown: a small first slice
    pace.per_image = 0.1
    assert pace.size(100) == 5 and pace.size(3) == 3
    pace.per_image = 10.0
    assert pace.size(100) == 1  # never less than one image
    pace.per_image = 0.0
    assert pace.size(100) == 100


def test_concat_rows_of_and_outputs_match():
    a, b = torch.arange(6.0).reshape(3, 2), torch.ones(1, 4)
    assert torch.equal(concat([a[:1], a[1:]]), a)
    assert concat([(a[:1], a[:1]), (a[1:], a[1:])])[1].shape == (3, 2)
    assert rows_of([a, b], slice(1, 2))[1] is b  # a value without the images' dimension is shared
    assert outputs_match(a, a + 1e-9) and not outputs_match(a, a + 1) and not outputs_match(a, a[:2])
    assert not outputs_match([a], [a, a]) and not outputs_match(a.long(), a.long() + 1)


def test_slices_exact_refuses_work_that_mixes_images_or_outputs_without_their_dimension():
    images = torch.rand(5, 3)
    assert slices_exact(lambda x: x * 2, [images])
    assert not slices_exact(lambda x: x - x.mean(0), [images])
    assert not slices_exact(lambda x: x.sum(0), [images])  # no image dimension in the output


@pytest.mark.parametrize("method, options", SLICED_METHODS)
def test_rankings_in_one_image_slices_equal_whole_chunks(monkeypatch, method, options):
    model, shape = build("residual", seed=3)
    images, labels = make_data(model, 21, shape, seed=4)
    whole_chunks(monkeypatch)
    expected = nw.Probe(model, (images, labels), layer="block1.relu").rank(method, progress=False, **options)
    every_image_alone(monkeypatch)
    probe = nw.Probe(model, (images, labels), layer="block1.relu")
    before = fingerprint(model)
    got = probe.rank(method, progress=False, **options)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-9, atol=1e-12)
    assert_same(before, fingerprint(model))


def test_evaluation_and_components_in_one_image_slices_equal_whole_chunks(monkeypatch):
    model, shape = build("plain", seed=5)
    images, labels = make_data(model, 17, shape, seed=6)
    whole_chunks(monkeypatch)
    probe = nw.Probe(model, (images, labels), layer="relu1")
    expected = probe.evaluate([0, 2], ablate_components=[0])
    every_image_alone(monkeypatch)
    got = nw.Probe(model, (images, labels), layer="relu1").evaluate([0, 2], ablate_components=[0])
    assert got.accuracy == expected.accuracy
    assert math.isclose(got.loss, expected.loss, rel_tol=1e-10)
    assert (got.predictions == expected.predictions).all()


def test_a_network_that_mixes_images_before_the_layer_runs_whole_chunks(monkeypatch):
    """Subtracting the batch mean before the layer: a slice would see another mean, so the check sends the
    chunk through whole and the summary equals the whole chunk's layer output."""

    class Centred(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.conv(x - x.mean(0, keepdim=True)))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model = Centred().double().eval()
    images = torch.rand(12, 2, 6, 6, dtype=torch.float64) + 0.1
    every_image_alone(monkeypatch)
    summary = nw.Probe(model, images, layer="relu").site("relu").summary(progress=False)
    with torch.no_grad():
        expected = model.relu(model.conv(images - images.mean(0, keepdim=True)))
    np.testing.assert_allclose(summary.image_max, expected.amax((2, 3)).numpy(), rtol=1e-12)


def test_a_waiting_click_gets_the_model_within_a_chunk(monkeypatch):
    """One chunk of 96 images: a thread waiting for the model is let in after a slice, while the pass is still
    in its only chunk (before, it waited for the whole chunk)."""
    every_image_alone(monkeypatch)
    model, data = nw.demo.load()
    images = torch.stack([torch.as_tensor(data[i][0]) for i in range(96)])
    probe = nw.Probe(model, images, layer="relu2", chunk_size=128)
    started, queued, chunks_done, seen = threading.Event(), threading.Event(), [], []

    def pause_first_forward(module, inputs):
        if not started.is_set():
            started.set()
            assert queued.wait(30)

    def click() -> None:
        with evaluating(model):
            seen.append(len(chunks_done))

    handle = model.register_forward_pre_hook(pause_first_forward)
    try:
        ranking = threading.Thread(
            target=lambda: probe.rank("activation", progress=lambda info: chunks_done.append(info.done))
        )
        ranking.start()
        assert started.wait(30)
        waiter = threading.Thread(target=click)
        waiter.start()
        while model_lock(model).waiting() == 0:
            threading.Event().wait(0.001)
        queued.set()
        waiter.join(30)
        ranking.join(60)
    finally:
        handle.remove()
    assert seen == [0]  # it ran before the pass finished its one chunk
    assert chunks_done and chunks_done[-1] == 1


def test_the_model_is_free_while_the_next_chunk_loads():
    """A dataset that blocks while it loads an image of the second chunk: meanwhile another thread can use
    the model, and the ranking carries on afterwards with the same answer."""
    model, data = nw.demo.load()
    loading, release = threading.Event(), threading.Event()

    class Slow(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 32

        def __getitem__(self, i: int):
            if i == 16:
                loading.set()
                assert release.wait(30)
            return data[i]

    probe = nw.Probe(model, Slow(), layer="relu2", chunk_size=16)
    expected = nw.Probe(model, [data[i] for i in range(32)], layer="relu2").rank("activation", progress=False)
    result: list[nw.Ranking] = []
    thread = threading.Thread(target=lambda: result.append(probe.rank("activation", progress=False)))
    thread.start()
    try:
        assert loading.wait(30)
        assert model_lock(model).acquire(timeout=10), "the model stayed locked while data loaded"
        with evaluating(model):
            model(torch.as_tensor(data[0][0]).unsqueeze(0))
        model_lock(model).release()
    finally:
        release.set()
        thread.join(60)
    np.testing.assert_allclose(result[0].scores, expected.scores)
