"""Class-contribution maps (activation x d(class score)/d(activation)) against plain autograd and finite
differences, their ordering of top images, their errors, and the model left untouched."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

import neuronwidgets as nw
from tests.conftest import build, make_data
from tests.test_sacred import assert_same, fingerprint


def first_order_terms(model, layer, images, target):
    """(N, units) sum over positions of A * dS/dA by retain_grad on a hooked output of a copy of the model;
    S is class ``target``'s logit (None: each image's top class)."""
    model = copy.deepcopy(model).eval()
    held = []

    def hook(module, inputs, output):
        output = output.clone()  # a fresh non-leaf: in-place ops after the layer act on its users
        output.retain_grad()
        held.append(output)
        return output * 1.0

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        logits = model(images)
    finally:
        handle.remove()
    classes = logits.argmax(1) if target is None else torch.full((len(images),), target)
    logits[torch.arange(len(images)), classes].sum().backward()
    a, g = held[0].detach(), held[0].grad
    return (a * g).reshape(a.shape[0], a.shape[1], -1).sum(2).numpy()


@pytest.mark.parametrize("target", [1, None])
@pytest.mark.parametrize("name", ["plain", "residual", "untraceable"])
def test_maps_sum_to_the_first_order_term_of_plain_autograd(name, target):
    model, shape = build(name)
    images, labels = make_data(model, 10, shape, seed=1)
    probe = nw.Probe(model, (images, labels), chunk_size=5)
    for layer in probe.layers:
        expected = first_order_terms(model, layer, images, target)
        units = probe.layer_info(layer).units
        for unit in (0, units - 1):
            from_tensor = probe.contribution_maps(unit, images, target=target, layer=layer)
            assert from_tensor.ndim == 3 and from_tensor.shape[0] == len(images)
            if unit == 0:  # the same maps from the data's indices, in the order asked
                picked = probe.contribution_maps(unit, [7, 2, 7], target=target, layer=layer)
                np.testing.assert_allclose(picked, from_tensor[[7, 2, 7]], rtol=1e-6, atol=1e-7)
            scale = np.abs(expected[:, unit]).max() + 1e-12
            np.testing.assert_allclose(from_tensor.sum((1, 2)), expected[:, unit], rtol=1e-5, atol=1e-6 * scale)
        # the data's order by summed contribution: every unit's from one pass
        for unit in range(units):
            order = probe.top_images(unit, len(images), by="contribution", target=target, layer=layer, progress=False)
            assert sorted(order.tolist()) == list(range(len(images)))
            sums = expected[order, unit]
            assert np.all(np.diff(sums) <= 1e-9 * (np.abs(sums).max() + 1e-12)), (name, layer, unit)


def test_maps_match_finite_differences_of_the_class_score():
    """Scaling the unit's map by (1 + eps) changes the class score by eps x the map's sum, to first order."""
    model, shape = build("plain")
    images, labels = make_data(model, 6, shape, seed=4)
    probe = nw.Probe(model, (images, labels), layer="conv2")
    target, eps = 3, 1e-6
    for unit in range(probe.units):
        maps = probe.contribution_maps(unit, images, target=target)

        def score(factor, unit=unit):
            def scale(module, inputs, output):
                output = output.clone()
                output[:, unit] *= factor
                return output

            handle = model.conv2.register_forward_hook(scale)
            try:
                with torch.no_grad():
                    return model(images)[:, target].numpy()
            finally:
                handle.remove()

        change = (score(1 + eps) - score(1 - eps)) / 2  # central: the second-order term cancels
        np.testing.assert_allclose(change, eps * maps.sum((1, 2)), rtol=1e-4, atol=1e-12)
        base = score(1.0)
        np.testing.assert_allclose(base - score(1 - eps), eps * maps.sum((1, 2)), rtol=1e-3, atol=1e-12)


def test_one_image_a_layer_without_positions_and_the_predicted_class():
    model, shape = build("plain")
    images, labels = make_data(model, 4, shape, seed=5)
    probe = nw.Probe(model, (images, labels))
    one = probe.contribution_maps(2, images[0], target=0, layer="conv1")
    assert one.shape == (1, 8, 8)
    np.testing.assert_allclose(one, probe.contribution_maps(2, [0], target=0, layer="conv1"))
    assert probe.contribution_maps(2, [0, 1], target=0, layer="fc1").shape == (2, 1, 1)  # (N, units): one value
    with torch.no_grad():
        predicted = model(images).argmax(1)
    each = np.stack([probe.contribution_maps(1, [i], target=int(predicted[i]))[0] for i in range(4)])
    np.testing.assert_allclose(probe.contribution_maps(1, [0, 1, 2, 3], target=None), each, rtol=1e-12)


def test_top_images_by_contribution_report_progress_are_cached_and_cancel():
    model, shape = build("plain")
    images, labels = make_data(model, 12, shape, seed=6)
    probe = nw.Probe(model, (images, labels), chunk_size=4)
    seen = []
    first = probe.top_images(0, 3, by="contribution", target=2, progress=seen.append)
    assert seen and seen[-1].done == seen[-1].total == 3  # one step per chunk of 4 images
    again = []
    assert probe.top_images(0, 3, by="contribution", target=2, progress=again.append).tolist() == first.tolist()
    probe.top_images(5, 3, by="contribution", target=2, progress=again.append)
    assert again == []  # one pass per class gives every unit: nothing more to compute, nothing to report
    probe.top_images(0, 3, by="contribution", target=None, progress=again.append)
    assert again[-1].done == 3  # another class (each image's predicted one): another pass
    stop = threading.Event()
    stop.set()
    with pytest.raises(nw.Cancelled):
        probe.top_images(0, 3, by="contribution", target=1, progress=False, cancel=stop)
    assert (
        probe.top_images(0, 3, by="activation").tolist()
        == np.argsort(-probe.activation_maps(0, list(range(12))).max((1, 2)), kind="stable")[:3].tolist()
    )


def test_errors_say_what_is_valid():
    model, shape = build("plain")
    images, labels = make_data(model, 4, shape, seed=7)
    probe = nw.Probe(model, (images, labels))
    with pytest.raises(ValueError, match=r"target must be a class index in 0\.\.4 .* got 5"):
        probe.contribution_maps(0, [0], target=5)
    with pytest.raises(ValueError, match=r"got -1"):
        probe.top_images(0, by="contribution", target=-1)
    with pytest.raises(TypeError, match=r"target must be a class index .* got True"):
        probe.contribution_maps(0, [0], target=True)
    with pytest.raises(TypeError, match=r"got '3' \(str\)"):
        probe.contribution_maps(0, [0], target="3")
    with pytest.raises(TypeError, match="target"):
        probe.contribution_maps(0, [0])  # the class is never guessed silently
    with pytest.raises(ValueError, match=r'by must be "activation" or "contribution", got \'gradient\''):
        probe.top_images(0, by="gradient")
    with pytest.raises(ValueError, match=r'target= applies to by="contribution" only'):
        probe.top_images(0, target=1)
    with pytest.raises(ValueError, match=r"units \[99\] out of range"):
        probe.contribution_maps(99, [0], target=0)
    with pytest.raises(ValueError, match=r"images \[4\] out of range"):
        probe.contribution_maps(0, [4], target=0)


def test_a_model_autograd_cannot_go_through_is_refused_clearly_and_left_untouched():
    model, shape = build("inplace")  # its in-place add_ overwrites a ReLU's output, which the ReLU's backward needs
    images, labels = make_data(model, 4, shape, seed=9)
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels), layer="conv")
    with pytest.raises(RuntimeError, match=r"gradient of the class score with respect to layer 'conv'"):
        probe.contribution_maps(0, [0, 1], target=0)
    assert_same(before, fingerprint(model))


@pytest.mark.parametrize("name", ["plain", "residual", "untraceable"])
def test_the_model_is_untouched_also_after_an_interrupt(name):
    model, shape = build(name)
    images, labels = make_data(model, 9, shape, seed=8)
    model.train()
    torch.nn.functional.cross_entropy(model(images), labels).backward()  # gradients of its own, mid-training
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels), chunk_size=3)
    for layer in (probe.layers[0], probe.layers[-1]):
        probe.contribution_maps(0, [0, 4], target=1, layer=layer)
        probe.contribution_maps(0, images[:2], target=None, layer=layer)
        probe.top_images(0, 3, by="contribution", target=0, layer=layer, progress=False)

    def interrupt(info):
        if info.done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        probe.top_images(0, 3, by="contribution", target=2, progress=interrupt)
    assert_same(before, fingerprint(model))
