"""One layer of a model over its data: the passes that rankings and evaluations are built from.

A `Site` is fixed to one layer for its whole life, so work on it never depends on what a shared `Probe`
points at meanwhile; `Probe` makes one per call. Sites of one probe share its `ResultCache`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from neuronwidgets.data import Chunk, DataSource, as_float_images
from neuronwidgets.engine import distributed
from neuronwidgets.engine.ablate import Ablator, small_work_reason
from neuronwidgets.engine.cache import ResultCache
from neuronwidgets.engine.capture import capture
from neuronwidgets.engine.guard import evaluating, lending, yield_model
from neuronwidgets.engine.indices import as_indices
from neuronwidgets.engine.layers import FirstPass, LayerInfo
from neuronwidgets.engine.progress import CancelFlag, Progress, ProgressOption
from neuronwidgets.engine.slicing import Output, Pace, concat, is_per_image, rows_of, slices_exact
from neuronwidgets.engine.stats import LayerSummary, OutcomeCounts, TopMaps

ABLATION_MODES = ("zero", "mean")
TOP_MAPS = 33  # maps kept per unit from the summary's pass: the overlay's most images (32) and a chosen one


def require_labels(has_labels: bool, what: str) -> None:
    """Raise a clear error, with the fix, if ``what`` needs labels and the data has none."""
    if not has_labels:
        raise ValueError(
            f"{what} needs labels, but the data has none: pass a labelled Dataset, a DataLoader of "
            "(images, labels) or a pair (images, labels)"
        )


class Site:
    """The units of ``info.name`` in ``model``, over ``source``; what methods are given as their first argument."""

    def __init__(
        self,
        model: nn.Module,
        source: DataSource,
        info: LayerInfo,
        *,
        classes: Sequence[str],
        has_labels: bool,
        device: torch.device,
        dtype: torch.dtype,
        cache: ResultCache,
        memory: int,
        autocast: torch.dtype | None = None,
        group: distributed.Group | None = None,
        first_pass: FirstPass | None = None,
    ) -> None:
        """``memory``: bytes of the cut's values (all chunks') that may be kept between calls; above it they
        are streamed, computed again on every pass. ``group``: the process group whose ranks share the data
        (`engine.distributed`); passes that merge their statistics over it read only this rank's shard.
        ``first_pass``: what the probe's first pass measured, which sizes the engine's first choices."""
        self.model = model
        self.source = source
        self.info = info
        self.classes = list(classes)
        self.has_labels = has_labels
        self.device = device
        self.dtype = dtype
        self._cache = cache
        self.memory = memory
        self.autocast = autocast
        self.group = group
        self.first_pass = first_pass
        self._ablator_checked = False
        self._paces: dict[str, Pace] = {}

    @property
    def layer(self) -> str:
        return self.info.name

    @property
    def module(self) -> nn.Module:
        return self.model.get_submodule(self.layer)

    @property
    def units(self) -> int:
        return self.info.units

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @contextmanager
    def running(self, *, grad: bool = False) -> Iterator[None]:
        """The context every forward pass of the model runs in: eval mode (each module's flag restored after)
        under the model's lock, no autograd graph unless ``grad``, and autocast where the probe asks for it."""
        with evaluating(self.model), torch.set_grad_enabled(grad):
            if self.autocast is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    yield

    # -- checks ---------------------------------------------------------------------------------------------

    def require_labels(self, what: str) -> None:
        """Raise a clear error if the data has no labels and ``what`` needs them."""
        require_labels(self.has_labels, what)

    def require_class(self, target: int | None, images_per_class: np.ndarray) -> None:
        """Raise a clear error if ``target`` is a class with no image in the data (``images_per_class``)."""
        if target is not None and images_per_class[target] == 0:
            raise ValueError(f"no image of class {target} ({self.classes[target]!r}) in the data")

    def check_units(self, units: Any) -> list[int]:
        """Unit indices of this layer (ints only) as a sorted list without repeats."""
        return sorted(set(as_indices(units, "units", self.units, f"layer {self.layer!r}")))

    # -- data -----------------------------------------------------------------------------------------------

    def shard(self, description: str, merged: bool) -> range | None:
        """The images a pass reads: all of them (None) in one process; under a process group this rank's
        shard, for a pass whose caller ``merged`` its statistics over the ranks; other passes are refused there
        rather than give one shard's answer."""
        if self.group is None:
            return None
        if not merged:
            raise NotImplementedError(
                f"{description} is not supported across processes yet (it would see one rank's share of the data); "
                f"supported under a process group: {', '.join(distributed.SUPPORTED)}"
            )
        return self.group.shard(len(self.source))

    def chunks_read(self) -> int:
        """How many chunks a pass reads here: all of them, or under a process group this rank's shard's."""
        if self.group is None:
            return self.source.num_chunks
        return self.source.count_chunks(self.group.shard(len(self.source)))

    def chunks(
        self,
        description: str,
        progress: ProgressOption | Progress = None,
        cancel: CancelFlag = None,
        steps_per_chunk: int = 1,
        *,
        merged: bool = False,
    ) -> Iterator[tuple[Chunk, Progress]]:
        """Every chunk of the data on the model's device, with a `Progress` counting ``steps_per_chunk``
        steps per chunk (the caller advances it). Between chunks, work waiting for the model runs first
        (`yield_model`: a click's overlay need not wait for a whole ranking). ``merged``: the caller merges
        what it computes over the process group's ranks (`shard`)."""
        span = self.shard(description, merged)
        total = self.chunks_read() * steps_per_chunk
        with Progress.within(description, total, progress, cancel) as bar:
            loading = iter(self.source.chunks(span))
            while True:
                with lending(self.model):  # a click's overlay need not wait while the next chunk loads
                    chunk = next(loading, None)
                if chunk is None:
                    return
                yield self._to_device(chunk), bar
                yield_model(self.model)

    def sliced(
        self,
        what: str,
        work: Callable[..., Output],
        *batches: torch.Tensor,
        bar: Progress | None = None,
        exact: Callable[[], bool] | None = None,
    ) -> Output:
        """``work(*batches)``, whose outputs have a chunk's images as their first dimension (as do the first of
        ``batches`` and any other of that length; the rest are passed whole to every slice), run
        on slices of the images that take about `slicing.SLICE_SECONDS` each (timed as they run, per ``what``),
        with work waiting for the model (a click's overlay) let in between slices: it waits for a slice, not
        for the whole chunk. ``bar``'s cancellation is honoured between slices too, and the share of its step
        done is reported (`Progress.within_step`).

        Exact where ``work`` handles each image on its own, which is checked once per ``what``, layer and model
        version (by ``exact()`` where the caller has its own check, else `slices_exact`); where it does not (a
        model that normalises over its batch), the chunk runs whole. Off the CPU too: a GPU runs a chunk in
        milliseconds, and asynchronously, so a slice's wall-clock time means little."""
        n = batches[0].shape[0]
        if self.device.type != "cpu":
            return work(*batches)
        pace = self._paces.get(what)
        if pace is None:
            pace = self._paces[what] = Pace(per_image=self._first_estimate(what))
        if pace.size(n) >= n:
            return pace.timed(work, batches)
        if not self.cached(("slices exact", what), exact or (lambda: slices_exact(work, batches))):
            return work(*batches)
        parts, begin = [], 0
        while begin < n:
            rows = slice(begin, begin + pace.size(n - begin))
            parts.append(pace.timed(work, rows_of(batches, rows)))
            begin = rows.stop
            if begin < n:
                yield_model(self.model)
                if bar is not None:
                    bar.check()
                    bar.within_step(begin / n)
        return concat(parts)

    def _first_pass(self) -> tuple[float, float] | None:
        """(seconds of the whole model, seconds until the layer's output) on one image, from the probe's first
        pass (`FirstPass`: an overstatement of a batched pass's time per image); None under autocast (that
        pass ran without it)."""
        first = self.first_pass
        if first is None or self.autocast is not None or self.layer not in first.reached:
            return None
        return first.whole, first.reached[self.layer]

    def _first_estimate(self, what: str) -> float | None:
        """Seconds per image of the work ``what`` to size its first slice by, where the first pass tells
        (`_first_pass`; an overstatement, so the slices are short enough): the layer's output costs the pass
        up to the layer; on the hook path the cut is the images themselves and the network after the layer the
        whole model, on the traced paths each is its side of the layer. None for other work."""
        first = self._first_pass()
        if first is None or what not in ("layer output", "cut", "suffix"):
            return None
        whole, before = first
        if what == "layer output":
            return before
        ablator: Ablator | None = self._cache.get(("ablator", self.layer))
        if ablator is None:
            return None
        if ablator.path == "hook":
            return 0.0 if what == "cut" else whole
        return before if what == "cut" else whole - before

    def suffix_scores(
        self, work: Callable[..., torch.Tensor], values: list[torch.Tensor], bar: Progress | None = None
    ) -> torch.Tensor:
        """``work(*values)``, class scores from the network after the layer on a chunk's cut ``values``, run in
        slices (`sliced`); whether slicing is exact is the ablator's own check of that network, made once (so
        the ablator is looked up only for it, not per chunk)."""

        def exact() -> bool:
            return self.ablator().scores_images_independently(values)

        return self.sliced("suffix", work, *values, bar=bar, exact=exact)

    def _to_device(self, chunk: Chunk) -> Chunk:
        labels = chunk.labels
        if labels is not None:
            bad = (labels < 0) | (labels >= self.num_classes)
            if bad.any():
                where = (bad.nonzero().flatten()[:5] + chunk.start).tolist()
                raise ValueError(
                    f"labels must lie in 0..{self.num_classes - 1} (the model has {self.num_classes} outputs); "
                    f"images {where} have labels {labels[bad][:5].tolist()}"
                )
            labels = labels.to(self.device)
        return Chunk(chunk.start, chunk.images.to(self.device, self.dtype), labels)

    def images(self, indices: Any) -> torch.Tensor:
        """The images at ``indices`` (ints, in the order given) as the model sees them (a CPU tensor)."""
        return self.source.take(as_indices(indices, "images", len(self.source), "the data")).images

    def layer_output(self, images: torch.Tensor) -> torch.Tensor:
        """The layer's output for a batch of images already on the model's device (the model running)."""
        return capture(self.model, self.module, images)

    def output(self, images: torch.Tensor) -> torch.Tensor:
        """The layer's output for a batch of images (N, C, H, W) or one image (C, H, W); uint8 images are
        scaled to [0, 1] as the data's are."""
        batch = as_float_images(images.unsqueeze(0) if images.ndim == 3 else images)
        with self.running():
            return capture(self.model, self.module, batch.to(self.device, self.dtype))

    # -- shared, cached passes ------------------------------------------------------------------------------

    def cached(self, key: tuple, compute: Any) -> Any:
        """``compute()`` once per layer and model version; ``key`` names what it is."""
        return self._cache.get_or_compute((*key, self.layer), compute)

    def ablator(self) -> Ablator:
        """The ablation engine for the layer, traced once per model version (unless the work is small:
        `_trace`). Once per site it is checked to give the model's own scores on one image; a trace that went
        stale (the model's Python changed, say a flag its ``forward`` reads) is traced again, and where even a
        new trace differs, the engine runs the whole model with a hook instead."""
        ablator = self.cached(("ablator",), self._trace)
        if not self._ablator_checked:
            self._ablator_checked = True
            with self.running():
                image = self._first_image()
                if not ablator.reproduces(image):
                    self._cache.forget(lambda key: key[-1] == self.layer and key[0] in ("ablator", "crossings"))
                    ablator = self.cached(("ablator",), self._trace)
                    if not ablator.reproduces(image):
                        ablator = Ablator(
                            self.model,
                            self.layer,
                            self.module,
                            untraced_because="the traced graph does not reproduce the model's output",
                            **self._sizes(),
                        )
                        self._cache.put(("ablator", self.layer), ablator)
        return ablator

    def _first_image(self) -> torch.Tensor:
        """The data's first image on the model's device (read once per probe), for checks and measurements."""
        image = self._cache.get_or_compute(("first image",), lambda: self.source.first().images)
        return image.to(self.device, self.dtype)

    def _sizes(self) -> dict[str, Any]:
        """What the ablation engine is told of sizes: the layer's output shape, and the largest tensor of a pass
        per image where the first pass measured it."""
        peak = None if self.first_pass is None else self.first_pass.peak_bytes
        return {"layer_shape": self.info.shape, "peak_bytes": peak}

    def _trace(self) -> Ablator:
        """The layer's ablation engine: traced, unless the whole ablation is so small that the hook path is
        faster (`small_work_reason`)."""
        with self.running():
            image, first = self._first_image(), self._first_pass()
            small = small_work_reason(self.model, self.module, image, len(self.source), self.units, first)
            return Ablator(self.model, self.layer, self.module, untraced_because=small, **self._sizes())

    def summary(self, progress: ProgressOption = None, cancel: CancelFlag = None) -> LayerSummary:
        """Per-image and summed statistics of the layer's output over all the data (one pass, cached). The same
        pass keeps each unit's maps on its top images where they fit in a quarter of ``memory`` (`top_maps`)."""
        keep = self._top_maps_kept() if self.group is None else 0  # the top maps are not merged over ranks yet

        def compute() -> LayerSummary:
            total: LayerSummary | None = None
            top: TopMaps | None = None
            with self.running():
                for chunk, bar in self.chunks(f"reading {self.layer}", progress, cancel, merged=True):
                    output = self.sliced("layer output", self.layer_output, chunk.images, bar=bar)
                    part = LayerSummary.of(output, chunk.labels)
                    total = part if total is None else total.merge(part)
                    if keep:
                        best = TopMaps.of(output, part.image_max, keep, chunk.start)
                        top = best if top is None else top.merge(best)
                    bar.advance()
            assert total is not None
            if top is not None:
                self._cache.put(("top maps", self.layer), top)
            return total if self.group is None else distributed.summary(self.group, total, len(self.source))

        return self.cached(("summary",), compute)

    def _top_maps_kept(self) -> int:
        """How many top images' maps per unit the summary's pass keeps: `TOP_MAPS`, or fewer where that
        does not fit in a quarter of ``memory`` (float32 maps)."""
        per_image = int(np.prod(self.info.shape, dtype=np.int64)) * 4  # every unit's map of one image
        return int(min(TOP_MAPS, self.memory // 4 // max(1, per_image)))

    def top_maps(self) -> TopMaps | None:
        """The maps the summary's pass kept (None before that pass, or where none fit)."""
        return self._cache.get(("top maps", self.layer))

    def fill(self, mode: str) -> torch.Tensor:
        """What an ablated unit's output is set to: zeros, or its mean map over the data."""
        if mode not in ABLATION_MODES:
            raise ValueError(f"unknown ablation mode {mode!r}; valid modes: {', '.join(ABLATION_MODES)}")
        if mode == "zero":
            return torch.zeros(self.info.shape, device=self.device, dtype=self.dtype)
        return torch.from_numpy(self.summary().mean_map).to(self.device, self.dtype)

    def crossings(
        self,
        description: str,
        progress: ProgressOption | Progress = None,
        cancel: CancelFlag = None,
        steps_per_chunk: int = 1,
        *,
        merged: bool = False,
    ) -> Iterator[tuple[list[torch.Tensor], Chunk, Progress]]:
        """The values at the cut after the layer, per chunk; kept in memory between calls when small.
        ``merged``: as for `chunks` (under a process group, this rank's shard)."""
        self.shard(description, merged)  # refuses a pass that is not merged, kept cut or not
        ablator = self.ablator()
        key = self._crossings_key(ablator)
        with self.running():
            cached = self._cache.get(key)
            if cached is not None:
                with Progress.within(description, len(cached) * steps_per_chunk, progress, cancel) as bar:
                    for values, chunk in cached:
                        yield values, chunk, bar
                        yield_model(self.model)
                return
            collected: list | None = []
            size = 0
            for chunk, bar in self.chunks(description, progress, cancel, steps_per_chunk, merged=merged):
                values = self.sliced("cut", ablator.crossing, chunk.images, bar=bar)
                if collected is not None:
                    kept = {id(t): t for t in (*values, chunk.images)}.values()
                    size += sum(t.numel() * t.element_size() for t in kept)
                    collected = collected if size <= self.memory else None
                    if collected is not None:
                        collected.append((values, chunk))
                yield values, chunk, bar
            if collected is not None:  # one layer's cut is kept at a time, so the budget holds across layers
                self._cache.forget(lambda other: other[0] == "crossings" and other != key)
                self._cache.put(key, collected)

    def unit_work_share(self) -> float:
        """The FLOPs the unit loop re-runs per unit and image, as a share of the whole model's per image:
        what one unit's ablation costs next to a forward pass (1 on the hook path). Measured once on the first
        image, cached."""

        def compute() -> float:
            ablator = self.ablator()
            if ablator.path == "hook":
                return 1.0  # the whole model re-runs per unit
            image = self._first_image()
            with self.running(), FlopCounterMode(display=False) as flops:
                self.model(image)
                whole = flops.get_total_flops()
                per_unit = ablator.unit_flops(ablator.crossing(image))
            return per_unit / max(1, whole)

        return self.cached(("unit work share",), compute)

    def kept_cut(self) -> list[tuple[list[torch.Tensor], Chunk]] | None:
        """The cut's values of every chunk, where `crossings` keeps them in memory; else None."""
        return self._cache.get(self._crossings_key(self.ablator()))

    def _crossings_key(self, ablator: Ablator) -> tuple:
        """The cache key of the cut's values: this rank's shard's under a process group, else all the images'."""
        span = None if self.group is None else (self.group.rank, self.group.size)
        return ("crossings", id(ablator), span, self.layer)

    def cut_at(self, indices: np.ndarray, *, merged: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The cut's values and the labels of the images at ``indices`` (any order, kept): gathered from the
        kept cut, or computed from those images (read by `DataSource.take`) where none is kept. ``merged``: the
        caller merges its results over the process group's ranks, and ``indices`` lie in this rank's shard
        (which is all a kept cut holds there)."""
        self.require_labels("ablation")
        span = self.shard("sampling images for ablation", merged)
        if span is not None and len(indices) and not (span.start <= min(indices) and max(indices) < span.stop):
            raise ValueError(f"images outside rank {self.group.rank}'s shard {span} were asked for")
        kept = self.kept_cut()
        if kept is None:
            chunk = self._to_device(self.source.take(indices))
            assert chunk.labels is not None
            with self.running():
                return self.sliced("cut", self.ablator().crossing, chunk.images), chunk.labels
        indices = np.asarray(indices, np.int64)
        starts = np.array([chunk.start for _, chunk in kept])
        owner = np.searchsorted(starts, indices, side="right") - 1
        grouped = np.argsort(owner, kind="stable")
        back = torch.from_numpy(np.argsort(grouped)).to(self.device)
        first = kept[0][0]
        each_image = [is_per_image(v, first[0].shape[0]) for v in first]
        pieces, labels = [], []
        for c in np.unique(owner):
            values, chunk = kept[c]
            assert chunk.labels is not None
            rows = torch.from_numpy(indices[grouped][owner[grouped] == c] - chunk.start).to(self.device)
            pieces.append([v[rows] if image else v for v, image in zip(values, each_image)])
            labels.append(chunk.labels[rows])
        values = [
            torch.cat([piece[j] for piece in pieces])[back] if image else first[j] for j, image in enumerate(each_image)
        ]
        return values, torch.cat(labels)[back]

    def _kept_cut_bytes(self, values: list[torch.Tensor], images: int) -> int | None:
        """Bytes of the cut's values of all chunks, estimated from the ``values`` of ``images`` images, where
        `crossings` keeps them in memory; None where it streams them."""
        per_image = sum(v.numel() * v.element_size() for v in values) / max(1, images)
        total = int(per_image * len(self.source))
        return total if total <= self.memory else None

    # -- ablation -------------------------------------------------------------------------------------------

    def alone(self) -> Site:
        """This site for this process alone: its passes read all the images (it shares the probe's cache)."""
        return Site(
            self.model,
            self.source,
            self.info,
            classes=self.classes,
            has_labels=self.has_labels,
            device=self.device,
            dtype=self.dtype,
            cache=self._cache,
            memory=self.memory,
            autocast=self.autocast,
            first_pass=self.first_pass,
        )

    def _shares_units(self, units: int) -> bool:
        """Whether the ranks of the process group share the units of an exact ablation rather than the images
        (`distributed.SHARE_UNITS`; by default the rule in README, "Across processes"): where the unit loop re-runs
        part of the network per unit (not in closed form), the units divide more evenly among the ranks than the
        images do (the slowest rank sets the time: 3 images over 2 ranks leave one rank 2 of them, while 256
        units split 128 and 128), and the cut's values for all the images fit in the memory kept for them (so
        the data is small, and the pass up to the layer that every rank then makes on all of it costs little).
        Decided by all the ranks together (each engine path was chosen by timing)."""
        assert self.group is not None
        if distributed.SHARE_UNITS != "auto":
            return distributed.SHARE_UNITS == "units"
        ablator = self.ablator()
        ranks, images = self.group.size, len(self.source)
        wanted = ablator.path != "closed_form" and -(-units // ranks) * images < -(-images // ranks) * units
        if wanted:
            with self.running():
                wanted = self._kept_cut_bytes(ablator.crossing(self._first_image()), 1) is not None
        return self.group.every("the choice of sharing units or images", wanted)

    def _unit_parallel_outcomes(
        self,
        units: list[int],
        mode: str,
        base: list[int],
        progress: ProgressOption | Progress,
        cancel: CancelFlag,
    ) -> tuple[OutcomeCounts, OutcomeCounts]:
        """`ablation_outcomes` with the ranks sharing the units: each ablates every R-th of ``units`` on all
        the images, and the per-unit counts (zero for the other ranks' units) are summed over the ranks. Every
        count is one rank's own, so the result is one process's, to the last bit."""
        assert self.group is not None
        rows = np.arange(self.group.rank, len(units), self.group.size)
        before, part = self.alone().ablation_outcomes([units[i] for i in rows], mode, base, progress, cancel)
        correct = np.zeros((len(units), self.num_classes), np.int64)
        loss = np.zeros(len(units))
        correct[rows], loss[rows] = part.correct, part.loss
        correct, loss = self.group.sum("ablation outcomes of the ranks' units", correct, loss)
        return before, OutcomeCounts(correct, loss, before.images.copy())

    def ablation_outcomes(
        self,
        units: Sequence[int] | None = None,
        mode: str = "zero",
        base: Sequence[int] = (),
        progress: ProgressOption | Progress = None,
        cancel: CancelFlag = None,
    ) -> tuple[OutcomeCounts, OutcomeCounts]:
        """Outcomes with the ``base`` units replaced, and with each of ``units`` replaced on top of them:
        ``(base, per_unit)``, one variant per entry of ``units`` (default: all units not in ``base``).

        ``progress`` may be an outer `Progress` that counts one step per unit and chunk.
        """
        self.require_labels("ablation")
        base = self.check_units(base) if len(base) else []
        rest = [u for u in range(self.units) if u not in set(base)]
        units = rest if units is None else self.check_units(units)
        if self.group is not None and self._shares_units(len(units)):
            return self._unit_parallel_outcomes(units, mode, base, progress, cancel)
        fill = self.fill(mode)
        ablator = self.ablator()
        before = OutcomeCounts.zeros(1, self.num_classes)
        per_unit = OutcomeCounts.zeros(len(units), self.num_classes)
        position = {u: i for i, u in enumerate(units)}

        def suffix(*values: torch.Tensor) -> torch.Tensor:
            """Class scores with the ``base`` units replaced (none: the model's own)."""
            return ablator.replaced(list(values), base, fill) if base else ablator.scores(list(values))

        for values, chunk, bar in self.crossings(f"ablating {self.layer}", progress, cancel, len(units), merged=True):
            assert chunk.labels is not None
            before.count_images(chunk.labels)
            per_unit.count_images(chunk.labels)
            own = self.suffix_scores(suffix, values, bar=bar)
            before.add([0], own.unsqueeze(0), chunk.labels)
            chunk_images = len(chunk.labels)
            kept = self._kept_cut_bytes(values, len(chunk.images))
            for block, rows, scores in ablator.each_unit(values, units, fill, base, kept, reference=own):
                labels = chunk.labels[rows]
                per_unit.add([position[u] for u in block], scores, labels)
                bar.advance(len(block) * len(labels) / chunk_images)
                yield_model(self.model)  # a chunk of a wide layer is many passes: lend the model between them
        if self.group is not None:
            return distributed.outcomes(self.group, before), distributed.outcomes(self.group, per_unit)
        return before, per_unit
