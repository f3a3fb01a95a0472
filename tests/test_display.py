"""Images as the eye expects them (neuronwidgets.display) and class names, tested on real photographs.

matplotlib's sample photos go into a small ImageFolder normalised with ImageNet statistics (transforms v1, v2
and the ResNet-18 weights' preset); what the ActivationOverlay sends as each tile's base image must be the photo
itself (after the same resize and crop), to the pixel level.
"""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from matplotlib import cbook
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.models import ResNet18_Weights
from torchvision.transforms import functional as F
from torchvision.transforms import v2

import neuronwidgets as nw
from neuronwidgets import render
from neuronwidgets.display import Unnormalize, find_normalize

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PHOTOS = {"hopper": ["grace_hopper.jpg"], "present": ["Minduka_Present_Blue_Pack.png"], "logo": ["logo2.png"]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """An ImageFolder of matplotlib's sample photos, 3 classes; the hopper class also holds a flipped copy."""
    root = tmp_path_factory.mktemp("photos")
    for label, names in PHOTOS.items():
        (root / label).mkdir()
        for name in names:
            shutil.copy(cbook.get_sample_data(name, asfileobj=False), root / label / name)
    Image.open(root / "hopper" / "grace_hopper.jpg").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        root / "hopper" / "flipped.png"
    )
    return root


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=3).eval()


def originals(dataset: ImageFolder, geometry) -> list[np.ndarray]:
    """Each photo as the eye sees it: opened as ImageFolder opens it, resized and cropped by ``geometry``."""
    return [np.asarray(geometry(Image.open(path).convert("RGB"))) for path, _ in dataset.samples]


def overlay_bases(probe: nw.Probe, k: int) -> dict[int, np.ndarray]:
    """{image index: the base image the ActivationOverlay sends}, decoded from its PNG bytes."""
    overlay = nw.ActivationOverlay(probe, unit=0, k=k)
    assert overlay.wait(120) and overlay.tiles
    return {tile["index"]: np.asarray(Image.open(io.BytesIO(bytes(tile["image"])))) for tile in overlay.tiles}


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


V1 = T.Compose([T.Resize(72), T.CenterCrop(64), T.ToTensor(), T.Normalize(MEAN, STD)])
V2 = v2.Compose(
    [v2.PILToTensor(), v2.Resize(72), v2.CenterCrop(64), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
)


@pytest.mark.parametrize(
    ("transform", "geometry"),
    [
        (V1, T.Compose([T.Resize(72), T.CenterCrop(64)])),
        (V2, lambda image: v2.CenterCrop(64)(v2.Resize(72)(v2.PILToTensor()(image))).permute(1, 2, 0)),
    ],
    ids=["v1", "v2"],
)
def test_the_overlay_shows_the_photo_itself(folder, model, transform, geometry):
    dataset = ImageFolder(folder, transform=transform)
    probe = nw.Probe(model, dataset, classes=["hopper", "logo", "present"])
    assert "Normalize" in probe.display.rule
    photos = originals(dataset, geometry)
    bases = overlay_bases(probe, k=len(dataset))
    assert sorted(bases) == list(range(len(dataset)))
    for index, base in bases.items():
        assert max_diff(base, photos[index]) <= 1
    # the old rule (one min-max over the whole normalised image) is visibly off: the test has teeth
    old = render.to_display(probe.images([0]).numpy(), minmax=True)[0]
    assert max_diff(old, photos[0]) > 20


def test_the_weights_preset_is_undone_too(folder):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    dataset = ImageFolder(folder, transform=ResNet18_Weights.DEFAULT.transforms())
    probe = nw.Probe(model, dataset)
    assert "ImageClassification" in probe.display.rule
    photos = originals(dataset, lambda im: F.center_crop(F.resize(im, [256], antialias=True), [224]))
    assert photos[0].shape == (224, 224, 3)
    for index, base in overlay_bases(probe, k=2).items():
        assert max_diff(base, photos[index]) <= 1


def test_a_grey_of_half_shows_as_grey():
    """The issue's example: grey 0.5, ImageNet-normalised, used to show as (115, 125, 143)."""
    grey = T.Normalize(MEAN, STD)(torch.full((3, 8, 8), 0.5))
    assert tuple(render.to_display(grey[None].numpy(), minmax=True)[0, 0, 0]) != (128, 128, 128)
    assert tuple(Unnormalize(MEAN, STD).__call__(grey)[0, 0].round(4)) == (0.5, 0.5, 0.5)
    shown = nw.Probe(_tiny(3), grey[None], display={"mean": MEAN, "std": STD}).display_images([0])
    assert max_diff(shown, np.full_like(shown, 128)) <= 1  # 127.5 rounds either way


def test_detected_through_loaders_and_wrappers(folder, model):
    dataset = ImageFolder(folder, transform=V1)
    other = ImageFolder(folder, transform=T.Compose([T.Resize(72), T.CenterCrop(64), T.ToTensor()]))
    for data in (
        DataLoader(dataset, batch_size=2),
        Subset(dataset, [1, 2]),
        DataLoader(Subset(Subset(dataset, [0, 1, 2]), [2, 1]), batch_size=2),
        ConcatDataset([dataset, ImageFolder(folder, transform=V1)]),
    ):
        probe = nw.Probe(model, data)
        assert "Normalize" in probe.display.rule, type(data).__name__
        assert probe.classes == dataset.classes
    mixed = nw.Probe(model, ConcatDataset([dataset, other]))
    assert "default" in mixed.display.rule and "differently" in mixed.display.rule


def test_find_normalize_in_nested_and_chained_transforms():
    nested = T.Compose([T.Resize(8), T.Compose([T.ToTensor(), v2.Compose([v2.Normalize(MEAN, STD)])])])
    found, where = find_normalize(nested)
    assert found == Unnormalize(MEAN, STD) and "Compose > Compose > Compose" in where
    chained = torch.nn.Sequential(T.Normalize([0.5] * 3, [0.5] * 3), T.Normalize(MEAN, STD))
    found, _ = find_normalize(chained)
    x = torch.rand(3, 4, 4)
    assert np.allclose(found(chained(x)), x.permute(1, 2, 0).numpy(), atol=1e-6)
    assert find_normalize(T.Compose([T.ToTensor()]))[0] is None
    assert find_normalize(T.RandomApply([T.Normalize(MEAN, STD)]))[0] is None


def _tiny(channels: int, classes: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, classes),
    )  # fmt: skip


