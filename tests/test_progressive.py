"""Sampled ablation: the confidence sequence's coverage, the adaptive top-k's stop, and exactness once every
image is seen (against the naive loop of `tests.reference`)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import neuronwidgets as nw
from neuronwidgets.engine import confidence, progressive
from neuronwidgets.methods import ablation
from tests import reference
from tests.conftest import build, make_data

pytestmark = pytest.mark.filterwarnings("ignore::neuronwidgets.RankingWarning")  # random models' warnings

# -- the confidence sequence --------------------------------------------------------------------------------


def looks_cover(population: np.ndarray, alpha: float, orders: int, looks: list[int], seed: int) -> np.ndarray:
    """Per random order, whether every look's interval (intersected over the looks) held the population's
    mean."""
    rng = np.random.default_rng(seed)
    draws = np.stack([rng.permutation(population) for _ in range(orders)])
    mean = population.mean()
    held = np.ones(orders, bool)
    previous = None
    for t in looks:
        lower, upper = confidence.bounds(draws, np.full(orders, t), len(population), alpha, previous, (-1.0, 1.0))
        held &= (lower <= mean + 1e-12) & (mean - 1e-12 <= upper)  # up to the rounding of the exact mean
        previous = (lower, upper)
    return held


@pytest.mark.parametrize("kind", ["ablation-like", "uniform", "two-point"])
def test_the_interval_holds_the_mean_at_every_look_at_the_stated_rate(kind):
    rng = np.random.default_rng(1)
    n = 600
    if kind == "ablation-like":  # mostly 0, some drops and a few gains, as single-unit ablation gives
        population = rng.choice([-1, 0, 1], size=n, p=[0.02, 0.9, 0.08]).astype(float)
    elif kind == "uniform":
        population = rng.uniform(-1, 1, n)
    else:
        population = rng.choice([-1.0, 1.0], size=n, p=[0.3, 0.7])
    alpha = 0.1
    looks = [10, 20, 40, 80, 150, 300, 450, 599]
    held = looks_cover(population, alpha, orders=400, looks=looks, seed=2)
    # Ville's inequality bounds the miss rate at alpha; with 400 orders a true rate of 0.1 would exceed
    # 0.14 with probability under 1%.
    assert held.mean() >= 1 - alpha - 0.04


def test_a_tight_level_misses_rarely_and_the_interval_shrinks_to_the_mean():
    rng = np.random.default_rng(3)
    population = rng.choice([-1, 0, 1], size=400, p=[0.05, 0.8, 0.15]).astype(float)
    held = looks_cover(population, 0.01, orders=300, looks=[25, 50, 100, 200, 399, 400], seed=4)
    assert held.mean() >= 0.98
    draws = rng.permutation(population)[None]
    widths = []
    previous = None
    for t in [25, 100, 200, 300, 399, 400]:
        previous = confidence.bounds(draws, np.array([t]), 400, 0.05, previous, (-1.0, 1.0))
        widths.append(float(previous[1][0] - previous[0][0]))
    assert all(b <= a for a, b in itertools.pairwise(widths))
    assert widths[-1] == pytest.approx(0.0, abs=1e-9)
    assert previous[0][0] == pytest.approx(population.mean(), abs=1e-9)


def test_no_draws_give_the_whole_range_and_too_many_are_refused():
    lower, upper = confidence.bounds(np.zeros((2, 0)), np.array([0, 0]), 10, 0.05, value_range=(-1.0, 1.0))
    assert lower.tolist() == [-1.0, -1.0] and upper.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="more draws"):
        confidence.bounds(np.zeros((1, 5)), np.array([5]), 4, 0.05)


def test_the_betting_interval_is_narrower_than_hoeffding_on_mostly_zero_outcomes():
    """The reason for a betting sequence: ablation outcomes are mostly 0, and it adapts to their small
    variance where a fixed-sample Hoeffding interval (not even valid over looks) cannot."""
    rng = np.random.default_rng(5)
    n, t, alpha = 5000, 1000, 0.05
    population = rng.choice([-1, 0, 1], size=n, p=[0.01, 0.95, 0.04]).astype(float)
    lower, upper = confidence.bounds(rng.permutation(population)[None, :t], np.array([t]), n, alpha, None, (-1, 1))
    hoeffding = 2 * 2 * np.sqrt(np.log(2 / alpha) / (2 * t))  # width for values in [-1, 1]
    assert upper[0] - lower[0] < hoeffding / 2


# -- the sampled ranking ------------------------------------------------------------------------------------


class Planted(nn.Module):
    """Each image has one strong channel; zeroing a unit makes exactly the images whose strong channel it
    is wrong. So each unit's accuracy drop is the share of the images it holds, known in advance."""

    def __init__(self, units: int) -> None:
        super().__init__()
        self.units = nn.Identity()
        self.fc = nn.Linear(units, 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[0] = 1.0
            self.fc.bias.copy_(torch.tensor([0.0, 0.9]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.units(x).flatten(1))


def planted_data(shares: list[float], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images (n, units, 1, 1) whose strong channel is unit u for a share ``shares[u]`` of them, with small
    random values elsewhere; the other images are strong in every channel, so no single ablation makes them
    wrong. All labelled 0. Returns the images, labels and each unit's true drop."""
    rng = np.random.default_rng(seed)
    units = len(shares)
    counts = (np.array(shares) * n).astype(int)
    owner = np.concatenate([np.full(c, u) for u, c in enumerate(counts)] + [np.full(n - counts.sum(), -1)])
    rng.shuffle(owner)
    images = rng.uniform(0.001, 0.04, size=(n, units))
    strong = rng.uniform(1.0, 2.0, size=(n, units))
    owned = owner >= 0
    images[np.flatnonzero(owned), owner[owned]] = strong[owned, 0]
    images[~owned] = strong[~owned]
    return torch.from_numpy(images).reshape(n, units, 1, 1), torch.zeros(n, dtype=torch.long), counts / n


@pytest.fixture
def every_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look at the intervals after every round, however cheap the rounds (the tests' tiny models are)."""
    monkeypatch.setattr(progressive, "LOOK_COST", 0)


def test_the_adaptive_top_set_is_the_planted_one_and_clear_units_stop_early(every_look):
    shares = [0.20, 0.16, 0.13, 0.02, 0.015, 0.01, 0.01, 0.005, 0.005, 0.0, 0.0, 0.0]
    images, labels, drops = planted_data(shares, 3000, seed=6)
    model = Planted(len(shares)).double().eval()
    probe = nw.Probe(model, (images, labels), layer="units")
    exact = probe.rank("ablation", progress=False, warn=False)
    np.testing.assert_allclose(exact.scores, drops, atol=1e-12)
    looks = []
    ranking = probe.rank("ablation", top=3, seed=1, update=looks.append, progress=False, warn=False)
    assert sorted(ranking.meta["top_set"]) == [0, 1, 2]
    used = ranking.meta["images_used"]
    assert used.max() < 3000 and not ranking.meta["exact"]
    assert used.sum() < 0.2 * used.size * 3000  # a fifth of the exact work at most
    assert used[3] > used[11]  # the unit nearest the boundary needed more images than a unit with no drop
    intervals = ranking.meta["intervals"]
    assert np.all((intervals[:, 0] <= drops + 1e-12) & (drops - 1e-12 <= intervals[:, 1]))
    assert ranking.meta["settled"].all() and ranking.meta["simultaneous"]
    assert len(looks) >= 2 and looks[-1].meta["top_set"] == ranking.meta["top_set"]
    widths = [float(np.mean(r.meta["intervals"][:, 1] - r.meta["intervals"][:, 0])) for r in looks]
    assert widths[-1] < widths[0]


def test_a_tie_at_the_boundary_needs_every_image_without_tolerance_and_few_with_it(every_look):
    shares = [0.2, 0.1, 0.1, 0.01, 0.01, 0.0]
    images, labels, _ = planted_data(shares, 800, seed=7)
    probe = nw.Probe(Planted(len(shares)).double().eval(), (images, labels), layer="units")
    strict = probe.rank("ablation", top=2, seed=0, progress=False, warn=False)
    assert strict.meta["images_used"][[1, 2]].tolist() == [800, 800]  # a true tie is only settled exactly
    assert strict.meta["top_set"][0] == 0 and set(strict.meta["top_set"]) < {0, 1, 2}
    loose = probe.rank("ablation", top=2, tolerance=0.05, seed=0, progress=False, warn=False)
    assert loose.meta["images_used"].max() < 800
    assert loose.meta["top_set"][0] == 0 and set(loose.meta["top_set"]) < {0, 1, 2}


def exactness_cases(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[str]]:
    if name == "demo":  # trained: many units change predictions
        model, data = nw.demo.load()
        images = torch.stack([data[i][0] for i in range(0, len(data), 3)])
        labels = torch.tensor([data[i][1] for i in range(0, len(data), 3)])
        return model.double().eval(), images.double(), labels, ["relu2", "relu3"]
    model, shape = build(name)
    images, labels = make_data(model, 40, shape, seed=9)
    layers = {"residual": ["stem_bn", "block1.out_relu", "block2"], "untraceable": ["relu"]}[name]
    return model, images, labels, layers


@pytest.mark.parametrize("name", ["demo", "residual", "untraceable"])
def test_every_image_seen_gives_the_naive_loop_exactly(name):
    model, images, labels, layers = exactness_cases(name)
    probe = nw.Probe(model, (images, labels), chunk_size=16)
    for layer in layers:
        base, per_unit = reference.ablation_table(model, layer, images, labels)
        expected = np.array([reference.accuracy(base, labels) - reference.accuracy(s, labels) for s in per_unit])
        exact = probe.rank("ablation", layer=layer, progress=False)
        sampled = probe.rank("ablation", layer=layer, fraction=1.0, seed=3, progress=False)
        assert np.any(exact.scores != 0) or name == "untraceable"  # whose losses still differ per unit
        assert sampled.meta["exact"] and np.array_equal(sampled.scores, exact.scores)
        np.testing.assert_allclose(sampled.scores, expected, atol=1e-12)
        np.testing.assert_allclose(sampled.tiebreak, exact.tiebreak, rtol=1e-12, atol=1e-15)
        assert len(set(np.round(sampled.tiebreak, 12))) > 1
        assert np.array_equal(sampled.order, exact.order)
        assert np.array_equal(sampled.meta["intervals"][:, 0], sampled.scores)
        target = int(labels[0])
        per_class = probe.rank("ablation", layer=layer, target=target, fraction=1.0, progress=False)
        exact_class = probe.rank("ablation", layer=layer, target=target, progress=False)
        assert np.array_equal(per_class.scores, exact_class.scores)
        assert per_class.meta["population"] == int((labels == target).sum())


def test_a_streamed_cut_and_a_dataloader_give_the_same_estimate_as_a_kept_cut():
    model, images, labels, _ = exactness_cases("residual")
    kept = nw.Probe(model, (images, labels), chunk_size=8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=8)
    streamed = nw.Probe(model, loader, memory=1)
    layer = "block1.out_relu"
    a = kept.rank("ablation", layer=layer, fraction=0.5, seed=2, progress=False)
    b = streamed.rank("ablation", layer=layer, fraction=0.5, seed=2, progress=False)
    assert streamed.site(layer).kept_cut() is None
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-12)
    np.testing.assert_allclose(a.meta["intervals"], b.meta["intervals"], atol=1e-9)
    assert a.meta["images_used"].tolist() == [20] * kept.layer_info(layer).units


def test_a_fraction_uses_that_share_of_the_images_and_its_intervals_hold_the_exact_drops():
    model, shape = build("residual")
    images, labels = make_data(model, 120, shape, seed=10)
    probe = nw.Probe(model, (images, labels), chunk_size=32)
    layer = probe.layers[2]
    exact = probe.rank("ablation", layer=layer, progress=False).scores
    sampled = probe.rank("ablation", layer=layer, fraction=0.4, confidence=0.99, seed=5, progress=False)
    assert sampled.meta["images_used"].tolist() == [48] * len(exact)
    low, high = sampled.meta["intervals"].T
    assert np.all((low <= exact + 1e-12) & (exact <= high + 1e-12))
    assert not sampled.meta["simultaneous"] and sampled.meta["confidence"] == 0.99
    again = probe.rank("ablation", layer=layer, fraction=0.4, confidence=0.99, seed=5, progress=False)
    assert np.array_equal(again.scores, sampled.scores)  # the seed fixes the order


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top": 0}, r"top must be a number of units in 1\.\.\d+"),
        ({"top": 10**6}, "leave it out"),
        ({"top": True}, "top must be"),
        ({"fraction": 0}, r"fraction must be a share of the images in \(0, 1\]"),
        ({"fraction": 1.5}, "fraction must be"),
        ({"top": 1, "confidence": 1.0}, "confidence must lie strictly between 0 and 1"),
        ({"top": 1, "tolerance": -0.1}, "tolerance must be an accuracy difference"),
        ({"tolerance": 0.01}, "tolerance applies to a sampled ranking: pass top="),
        ({"confidence": 0.9}, "confidence applies to a sampled ranking"),
    ],
)
def test_bad_sampling_options_are_refused_before_any_work(options, message):
    model, shape = build("plain")
    images, labels = make_data(model, 9, shape, seed=11)
    probe = nw.Probe(model, (images, labels))
    with pytest.raises(ValueError, match=message):
        probe.rank("ablation", progress=False, **options)
    with pytest.raises(TypeError, match="seed must be an int"):
        probe.rank("ablation", top=1, seed="x", progress=False)


def test_the_sampled_estimate_is_shown_first_only_where_its_first_round_costs_less_than_taylor():
    model, data = nw.demo.load()
    demo = nw.Probe(model, data)
    assert ablation.estimate_first(demo.site("relu2"))  # 32 units, little after the layer: sooner than Taylor
    wide, shape = build("resnet18")
    images, labels = make_data(wide, 12, shape, seed=12)
    few = nw.Probe(wide, (images, labels))
    share = few.site("layer3").unit_work_share()
    assert 0 < share < 1
    assert not ablation.estimate_first(few.site("layer3"))  # 256 units x 64 images of most of the network


# -- the shrunk estimate ----------------------------------------------------------------------------------


def outcome_population(units: int, images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit and image: a paired difference (-1, 0 or 1; rare, with unit-specific rates spread over a
    decade) and a loss increase that is larger where the outcome flipped, plus noise, as ablation's are."""
    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.002, 0.03, units)
    flips = rng.random((units, images)) < rates[:, None]
    signs = np.where(rng.random((units, images)) < 0.85, 1, -1)
    diffs = (flips * signs).astype(np.int8)
    loss = diffs * rng.uniform(0.5, 3.0, (units, images)) + rng.normal(0.0, 0.05, (units, images))
    return diffs, loss + rates[:, None]  # a unit that flips more also nudges every image's loss more


def test_the_shrunk_estimate_orders_and_fits_the_drops_better_than_the_plain_means():
    from scipy.stats import spearmanr

    diffs, loss = outcome_population(48, 20000, seed=11)
    exact = diffs.mean(1)
    plain_error, shrunk_error, plain_rho, shrunk_rho = [], [], [], []
    for seed in range(12):
        sample = np.random.default_rng(seed).permutation(diffs.shape[1])[:400]
        drop, loss_increase = diffs[:, sample].mean(1), loss[:, sample].mean(1)
        variance = np.abs(diffs[:, sample]).mean(1) - drop**2
        seen = np.full(len(drop), len(sample))
        shrunk = progressive.shrunk_drops(drop, loss_increase, variance, seen, diffs.shape[1])
        plain_error.append(np.sum((drop - exact) ** 2))
        shrunk_error.append(np.sum((shrunk - exact) ** 2))
        plain_rho.append(spearmanr(drop, exact)[0])
        shrunk_rho.append(spearmanr(shrunk, exact)[0])
    assert np.mean(shrunk_error) < 0.5 * np.mean(plain_error)
    assert np.mean(shrunk_rho) > np.mean(plain_rho) + 0.1


def test_the_shrunk_estimate_is_the_units_own_drop_once_every_image_is_seen():
    diffs, loss = outcome_population(10, 500, seed=12)
    drop, loss_increase = diffs.mean(1), loss.mean(1)
    variance = np.abs(diffs).mean(1) - drop**2
    every = np.full(10, 500)
    np.testing.assert_allclose(progressive.shrunk_drops(drop, loss_increase, variance, every, 500), drop, atol=1e-15)
    two = progressive.shrunk_drops(drop[:2], loss_increase[:2], variance[:2], np.array([5, 5]), 500)
    assert np.array_equal(two, drop[:2])  # too few units to fit a line across them: the plain means


def test_a_sampled_rankings_scores_lie_in_its_intervals_and_the_plain_means_are_kept():
    shares = [0.20, 0.16, 0.13, 0.02, 0.015, 0.01, 0.01, 0.005, 0.005, 0.0, 0.0, 0.0]
    images, labels, _ = planted_data(shares, 3000, seed=6)
    probe = nw.Probe(Planted(len(shares)).double().eval(), (images, labels), layer="units")
    ranking = probe.rank("ablation", fraction=0.1, seed=4, progress=False, warn=False)
    low, high = ranking.meta["intervals"].T
    assert np.all((low <= ranking.scores) & (ranking.scores <= high))
    assert ranking.meta["drop_unbiased"].shape == ranking.scores.shape
    assert "empirical" in ranking.meta["estimate_method"]
