"""Ablation on a random share of the images, with confidence intervals: an estimate early on, and a top-k
set settled without seeing every image.

Images are visited in a seeded random order, the same order for every unit. After each round, every unit that
took part has the paired differences (top class right before its ablation, minus right after) on the first
images of that order. Their mean is an unbiased estimate of the unit's accuracy drop over the population (all
images, or those of the target class). `confidence.bounds` gives each estimate an interval that holds at every
look at once, for sampling without replacement, so the intervals shrink to the exact drop once every image
has been seen.

The adaptive top-k stops spending images on a unit once its place is settled: it is clearly in the top-k set,
or clearly out. "Clearly" allows a ``tolerance``: with it, the declared set is an epsilon-PAC top-k. Every
declared unit's true drop is then at least the k-th largest minus the tolerance, with probability at least the
confidence, because the intervals are made to hold for all units at once (a union bound over the units).
This is LUCB's stopping rule (Kalyanakrishnan et al. 2012), applied to every unit still in question in each
round, as successive elimination does.

Under a process group every rank keeps the same state. Each round, a rank ablates on the images of the round
that lie in its shard of the data, and the round's outcomes are summed over the ranks (`_round`): the paired
differences per position of the order, so the intervals and every decision are those of one process, and
the ranks stay in step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from neuronwidgets.engine import confidence, distributed
from neuronwidgets.engine.guard import yield_model
from neuronwidgets.engine.progress import Progress
from neuronwidgets.engine.site import Site
from neuronwidgets.engine.stats import image_outcomes

GROWTH = 0.25  # each round adds this share of the images a unit has seen (so looks cost little), ...
FIRST_ROUND = 64  # ... and at least this many images
LOOK_COST = 10  # a look at the intervals waits until the rounds since the last took this many times its time


@dataclass
class Estimate:
    """Each unit's estimated accuracy drop on its share of the population, with an interval, after a look."""

    drop: np.ndarray  # (units,) estimated accuracy drop over the population (`shrunk_drops`), within the interval
    unbiased: np.ndarray  # (units,) the mean of each unit's paired differences: unbiased, but noisier
    lower: np.ndarray  # (units,) interval of the drop at the confidence asked for
    upper: np.ndarray
    loss_increase: np.ndarray  # (units,) estimated increase of the mean cross-entropy (no interval)
    seen: np.ndarray  # (units,) images of the population each unit was ablated on
    population: int  # images the drop is a mean over
    settled: np.ndarray  # (units,) bool: the unit's place in or out of the top set is decided
    top: list[int] | None  # the declared top-k set, best first (None without top=)

    @property
    def exact(self) -> bool:
        """Every unit has seen every image of the population: the drops are exact."""
        return bool(np.all(self.seen == self.population))

    @property
    def intervals(self) -> np.ndarray:
        """(units, 2): each drop's lower and upper bound."""
        return np.stack([self.lower, self.upper], axis=1)


