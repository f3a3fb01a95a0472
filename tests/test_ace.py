"""The vectorised ACE: the validation properties of METHODS.md section 1, batching, and the `ace` package."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from neuronwidgets.methods.ace import SPANS, _linear_start, _Plan, _Windows, ace

N = 300
SEEDS = range(5)


def _generators():
    return [np.random.default_rng(seed) for seed in SEEDS]


def breiman_friedman(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """z ~ N(0, 1), x = cbrt(z), y = exp(z + noise): the maximal correlation is 1/sqrt(2) = 0.707."""
    z = rng.standard_normal(N)
    return np.cbrt(z)[None], np.exp(z + rng.standard_normal(N))


def monotone(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1, 1, N)
    return x[None], np.tanh(x) ** 3 + 1e-3 * rng.standard_normal(N)


def square(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1, 1, N)
    return x[None], x**2 + 0.01 * rng.standard_normal(N)


def additive(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((3, N))
    return x, np.exp(0.5 * (x[0] + np.sin(2 * x[1]) + 0.3 * rng.standard_normal(N)))


def linear(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((3, N))
    return x, x[0] - 0.5 * x[1] + 0.8 * rng.standard_normal(N)


def noise(predictors: int):
    def make(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return rng.standard_normal((predictors, N)), rng.standard_normal(N)

    return make


def solve_batch(make) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All seeds of one problem family as one batch: (correlation, reference correlation, x, y)."""
    x, y = zip(*(make(rng) for rng in _generators()))
    result = ace(np.stack(y), np.stack(x))
    return result.correlation, result.reference_correlation, np.stack(x), np.stack(y)


def test_breiman_friedman_example_is_near_its_theoretical_value():
    rho, reference, _, _ = solve_batch(breiman_friedman)
    assert np.all((rho > 0.62) & (rho < 0.82)), rho
    assert 0.69 < rho.mean() < 0.78
    np.testing.assert_allclose(reference, rho)  # one predictor: both definitions agree


def test_monotone_and_non_monotone_dependence_give_a_correlation_of_one():
    rho, _, _, _ = solve_batch(monotone)
    assert np.all(rho > 0.998), rho
    rho, _, x, y = solve_batch(square)
    assert np.all(rho > 0.995), rho
    pearson = [np.corrcoef(xi[0], yi)[0, 1] for xi, yi in zip(x, y)]
    assert np.all(np.abs(pearson) < 0.3), pearson  # nearly invisible to a linear correlation


def test_independent_noise_has_the_documented_null_floor():
    rho3, reference3, _, _ = solve_batch(noise(3))
    assert np.all((rho3 > 0.2) & (rho3 < 0.6)), rho3
    assert 0.28 < rho3.mean() < 0.5
    assert reference3.mean() < rho3.mean()  # phi_1 alone explains less than the sum
    rho10, _, _, _ = solve_batch(noise(10))
    assert np.all((rho10 > 0.45) & (rho10 < 0.78)), rho10
    assert 0.55 < rho10.mean() < 0.7
    assert rho10.mean() > rho3.mean()  # the floor grows with the number of predictors


def test_transforms_are_standardised_and_define_the_correlation():
    x, y = additive(np.random.default_rng(0))
    result = ace(y, x)
    assert abs(result.theta.mean()) < 1e-12 and abs(result.theta.std() - 1) < 1e-12
    np.testing.assert_allclose(result.phi.mean(-1), 0, atol=1e-12)
    assert result.correlation == pytest.approx(np.corrcoef(result.theta, result.phi.sum(0))[0, 1])
    assert result.reference_correlation == pytest.approx(abs(np.corrcoef(result.theta, result.phi[0])[0, 1]))
    assert result.correlation > 0.95 and result.iterations >= 1


def test_a_batch_gives_the_same_answers_as_one_problem_at_a_time():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 2, 80))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 * rng.uniform(0, 1, (7, 1)) + 0.5 * rng.standard_normal((7, 80))
    x[2, 1] = np.round(x[2, 1])  # ties
    x[4, 0] = 1.5  # a constant predictor
    batch = ace(y, x)
    for i in range(len(y)):
        alone = ace(y[i], x[i])
        np.testing.assert_allclose(batch.correlation[i], alone.correlation, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batch.phi[i], alone.phi, rtol=0, atol=1e-10)
    np.testing.assert_allclose(batch.phi[4, 0], 0, atol=1e-12)


