"""ACE (Breiman & Friedman 1985) with Friedman's SuperSmoother, vectorised over many independent problems.

ACE finds a transform ``theta`` of a response and transforms ``phi_j`` of its predictors that maximise
``corr(theta(y), sum_j phi_j(x_j))``: the maximal correlation, which sees any smooth (not only linear)
dependence. PCACE needs one ACE fit per unit of a layer, and a null from shuffled responses, so thousands
of small problems: here they all advance together in numpy array operations. Each problem keeps its own
sort orders and its own stopping rule, so its result does not depend on the other problems of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SPANS = (0.05, 0.2, 0.5)  # tweeter, midrange, woofer (fractions of n)
_TWEETER, _MIDRANGE, _WOOFER = 0, 1, 2
_SLOPE_EPS = 1e-3  # slope 0 in windows whose x sum of squares is below (eps * interquartile range)^2 (supsmu)
_COMPACT = 0.7  # copy the problems still iterating into smaller arrays once they are fewer than this fraction
_BLOCK_VALUES = 2**17  # problems are solved in blocks of about this many values of (q + 1) * n
# Friedman's mace.f defaults, as in the `ace` package 0.4.2
DELRSQ = 0.01  # R^2 change that counts as converged, for the inner passes and over the outer window
MAX_ITERATIONS = 20  # cap on the outer steps, and on the inner passes of each
WINDOW = 3  # outer steps over which R^2 must stay within DELRSQ (so at least this many run)


@dataclass(frozen=True)
class AceResult:
    """Transforms and correlations of a batch of ACE problems (leading batch dimensions as given)."""

    theta: np.ndarray  # (..., n) transform of the response: mean 0, variance 1 (all 0 if y is constant)
    phi: np.ndarray  # (..., q, n) transforms of the predictors, each of mean 0
    correlation: np.ndarray  # (...) corr(theta, sum_j phi_j): the maximal correlation (paper's definition)
    reference_correlation: np.ndarray  # (...) |corr(phi_1, theta)|: the variant in the PCACE authors' code
    iterations: np.ndarray  # (...) outer steps run


def _cumsum0(*values: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis with a leading 0 (window sums are differences), stacked."""
    out = np.empty((len(values), *values[0].shape[:-1], values[0].shape[-1] + 1))
    out[..., 0] = 0.0
    for part, v in zip(out, values):
        np.cumsum(v, axis=-1, out=part[..., 1:])
    return out


class _Windows:
    """Running windows of one span over n sorted points: point i uses the ``size`` points from
    ``clip(i - half, 0, n - size)`` on (centred, shifted inwards at the ends), as in Friedman's smoother."""

    def __init__(self, n: int, span: float) -> None:
        half = max(int(0.5 * span * n + 0.5), 2)
        self.size = min(2 * half + 1, n)
        self.first = min(half, self.size - 1)  # the first point whose window starts after 0 is first + 1
        self.starts = n - self.size + 1

    def sums(self, cumulative: np.ndarray) -> np.ndarray:
        """Window sums at every point, from `_cumsum0` output."""
        out = np.empty((*cumulative.shape[:-1], cumulative.shape[-1] - 1))
        lo, hi = self.first, self.first + self.starts
        np.subtract(cumulative[..., self.size :], cumulative[..., : self.starts], out=out[..., lo:hi])
        out[..., :lo] = out[..., lo : lo + 1]
        out[..., hi:] = out[..., hi - 1 : hi]
        return out


