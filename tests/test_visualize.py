"""Feature visualisation: beats the data's most exciting image, deterministic, checked options, model untouched."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
import torchvision

import neuronwidgets as nw
from neuronwidgets.display import Display, Unnormalize
from neuronwidgets.visualize import FourierImage, PixelStats, affine, pixel_stats
from tests.conftest import build, make_data
from tests.test_sacred import assert_same, fingerprint


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: one image at a time is tiny work, and on busy shared cores OpenMP's spinning
    threads make each step ten times slower or worse."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def demo():
    model, data = nw.demo.load()
    return model, data


def demo_maps(model: torch.nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The demo layer's output by calling its modules one by one (no hooks, no engine)."""
    with torch.no_grad():
        x = model.pool1(model.relu1(model.bn1(model.conv1(images.clone()))))
        x = model.bn2(model.conv2(x))
        if layer == "bn2":
            return x
        x = model.conv3(model.pool2(model.relu2(x)))
        return x if layer == "conv3" else model.relu3(model.bn3(x))


@pytest.mark.parametrize(("layer", "objective"), [("bn2", "channel"), ("relu3", "channel"), ("relu3", "neuron")])
def test_the_visualisation_beats_the_most_exciting_image_for_most_units(demo, layer, objective):
    model, data = demo
    maps = demo_maps(model, data.images, layer)
    if objective == "channel":
        best = maps.flatten(2).mean(2).amax(0)
    else:
        best = maps[:, :, maps.shape[2] // 2, maps.shape[3] // 2].amax(0)
    probe = nw.Probe(model, data)
    results = [probe.visualize(u, layer=layer, objective=objective, steps=32, progress=False) for u in range(len(best))]
    wins = sum(r.activation > b for r, b in zip(results, best.tolist()))
    assert wins >= 0.9 * len(best)
    r = results[0]  # the reported value is the unit's on the returned input itself
    direct = demo_maps(model, r.input[None], layer)[0, 0]
    expected = direct.mean() if objective == "channel" else direct[direct.shape[0] // 2, direct.shape[1] // 2]
    assert r.activation == pytest.approx(float(expected), rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def shapes():
    model, data = nw.demo.load("shapes")
    images = torch.stack([data[i][0] for i in range(len(data))])
    return model, data, images


def shapes_maps(model: torch.nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The shapes CNN's layer output by calling its modules one by one (no hooks, no engine)."""
    with torch.no_grad():
        x = model.relu2(model.bn2(model.conv2(model.pool1(model.relu1(model.bn1(model.conv1(images)))))))
        return x if layer == "relu2" else model.relu3(model.bn3(model.conv3(model.pool2(x))))


@pytest.mark.parametrize("layer", ["relu2", "relu3"])
def test_on_the_colour_shapes_model_the_visualisation_beats_the_most_exciting_image(shapes, layer):
    """Brute force over all 1000 held-out images: the largest mean activation of each unit on any of them."""
    model, data, images = shapes
    best = shapes_maps(model, images, layer).flatten(2).mean(2).amax(0)
    probe = nw.Probe(model, data)
    results = [probe.visualize(u, layer=layer, steps=32, progress=False) for u in range(len(best))]
    wins = sum(r.activation > b for r, b in zip(results, best.tolist()))
    assert wins >= 0.9 * len(best), f"{wins} of {len(best)} units"
    r = results[1]  # in colour: the three channels differ
    assert r.input.shape == (3, 32, 32) and r.image.shape == (32, 32, 3)
    assert float(shapes_maps(model, r.input[None], layer)[0, 1].mean()) == pytest.approx(r.activation, rel=1e-5)
    assert np.ptp(r.image.astype(int)[..., 0] - r.image.astype(int)[..., 1]) > 0


def test_negative_goes_below_the_least_exciting_image(demo):
    model, data = demo
    lowest = demo_maps(model, data.images, "conv3").flatten(2).mean(2).amin(0)
    probe = nw.Probe(model, data)
    units = range(0, 64, 8)
    results = [probe.visualize(u, layer="conv3", negative=True, steps=32, progress=False) for u in units]
    assert all(r.negative for r in results)
    assert sum(r.activation < float(lowest[u]) for r, u in zip(results, units)) >= 0.9 * len(units)


def test_result_shapes_range_and_picture(demo):
    model, data = demo
    probe = nw.Probe(model, data, layer="relu2")
    r = probe.visualize(3, steps=8, progress=False)
    assert (r.layer, r.unit, r.objective, r.steps, r.seed) == ("relu2", 3, "channel", 8, 0)
    assert r.input.shape == (1, 32, 32) and r.input.dtype == torch.float32 and r.input.device.type == "cpu"
    assert r.image.shape == (32, 32, 3) and r.image.dtype == np.uint8
    assert r.seconds > 0
    low, high = float(data.images.min()), float(data.images.max())
    assert low - 1e-6 <= float(r.input.min()) and float(r.input.max()) <= high + 1e-6
    # the demo shows its raw [0, 1] images: the model-space range maps onto [0, 1], i.e. the un-normalisation
    expected = np.clip(r.input[0].double().numpy() * nw.demo.data.STD + nw.demo.data.MEAN, 0, 1)
    assert np.abs(r.image[..., 0].astype(float) - expected * 255).max() <= 1.01
    assert (r.image[..., 0] == r.image[..., 2]).all()
    small = probe.visualize(3, steps=2, size=(24, 20), progress=False)
    assert small.input.shape == (1, 24, 20) and small.image.shape == (24, 20, 3)


def test_seeded_results_repeat_and_are_cached(demo):
    model, data = demo
    first = nw.Probe(model, data).visualize(5, layer="relu2", steps=6, seed=3, progress=False)
    again = nw.Probe(model, data).visualize(5, layer="relu2", steps=6, seed=3, progress=False)
    assert torch.equal(first.input, again.input) and first.activation == again.activation
    assert np.array_equal(first.image, again.image)
    other = nw.Probe(model, data).visualize(5, layer="relu2", steps=6, seed=4, progress=False)
    assert not torch.equal(first.input, other.input)
    probe = nw.Probe(model, data)
    cached = probe.visualize(5, layer="relu2", steps=6, seed=3, progress=False)
    assert probe.visualize(5, layer="relu2", steps=6, seed=3, progress=False) is cached
    assert probe.visualize(5, layer="relu2", steps=6, seed=3, objective="neuron", progress=False) is not cached


def test_progress_and_cancel(demo):
    model, data = demo
    probe = nw.Probe(model, data)
    seen = []
    probe.visualize(1, layer="relu2", steps=5, progress=seen.append)
    assert [i.done for i in seen] == [1, 2, 3, 4, 5] and {i.total for i in seen} == {5}
    stop = threading.Event()
    before = fingerprint(model)

    def stop_after_two(info):
        if info.done == 2:
            stop.set()

    with pytest.raises(nw.Cancelled, match="cancelled after 2 of 9 steps"):
        probe.visualize(1, layer="relu2", steps=9, progress=stop_after_two, cancel=stop)
    assert_same(before, fingerprint(model))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"unit": 32}, ValueError, r"units \[32\] out of range: layer 'relu2' has units 0\.\.31"),
        ({"unit": 1.0}, TypeError, "units are given as ints"),
        ({"unit": "3"}, TypeError, "units are given as ints"),
        ({"unit": 0, "objective": "mean"}, ValueError, "unknown objective 'mean'; valid: 'channel', 'neuron'"),
        ({"unit": 0, "steps": 0}, ValueError, "steps must be an int of at least 1, got 0"),
        ({"unit": 0, "steps": 2.5}, ValueError, "steps must be an int"),
        ({"unit": 0, "steps": True}, ValueError, "steps must be an int"),
        ({"unit": 0, "negative": "yes"}, TypeError, "negative must be True or False"),
        ({"unit": 0, "seed": 1.5}, TypeError, "seed must be an int"),
        ({"unit": 0, "size": (32,)}, ValueError, "size must be None"),
        ({"unit": 0, "size": 0}, ValueError, "size must be None"),
        ({"unit": 0, "layer": "relu9"}, ValueError, "relu9"),
        ({"unit": 0, "progress": 3}, TypeError, "progress must be"),
    ],
)
def test_bad_options_are_refused_before_any_work(demo, options, error, match):
    model, data = demo
    probe = nw.Probe(model, data, layer="relu2")
    unit = options.pop("unit")
    with pytest.raises(error, match=match):
        probe.visualize(unit, **options)


