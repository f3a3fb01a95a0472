"""weight_l1 folds the scale of the BatchNorm after the filter into it, against a conv+BN fusion done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.methods import spec
from neuronwidgets.methods.weight_l1 import find_filter
from tests.conftest import build, make_data
from tests.test_sacred import assert_same, fingerprint


class ConvBNReLU(nn.Module):
    """conv -> bn -> relu, then a conv without a BatchNorm, pooling and a linear head."""

    def __init__(self, bn: nn.Module | None = None, between: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.between = between if between is not None else nn.Identity()
        self.bn = bn if bn is not None else nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.between(self.conv(x))))
        x = self.pool(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))


class LinearBN(nn.Module):
    """linear -> BatchNorm1d -> relu -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 7)
        self.bn = nn.BatchNorm1d(7)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.bn(self.fc1(x.flatten(1)))))


class ReLUBeforeBN(nn.Module):
    """conv -> relu -> bn: the BatchNorm does not take the filter's output as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.relu(self.conv(x))).mean((2, 3)))


class SharedConvOutput(nn.Module):
    """The conv's output feeds its BatchNorm and, past it, a sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(self.relu(self.bn(y) + y).mean((2, 3)))


class UntraceableBN(nn.Module):
    """conv -> bn with data-dependent control flow after it: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if x.mean() > -1e9:  # always true, but fx cannot know
            x = x * 1.0
        return self.fc(x.mean((2, 3)))


class CalledTwice(nn.Module):
    """One conv applied twice, each time followed by a different BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(3)
        self.bn_b = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn_b(self.conv(self.bn_a(self.conv(x)))).mean((2, 3)))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Like `randomize_batchnorm`, also for ``affine=False`` and ``track_running_stats=False``, with gammas of
    both signs and variances spread widely (no zeros); float64, eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) * 4 + 0.05)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                n = module.num_features
                sign = torch.where(torch.arange(n) % 3 == 1, -1.0, 1.0)
                module.weight.copy_(sign * (torch.rand(n, generator=generator) * 2 + 0.1))
                module.bias.copy_(torch.randn(n, generator=generator) * 0.3)
    return model.double().eval()


def fused_l1(conv: nn.Module, bn: nn.Module) -> np.ndarray:
    """The L1 norm of each filter of the conv+BN fusion: ``W' = W * gamma / sqrt(running_var + eps)``."""
    gamma = bn.weight.detach().double() if bn.affine else torch.ones(bn.num_features, dtype=torch.float64)
    scale = gamma / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.detach().double() * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
    return weight.abs().flatten(1).sum(1).numpy()


def raw_l1(conv: nn.Module) -> np.ndarray:
    return conv.weight.detach().double().abs().flatten(1).sum(1).numpy()


def probe_of(model: nn.Module, shape: tuple[int, ...] = (3, 6, 6), n: int = 5) -> nw.Probe:
    return nw.Probe(model, make_data(model, n, shape, seed=1))


def meta(ranking: nw.Ranking) -> dict:
    return {key: ranking.meta[key] for key in ("filter", "batchnorm", "batchnorm_note")}


def test_folds_the_batchnorm_at_the_conv_the_bn_and_the_relu():
    model = randomized(ConvBNReLU())
    probe = probe_of(model)
    expected = fused_l1(model.conv, model.bn)
    assert not np.allclose(expected / raw_l1(model.conv), expected[0] / raw_l1(model.conv)[0])  # per channel
    for layer in ("conv", "between", "bn", "relu"):
        ranking = probe.rank("weight_l1", layer=layer)
        np.testing.assert_allclose(ranking.scores, expected, rtol=1e-12)
        assert meta(ranking) == {"filter": "conv", "batchnorm": "bn", "batchnorm_note": None}
        raw = probe.rank("weight_l1", layer=layer, fold_batchnorm=False)
        np.testing.assert_allclose(raw.scores, raw_l1(model.conv), rtol=1e-12)
        assert meta(raw) == {"filter": "conv", "batchnorm": None, "batchnorm_note": None}
        assert raw.meta["options"] == {"fold_batchnorm": False}