@dataclass(frozen=True)
class _Ties:
    """Runs of equal values in the sorted x of the problems that have any: ``ids`` numbers the runs within
    each problem, ``counts`` holds the length of each run (indexed like the run numbers; 0 past the last)."""

    rows: np.ndarray  # (r,) the problems with ties
    ids: np.ndarray  # (r, n)
    counts: np.ndarray  # (r, n)

    @classmethod
    def of(cls, xs: np.ndarray) -> _Ties | None:
        """From sorted x (problems, n); None if no problem has ties."""
        new = np.ones(xs.shape, dtype=bool)
        new[:, 1:] = xs[:, 1:] > xs[:, :-1]
        tied = np.flatnonzero(~new.all(1))
        if tied.size == 0:
            return None
        ids = np.cumsum(new[tied], axis=1) - 1
        n = xs.shape[1]
        counts = np.bincount((ids + np.arange(len(tied))[:, None] * n).ravel(), minlength=len(tied) * n)
        return cls(tied, ids, counts.reshape(len(tied), n))

    def take(self, rows: np.ndarray, problems: int) -> _Ties | None:
        """The ties of problems ``rows`` (any indices into the ``problems``, repeats allowed), numbered as
        the problems of a `_Plan.take`."""
        where = np.full(problems, -1)
        where[self.rows] = np.arange(len(self.rows))
        source = where[rows]
        kept = np.flatnonzero(source >= 0)
        if kept.size == 0:
            return None
        return _Ties(kept, self.ids[source[kept]], self.counts[source[kept]])

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Each value replaced by the mean over its run; ``values`` is (..., r, n), leading axes broadcast."""
        r, n = self.ids.shape
        flat = values.reshape(-1, r * n)
        ids = (self.ids + np.arange(r)[:, None] * n).ravel() + (np.arange(len(flat)) * (r * n))[:, None]
        sums = np.bincount(ids.ravel(), weights=flat.ravel(), minlength=flat.size).reshape(len(flat), r, n)
        means = sums / np.maximum(self.counts, 1)
        return np.take_along_axis(means, np.broadcast_to(self.ids, means.shape), axis=-1).reshape(values.shape)


class _Plan:
    """What the smoothers need about one predictor of every problem: its sort order and, per span, the
    coefficients of the local linear fit, computed once and reused at every ACE iteration.

    The fit at point i is ``b*sum(v) + a*sum(x*v)`` over its window; ``g = 1/(1 - leverage)`` turns the
    residual into the leave-one-out (cross-validated) residual; ``fill`` marks points of leverage 1.
    """

    windows: list[_Windows]
    order: np.ndarray  # (problems, n) argsort of x, as indices into the flattened (problems, n) array
    rank: np.ndarray  # (problems, n) inverse of order, flat too
    xs: np.ndarray  # (problems, n) sorted x minus its mean (keeps the running sums of x^2 accurate)
    constant: np.ndarray  # (problems,) x takes one value: the smooth is the mean
    a: np.ndarray  # (spans, problems, n)
    b: np.ndarray  # (spans, problems, n)
    g: np.ndarray  # (spans, problems, n)
    fill: np.ndarray | None  # (spans, problems, n) index of the last point of leverage < 1; None if all are
    ties: _Ties | None  # the problems whose x has ties, None if none has

    @classmethod
    def of(cls, x: np.ndarray, windows: list[_Windows]) -> _Plan:
        plan = cls()
        n = x.shape[-1]
        plan.windows = windows
        order = np.argsort(x, axis=-1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), x.shape), axis=-1)
        offsets = (np.arange(len(x)) * n)[:, None]
        plan.order, plan.rank = order + offsets, rank + offsets
        xs = plan.sort(x)
        plan.constant = xs[:, -1] <= xs[:, 0]
        plan.ties = _Ties.of(xs)
        threshold = np.where(plan.constant, np.inf, _slope_threshold(xs))[:, None]
        plan.xs = xs - xs.mean(-1, keepdims=True)
        first, second = _cumsum0(plan.xs, plan.xs**2)
        a, b, g, valid = [], [], [], []
        for win in windows:
            mean = win.sums(first) / win.size
            dx = plan.xs - mean
            var = win.sums(second) - win.size * mean**2
            sloped = var > threshold
            slope = np.where(sloped, dx / np.where(sloped, var, 1.0), 0.0)
            keep = 1.0 - (1.0 / win.size + slope * dx)
            a.append(slope)
            b.append(1.0 / win.size - slope * mean)
            g.append(np.where(keep > 0, 1.0 / np.where(keep > 0, keep, 1.0), 0.0))
            valid.append(keep > 0)
        plan.a, plan.b, plan.g = np.stack(a), np.stack(b), np.stack(g)
        plan.fill = _fill_index(np.stack(valid))
        return plan

    def take(self, rows: np.ndarray) -> _Plan:
        """The plan of problems ``rows`` (a subset, or repeats of problems that share their x)."""
        plan = _Plan()
        plan.windows = self.windows
        shift = ((np.arange(len(rows)) - rows) * self.xs.shape[-1])[:, None]
        plan.order, plan.rank, plan.xs, plan.constant = (
            self.order[rows] + shift,
            self.rank[rows] + shift,
            self.xs[rows],
            self.constant[rows],
        )
        plan.a, plan.b, plan.g = self.a[:, rows], self.b[:, rows], self.g[:, rows]
        plan.fill = None if self.fill is None else self.fill[:, rows]
        plan.ties = None if self.ties is None else self.ties.take(rows, len(self.xs))
        return plan

    def sort(self, values: np.ndarray) -> np.ndarray:
        """(problems, n) values in the order of x (a flat take: much faster than take_along_axis)."""
        return np.ascontiguousarray(values).ravel().take(self.order)

    def unsort(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values).ravel().take(self.rank)

    def fit(self, span: int, values: np.ndarray) -> np.ndarray:
        """Local linear fit in each point's window (values sorted; leading axes broadcast over problems)."""
        win = self.windows[span]
        plain, cross = win.sums(_cumsum0(values, self.xs * values))
        plain *= self.b[span]
        cross *= self.a[span]
        plain += cross
        return plain

    def residuals(self, values: np.ndarray, fitted: np.ndarray) -> np.ndarray:
        """Absolute cross-validated residuals of the fits of all spans (spans, problems, n); at a point of
        leverage 1 the previous point's residual is reused."""
        res = values - fitted
        np.abs(res, out=res)
        res *= self.g
        if self.fill is not None:
            res = np.where(self.fill >= 0, np.take_along_axis(res, np.maximum(self.fill, 0), axis=-1), 0.0)
        return res

    def tie_mean(self, values: np.ndarray) -> np.ndarray:
        """Give points with tied x the mean of their values (in place)."""
        if self.ties is not None:
            values[..., self.ties.rows, :] = self.ties.mean(values[..., self.ties.rows, :])
        return values

    def smooth(self, span: int, values: np.ndarray) -> np.ndarray:
        return self.tie_mean(self.fit(span, values))

    def supersmooth(self, values: np.ndarray) -> np.ndarray:
        """Friedman's SuperSmoother (bass enhancement 0) of sorted ``values`` (problems, n) against x.

        Three fixed-span local linear fits; their cross-validated residuals, smoothed with the midrange
        span, pick the best span at each point; the picked spans are smoothed with the midrange span, the
        two fits around the smoothed span are interpolated, and the result gets a final tweeter-span smooth.
        """
        cumulative = _cumsum0(values, self.xs * values)
        primary = np.empty((len(SPANS), *values.shape))
        for s, win in enumerate(self.windows):
            plain, cross = win.sums(cumulative)
            np.multiply(self.b[s], plain, out=primary[s])
            cross *= self.a[s]
            primary[s] += cross
        residuals = self.residuals(values, primary)
        primary = self.tie_mean(primary)
        # the smoother is linear: compare smooth(r_0) with smooth(r_1) and smooth(r_2) through 2 smooths, not 3
        low_mid, low_high = self.smooth(_MIDRANGE, residuals[_TWEETER] - residuals[1:])
        best = np.where(
            (low_mid <= 0) & (low_high <= 0),
            SPANS[_TWEETER],
            np.where(low_high <= low_mid, SPANS[_MIDRANGE], SPANS[_WOOFER]),
        )
        span = np.clip(self.smooth(_MIDRANGE, best), SPANS[_TWEETER], SPANS[_WOOFER])
        below = span < SPANS[_MIDRANGE]
        weight = (span - SPANS[_MIDRANGE]) / np.where(
            below, SPANS[_TWEETER] - SPANS[_MIDRANGE], SPANS[_WOOFER] - SPANS[_MIDRANGE]
        )
        neighbour = np.where(below, primary[_TWEETER], primary[_WOOFER])
        mixed = primary[_MIDRANGE] + weight * (neighbour - primary[_MIDRANGE])
        out = self.smooth(_TWEETER, mixed)
        if self.constant.any():
            out[self.constant] = values[self.constant].mean(-1, keepdims=True)
        return out


