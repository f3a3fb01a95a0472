"""Bad input gets a clear error that names what was wrong and what is valid."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import neuronwidgets as nw
from tests.conftest import build, make_data


@pytest.fixture
def plain():
    model, shape = build("plain")
    images, labels = make_data(model, 8, shape, seed=1)
    return model, images, labels


def test_unknown_layer_lists_valid_names_closest_first(plain):
    model, images, labels = plain
    with pytest.raises(ValueError, match=r"unknown layer 'relu_2'\. Did you mean 'relu2'\? Inspectable layers: relu2"):
        nw.Probe(model, (images, labels), layer="relu_2")


def test_unsuitable_layers_say_why(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels))
    with pytest.raises(ValueError, match="produces the class scores themselves"):
        probe.layer = "fc2"
    resnet, shape = build("resnet18")
    probe = nw.Probe(resnet, make_data(resnet, 2, shape, seed=0))
    with pytest.raises(ValueError, match="runs 2 times per forward pass"):
        probe.layer = "layer1.0.relu"
    model.unused = nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="does not run in the model's forward pass"):
        nw.Probe(model, (images, labels), layer="unused")


def test_labels_out_of_range(plain):
    model, images, labels = plain
    bad = labels.clone()
    bad[3] = 17
    probe = nw.Probe(model, (images, bad))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.4 .* images \[3\] have labels \[17\]"):
        probe.rank("ablation")


def test_missing_labels_where_a_method_needs_them(plain):
    model, images, _ = plain
    probe = nw.Probe(model, images)
    for method in ("ablation", "taylor", "selectivity"):
        with pytest.raises(ValueError, match=f"{method} needs labels"):
            probe.rank(method)
    with pytest.raises(ValueError, match="needs labels"):
        probe.evaluate([0])
    assert probe.rank("activation", progress=False).units == probe.units


def test_empty_data(plain):
    model, images, labels = plain
    for data in (images[:0], (images[:0], labels[:0]), TensorDataset(images[:0], labels[:0])):
        with pytest.raises(ValueError, match="the data is empty"):
            nw.Probe(model, data)


def test_wrong_image_shape(plain):
    model, _, _ = plain
    with pytest.raises(ValueError, match=r"the model failed on an image of shape \(1, 8, 8\)"):
        nw.Probe(model, torch.rand(4, 1, 8, 8))
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\) or \(C, H, W\)"):
        nw.Probe(model, torch.rand(8, 8))
    with pytest.raises(ValueError, match="one label per image"):
        nw.Probe(model, (torch.rand(4, 3, 8, 8), torch.tensor([0, 1])))


def test_model_output_must_be_class_scores():
    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match=r"class scores of shape \(N, classes\), got \(1, 4, 6, 6\)"):
        nw.Probe(Embedder(), torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        nw.Probe(lambda x: x, torch.rand(2, 3, 8, 8))


def test_nan_in_data(plain):
    model, images, labels = plain
    images = images.clone()
    images[5, 0, 1, 1] = float("nan")
    probe = nw.Probe(model, (images, labels), chunk_size=4)
    with pytest.raises(ValueError, match=r"NaN or infinite values \(images \[5\]"):
        probe.rank("activation", progress=False)


def test_shuffling_loader_and_unsupported_data(plain):
    model, images, labels = plain
    with pytest.raises(ValueError, match="shuffle=False"):
        nw.Probe(model, DataLoader(TensorDataset(images, labels), shuffle=True))
    with pytest.raises(TypeError, match="unsupported data of type int"):
        nw.Probe(model, 3)


def test_bad_method_options_target_units_and_mode(plain):
    model, images, labels = plain
    probe = nw.Probe(model, (images, labels), layer="relu2")
    with pytest.raises(ValueError, match=r"unknown method 'ablate'\. Did you mean 'ablation'"):
        probe.rank("ablate")
    with pytest.raises(TypeError, match=r"unknown option.*steps; valid options: target, mode"):
        probe.rank("ablation", steps=3)
    with pytest.raises(TypeError, match=r"unknown option\(s\) target; valid options: fold_batchnorm$"):
        probe.rank("weight_l1", target=1)
    with pytest.raises(TypeError, match="valid options: none"):
        probe.rank("taylor", target=1)
    with pytest.raises(ValueError, match=r"target must be a class index in 0\.\.4, got 9"):
        probe.rank("ablation", target=9)
    with pytest.raises(ValueError, match=r"units \[8\] out of range: layer 'relu2' has units 0\.\.7"):
        probe.evaluate([1, 8])
    with pytest.raises(ValueError, match="unknown ablation mode 'half'; valid modes: zero, mean"):
        probe.evaluate([1], mode="half")
    with pytest.raises(ValueError, match="5 outputs"):
        probe.classes = ["a", "b"]


def test_device_mismatch_is_refused_not_silently_moved(plain):
    model, images, labels = plain
    with pytest.raises(ValueError, match="never moves your model"):
        nw.Probe(model, (images, labels), device="meta")


@pytest.mark.parametrize("method", ["ablation", "activation", "selectivity", "car"])
def test_a_target_class_without_images_is_named(plain, method):
    model, images, labels = plain
    labels = labels.clone()
    labels[labels == 4] = 0  # the plain model has 5 classes; none of the images is of class 4 now
    probe = nw.Probe(model, (images, labels), layer="relu2")
    with pytest.raises(ValueError, match=r"no image of class 4 \('4'\) in the data"):
        probe.rank(method, target=4, progress=False)
