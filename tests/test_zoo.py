"""The torchvision classification zoo as a test matrix (random weights, float64, small inputs).

For each family, at an early, a middle, an in-block and the last feature layer: ``ablation`` equals the naive
forward-hook loop (accuracy drops identical, class scores close), every other method runs or refuses with a
clear reason raised by neuronwidgets itself, and the model is bit-identical afterwards. The engine path of every
case is printed at the end of the run (and recorded as the test's ``engine`` property).

Then the faults the zoo showed, each with its own test: channels-last sites (ConvNeXt), a saturated output in
``resampling_correlation``, float32 per-image means for float64 models, ``x.mean([2, 3])`` before the classifier
and the engine note where only channel-wise ops follow the layer.
"""

from __future__ import annotations

import os
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision import models

import neuronwidgets as nw
from tests import reference
from tests.conftest import make_data
from tests.models import randomize_batchnorm
from tests.test_sacred import assert_same, fingerprint

CLASSES = 5
IMAGES = 8
SAMPLED_UNITS = 6  # units checked against the naive loop per layer (the full model re-run per unit)
PACKAGE = Path(nw.__file__).parent


@dataclass(frozen=True)
class Family:
    """One torchvision family: how to build a small member, its input size and the four layers checked."""

    build: Callable[[], nn.Module]
    size: int  # the smallest input edge that leaves every checked layer a map (inception_v3: 75)
    layers: dict[str, str]  # role -> layer name: early, middle, in-block, last feature layer
    slow: bool = False
    heavy: bool = False  # minutes on 2 cores (vgg's and alexnet's big classifiers, inception_v3 at 75 px): opt-in


# The heavy families run with NW_ZOO_FULL=1 (every one passed in a full run: vgg 363 s, inception_v3 229 s,
# convnext 155 s, alexnet 101 s on a loaded 2-core machine); CI runs the others, to stay within its time.
FULL = os.environ.get("NW_ZOO_FULL") == "1"