class ProgressiveAblation:
    """Single-unit ablation of ``site``'s layer on images in a seeded random order, one round at a time. No
    pass over all the data comes first: each round computes the cut and the model's own outcome for its
    images only, so the first estimate comes after a few dozen images."""

    def __init__(
        self,
        site: Site,
        *,
        mode: str,
        target: int | None,
        confidence_level: float,
        seed: int | None,
        simultaneous: bool,
        bar: Progress,
    ) -> None:
        site.require_labels("ablation")
        self.site = site
        self.group = site.group
        images = len(site.source)
        self.shard = range(images) if self.group is None else self.group.shard(images)
        if seed is None:  # a fresh one, kept (meta["seed"]) so that the run can be repeated
            seed = _fresh_seed(self.group)
        self.seed = seed
        self.fill = site.fill(mode)
        self.ablator = site.ablator()
        if target is None:
            population = np.arange(images)
        else:
            labels = site.source.labels()
            assert labels is not None
            site.require_class(target, np.bincount(labels, minlength=site.num_classes))
            population = np.flatnonzero(labels == target)
        self.order = np.random.default_rng(seed).permutation(population)
        self.population = len(self.order)
        units = site.units
        # Each unit's interval at alpha/units holds for every unit at once with probability >= confidence.
        alpha = 1.0 - confidence_level
        self.alpha = alpha / units if simultaneous else alpha
        self.diffs = np.zeros((units, 0), np.int8)  # per unit, right before minus right after, in visit order
        self.seen = np.zeros(units, np.int64)
        self.hits = np.zeros(units, np.int64)  # images still right after the ablation, among those seen
        self.flips = np.zeros(units, np.int64)  # images whose outcome the ablation changed, among those seen
        self.loss = np.zeros(units, np.float64)  # summed loss after the ablation, over those seen
        self.lower = np.full(units, -1.0)
        self.upper = np.full(units, 1.0)
        # The model's own outcome per position in the order, once a round has reached it.
        self.base_hits = np.zeros(self.population, bool)
        self.base_loss = np.zeros(self.population)
        self.labels = np.zeros(self.population, np.int64)
        self.reached = 0
        self.bar = bar
        kept = site.kept_cut()
        self._kept_bytes = None if kept is None else sum(v.numel() * v.element_size() for vs, _ in kept for v in vs)

    def independent(self) -> bool:
        """Whether the network after the layer scores each image on its own, so that visiting images in any
        order and any grouping gives the same outcomes as the exact engine's chunks (under a process group:
        on every rank's images)."""
        images = np.array(self.shard[:3])
        with self.site.running():
            values, _ = self.site.cut_at(images, merged=self.group is not None)
            alone = self.ablator.scores_images_independently(values)
        if self.group is None:
            return alone
        return self.group.every("the check that images are scored independently", alone)

    def run(
        self,
        *,
        top: int | None,
        tolerance: float,
        limit: int,
        on_look: Callable[[Estimate], None] | None = None,
    ) -> Estimate:
        """Rounds until every unit has seen ``limit`` images of the population, or, with ``top``, until the
        top set is settled; ``on_look`` receives the estimate after each round."""
        active = np.arange(self.site.units)
        unlooked = np.zeros(self.site.units, bool)  # units with images the intervals do not count yet
        work_seconds, look_seconds = 0.0, 0.0
        while True:
            begin = time.perf_counter()
            for start in np.unique(self.seen[active]):
                group = active[self.seen[active] == start]
                size = min(limit - int(start), max(FIRST_ROUND, int(start * GROWTH)))
                self._round(group, int(start), size)
            unlooked[active] = True
            work_seconds += time.perf_counter() - begin
            last = bool(np.all(self.seen[active] >= limit))
            if not last and self._agreed(work_seconds < LOOK_COST * look_seconds):
                continue  # where the network after the layer is cheap, the intervals would cost more than it
            begin = time.perf_counter()
            self._look(np.flatnonzero(unlooked))
            unlooked[:] = False
            look_seconds, work_seconds = time.perf_counter() - begin, 0.0
            estimate, active = self._decide(top, tolerance, limit)
            if on_look is not None:
                on_look(estimate)
            if not len(active):
                return estimate

    def _agreed(self, wait: bool) -> bool:
        """Whether to wait before the next look: this rank's view, or under a process group every rank's (the
        ranks time their own work, and must take the same rounds)."""
        if self.group is None:
            return wait
        return self.group.every("the timing of a look", wait)

    def _round(self, units: np.ndarray, start: int, size: int) -> None:
        """Ablate each of ``units`` on the images at positions ``start:start + size`` of the order (under a
        process group, on those in this rank's shard, and then merge the round over the ranks)."""
        stop = start + size
        if self.diffs.shape[1] < stop:
            grown = np.zeros((self.site.units, stop), np.int8)
            grown[:, : self.diffs.shape[1]] = self.diffs
            self.diffs = grown
        first_visit = stop > self.reached  # the model's own outcome is needed, first time these images come up
        images = self.order[start:stop]
        mine = np.flatnonzero((images >= self.shard.start) & (images < self.shard.stop))
        counts = np.zeros((2, len(units)), np.int64)  # per unit: images still right after, outcomes changed
        loss = np.zeros(len(units))  # per unit: summed loss after the ablation
        diffs = np.zeros((len(units), size), np.int8)  # per unit and image of the round: right before - after
        base = [np.zeros(size, np.int64), np.zeros(size), np.zeros(size, np.int64)] if first_visit else []
        steps = self._ablate(units, start, mine, images[mine], counts, loss, diffs, base) if len(mine) else 0
        if self.group is not None:
            counts, loss, diffs, *base = self.group.sum("a round of sampled ablation", counts, loss, diffs, *base)
            self.bar.advance(len(units) * size + max(0, stop - max(start, self.reached)) - steps)
        if first_visit:
            new = slice(max(start, self.reached) - start, size)
            self.base_hits[start + new.start : stop] = base[0][new].astype(bool)
            self.base_loss[start + new.start : stop] = base[1][new]
            self.labels[start + new.start : stop] = base[2][new]
            self.reached = stop
        self.diffs[units, start:stop] = diffs
        self.hits[units] += counts[0]
        self.flips[units] += counts[1]
        self.loss[units] += loss
        self.seen[units] += size

    def _ablate(
        self,
        units: np.ndarray,
        start: int,
        columns: np.ndarray,
        images: np.ndarray,
        counts: np.ndarray,
        loss: np.ndarray,
        diffs: np.ndarray,
        base: list[np.ndarray],
    ) -> int:
        """For ``images``, at ``columns`` of the round that starts at position ``start`` of the order: add each
        unit's outcomes to ``counts``, ``loss`` and ``diffs``, and where ``base`` is given, fill it with the
        model's own hits, loss and labels. Returns the progress steps taken."""
        values, labels = self.site.cut_at(images, merged=self.group is not None)
        steps = 0
        with self.site.running():
            own = None  # the model's own scores of these images, where this round needs them
            if base:
                own = self.site.suffix_scores(lambda *v: self.ablator.scores(list(v)), values, bar=self.bar)
                hits, own_loss = image_outcomes(own.unsqueeze(0), labels)
                base[0][columns], base[1][columns] = hits[0].cpu().numpy(), own_loss[0].cpu().numpy()
                base[2][columns] = labels.cpu().numpy()
                steps = int(np.count_nonzero(start + columns >= self.reached))
                self.bar.advance(steps)
                base_hits = base[0][columns].astype(np.int8)
            else:
                base_hits = self.base_hits[start + columns].astype(np.int8)
            position = {int(u): i for i, u in enumerate(units)}
            pieces = self.ablator.each_unit(
                values, units.tolist(), self.fill, cached_bytes=self._kept_bytes, reference=own
            )
            for block, rows, scores in pieces:
                hits, unit_loss = image_outcomes(scores, labels[rows])
                hits = hits.cpu().numpy()
                which = [position[u] for u in block]
                changed = base_hits[rows] - hits.astype(np.int8)
                diffs[np.ix_(which, columns[rows])] = changed
                counts[0, which] += hits.sum(1)
                counts[1, which] += np.count_nonzero(changed, axis=1)
                loss[which] += unit_loss.sum(1).cpu().numpy()
                self.bar.advance(len(block) * (rows.stop - rows.start))
                steps += len(block) * (rows.stop - rows.start)
                yield_model(self.site.model)
        return steps

    def _look(self, units: np.ndarray) -> None:
        """New intervals for ``units``, intersected with their earlier ones."""
        lower, upper = confidence.bounds(
            self.diffs[units],
            self.seen[units],
            self.population,
            self.alpha,
            previous=(self.lower[units], self.upper[units]),
            value_range=(-1.0, 1.0),
        )
        self.lower[units], self.upper[units] = lower, upper

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """(drop, loss increase) of every unit on the images it has seen. With all of them seen, the drop is
        computed as the exact engine computes it (accuracy before minus after), to the last bit."""
        seen = np.maximum(self.seen, 1)
        base_hits = np.concatenate([[0], np.cumsum(self.base_hits)])[self.seen]
        base_loss = np.concatenate([[0.0], np.cumsum(self.base_loss)])[self.seen]
        return base_hits / seen - self.hits / seen, (self.loss - base_loss) / seen

    def base_accuracy(self) -> tuple[float, np.ndarray, np.ndarray]:
        """The model's own accuracy on the images reached so far, overall and per class, and those images'
        count per class."""
        labels, hits = self.labels[: self.reached], self.base_hits[: self.reached]
        classes = self.site.num_classes
        count = np.bincount(labels, minlength=classes)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(count > 0, np.bincount(labels, weights=hits, minlength=classes) / count, np.nan)
        return float(hits.mean()) if self.reached else float("nan"), per_class, count

    def _decide(self, top: int | None, tolerance: float, limit: int) -> tuple[Estimate, np.ndarray]:
        """The estimate after this look, and the units that need more images."""
        drop, loss_increase = self.estimate()
        done = self.seen >= self.population
        lower = np.where(done, drop, np.minimum(self.lower, drop))
        upper = np.where(done, drop, np.maximum(self.upper, drop))
        open_ = self.seen < limit
        variance = self.flips / np.maximum(self.seen, 1) - drop**2  # each difference is -1, 0 or 1
        shown = np.clip(shrunk_drops(drop, loss_increase, variance, self.seen, self.population), lower, upper)
        summary = (self.seen.copy(), self.population)
        if top is None:
            settled = np.zeros(len(drop), bool)
            return Estimate(shown, drop, lower, upper, loss_increase, *summary, settled, None), np.flatnonzero(open_)
        best = np.lexsort((-loss_increase, -shown))  # largest drop first, ties by the larger loss increase
        chosen = np.zeros(len(drop), bool)
        chosen[best[:top]] = True
        weakest_in = lower[chosen].min()
        strongest_out = upper[~chosen].max()
        unsettled = (chosen & (lower < strongest_out - tolerance)) | (~chosen & (upper > weakest_in + tolerance))
        estimate = Estimate(shown, drop, lower, upper, loss_increase, *summary, ~unsettled, best[:top].tolist())
        return estimate, np.flatnonzero(unsettled & open_)