@pytest.mark.parametrize("name", ["plain", "residual", "untraceable"])
def test_the_model_is_untouched(name):
    """In train mode, with existing gradients, a frozen eval BatchNorm and a frozen parameter, as mid-training;
    after every layer's visualisation and after an interrupt midway."""
    model, shape = build(name)
    images, labels = make_data(model, 9, shape, seed=4)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            break
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    next(iter(model.parameters())).requires_grad_(False)
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels))
    for layer in probe.layers:
        for objective in ("channel", "neuron"):
            r = probe.visualize(0, layer=layer, objective=objective, steps=3, progress=False)
            assert r.input.dtype == torch.float64 and r.input.shape == shape and math.isfinite(r.activation)
    assert_same(dict(before), fingerprint(model))

    def interrupt(info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        probe.visualize(1, steps=4, progress=interrupt)
    assert_same(before, fingerprint(model))


def test_no_gradient_is_left_on_a_fresh_model_and_an_interrupt_inside_its_forward_removes_the_hook():
    model, data = nw.demo.load()
    before = fingerprint(model)
    assert all(g is None for g in before["grads"])
    probe = nw.Probe(model, data)
    for layer in ("relu1", "relu3"):  # in-place, and one whose input stands in while it is off
        probe.visualize(2, layer=layer, objective="neuron", steps=4, progress=False)
    assert_same(dict(before), fingerprint(model))
    calls = {"n": 0}

    def interrupt(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    handle = model.conv1.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        probe.visualize(4, layer="relu2", steps=5, progress=False)
    handle.remove()
    assert_same(before, fingerprint(model))


def test_pixel_stats_match_a_numpy_reference():
    generator = torch.Generator().manual_seed(0)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.3, -0.4, 0.6]])
    images = torch.einsum("dc,nchw->ndhw", mix, torch.rand(7, 3, 8, 8, generator=generator)) - 0.3
    model, _ = build("plain")
    probe = nw.Probe(model.float(), images, chunk_size=3)
    stats = pixel_stats(probe.site(), Display("default"))
    x = images.double().transpose(0, 1).reshape(3, -1).numpy()
    low, high = x.min(1), x.max(1)
    np.testing.assert_allclose(stats.low.numpy(), low)
    np.testing.assert_allclose(stats.high.numpy(), high)
    scaled = (x - low[:, None]) / (high - low)[:, None]
    covariance = np.cov(scaled, bias=True)
    values, vectors = np.linalg.eigh(covariance)
    root = vectors @ np.diag(np.sqrt(values)) @ vectors.T
    np.testing.assert_allclose(root @ root, covariance, atol=1e-12)
    np.testing.assert_allclose(stats.mixing.numpy(), root / np.linalg.norm(root, axis=0).max(), atol=1e-10)
    assert stats.size == (8, 8)
    unnormalised = pixel_stats(probe.site(), Display("given", Unnormalize((0.5, 0.4, 0.3), (0.25, 0.2, -0.5))))
    np.testing.assert_allclose(unnormalised.low.numpy(), [-2.0, -2.0, -1.4])
    np.testing.assert_allclose(unnormalised.high.numpy(), [2.0, 3.0, 0.6])