FAMILIES: dict[str, Family] = {
    "resnet18": Family(
        lambda: models.resnet18(weights=None, num_classes=CLASSES),
        16,
        {"early": "relu", "middle": "layer2.0", "in_block": "layer1.0.bn1", "last": "layer4"},
        slow=True,
    ),
    "mobilenet_v2": Family(
        lambda: models.mobilenet_v2(weights=None, num_classes=CLASSES, width_mult=0.25),
        16,
        {"early": "features.1", "middle": "features.7", "in_block": "features.4.conv.0.2", "last": "features.18"},
    ),
    "mobilenet_v3": Family(
        lambda: models.mobilenet_v3_small(weights=None, num_classes=CLASSES),
        16,
        {
            "early": "features.0",
            "middle": "features.4",
            "in_block": "features.1.block.1.fc1",
            "last": "features",
        },
    ),
    "efficientnet": Family(
        lambda: models.efficientnet_b0(weights=None, num_classes=CLASSES),
        16,
        {
            "early": "features.1.0",
            "middle": "features.3.0.block.3",
            "in_block": "features.1.0.block.1.fc1",
            "last": "features",
        },
        slow=True,
    ),
    "convnext": Family(
        lambda: models.convnext_tiny(weights=None, num_classes=CLASSES),
        32,
        {
            "early": "features.0",
            "middle": "features.4.0",
            "in_block": "features.1.0.block.0",
            "last": "features",
        },
        slow=True,
        heavy=True,
    ),
    "densenet": Family(
        lambda: models.DenseNet(
            growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2, num_classes=CLASSES
        ),
        32,
        {
            "early": "features.pool0",
            "middle": "features.transition2",
            "in_block": "features.denseblock3.denselayer1.relu2",
            "last": "features",
        },
    ),
    "shufflenet": Family(
        lambda: models.shufflenet_v2_x0_5(weights=None, num_classes=CLASSES),
        16,
        {"early": "maxpool", "middle": "stage3.0", "in_block": "stage2.1.branch2.4", "last": "conv5"},
    ),
    "squeezenet": Family(
        lambda: models.squeezenet1_1(weights=None, num_classes=CLASSES),
        32,
        {
            "early": "features.1",
            "middle": "features.6",
            "in_block": "features.9.squeeze_activation",
            "last": "features",
        },
    ),
    "vgg": Family(
        lambda: models.vgg11(weights=None, num_classes=CLASSES),
        32,
        {"early": "features.2", "middle": "features.9", "in_block": "features.14", "last": "features"},
        slow=True,
        heavy=True,
    ),
    "googlenet": Family(
        lambda: models.googlenet(weights=None, num_classes=CLASSES, aux_logits=False, init_weights=False),
        32,
        {
            "early": "maxpool1",
            "middle": "inception3a.branch4",
            "in_block": "inception4e.branch3.0",
            "last": "inception5b",
        },
        slow=True,
    ),
    "inception_v3": Family(
        lambda: models.inception_v3(weights=None, num_classes=CLASSES, aux_logits=False, init_weights=False),
        75,
        {
            "early": "Conv2d_2a_3x3",
            "middle": "Mixed_6a",
            "in_block": "Mixed_7a.branch3x3_1",
            "last": "Mixed_7c",
        },
        slow=True,
        heavy=True,
    ),
    "regnet": Family(
        lambda: models.regnet_x_400mf(weights=None, num_classes=CLASSES),
        16,
        {
            "early": "stem",
            "middle": "trunk_output.block2",
            "in_block": "trunk_output.block3.block3-0.f.b.2",
            "last": "trunk_output",
        },
        slow=True,
    ),
    "mnasnet": Family(
        lambda: models.mnasnet0_5(weights=None, num_classes=CLASSES),
        16,
        {"early": "layers.2", "middle": "layers.9", "in_block": "layers.8.0.layers.2", "last": "layers.16"},
        slow=True,
    ),
    "alexnet": Family(
        lambda: models.alexnet(weights=None, num_classes=CLASSES),
        63,
        {"early": "features.1", "middle": "features.5", "in_block": "features.9", "last": "features"},
        slow=True,
        heavy=True,
    ),
}

# Every method but ablation, with options that keep it cheap (greedy CAR prunes one unit, resampling 4 copies).
# CAR runs at the last layer only: its first round is the one-shot ablation loop checked exact at every layer,
# and elsewhere it would double the file's time.
OPTIONS: dict[str, dict] = {
    "car": {"prune": 1},
    "resampling_correlation": {"image": 0, "copies": 4},
    "resampling_precision": {"image": 0, "copies": 4},
}
ENGINE_PATHS: list[tuple[str, str, str, str, int, str]] = []  # family, role, layer, path, units, note


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these tensors are tiny, and on busy shared cores OpenMP's spinning threads make a
    float64 depthwise conv up to 500x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def engine_table(request: pytest.FixtureRequest):
    """Print the engine path of every case at the end of the module's run (past output capturing)."""
    yield
    if not ENGINE_PATHS:
        return
    lines = ["", "torchvision zoo: engine path per layer", f"{'family':<14} {'role':<9} {'layer':<40} units  path"]
    lines += [f"{f:<14} {r:<9} {layer:<40} {u:>5}  {p:<12} {note}" for f, r, layer, p, u, note in ENGINE_PATHS]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