def _slope_threshold(xs: np.ndarray) -> np.ndarray:
    """supsmu's ``vsmlsq``: (eps * spread of the middle half of x)^2, widening the range while it is 0."""
    n = xs.shape[-1]
    lower = np.full(xs.shape[0], max(n // 4, 1))
    upper = 3 * lower
    scale = xs[np.arange(len(xs)), upper - 1] - xs[np.arange(len(xs)), lower - 1]
    while True:
        widen = (scale <= 0) & ((upper < n) | (lower > 1))
        if not widen.any():
            return (_SLOPE_EPS * scale) ** 2
        upper = np.where(widen & (upper < n), upper + 1, upper)
        lower = np.where(widen & (lower > 1), lower - 1, lower)
        scale = np.where(widen, xs[np.arange(len(xs)), upper - 1] - xs[np.arange(len(xs)), lower - 1], scale)


def _fill_index(valid: np.ndarray) -> np.ndarray | None:
    """For each point, the last valid point at or before it (-1 if none); None if all are valid."""
    if valid.all():
        return None
    idx = np.where(valid, np.arange(valid.shape[-1]), -1)
    return np.maximum.accumulate(idx, axis=-1)


def _standardise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit (population) variance per row; rows of zero variance become 0 (flagged False)."""
    centred = values - values.mean(-1, keepdims=True)
    sd = centred.std(-1)
    ok = sd > 1e-12 * (np.abs(values).max(-1) + 1e-300)
    return np.where(ok[:, None], centred / np.where(ok, sd, 1.0)[:, None], 0.0), ok


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per row; 0 where either row is constant."""
    a, ok_a = _standardise(a)
    b, ok_b = _standardise(b)
    return np.where(ok_a & ok_b, (a * b).mean(-1), 0.0)


def _linear_start(theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The first guess of the phi_j: each centred x_j scaled by the least-squares fit of theta on all of
    them (minimum-norm where the x_j are collinear or constant). (problems, n), (problems, q, n) -> phi."""
    centred = x - x.mean(-1, keepdims=True)
    gram = centred @ centred.transpose(0, 2, 1)
    coefficients = np.linalg.pinv(gram, hermitian=True) @ (centred @ theta[:, :, None])
    return centred * coefficients


def _backfit(
    theta: np.ndarray, phi: np.ndarray, rsq: np.ndarray, plans: list[_Plan], delrsq: float, max_passes: int
) -> np.ndarray:
    """Inner loop: passes over j = 1..q set phi_j to the centred smooth of theta - sum_{i != j} phi_i
    against x_j, each new phi_j kept only if it raises R^2 = 1 - e^2 above the last value kept (``rsq``).
    A problem stops after a pass that raised R^2 by no more than ``delrsq``, after ``max_passes``, or after
    one pass when q = 1. Returns the new phi."""
    phi = phi.copy()
    rows, part = np.arange(len(theta)), phi  # the problems still iterating, and their phi
    residual, rsq = theta - phi.sum(1), rsq.copy()
    going = np.ones(len(theta), dtype=bool)
    for _ in range(max_passes if len(plans) > 1 else 1):
        if going.mean() < _COMPACT:
            phi[rows] = part
            keep = np.flatnonzero(going)
            rows, part, residual, rsq, going = rows[keep], part[keep], residual[keep], rsq[keep], going[keep]
            plans = [plan.take(keep) for plan in plans]
        before = rsq.copy()
        for j, plan in enumerate(plans):
            target = residual + part[:, j]
            fitted = plan.unsort(plan.supersmooth(plan.sort(target)))
            fitted -= fitted.mean(-1, keepdims=True)
            target -= fitted
            candidate = 1.0 - (target**2).mean(-1)
            better = (going & (candidate > rsq))[:, None]
            np.copyto(part[:, j], fitted, where=better)
            np.copyto(residual, target, where=better)
            np.copyto(rsq, candidate, where=better[:, 0])
        going &= rsq - before > delrsq
        if not going.any():
            break
    phi[rows] = part
    return phi


def _shared_plan(values: np.ndarray, index: np.ndarray, windows: list[_Windows]) -> _Plan:
    """The plan of ``values[index]`` (problems, n), sorting each distinct row of ``values`` once."""
    distinct, inverse = np.unique(index, return_inverse=True)
    return _Plan.of(values[distinct], windows).take(inverse.ravel())


def _solve(
    y: np.ndarray,
    x: np.ndarray,
    y_index: np.ndarray,
    x_index: np.ndarray,
    delrsq: float,
    max_iterations: int,
    window: int,
) -> AceResult:
    """ACE for a block of problems: problem i has response ``y[y_index[i]]`` (n,) and predictors
    ``x[x_index[i]]`` (q, n). Problems that share a y or an x share the work of sorting it."""
    q, n = x.shape[1:]
    windows = [_Windows(n, span) for span in SPANS]
    theta, alive = _standardise(y[y_index])
    rows = np.flatnonzero(alive)
    phi = np.zeros((len(theta), q, n))
    phi[rows] = _linear_start(theta[rows], x[x_index[rows]])
    rsq = np.zeros(len(theta))  # as in mace.f: the linear first guess is not scored, so any smooth beats it
    history = np.zeros((len(theta), window))
    iterations = np.zeros(len(theta), dtype=np.int64)
    y_plan = _shared_plan(y, y_index[rows], windows)
    x_plans = [_shared_plan(x[:, j], x_index[rows], windows) for j in range(q)]
    while rows.size:
        new_phi = _backfit(theta[rows], phi[rows], rsq[rows], x_plans, delrsq, max_iterations)
        total = new_phi.sum(1)
        new_theta, ok = _standardise(y_plan.unsort(y_plan.supersmooth(y_plan.sort(total))))
        phi[rows] = new_phi
        theta[rows[ok]] = new_theta[ok]  # a constant smooth (no signal left) keeps theta and stops
        rsq[rows] = 1.0 - ((theta[rows] - total) ** 2).mean(-1)
        history[rows, iterations[rows] % window] = rsq[rows]
        iterations[rows] += 1
        spread = np.ptp(history[rows], axis=-1)
        going = ok & (iterations[rows] < max_iterations) & ((iterations[rows] < window) | (spread > delrsq))
        if not going.all():
            keep = np.flatnonzero(going)
            y_plan, x_plans = y_plan.take(keep), [plan.take(keep) for plan in x_plans]
            rows = rows[keep]
    total = phi.sum(1)
    return AceResult(
        theta=theta,
        phi=phi,
        correlation=_correlation(theta, total),
        reference_correlation=np.abs(_correlation(phi[:, 0], theta)),
        iterations=iterations,
    )


def ace(
    y: np.ndarray,
    x: np.ndarray,
    *,
    delrsq: float = DELRSQ,
    max_iterations: int = MAX_ITERATIONS,
    window: int = WINDOW,
    callback: Callable[[int, int], None] | None = None,
) -> AceResult:
    """Alternating conditional expectations of response ``y`` (..., n) on predictors ``x`` (..., q, n).

    Leading dimensions are independent problems (they broadcast, so one y can serve many x or vice versa).
    The iteration follows Friedman's mace.f, as the `ace` package (0.4.2) does: theta starts as standardised
    y and the phi_j as the linear least-squares fit of theta on the centred x_j, with R^2 = 0. The inner
    loop backfits the phi_j (see `_backfit`: a new phi_j is kept only if it raises R^2 = 1 - e^2, and the
    passes stop once one raises R^2 by no more than ``delrsq``); each outer step then sets theta to the
    standardised smooth of ``sum phi`` against y and R^2 to 1 - e^2. A problem stops once R^2 has moved by
    no more than ``delrsq`` over its last ``window`` outer steps, or after ``max_iterations`` outer steps
    (also the cap on inner passes). Conditional expectations are SuperSmoother fits. Where the smooth of
    ``sum phi`` is constant (the package would divide by 0) the problem stops with its previous theta.

    Problems are solved in blocks that bound the memory; ``callback(done, total)`` is called after each
    block (counting problems), e.g. to report progress or to raise on cancellation.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or y.ndim < 1 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"need y of shape (..., n) and x of shape (..., q, n); got {y.shape} and {x.shape}")
    n, q = y.shape[-1], x.shape[-2]
    if n < 3:
        raise ValueError(f"ACE needs at least 3 samples, got {n}")
    if not (np.isfinite(y).all() and np.isfinite(x).all()):
        raise ValueError("y and x must be finite (no NaN or inf)")
    batch = np.broadcast_shapes(y.shape[:-1], x.shape[:-2])
    y_index = _broadcast_index(y.shape[:-1], batch)
    x_index = _broadcast_index(x.shape[:-2], batch)
    y, x = y.reshape(-1, n), x.reshape(-1, q, n)
    order = np.lexsort((y_index, x_index))  # problems sharing x, then y, side by side: they share plans
    block = max(1, _BLOCK_VALUES // ((q + 1) * n))
    blocks = [order[start : start + block] for start in range(0, len(order), block)]
    theta, phi = np.empty((len(order), n)), np.empty((len(order), q, n))
    correlation, reference = np.empty(len(order)), np.empty(len(order))
    iterations = np.empty(len(order), dtype=np.int64)
    done = 0
    for rows in blocks:
        part = _solve(y, x, y_index[rows], x_index[rows], delrsq, max_iterations, window)
        theta[rows], phi[rows], correlation[rows] = part.theta, part.phi, part.correlation
        reference[rows], iterations[rows] = part.reference_correlation, part.iterations
        done += len(rows)
        if callback is not None:
            callback(done, len(order))
    return AceResult(
        theta=theta.reshape(*batch, n),
        phi=phi.reshape(*batch, q, n),
        correlation=correlation.reshape(batch),
        reference_correlation=reference.reshape(batch),
        iterations=iterations.reshape(batch),
    )


def _broadcast_index(shape: tuple[int, ...], batch: tuple[int, ...]) -> np.ndarray:
    """For each problem of ``batch`` (flattened), the row of the flattened input of leading ``shape``."""
    return np.broadcast_to(np.arange(int(np.prod(shape))).reshape(shape), batch).ravel()
