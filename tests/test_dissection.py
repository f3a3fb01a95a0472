"""probe.dissect: NetDissect's IoU of every unit with every concept, against a brute-force numpy reference."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.datasets import COLOURS, SHAPES
from tests.test_sacred import assert_same, fingerprint


def small_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, len(SHAPES)),
    ).double()


def bilinear(maps: np.ndarray, size: int) -> np.ndarray:
    """(n, units, h, w) maps resized to (size, size) by bilinear interpolation with half-pixel centres (what
    align_corners=False means), written out pixel by pixel."""
    n, units, h, w = maps.shape
    out = np.zeros((n, units, size, size))

    def taps(i: int, inside: int) -> tuple[int, int, float]:
        source = max((i + 0.5) * inside / size - 0.5, 0.0)
        low = math.floor(source)
        return low, min(low + 1, inside - 1), source - low

    for y in range(size):
        y0, y1, ly = taps(y, h)
        for x in range(size):
            x0, x1, lx = taps(x, w)
            top = (1 - lx) * maps[..., y0, x0] + lx * maps[..., y0, x1]
            bottom = (1 - lx) * maps[..., y1, x0] + lx * maps[..., y1, x1]
            out[..., y, x] = (1 - ly) * top + ly * bottom
    return out


def reference(maps: np.ndarray, dataset, quantile: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Thresholds, intersections and unions by the rule's definition, image by image."""
    n, units, h, w = maps.shape
    concepts = list(dataset.concept_masks(0))
    keep = math.ceil(quantile * n * h * w)
    thresholds = np.array([np.sort(maps[:, k].ravel())[::-1][keep - 1] for k in range(units)])
    size = dataset.concept_masks(0)[concepts[0]].shape[0]
    regions = bilinear(maps, size) > thresholds[None, :, None, None]
    inter = np.zeros((units, len(concepts)), np.int64)
    union = np.zeros((units, len(concepts)), np.int64)
    for i in range(n):
        masks = dataset.concept_masks(i)
        for k in range(units):
            for c, name in enumerate(concepts):
                inter[k, c] += np.sum(regions[i, k] & masks[name])
                union[k, c] += np.sum(regions[i, k] | masks[name])
    return thresholds, inter, union, concepts


def layer_maps(model: nn.Sequential, upto: int, dataset) -> np.ndarray:
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).double()
    with torch.no_grad():
        return model[: upto + 1](images).numpy()


@pytest.mark.parametrize(("layer", "quantile"), [("1", 0.005), ("1", 0.05), ("4", 0.005), ("4", 0.2)])
def test_iou_equals_a_brute_force_reference(layer, quantile):
    model = small_model()
    data = nw.datasets.shapes(29, seed=5, size=16)
    probe = nw.Probe(model, data, layer=layer, chunk_size=8)  # 4 chunks, the last one short
    result = probe.dissect(quantile=quantile, progress=False)
    thresholds, inter, union, concepts = reference(layer_maps(model, int(layer), data), data, quantile)
    assert result.concepts == concepts == data.concepts
    np.testing.assert_array_equal(result.thresholds, thresholds)
    np.testing.assert_array_equal(result.intersections, inter)
    np.testing.assert_array_equal(result.unions, union)
    expected = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.testing.assert_array_equal(result.iou, expected)
    assert result.iou.dtype == np.float64 and result.iou.shape == (probe.units, len(concepts))
    assert result.images == 29 and result.layer == layer and result.quantile == quantile
    assert inter.sum() > 0  # the comparison is not of empty regions
    for k, (concept, iou) in enumerate(result.best):
        assert iou == expected[k].max() and concept == concepts[int(np.argmax(expected[k]))]