def test_broadcasting_and_degenerate_problems():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 50))
    y = rng.standard_normal((3, 1, 50))
    result = ace(y, x)
    assert result.correlation.shape == (3, 4) and result.phi.shape == (3, 4, 2, 50)
    assert result.correlation[1, 2] == pytest.approx(float(ace(y[1, 0], x[2]).correlation), abs=1e-12)
    tied = np.round(x, 1)  # ties, in predictors shared by several responses
    shared = ace(y, tied)
    for i, j in [(0, 0), (2, 3)]:
        alone = ace(y[i, 0], tied[j])
        np.testing.assert_allclose(shared.phi[i, j], alone.phi, rtol=0, atol=1e-12)
    constant = ace(np.ones(50), x[0])
    assert constant.correlation == 0 and constant.iterations == 0 and not constant.theta.any()
    dead = ace(y[0, 0], np.zeros((2, 50)))
    assert dead.correlation == 0 and not dead.phi.any()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        ace(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        ace(np.r_[np.nan, np.arange(9.0)], np.zeros((1, 10)))


def test_supersmoother_matches_the_ace_package():
    supersmoother = pytest.importorskip("ace.supersmoother")
    rng = np.random.default_rng(0)
    for n in (9, 300):
        x = rng.standard_normal((4, n))
        x[1] = np.round(x[1], 1)  # ties
        x[2, : n // 2] = 0.0  # a long run of ties
        x[3] = 1.0  # constant
        y = np.sin(3 * x) + 0.3 * rng.standard_normal((4, n))
        plan = _Plan.of(x, [_Windows(n, span) for span in SPANS])
        mine = plan.supersmooth(plan.sort(y))
        for i in range(len(x)):
            order = np.argsort(x[i], kind="stable")
            smoother = supersmoother.SuperSmoother()
            smoother.specify_data_set(list(x[i, order]), list(y[i, order]))
            smoother.compute()
            np.testing.assert_allclose(mine[i], smoother.smooth_result, rtol=0, atol=1e-9)


def _package_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """theta (n,) and phi (q, n) from the `ace` package (skips the test if it is not installed)."""
    solver_module = pytest.importorskip("ace.ace")
    solver = solver_module.ACESolver()
    solver.specify_data_set(list(x), y)
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints every iteration
        solver.solve()
    return np.asarray(solver.y_transform), np.asarray(solver.x_transforms)


def random_problem(rng: np.random.Generator, strength: float, n: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """1 to 3 predictors, y a noisy nonlinear function of the first one or two: pure noise at strength 0."""
    x = rng.standard_normal((int(rng.integers(1, 4)), n))
    signal = np.sin(2 * x[0]) + (x[1] ** 2 if len(x) > 1 else 0.0)
    return x, np.exp(0.5 * (strength * signal + rng.standard_normal(n)))


def test_agrees_with_the_ace_package_from_noise_to_strong_signal():
    """Same rules as the package (mace.f): within 0.02 everywhere, noise included (in fact the same
    transforms: the two differ only by rounding)."""
    pytest.importorskip("ace.ace")
    rng = np.random.default_rng(7)
    problems = [random_problem(rng, strength) for strength in np.linspace(0.0, 2.0, 12)]
    for x, y in problems:
        result = ace(y, x)
        theta, phi = _package_fit(x, y)
        assert abs(result.correlation - np.corrcoef(theta, phi.sum(0))[0, 1]) < 0.02
        assert abs(result.reference_correlation - abs(np.corrcoef(theta, phi[0])[0, 1])) < 0.02
        np.testing.assert_allclose(result.theta, theta, rtol=0, atol=1e-6)
        np.testing.assert_allclose(result.phi, phi, rtol=0, atol=1e-6)


def test_the_ace_package_examples_agree():
    """The validation families of METHODS.md, side by side with the package."""
    for make in (breiman_friedman, monotone, square, additive, linear, noise(3)):
        x, y = make(np.random.default_rng(11))
        result = ace(y, x)
        theta, phi = _package_fit(x, y)
        assert abs(result.correlation - np.corrcoef(theta, phi.sum(0))[0, 1]) < 0.02


def test_first_guess_is_the_least_squares_fit():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 40))
    x[1, 2] = 2 * x[1, 0]  # collinear: the minimum-norm solution
    x[1, 1] = 0.5  # constant: coefficient 0
    theta = rng.standard_normal((2, 40))
    phi = _linear_start(theta, x)
    for i in range(2):
        centred = x[i] - x[i].mean(-1, keepdims=True)
        coefficients = np.linalg.lstsq(centred.T, theta[i], rcond=None)[0]
        np.testing.assert_allclose(phi[i], coefficients[:, None] * centred, atol=1e-12)


def test_stopping_rule_window_and_cap():
    """R^2 must stay within delrsq over the last ``window`` outer steps (so at least that many run), and no
    problem takes more than ``max_iterations``."""
    x, y = additive(np.random.default_rng(4))
    assert ace(y, x, delrsq=10.0).iterations == 3  # any R^2 change counts as converged: the window decides
    assert ace(y, x, delrsq=10.0, window=5).iterations == 5
    assert ace(y, x, delrsq=0.0, max_iterations=4).iterations == 4
    assert ace(y, x).iterations >= 3