def build(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The family's model in float64 eval mode with seeded random weights (and BatchNorm statistics), and
    labelled random images that agree with the model on about two thirds of them."""
    family = FAMILIES[name]
    torch.manual_seed(0)
    model = family.build()
    randomize_batchnorm(model, torch.Generator().manual_seed(0))
    model = model.double().eval()
    images, labels = make_data(model, IMAGES, (3, family.size, family.size), seed=1)
    return model, images, labels


def sampled_units(ranking: nw.Ranking, units: int) -> list[int]:
    """A few units to check against the naive loop: the first and last, the top two by the engine's own
    ranking (so some changed accuracy), and two more spread over the layer."""
    picks = [0, units - 1, *ranking.order[:2].tolist(), units // 3, (2 * units) // 3]
    return sorted(set(picks))[:SAMPLED_UNITS]


def check_ablation(probe: nw.Probe, model: nn.Module, layer: str, images, labels) -> nw.Ranking:
    """``probe.rank("ablation")`` against the naive hook loop on a sample of units: accuracy drops identical,
    class scores close."""
    ranking = probe.rank("ablation", layer=layer, progress=False)
    units = sampled_units(ranking, probe.layer_info(layer).units)
    base, expected = reference.ablation_table(model, layer, images, labels, "zero", units=units)
    drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in expected]
    np.testing.assert_array_equal(ranking.scores[units], drops, err_msg=f"{layer}: accuracy drops")
    assert ranking.meta["base_accuracy"] == reference.accuracy(base, labels)
    site = probe.site(layer)
    fill, ablator = site.fill("zero"), site.ablator()
    values = ablator.crossing(images)
    got = torch.full_like(expected, torch.nan)
    with torch.no_grad():
        for block, which, scores in ablator.each_unit(values, units, fill):
            got[[units.index(u) for u in block], which] = scores
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9 * scale, msg=f"{layer}: class scores")
    return ranking


def raised_by_neuronwidgets(err: BaseException) -> bool:
    """Whether ``err`` was raised by neuronwidgets' own code (a refusal), not deep inside torch."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE.resolve())


def check_other_methods(probe: nw.Probe, layer: str, target: int, last: bool) -> dict[str, str]:
    """Every method but ablation either returns a ranking of the layer's units or refuses with a ValueError or
    TypeError raised by neuronwidgets with an explaining message. Returns method -> "ok" or the reason."""
    outcome = {}
    units = probe.layer_info(layer).units
    for method in nw.methods():
        if method == "ablation" or (method == "car" and not last):
            continue
        options = dict(OPTIONS.get(method, {}))
        if method == "pcace":
            options["target"] = target
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ranking = probe.rank(method, layer=layer, progress=False, **options)
        except (ValueError, TypeError) as err:
            assert raised_by_neuronwidgets(err), f"{method} at {layer}: a bare error from torch: {err!r}"
            assert len(str(err)) > 30, f"{method} at {layer}: an unexplained refusal: {err!r}"
            outcome[method] = str(err)
            continue
        assert ranking.scores.shape == (units,), (method, layer)
        assert np.isfinite(ranking.scores).all() or method == "resampling_precision", (method, layer)
        outcome[method] = "ok"
    return outcome


def run_family(name: str, record_property: Callable[[str, object], None]) -> None:
    model, images, labels = build(name)
    before = fingerprint(model)
    probe = nw.Probe(model, (images, labels), chunk_size=IMAGES)
    target = int(np.bincount(labels.numpy(), minlength=CLASSES).argmax())
    for role, layer in FAMILIES[name].layers.items():
        assert layer in probe.layers, f"{name}: {layer!r} is not inspectable"
        ranking = check_ablation(probe, model, layer, images, labels)
        outcomes = check_other_methods(probe, layer, target, last=role == "last")
        note = ranking.meta["engine_note"] or ""
        ENGINE_PATHS.append((name, role, layer, ranking.meta["engine"], probe.layer_info(layer).units, note))
        record_property(f"engine[{role}:{layer}]", ranking.meta["engine"])
        refused = {m: why[:80] for m, why in outcomes.items() if why != "ok"}
        if refused:
            record_property(f"refused[{role}:{layer}]", refused)
    assert_same(before, fingerprint(model))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=[
                *([pytest.mark.slow] if f.slow else []),
                *([pytest.mark.skipif(not FULL, reason="heavy family: set NW_ZOO_FULL=1")] if f.heavy else []),
            ],
        )
        for n, f in FAMILIES.items()
    ],
)
def test_zoo(name: str, record_property) -> None:
    run_family(name, record_property)