def test_a_transform_dissects_the_maps_it_makes_like_the_reference():
    """Projections onto fixed directions (as principal components are), and their negatives, dissected by the
    same rule: equal to the brute-force reference on the projected maps."""
    model = small_model(2)
    data = nw.datasets.shapes(23, seed=7, size=16)
    probe = nw.Probe(model, data, layer="4", chunk_size=8)
    directions = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    directions = torch.cat([directions, -directions], dim=1)  # (units, 6): each direction and its negative

    def project(maps: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,cj->njhw", maps, directions)

    result = probe.dissect(transform=project, quantile=0.05, progress=False)
    maps = project(torch.from_numpy(layer_maps(model, 4, data))).numpy()
    thresholds, inter, union, _ = reference(maps, data, 0.05)
    np.testing.assert_array_equal(result.thresholds, thresholds)
    np.testing.assert_array_equal(result.intersections, inter)
    np.testing.assert_array_equal(result.unions, union)
    assert result.units == 6 and inter.sum() > 0
    with pytest.raises(ValueError, match=r"transform must map \(n, units, h, w\) maps to \(n, m, h, w\) maps"):
        probe.dissect(transform=lambda maps: maps.sum(1), progress=False)
    with pytest.raises(TypeError, match="transform must be a function"):
        probe.dissect(transform="pca", progress=False)


def test_another_dataset_than_the_probes_gives_the_same_result():
    """The probe's data need not have concept masks (or the model's labels); the same images give the same."""
    model = small_model(1)
    data = nw.datasets.shapes(20, seed=2, size=16)
    own = nw.Probe(model, data, layer="4", chunk_size=6).dissect(progress=False)
    images = torch.rand(5, 3, 16, 16, dtype=torch.float64)
    other = nw.Probe(model, images, layer="1", chunk_size=6).dissect(data, layer="4", progress=False)
    np.testing.assert_array_equal(own.iou, other.iou)
    np.testing.assert_array_equal(own.thresholds, other.thresholds)
    assert other.images == 20


def test_a_dataloader_over_a_concept_dataset_is_read_in_its_order():
    model = small_model(2)
    data = nw.datasets.shapes(17, seed=6, size=16)
    direct = nw.Probe(model, data, layer="1", chunk_size=4).dissect(progress=False)
    loader = torch.utils.data.DataLoader(data, batch_size=7)
    through = nw.Probe(model, loader, layer="1").dissect(progress=False)
    np.testing.assert_array_equal(direct.intersections, through.intersections)
    np.testing.assert_array_equal(direct.unions, through.unions)


def test_a_planted_red_detector_is_labelled_red():
    """Unit 2 of the first conv sees only the centre pixel, as 2R - G - B: high on red, zero on grey, negative on
    green and blue (yellow is between), so its top 0.5% lies inside red shapes."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, len(SHAPES))
    )
    with torch.no_grad():
        model[0].weight[2] = 0
        model[0].weight[2, :, 1, 1] = torch.tensor([2.0, -1.0, -1.0])
        model[0].bias[2] = 0
    data = nw.datasets.shapes(200, seed=3)
    result = nw.Probe(model, data, layer="1").dissect(progress=False)
    red = result.concepts.index("red")
    assert result.best[2][0] == "red"
    assert int(np.argmax(result.iou[:, red])) == 2
    colours = [result.concepts.index(c) for c in COLOURS]
    assert result.iou[2, red] > 2 * max(result.iou[2, c] for c in colours if c != red)
    assert (2, "red", result.iou[2, red]) in result.detectors()


def test_the_result_reads_and_serialises():
    data = nw.datasets.shapes(12, seed=1, size=16)
    result = nw.Probe(small_model(), data, layer="4").dissect(progress=False)
    d = result.to_dict()
    assert d["concepts"] == data.concepts and d["layer"] == "4" and d["images"] == 12
    assert np.array_equal(np.array(d["iou"]), result.iou) and len(d["thresholds"]) == 5
    assert d["best"][0] == {"unit": 0, "concept": result.best[0][0], "iou": result.best[0][1]}
    assert repr(result).startswith("Dissection(layer='4', units=5, concepts=11, images=12, quantile=0.005; ")
    found = result.detectors(min_iou=0.0)
    assert [row[2] for row in found] == sorted((row[2] for row in found), reverse=True)
    assert all(iou > 0.0 for _, _, iou in found)


def test_progress_counts_both_passes_and_cancel_stops_them():
    model = small_model()
    data = nw.datasets.shapes(20, seed=1, size=16)
    probe = nw.Probe(model, data, layer="4", chunk_size=5)
    seen = []
    probe.dissect(progress=seen.append)
    steps = [info.done for info in seen if info.done == int(info.done)]  # less the slices' shares of a step
    assert steps == list(range(1, 9)) and seen[-1].total == 8
    stop = threading.Event()
    with pytest.raises(nw.Cancelled, match="cancelled after 3 of 8 steps"):
        probe.dissect(progress=lambda info: info.done == 3 and stop.set(), cancel=stop)


@pytest.mark.parametrize("exception", [None, RuntimeError, KeyboardInterrupt])
def test_the_model_is_untouched(exception):
    model = small_model()
    model.train()
    model[0].eval()  # a mixed state, with gradients, as mid-training
    images = torch.stack([nw.datasets.shapes(6, seed=4, size=16)[i][0] for i in range(6)]).double()
    model(images).sum().backward()
    before = fingerprint(model)
    probe = nw.Probe(model, nw.datasets.shapes(10, seed=4, size=16), layer="4", chunk_size=3)

    def explode(info):
        if exception is not None and info.done >= 5:
            raise exception("stop")

    if exception is None:
        probe.dissect(progress=explode)
    else:
        with pytest.raises(exception):
            probe.dissect(progress=explode)
    assert_same(before, fingerprint(model))


def test_bad_input_is_refused_clearly():
    model = small_model()
    probe = nw.Probe(model, torch.rand(4, 3, 16, 16, dtype=torch.float64), layer="1")
    with pytest.raises(TypeError, match=r"needs a dataset with concept_masks\(i\).*the probe's data has none"):
        probe.dissect()
    with pytest.raises(TypeError, match=r"concept_masks\(i\).*the dataset \(list\) has none"):
        probe.dissect([torch.rand(3, 16, 16)])
    data = nw.datasets.shapes(4, size=16)
    for quantile in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"quantile must lie strictly between 0 and 1.*got {quantile}"):
            probe.dissect(data, quantile=quantile)
    for quantile in (True, "0.005", None):
        with pytest.raises(TypeError, match="quantile must be a number between 0 and 1"):
            probe.dissect(data, quantile=quantile)
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        probe.dissect(data, layer="nope")

    class Missing(type(data)):
        def concept_masks(self, index):
            masks = super().concept_masks(index)
            return masks if index == 0 else {k: v for k, v in masks.items() if k != "red"}

    with pytest.raises(ValueError, match=r"concept_masks\(1\) must give a dict with the same concepts"):
        probe.dissect(Missing(4, size=16))

    class Resized(type(data)):
        def concept_masks(self, index):
            masks = super().concept_masks(index)
            return masks if index == 0 else {k: v[:8] for k, v in masks.items()}

    with pytest.raises(ValueError, match=r"has shape \(8, 16\); every mask must be \(H, W\) = \(16, 16\)"):
        probe.dissect(Resized(4, size=16))