def test_display_options():
    x = T.Normalize(MEAN, STD)(torch.rand(2, 3, 8, 8))
    expected = nw.Probe(_tiny(3), x, display={"mean": MEAN, "std": STD}).display_images([0, 1])
    for option in (
        Unnormalize(MEAN, STD),
        T.Normalize(MEAN, STD),
        v2.Compose([v2.Normalize(MEAN, STD)]),
        ResNet18_Weights.DEFAULT,
        ResNet18_Weights.DEFAULT.transforms(),
        lambda image: (image * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]).permute(1, 2, 0),
        lambda image: Image.fromarray(Unnormalize(MEAN, STD)(image).__mul__(255).round().astype(np.uint8)),
    ):
        shown = nw.Probe(_tiny(3), x, display=option).display_images([0, 1])
        assert shown.dtype == np.uint8 and max_diff(shown, expected) <= 1, option
    minmax = nw.Probe(_tiny(3), x, display="minmax").display_images([0])[0]
    assert minmax.min() == 0 and minmax.max() == 255


@pytest.mark.parametrize(
    ("option", "error", "words"),
    [
        ("pretty", ValueError, "valid: 'auto', 'minmax'"),
        ({"mean": MEAN}, ValueError, "'mean' and 'std'"),
        ({"mean": MEAN, "std": [0.2, 0.0, 0.2]}, ValueError, "std must not contain 0"),
        ({"mean": [0.5, 0.5], "std": [0.2, 0.2]}, ValueError, "3 channels"),
        (T.Compose([T.ToTensor()]), ValueError, "no Normalize"),
        (3, TypeError, "display must be"),
    ],
)
def test_display_errors_say_what_is_valid(option, error, words):
    with pytest.raises(error, match=words):
        nw.Probe(_tiny(3), torch.rand(2, 3, 8, 8), display=option)


def test_a_display_function_returning_the_wrong_thing_is_named():
    probe = nw.Probe(_tiny(3), torch.rand(2, 3, 8, 8), display=lambda image: image)
    with pytest.raises(ValueError, match=r"returned shape \(3, 8, 8\).*channels last"):
        probe.display_images([0])
    probe = nw.Probe(_tiny(3), torch.rand(2, 3, 8, 8), display=lambda image: image.permute(1, 2, 0) * 255)
    with pytest.raises(ValueError, match="uint8"):
        probe.display_images([0])