# -- faults the zoo showed ---------------------------------------------------------------------------------------


def test_channels_last_sites_are_refused_with_the_reason():
    """ConvNeXt's LayerNorm, Linear and GELU sites are (N, H, W, C): their first axis is the image's rows, not
    channels, so they are not offered, and asking for one says why; the convs and blocks around them are."""
    torch.manual_seed(0)
    model = models.convnext_tiny(weights=None, num_classes=CLASSES).double().eval()
    probe = nw.Probe(model, torch.rand(2, 3, 32, 32, dtype=torch.float64))
    for layer in ("features.1.0.block.1", "features.1.0.block.2", "features.1.0.block.3", "features.1.0.block.4"):
        assert layer not in probe.layers
        with pytest.raises(ValueError, match=r"channels-last, \(N, H, W, C\) with (96|384) channels"):
            probe.rank("activation", layer=layer, progress=False)
    for layer in ("features.1.0.block.0", "features.1.0.block.6", "features.1.0", "features.2.0"):
        assert layer in probe.layers  # the depthwise conv, the permute back, the block, a LayerNorm2d
    assert probe.layer_info("features.1.0.block.0").units == 96
    assert probe.layer_info("features.2.0").units == 96  # LayerNorm2d permutes inside and back: channels-first


class ChannelsLastMLP(nn.Module):
    """conv, then a functional permute to (N, H, W, C), LayerNorm, Linear, GELU, and back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.norm = nn.LayerNorm(6)
        self.fc = nn.Linear(6, 10)
        self.act = nn.GELU()
        self.head = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc(self.norm(self.conv(x).permute(0, 2, 3, 1))))
        return self.head(x.mean((1, 2)))


def test_channels_last_is_found_after_a_functional_permute():
    """A LayerNorm over one dimension or a Linear given a 4-D map acts on its last axis, and a GELU after them
    keeps that layout, even where the permute itself is no module."""
    torch.manual_seed(0)
    probe = nw.Probe(ChannelsLastMLP().double().eval(), torch.rand(2, 3, 7, 7, dtype=torch.float64))
    assert probe.layers == ["conv"]
    with pytest.raises(ValueError, match="channels-last"):
        probe.layer_info("act")


class Saturated(nn.Module):
    """Class 0's logit is 2000 above the others whatever the image: its probability is exactly 1.0."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([2000.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean([2, 3]))


