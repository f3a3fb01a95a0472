"""Tests for neuronwidgets.ranking: ordering, validation, export round trips, plotting and compare()."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import subprocess
import sys
import warnings
from itertools import combinations
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from neuronwidgets.ranking import Ranking, compare

matplotlib.use("Agg")

RANKING_PY = Path(__file__).resolve().parents[1] / "neuronwidgets" / "ranking.py"


def make(scores, **kwargs) -> Ranking:
    kwargs.setdefault("method", "ablation")
    kwargs.setdefault("layer", "relu2")
    return Ranking(np.asarray(scores, dtype=float), **kwargs)


def ranks_average(x: np.ndarray) -> np.ndarray:
    """Independent average-rank implementation (ties share the mean of their positions)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_numpy(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(ranks_average(x), ranks_average(y))[0, 1])


def kendall_tau_b_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    concordant = discordant = ties_x_only = ties_y_only = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x_only += 1
        elif dy == 0:
            ties_y_only += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x_only) * (concordant + discordant + ties_y_only))
    return (concordant - discordant) / denom


# --- construction and validation ------------------------------------------------------------------


def test_scores_are_readonly_float64_copy():
    source = np.array([3, 1, 2], dtype=np.int32)
    r = make(source)
    assert r.scores.dtype == np.float64
    assert r.scores.ndim == 1
    assert not r.scores.flags.writeable
    with pytest.raises(ValueError):
        r.scores[0] = 10.0
    source[0] = 100
    assert r.scores[0] == 3.0


def test_accepts_list_and_torch_tensor_with_grad():
    t = torch.tensor([0.5, 2.0, 1.0], requires_grad=True)
    r = Ranking(t, method="grad", layer="conv1")
    np.testing.assert_array_equal(r.scores, [0.5, 2.0, 1.0])
    assert r.scores.dtype == np.float64
    assert Ranking([1, 2], method="m", layer="l").units == 2


def test_frozen_and_meta_copied():
    meta = {"seconds": 1.5}
    r = make([1.0, 2.0], meta=meta)
    meta["seconds"] = 99
    assert r.meta == {"seconds": 1.5}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.method = "other"


def test_target_numpy_int_becomes_python_int():
    r = make([1.0, 2.0], target=np.int64(7))
    assert r.target == 7
    assert type(r.target) is int


@pytest.mark.parametrize("scores", [[], np.zeros((0,))])
def test_empty_scores_rejected(scores):
    with pytest.raises(ValueError, match="empty"):
        Ranking(scores, method="m", layer="l")


@pytest.mark.parametrize("scores", [np.zeros((2, 3)), np.float64(1.0)])
def test_non_1d_scores_rejected(scores):
    with pytest.raises(ValueError, match="1-D"):
        Ranking(scores, method="m", layer="l")


def test_nan_scores_rejected_with_count_and_units():
    scores = np.arange(6, dtype=float)
    scores[[1, 4]] = np.nan
    with pytest.raises(ValueError, match=r"2 of 6 scores .* NaN \(units 1, 4\)"):
        make(scores)


def test_nan_message_truncates_long_unit_list():
    scores = np.full(50, np.nan)
    with pytest.raises(ValueError, match=r"50 of 50 .*units 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\.\)"):
        make(scores)