def test_a_conv_without_a_batchnorm_after_it_keeps_its_raw_norm():
    model = randomized(ConvBNReLU())
    probe = probe_of(model)
    for layer in ("conv2", "relu2"):
        ranking = probe.rank("weight_l1", layer=layer)
        np.testing.assert_allclose(ranking.scores, raw_l1(model.conv2), rtol=1e-12)
        assert meta(ranking) == {"filter": "conv2", "batchnorm": None, "batchnorm_note": None}


@pytest.mark.parametrize("between", [nn.Dropout(0.5), nn.Dropout2d(0.3), nn.Identity()])
def test_dropout_or_identity_between_conv_and_batchnorm_is_folded_through(between):
    model = randomized(ConvBNReLU(between=between))
    ranking = probe_of(model).rank("weight_l1", layer="relu")
    np.testing.assert_allclose(ranking.scores, fused_l1(model.conv, model.bn), rtol=1e-12)
    assert ranking.meta["batchnorm"] == "bn"


def test_batchnorm1d_after_a_linear_layer():
    model = randomized(LinearBN())
    probe = probe_of(model, shape=(3, 2, 2))
    for layer in ("fc1", "bn", "relu"):
        ranking = probe.rank("weight_l1", layer=layer)
        np.testing.assert_allclose(ranking.scores, fused_l1(model.fc1, model.bn), rtol=1e-12)
        assert meta(ranking) == {"filter": "fc1", "batchnorm": "bn", "batchnorm_note": None}


def test_affine_false_folds_only_the_running_variance():
    model = randomized(ConvBNReLU(bn=nn.BatchNorm2d(6, affine=False)))
    assert model.bn.weight is None
    ranking = probe_of(model).rank("weight_l1", layer="relu")
    expected = raw_l1(model.conv) / np.sqrt(model.bn.running_var.numpy() + model.bn.eps)
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-12)
    np.testing.assert_allclose(ranking.scores, fused_l1(model.conv, model.bn), rtol=1e-12)
    assert ranking.meta["batchnorm"] == "bn"


def test_no_running_statistics_is_not_folded_and_says_why():
    model = randomized(ConvBNReLU(bn=nn.BatchNorm2d(6, track_running_stats=False)))
    probe = probe_of(model)
    for layer in ("conv", "bn", "relu"):
        ranking = probe.rank("weight_l1", layer=layer)
        np.testing.assert_allclose(ranking.scores, raw_l1(model.conv), rtol=1e-12)
        assert ranking.meta["filter"] == "conv" and ranking.meta["batchnorm"] is None
        assert "track_running_stats=False" in ranking.meta["batchnorm_note"]
        assert "'bn'" in ranking.meta["batchnorm_note"]


def test_a_batchnorm_after_a_relu_or_sharing_the_output_is_not_folded_and_says_why():
    model = randomized(ReLUBeforeBN())
    ranking = probe_of(model).rank("weight_l1", layer="conv")
    np.testing.assert_allclose(ranking.scores, raw_l1(model.conv), rtol=1e-12)
    assert ranking.meta["batchnorm"] is None
    assert "'bn' follows 'conv' only after ReLU" in ranking.meta["batchnorm_note"]
    model = randomized(SharedConvOutput())
    ranking = probe_of(model).rank("weight_l1", layer="conv")
    np.testing.assert_allclose(ranking.scores, raw_l1(model.conv), rtol=1e-12)
    assert ranking.meta["batchnorm"] is None
    assert "feeds 2 ops, 'bn' among them" in ranking.meta["batchnorm_note"]


def test_an_untraceable_model_or_a_conv_called_twice_keeps_the_raw_norm_and_says_why():
    model = randomized(UntraceableBN())
    ranking = nw.Probe(model, torch.rand(3, 3, 5, 5, dtype=torch.float64)).rank("weight_l1", layer="conv")
    np.testing.assert_allclose(ranking.scores, raw_l1(model.conv), rtol=1e-12)
    assert ranking.meta["batchnorm"] is None
    assert "could not look for a BatchNorm after 'conv'" in ranking.meta["batchnorm_note"]
    found = find_filter(randomized(CalledTwice()), "conv")  # a probe refuses the layer; the method alone does not
    assert found.batchnorm is None and "called 2 times" in found.note


