"""The summary's pass keeps each unit's maps on its top images (neuronwidgets.engine.stats.TopMaps), so an
overlay of them needs no forward pass: kept exactly, within the memory budget, and equal to the model's maps."""

from __future__ import annotations

import numpy as np
import torch

import neuronwidgets as nw
from neuronwidgets.engine.stats import TopMaps
from tests import reference
from tests.conftest import build, make_data


def test_merged_chunks_keep_the_top_images_of_all_the_data_ties_to_the_earlier_image():
    generator = torch.Generator().manual_seed(0)
    activations = (torch.rand(37, 5, 3, 3, generator=generator) * 4).round() / 4 + 0.25  # many tied peaks
    k = 6
    top = None
    for start in range(0, 37, 8):
        chunk = activations[start : start + 8]
        part = TopMaps.of(chunk, chunk.amax((2, 3)).numpy(), k, start)
        top = part if top is None else top.merge(part)
    peaks = activations.amax((2, 3)).numpy()
    for unit in range(5):
        expected = np.argsort(-peaks[:, unit], kind="stable")[:k]
        np.testing.assert_array_equal(top.index[unit], expected)
        np.testing.assert_array_equal(top.maps[unit], activations[expected, unit].numpy())
        kept = top.maps_of(unit, [int(expected[2]), 36 if 36 not in expected else -1])
        assert list(kept) == [int(expected[2])]


def test_activation_maps_of_top_images_come_from_the_summary_without_a_forward_pass():
    model, shape = build("residual", seed=2)
    images, labels = make_data(model, 29, shape, seed=3)
    probe = nw.Probe(model, (images, labels), layer="block1.relu", chunk_size=8)
    probe.site().summary(progress=False)
    assert probe.site().top_maps() is not None
    unit = 3
    top = [int(i) for i in probe.top_images(unit, 8)]
    other = next(i for i in range(29) if i not in top)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        kept = probe.activation_maps(unit, top)
        assert calls == []  # no forward pass for the unit's top images
        mixed = probe.activation_maps(unit, [other, *top[:3]])
        assert calls == [1]  # one forward, of the one image not kept
    finally:
        handle.remove()
    expected = reference.layer_output(model, "block1.relu", images)[:, unit].float().numpy()
    np.testing.assert_allclose(kept, expected[top], rtol=1e-6)
    np.testing.assert_allclose(mixed, expected[[other, *top[:3]]], rtol=1e-6)


def test_no_maps_are_kept_where_they_do_not_fit_in_the_memory_budget():
    model, shape = build("plain", seed=4)
    images, labels = make_data(model, 11, shape, seed=5)
    probe = nw.Probe(model, (images, labels), memory=0)
    probe.site().summary(progress=False)
    assert probe.site().top_maps() is None
    top = [int(i) for i in probe.top_images(0, 4)]
    expected = reference.layer_output(model, probe.layer, images)[:, 0].float().numpy()
    np.testing.assert_allclose(probe.activation_maps(0, top), expected[top], rtol=1e-6)