def test_resampling_says_when_the_probability_saturates():
    """Every correlation is undefined when the output is the same on all copies: meta says so, the scores are 0
    and the warning suggests logits, which do vary."""
    torch.manual_seed(0)
    probe = nw.Probe(Saturated().double().eval(), torch.rand(3, 3, 6, 6, dtype=torch.float64), layer="conv")
    with pytest.warns(nw.RankingWarning, match="output='logit'"):
        ranking = probe.rank("resampling_correlation", image=0, copies=8, progress=False)
    assert ranking.meta["constant_output"] is True
    assert (ranking.scores == 0).all()
    assert any("output='logit'" in note for note in ranking.meta["warnings"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logit = probe.rank("resampling_correlation", image=0, copies=8, output="logit", progress=False)
    assert logit.meta["constant_output"] is False and not logit.meta["warnings"]
    assert (logit.scores > 0).all()


class Offset(nn.Module):
    """A signed site at ``offset`` whose units differ by about 1e-6: near 1e4, float32 (7 digits) cannot tell
    them apart; near 0, selectivity's denominator is a difference of signed means (ill-conditioned)."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset
        self.conv = nn.Conv2d(3, 5, 1)
        self.fc = nn.Linear(5, 4)
        with torch.no_grad():
            self.conv.weight.mul_(1e-6)
            self.conv.bias.fill_(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean([2, 3]) - self.offset)


def offset_probe(offset: float) -> tuple[nw.Probe, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = Offset(offset).double().eval()
    images = torch.rand(24, 3, 4, 4, dtype=torch.float64) - 0.5
    labels = torch.arange(24) % 4
    probe = nw.Probe(model, (images, labels), layer="conv")
    return probe, reference.layer_output(model, "conv", images).numpy(), labels.numpy()


def test_activation_keeps_float64_means_for_a_float64_model():
    probe, out, _ = offset_probe(1e4)
    summary = probe.site().summary()
    assert summary.image_mean.dtype == summary.image_max.dtype == np.float64
    np.testing.assert_allclose(summary.image_mean, out.mean((2, 3)), rtol=1e-15)
    np.testing.assert_allclose(summary.image_max, out.max((2, 3)), rtol=0)
    scores = probe.rank("activation", progress=False).scores
    np.testing.assert_allclose(scores, out.mean((0, 2, 3)), rtol=1e-15)
    assert len(set(scores.tolist())) == 5  # in float32 all five are 10000.0


def test_selectivity_keeps_float64_means_at_an_ill_conditioned_signed_site():
    probe, out, labels = offset_probe(0.0)
    selectivity = probe.rank("selectivity", progress=False).scores
    np.testing.assert_allclose(selectivity, reference.selectivity(out, labels), rtol=1e-9)


def test_float32_models_keep_float32_per_image_statistics():
    """Memory: a float32 model's per-image means stay float32 (summed in float64 first)."""
    from neuronwidgets.engine.stats import LayerSummary

    summary = LayerSummary.of(torch.rand(3, 2, 4, 4), None)
    assert summary.image_mean.dtype == np.float32 and summary.image_max.dtype == np.float32


class SpatialMean(nn.Module):
    """conv, ReLU, then ``x.mean(dims)`` (a method call, not a module) and the classifier."""

    def __init__(self, dims: object) -> None:
        super().__init__()
        self.dims = dims
        self.conv = nn.Conv2d(3, 6, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6 if dims != (2,) else 6 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        if self.dims == "sum":
            return self.fc(torch.sum(x, dim=(2, 3)))
        return self.fc(x.mean(self.dims).flatten(1))


@pytest.mark.parametrize(
    ("dims", "path"),
    [([2, 3], "closed_form"), ((2,), "closed_form"), ("sum", "closed_form"), ((-2, -1), "suffix")],
)
def test_a_spatial_mean_before_the_classifier_is_channelwise(dims, path):
    """``x.mean([2, 3])`` (shufflenet, mnasnet) reduces only positions: the closed form applies. Negative
    dims are not taken on trust (without the rank, -2 may be the channels) and stay exact on the suffix."""
    torch.manual_seed(0)
    model = SpatialMean(dims).double().eval()
    images, labels = make_data(model, 12, (3, 6, 6), seed=2)
    probe = nw.Probe(model, (images, labels), layer="relu")
    ranking = probe.rank("ablation", progress=False)
    assert ranking.meta["engine"] == path, ranking.meta["engine_note"]
    base, table = reference.ablation_table(model, "relu", images, labels)
    drops = [reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in table]
    np.testing.assert_array_equal(ranking.scores, drops)


def test_the_engine_note_is_true_where_only_channelwise_ops_follow():
    """squeezenet's classifier.1 (a 1x1 conv) is followed by ReLU, pooling and flatten only: nothing mixes
    channels, and the note says so."""
    torch.manual_seed(0)
    model = models.squeezenet1_1(weights=None, num_classes=CLASSES).double().eval()
    images, labels = make_data(model, 6, (3, 32, 32), seed=1)
    ranking = nw.Probe(model, (images, labels)).rank("ablation", layer="classifier.1", progress=False)
    assert ranking.meta["engine"] == "suffix"
    assert ranking.meta["engine_note"].startswith("only channel-wise ops follow the layer up to the class scores")
    assert "mixes" not in ranking.meta["engine_note"]