def test_tiebreak_validation():
    with pytest.raises(ValueError, match="tiebreak has 2 values but there are 3 scores"):
        make([1.0, 2.0, 3.0], tiebreak=[1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        make([1.0, 2.0], tiebreak=[1.0, np.nan])
    r = make([1.0, 2.0], tiebreak=[3, 4])
    assert r.tiebreak.dtype == np.float64
    assert not r.tiebreak.flags.writeable


def test_infinite_scores_allowed():
    r = make([1.0, np.inf, -np.inf, 0.0])
    assert r.order.tolist() == [1, 0, 3, 2]


# --- ordering --------------------------------------------------------------------------------------


def test_order_descending_with_ties_by_unit_index():
    r = make([0.5, 0.9, 0.5, 0.1, 0.9])
    assert r.order.tolist() == [1, 4, 0, 2, 3]
    assert r.order.dtype.kind == "i"
    assert not r.order.flags.writeable
    assert r.order is r.order  # cached


def test_order_ties_broken_by_tiebreak_then_index():
    scores = [0.5, 0.9, 0.5, 0.1, 0.9, 0.5]
    tiebreak = [1.0, 0.0, 3.0, 9.0, 2.0, 1.0]
    r = make(scores, tiebreak=tiebreak)
    # 0.9: units 4 (tb 2) before 1 (tb 0); 0.5: unit 2 (tb 3), then 0 and 5 (tb 1, index order); 0.1: unit 3
    assert r.order.tolist() == [4, 1, 2, 0, 5, 3]


def test_tiebreak_does_not_override_scores():
    r = make([1.0, 2.0, 3.0], tiebreak=[30.0, 20.0, 10.0])
    assert r.order.tolist() == [2, 1, 0]


def test_order_matches_reference_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)
    tiebreak = rng.integers(0, 3, size=200).astype(float)
    r = make(scores, tiebreak=tiebreak)
    expected = sorted(range(200), key=lambda u: (-scores[u], -tiebreak[u], u))
    assert r.order.tolist() == expected


def test_units_len_top_rank_of():
    r = make([0.1, 0.7, 0.3, 0.7])
    assert r.units == len(r) == 4
    assert r.top(2) == [(1, 0.7), (3, 0.7)]
    assert r.top() == [(1, 0.7), (3, 0.7), (2, 0.3), (0, 0.1)]
    assert r.top(100) == r.top(4)
    unit, score = r.top(1)[0]
    assert type(unit) is int
    assert type(score) is float
    assert [r.rank_of(u) for u in range(4)] == [3, 0, 2, 1]
    for rank, unit in enumerate(r.order):
        assert r.rank_of(unit) == rank
    assert type(r.rank_of(np.int64(1))) is int


@pytest.mark.parametrize("k", [0, -1])
def test_top_rejects_k_below_one(k):
    with pytest.raises(ValueError, match="k must be >= 1"):
        make([1.0, 2.0]).top(k)


@pytest.mark.parametrize("unit", [-1, 3])
def test_rank_of_out_of_range(unit):
    with pytest.raises(IndexError, match="out of range"):
        make([1.0, 2.0, 3.0]).rank_of(unit)


def test_repr():
    r = make([0.05, 0.0, 0.01, 0.08, 0.0, 0.12], method="ablation", layer="relu2")
    assert repr(r) == (
        "Ranking(method='ablation', layer='relu2', units=6, target=None, top=[(5, 0.12), (3, 0.08), (0, 0.05)])"
    )
    assert "target=3" in repr(make([1.0], target=3))
    assert "\n" not in repr(make(np.arange(1000.0)))


# --- JSON ------------------------------------------------------------------------------------------


def _strict_loads(text: str):
    def reject(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_to_dict_fields():
    r = make([0.2, 0.8, 0.5], target=4, meta={"seconds": 0.25})
    d = r.to_dict()
    assert d["method"] == "ablation"
    assert d["layer"] == "relu2"
    assert d["target"] == 4
    assert d["units"] == 3
    assert d["scores"] == [0.2, 0.8, 0.5]
    assert d["order"] == [1, 2, 0]
    assert d["tiebreak"] is None
    assert d["meta"] == {"seconds": 0.25}
    assert type(d["order"][0]) is int


def test_json_round_trip_with_numpy_meta(tmp_path):
    meta = {
        "sizes": {"batch": np.int64(64), "images": 512, "shape": (3, 32, 32)},
        "seconds": np.float32(1.5),
        "per_batch": np.arange(6, dtype=np.float32).reshape(2, 3),
        "loss": float("nan"),
        "nested": {"bad": [np.float64(np.inf), np.nan, 1.0], "flag": np.bool_(True)},
        "tensor": torch.tensor([[1.0, 2.0]]),
        "path": tmp_path / "cache",
        7: "int key",
    }
    rng = np.random.default_rng(1)
    scores = rng.normal(size=16)
    r = Ranking(scores, method="taylor", layer="features.3", target=2, meta=meta, tiebreak=rng.random(16))
    text = r.to_json(indent=2)
    d = _strict_loads(text)
    assert d["meta"] == {
        "sizes": {"batch": 64, "images": 512, "shape": [3, 32, 32]},
        "seconds": 1.5,
        "per_batch": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
        "loss": None,
        "nested": {"bad": [None, None, 1.0], "flag": True},
        "tensor": [[1.0, 2.0]],
        "path": str(tmp_path / "cache"),
        "7": "int key",
    }
    assert '"loss": null' in text

    back = Ranking.from_json(text)
    assert back.scores.dtype == np.float64
    np.testing.assert_array_equal(back.scores, r.scores)  # bit-exact
    np.testing.assert_array_equal(back.tiebreak, r.tiebreak)
    np.testing.assert_array_equal(back.order, r.order)
    assert (back.method, back.layer, back.target) == ("taylor", "features.3", 2)
    assert back.meta == d["meta"]
    assert back.to_dict() == r.to_dict()


def test_json_file_round_trip(tmp_path):
    r = make([3.0, 1.0, 2.0], meta={"engine": "fast"})
    path = tmp_path / "r.json"
    text = r.to_json(path)
    assert path.read_text(encoding="utf-8") == text
    for source in (path, str(path)):
        back = Ranking.from_json(source)
        np.testing.assert_array_equal(back.scores, r.scores)
        assert back.meta == {"engine": "fast"}
        assert back.target is None
        assert back.tiebreak is None


def test_json_infinite_scores_are_strict_json():
    r = make([np.inf, 0.0, -np.inf])
    text = r.to_json()
    assert _strict_loads(text)["scores"] == ["inf", 0.0, "-inf"]
    np.testing.assert_array_equal(Ranking.from_json(text).scores, r.scores)


def test_from_dict_recomputes_order():
    d = make([1.0, 3.0, 2.0]).to_dict()
    d["order"] = [0, 1, 2]
    assert Ranking.from_dict(d).order.tolist() == [1, 2, 0]


# --- CSV -------------------------------------------------------------------------------------------


def test_csv_content():
    scores = np.array([0.1, 1 / 3, 0.2, 1 / 3])
    r = make(scores)
    text = r.to_csv()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["rank", "unit", "score"]
    assert [int(row["rank"]) for row in rows] == [1, 2, 3, 4]
    assert [int(row["unit"]) for row in rows] == r.order.tolist() == [1, 3, 2, 0]
    assert [float(row["score"]) for row in rows] == scores[r.order].tolist()  # exact, full precision
    assert rows[0]["score"] == repr(1 / 3)


def test_csv_with_tiebreak_written_to_file(tmp_path):
    r = make([1.0, 1.0, 0.5], tiebreak=[0.25, 0.75, 0.0])
    path = tmp_path / "r.csv"
    text = r.to_csv(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["rank", "unit", "score", "tiebreak"],
        ["1", "1", "1.0", "0.75"],
        ["2", "0", "1.0", "0.25"],
        ["3", "2", "0.5", "0.0"],
    ]


# --- plot ------------------------------------------------------------------------------------------


def test_plot_returns_figure_with_all_bars_for_small_layer():
    from matplotlib.figure import Figure

    r = make([0.3, 0.9, 0.1, 0.5])
    fig = r.plot()
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.patches) == 4
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["unit 1", "unit 3", "unit 0", "unit 2"]
    assert [p.get_width() for p in ax.patches] == [0.9, 0.5, 0.3, 0.1]
    assert ax.get_title() == "ablation · relu2"
    fig.savefig(io.BytesIO(), format="png")  # renders headless


def test_plot_default_caps_at_40_and_top_argument():
    r = make(np.arange(100.0), target=3)
    fig = r.plot()
    assert len(fig.axes[0].patches) == 40
    assert fig.axes[0].get_title() == "ablation · relu2 · class 3"
    assert len(r.plot(top=5).axes[0].patches) == 5
    assert len(r.plot(top=1000).axes[0].patches) == 100
    with pytest.raises(ValueError, match="top must be >= 1"):
        r.plot(top=0)


def test_plot_into_given_axes_with_highlight():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    r = make([0.3, 0.9, 0.1, 0.5])
    assert r.plot(ax=ax, highlight=[0, 2]) is fig
    colors = [tuple(p.get_facecolor()) for p in ax.patches]  # ranked order: units 1, 3, 0, 2
    assert colors[0] == colors[1]
    assert colors[2] == colors[3]
    assert colors[0] != colors[2]
    single = Figure().add_subplot()
    r.plot(ax=single, highlight=1)
    single_colors = [tuple(p.get_facecolor()) for p in single.patches]
    assert single_colors[0] != single_colors[1]


def test_core_import_pulls_in_no_widgets_or_matplotlib():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ranking', {str(RANKING_PY)!r})\n"
        "module = sys.modules['ranking'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "bad = [m for m in ('matplotlib', 'ipywidgets', 'anywidget') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- compare ---------------------------------------------------------------------------------------


def test_compare_matches_independent_computation():
    rng = np.random.default_rng(42)
    x = rng.normal(size=60)
    y = 0.6 * x + rng.normal(size=60)
    a, b = make(x, method="ablation"), make(y, method="taylor")
    result = compare(a, b, k=10)
    assert set(result) == {"spearman", "kendall", "top_k_overlap", "k"}
    assert result["spearman"] == pytest.approx(spearman_numpy(x, y), abs=1e-12)
    assert result["kendall"] == pytest.approx(kendall_tau_b_bruteforce(x, y), abs=1e-12)
    top_a = set(np.argsort(-x)[:10].tolist())
    top_b = set(np.argsort(-y)[:10].tolist())
    assert result["top_k_overlap"] == len(top_a & top_b) / 10
    assert result["k"] == 10
    assert all(type(result[key]) is float for key in ("spearman", "kendall", "top_k_overlap"))


def test_compare_kendall_is_tau_b_with_ties():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=40).astype(float)
    y = rng.integers(0, 4, size=40).astype(float)
    result = compare(make(x), make(y))
    assert result["kendall"] == pytest.approx(kendall_tau_b_bruteforce(x, y), abs=1e-12)
    assert result["spearman"] == pytest.approx(spearman_numpy(x, y), abs=1e-12)


def test_compare_identical_and_reversed():
    x = np.arange(20.0)
    same = compare(make(x), make(x * 10), k=5)
    assert same == {
        "spearman": pytest.approx(1.0),
        "kendall": pytest.approx(1.0),
        "top_k_overlap": 1.0,
        "k": 5,
    }
    rev = compare(make(x), make(-x), k=5)
    assert rev["spearman"] == pytest.approx(-1.0)
    assert rev["kendall"] == pytest.approx(-1.0)
    assert rev["top_k_overlap"] == 0.0


def test_compare_top_k_overlap_by_hand():
    a = make([9.0, 8.0, 7.0, 1.0, 0.0])  # top-3 {0, 1, 2}
    b = make([0.0, 8.0, 9.0, 7.0, 1.0])  # top-3 {2, 1, 3}
    assert compare(a, b, k=3)["top_k_overlap"] == pytest.approx(2 / 3)
    assert compare(a, b, k=1)["top_k_overlap"] == 0.0


def test_compare_clips_k_and_rejects_k_below_one():
    a, b = make([1.0, 2.0, 3.0]), make([3.0, 2.0, 1.0])
    result = compare(a, b, k=50)
    assert result["k"] == 3
    assert result["top_k_overlap"] == 1.0
    with pytest.raises(ValueError, match="k must be >= 1"):
        compare(a, b, k=0)


def test_compare_size_mismatch():
    a = make([1.0, 2.0, 3.0], layer="conv1")
    b = make([1.0, 2.0], layer="conv2")
    with pytest.raises(ValueError, match=r"3 \('conv1'.*vs 2 \('conv2'"):
        compare(a, b)


def test_compare_warns_on_different_layers():
    a = make([1.0, 2.0, 3.0], layer="conv1")
    b = make([1.0, 3.0, 2.0], layer="conv2")
    with pytest.warns(UserWarning, match="different layers"):
        result = compare(a, b)
    assert result["spearman"] == pytest.approx(0.5)


def test_compare_same_layer_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare(make([1.0, 2.0, 3.0]), make([3.0, 1.0, 2.0]))


@pytest.mark.parametrize(
    ("x", "y"),
    [([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]), ([5.0], [2.0])],
)
def test_compare_constant_scores_give_nan_without_warnings(x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compare(make(x), make(y))
    assert math.isnan(result["spearman"])
    assert math.isnan(result["kendall"])
    assert result["top_k_overlap"] == 1.0