def test_the_fourier_image_matches_a_numpy_reference():
    h, w = 6, 9
    low, high = torch.tensor([-1.0, 0.0, 0.5]), torch.tensor([2.0, 1.0, 0.75])
    mixing = torch.tensor([[1.0, 0.2, 0.1], [0.2, 0.8, 0.0], [0.1, 0.0, 0.5]])
    stats = PixelStats(low.double(), high.double(), mixing.double(), (h, w))
    image = FourierImage(stats, (h, w), torch.Generator().manual_seed(0), torch.float64, torch.device("cpu"))
    with torch.no_grad():
        image.spectrum.normal_(generator=torch.Generator().manual_seed(1))  # far from the nearly flat start
    got = image()[0].detach().numpy()
    spectrum = image.spectrum.detach().numpy()
    frequency = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, : w // 2 + 1] ** 2)
    amplitude = np.sqrt(h * w) / np.maximum(frequency, 1 / max(h, w))
    pixels = np.fft.irfft2((spectrum[0] + 1j * spectrum[1]) * amplitude, s=(h, w)) / 4
    mixed = np.einsum("dc,chw->dhw", mixing.numpy(), pixels)
    expected = low.numpy()[:, None, None] + (high - low).numpy()[:, None, None] / (1 + np.exp(-mixed))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert (got.min(axis=(1, 2)) >= low.numpy()).all() and (got.max(axis=(1, 2)) <= high.numpy()).all()


def test_affine_shifts_and_turns_as_a_reference_does():
    x = torch.arange(2 * 6 * 6, dtype=torch.float64).reshape(1, 2, 6, 6)
    assert torch.allclose(affine(x, (0, 0), 1.0, 0.0), x)
    assert torch.allclose(affine(x, (1, 0), 1.0, 0.0)[..., 1:], x[..., :-1])  # one pixel right
    assert torch.allclose(affine(x, (0, 2), 1.0, 0.0)[..., 2:, :], x[..., :-2, :])  # two pixels down
    assert torch.allclose(affine(x, (0, 0), 1.0, 90.0), torch.rot90(x, 1, (2, 3)))
    # a non-square linear ramp turned by 30 degrees and scaled by 1.25: the rigid map's values, in the interior
    h, w, a, b = 12, 20, 0.7, -1.3
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    ramp = (a * xs + b * ys).double()[None, None]
    turned = affine(ramp, (0, 0), 1.25, 30.0)[0, 0]
    c, s = math.cos(math.radians(30)) / 1.25, math.sin(math.radians(30)) / 1.25
    expected = a * (c * xs - s * ys) + b * (s * xs + c * ys)
    inner = (slice(3, -3), slice(3, -3))
    assert torch.allclose(turned[inner], expected.double()[inner], atol=1e-9)


def test_a_random_resnet18_on_colour_images():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = fingerprint(model)
    probe = nw.Probe(
        model, images, layer="layer3", display={"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    )
    r = probe.visualize(7, steps=3, progress=False)
    assert r.input.shape == (3, 64, 64) and r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8
    assert math.isfinite(r.activation)
    assert np.array_equal(r.image, probe.display(r.input[None])[0])
    n = probe.visualize(7, objective="neuron", steps=2, size=48, progress=False)
    assert n.input.shape == (3, 48, 48) and n.image.shape == (48, 48, 3)
    assert_same(before, fingerprint(model))