def shrunk_drops(
    drop: np.ndarray, loss_increase: np.ndarray, variance: np.ndarray, seen: np.ndarray, population: int
) -> np.ndarray:
    """Each unit's drop estimate pulled toward the drop its loss increase predicts, by how noisy it is: an
    empirical-Bayes (James-Stein-type) estimate, with the loss increase as the covariate.

    A unit's drop is a mean of rare -1/0/1 outcomes, so on a few hundred images it is mostly noise, while its
    loss increase, a mean of continuous values, already orders the units well (the two agree closely once
    exact: Spearman 0.97 on the trained benchmark model). A least-squares line across the units predicts each
    drop from its loss increase; each unit's own estimate keeps the weight ``spread / (spread + noise)``, where
    ``noise`` is its sampling variance (with the finite-population correction, so it is 0 once every image is
    seen and the result is then exactly the unit's own drop) and ``spread`` the variance of the drops about the
    line that the noise does not explain. Biased toward the line while images are few, lower in total squared
    error than the plain means; `bounds` of the plain means are unaffected, and the caller keeps the result
    within them. ``variance``: each unit's per-image variance of its differences (a pseudo-count of one flip
    keeps a unit with none seen yet from counting as noiseless)."""
    seen = np.asarray(seen, np.float64)
    counted = seen > 0
    if counted.sum() < 3:
        return drop.astype(np.float64)
    pseudo = (np.maximum(variance, 0.0) * seen + 1.0) / (seen + 1.0)
    noise = np.where(counted, pseudo / np.maximum(seen, 1.0) * np.clip(1.0 - seen / population, 0.0, 1.0), 0.0)
    design = np.stack([np.ones(int(counted.sum())), loss_increase[counted]], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, drop[counted], rcond=None)
    line = coefficients[0] + coefficients[1] * loss_increase
    spread = max(float(np.var(drop[counted] - line[counted]) - noise[counted].mean()), 1e-12)
    weight = np.where(counted, spread / (spread + noise), 1.0)
    return line + weight * (drop - line)


def _fresh_seed(group: distributed.Group | None) -> int:
    """A fresh random seed; under a process group drawn on rank 0 and given to every rank (one order for all)."""
    drawn = int(np.random.SeedSequence().entropy % 2**62)  # type: ignore[operator]
    if group is None:
        return drawn
    (seed,) = group.sum("a shared random seed", np.array([drawn if group.rank == 0 else 0], np.int64))
    return int(seed[0])
