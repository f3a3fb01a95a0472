"""nw.datasets.shapes: generated shapes whose concept masks are the truth about every pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.datasets import COLOURS, SHAPES, TEXTURES


def test_an_image_is_made_from_its_seed_and_index_alone():
    a, b = nw.datasets.shapes(50, seed=3), nw.datasets.shapes(50, seed=3)
    for i in (0, 17, 49, -1):
        torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=0)
        assert a[i][1] == b[i][1]
    torch.testing.assert_close(a[-1][0], a[49][0], rtol=0, atol=0)
    other = nw.datasets.shapes(50, seed=4)
    assert any(not torch.equal(a[i][0], other[i][0]) for i in range(5))
    assert not torch.equal(a[0][0], a[1][0])


def test_the_masks_are_the_truth_about_the_pixels():
    data = nw.datasets.shapes(60, seed=1)
    assert data.concepts == [*SHAPES, *COLOURS, *TEXTURES]
    assert data.classes == list(SHAPES)
    for i in range(len(data)):
        image, label = data[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert float(image.min()) >= 0 and float(image.max()) <= 1
        masks = data.concept_masks(i)
        assert set(masks) == set(data.concepts)
        assert all(m.shape == (32, 32) and m.dtype == bool for m in masks.values())
        present = {name for name, m in masks.items() if m.any()}  # one shape (the label), colour and texture
        (colour,) = present & set(COLOURS)
        (texture,) = present & set(TEXTURES)
        shape = SHAPES[label]
        assert present == {shape, colour, texture}
        shape_mask = masks[shape]
        assert 20 < shape_mask.sum() < 32 * 32 / 2
        np.testing.assert_array_equal(masks[colour], shape_mask)
        np.testing.assert_array_equal(masks[texture], ~shape_mask)
        pixels = image.numpy()[:, shape_mask]  # the shape is its colour, up to the noise
        np.testing.assert_allclose(pixels.mean(axis=1), COLOURS[colour], atol=0.02)
        background = image.numpy()[:, ~shape_mask]  # the background is grey: its channels agree but for noise
        assert np.abs(background - background.mean(axis=0)).mean() < 0.05
        scene = data.scene(i)
        assert (scene.shape, scene.colour, scene.texture) == (shape, colour, texture)


def test_every_shape_colour_and_texture_comes_up():
    data = nw.datasets.shapes(400, seed=0)
    scenes = [data.scene(i) for i in range(len(data))]
    for attribute, names in (("shape", SHAPES), ("colour", COLOURS), ("texture", TEXTURES)):
        counts = {name: sum(getattr(s, attribute) == name for s in scenes) for name in names}
        assert min(counts.values()) > 400 / len(names) * 0.7, counts


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="n must be an integer of at least 1, got 0"):
        nw.datasets.shapes(0)
    with pytest.raises(ValueError, match="size must be an integer of at least 16, got 8"):
        nw.datasets.shapes(10, size=8)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        nw.datasets.shapes(10, seed=-1)
    data = nw.datasets.shapes(10)
    with pytest.raises(IndexError, match="image 10 is out of range; the dataset has 10 images"):
        data[10]
    with pytest.raises(TypeError, match="an image index must be an integer, got float"):
        data.concept_masks(1.0)


def test_a_probe_ranks_on_it_through_a_dataloader():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, len(SHAPES))
    ).eval()
    data = nw.datasets.shapes(40, seed=2, size=24)
    loader = torch.utils.data.DataLoader(data, batch_size=16, num_workers=0)
    probe = nw.Probe(model, loader, layer="1", classes=data.classes)
    ranking = probe.rank("activation", progress=False)
    images = torch.stack([data[i][0] for i in range(len(data))])
    with torch.no_grad():
        expected = model[1](model[0](images)).mean(dim=(0, 2, 3)).double().numpy()
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-5)