def test_resnet18_blocks_and_a_container_layer():
    model, shape = build("resnet18", seed=3)  # random BatchNorm statistics (`randomize_batchnorm`)
    probe = probe_of(model, shape=shape, n=2)
    block = model.layer1[0]
    for layer in ("layer1.0.conv1", "layer1.0.bn1"):
        ranking = probe.rank("weight_l1", layer=layer)
        np.testing.assert_allclose(ranking.scores, fused_l1(block.conv1, block.bn1), rtol=1e-12)
        assert meta(ranking) == {"filter": "layer1.0.conv1", "batchnorm": "layer1.0.bn1", "batchnorm_note": None}
    down = model.layer2[0].downsample
    for layer in ("layer2.0.downsample.0", "layer2.0.downsample"):  # the second is a container: traced alone
        ranking = probe.rank("weight_l1", layer=layer)
        np.testing.assert_allclose(ranking.scores, fused_l1(down[0], down[1]), rtol=1e-12)
        assert meta(ranking)["batchnorm"] == "layer2.0.downsample.1"
    np.testing.assert_allclose(
        probe.rank("weight_l1", layer="layer2.0.downsample", fold_batchnorm=False).scores, raw_l1(down[0])
    )


def test_the_model_is_untouched():
    """In train mode with one frozen BatchNorm and gradients, as mid-training: the fold reads the running
    statistics (what eval mode, the mode every pass runs in, applies) and changes nothing."""
    model = randomized(ConvBNReLU(between=nn.Dropout(0.5)))
    probe = probe_of(model)
    expected = fused_l1(model.conv, model.bn)
    images, labels = make_data(model, 4, (3, 6, 6), seed=2)
    model.train()
    model.bn.eval()
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    before = fingerprint(model)
    for layer in ("conv", "bn", "relu", "conv2"):
        for fold in (True, False):
            probe.rank("weight_l1", layer=layer, fold_batchnorm=fold)
    np.testing.assert_allclose(probe.rank("weight_l1", layer="relu").scores, expected, rtol=1e-12)
    assert_same(before, fingerprint(model))


@pytest.mark.parametrize("value", ["yes", 1, 0, None, 1.0])
def test_a_bad_fold_batchnorm_value_names_the_valid_ones(value):
    probe = probe_of(randomized(ConvBNReLU()))
    with pytest.raises(ValueError, match=r"fold_batchnorm must be True \(.*\) or False \(.*\), got"):
        probe.rank("weight_l1", layer="relu", fold_batchnorm=value)


def test_the_option_is_declared_and_a_misspelt_one_is_refused():
    assert spec("weight_l1").options == ("fold_batchnorm",)
    probe = probe_of(randomized(ConvBNReLU()))
    with pytest.raises(TypeError, match="valid options: fold_batchnorm"):
        probe.rank("weight_l1", layer="relu", fold_bn=False)
    np.testing.assert_allclose(
        probe.rank("weight_l1", layer="relu", fold_batchnorm=np.bool_(False)).scores, raw_l1(probe.model.conv)
    )


@pytest.mark.slow  # ablation on two demo layers
def test_demo_folded_norms_agree_better_with_ablation():
    """On the demo the raw norms of the BatchNorm-ed filters vary little and do not follow ablation; the folded
    ones do (Spearman on relu1 about 0.70 against -0.04, on relu2 0.25 against -0.19)."""
    model, data = nw.demo.load()
    probe = nw.Probe(model, data)
    for layer, conv, bn in (("relu1", model.conv1, model.bn1), ("relu2", model.conv2, model.bn2)):
        folded = probe.rank("weight_l1", layer=layer)
        raw = probe.rank("weight_l1", layer=layer, fold_batchnorm=False)
        np.testing.assert_allclose(folded.scores, fused_l1(conv, bn), rtol=1e-5)
        ablation = probe.rank("ablation", layer=layer, progress=False)
        assert nw.compare(folded, ablation)["spearman"] > nw.compare(raw, ablation)["spearman"] + 0.2