def test_the_default_rule():
    inside = torch.rand(1, 3, 8, 8)
    probe = nw.Probe(_tiny(3), inside)
    assert "default" in probe.display.rule
    assert max_diff(probe.display_images([0])[0], (inside[0].permute(1, 2, 0).numpy() * 255).round()) == 0
    # outside [0, 1]: one min and max over the whole image, so a red image stays red, not white
    red = torch.zeros(1, 3, 4, 4)
    red[0, 0], red[0, 1:] = 3.0, -1.0
    assert tuple(nw.Probe(_tiny(3), red).display_images([0])[0, 0, 0]) == (255, 0, 0)
    # uint8 pixels are divided by 255 by the data layer and shown as they are
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    shown = nw.Probe(_tiny(3), pixels).display_images([0, 1])
    assert np.array_equal(shown, pixels.permute(0, 2, 3, 1).numpy())


def test_channels_grey_and_more_than_three():
    grey = torch.rand(2, 1, 8, 8)
    shown = nw.Probe(_tiny(1), grey).display_images([1])[0]
    assert (shown[..., 0] == shown[..., 1]).all() and (shown[..., 1] == shown[..., 2]).all()
    assert max_diff(shown[..., 0], (grey[1, 0].numpy() * 255).round()) == 0
    grey_normalised = nw.Probe(_tiny(1), (grey - 0.5) / 0.25, display={"mean": [0.5], "std": [0.25]})
    assert max_diff(grey_normalised.display_images([1])[0], shown) <= 1
    four = nw.Probe(_tiny(4), torch.rand(2, 4, 8, 8))
    assert four.display_images([0]).shape == (1, 8, 8, 3) and "first 3" in four.display.notes[0]
    two = nw.Probe(_tiny(2), torch.rand(2, 2, 8, 8))
    assert two.display_images([0]).shape == (1, 8, 8, 3) and "2 channels" in two.display.notes[0]


def test_the_demo_keeps_its_raw_images():
    model, data = nw.demo.load()
    probe = nw.Probe(model, data, layer="conv2")
    assert probe.display.rule == "the dataset's raw images"
    expected = (np.asarray(data.raw[3][0]) * 255).round().astype(np.uint8)
    assert np.array_equal(probe.display_images([3])[0, ..., 0], expected)


# -- class names ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet1000() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=1000).eval()


def test_class_names_from_the_weights(resnet1000):
    images = torch.rand(2, 3, 32, 32)
    categories = ResNet18_Weights.DEFAULT.meta["categories"]
    for option in (ResNet18_Weights.DEFAULT, categories, tuple(categories)):
        probe = nw.Probe(resnet1000, images, classes=option)
        assert len(probe.classes) == 1000 and "golden retriever" in probe.classes
        assert probe.classes.index("golden retriever") == 207
    assert "meta['categories']" in nw.Probe(resnet1000, images, classes=ResNet18_Weights.DEFAULT).classes_note


def test_explicit_class_names_must_match_the_outputs(resnet1000):
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"3 class names given.*1000 outputs"):
        nw.Probe(resnet1000, images, classes=["a", "b", "c"])
    with pytest.raises(TypeError, match=r"ResNet18_Weights\.DEFAULT"):
        nw.Probe(resnet1000, images, classes=ResNet18_Weights)
    with pytest.raises(TypeError, match="sequence of names"):
        nw.Probe(resnet1000, images, classes="golden retriever")


def test_dataset_class_names_that_do_not_fit_are_ignored_with_a_reason(folder, resnet1000):
    dataset = ImageFolder(folder, transform=V1)
    with pytest.warns(UserWarning, match=r"3 classes .* do not match the model's 1000 outputs"):
        probe = nw.Probe(resnet1000, dataset)
    assert probe.classes[:2] == ["0", "1"] and "labels are still read" in probe.classes_note


def test_dataset_class_names_through_loaders_and_subsets(folder, model):
    dataset = ImageFolder(folder, transform=V1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for data in (
            dataset,
            DataLoader(dataset, batch_size=2),
            Subset(dataset, [0, 3]),
            DataLoader(Subset(dataset, [0, 1])),
        ):
            probe = nw.Probe(model, data)
            assert probe.classes == ["hopper", "logo", "present"] and "dataset" in probe.classes_note
    plain = TensorDataset(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    assert nw.Probe(model, plain).classes == ["0", "1", "2"]
