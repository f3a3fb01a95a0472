"""Run the model with units of one layer replaced (zeroed or set to their mean), re-running as little as possible.

Four paths, fastest first; `Ablator.path` says which one applies and `Ablator.reason` why a faster one did not:

``closed_form``  only channel-wise ops and one linear classifier follow the layer: every unit's effect on the
                 class scores is one small tensor product, for all units at once.
``pushdown``     channel-wise ops lead to the first conv/linear ops (the frontier); their outputs are computed
                 once per chunk and corrected per unit by subtracting that unit's contribution, then only the
                 network after the frontier is re-run.
``suffix``       the network after the layer is re-run per unit on the cached inputs of the cut (the layer's
                 output and any values that skip over it).
``hook``         the whole model is re-run per unit with a forward hook (several units stacked along the batch
                 into one call where the model scores images independently; on a CPU the images channels-last
                 where that runs faster): where the model could not be traced, or where the work is so small
                 that tracing would cost more than it saves (`small_work_reason`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from neuronwidgets.engine.graph import Frontier, Split, TraceError, split
from neuronwidgets.engine.hooks import forward_hooks
from neuronwidgets.engine.slicing import is_per_image, outputs_match, rows_of, slices_exact

# The unit loop builds at most 1/_WORK_SHARE of the cut's values kept in memory at once (at least
# _MIN_WORK_BYTES), but each call of the network after the layer does at least _MIN_CALL_FLOPS of work: smaller
# calls cost more in fixed overhead (e.g. oneDNN reordering conv weights on every call) than they save.
_WORK_SHARE = 8
_MIN_WORK_BYTES = 32 << 20
_MIN_CALL_FLOPS = 4 * 10**9
# On the hook path, one stacked call's largest tensor (the first pass's largest per image, times the call's
# images) stays under this: past it a CPU's time per image grows again, as the values outgrow its caches. Timed
# on 2 cores (4 MiB L2) over mobilenet_v2, squeezenet, densenet and efficientnet at 64x64 and 160x160 images:
# the fastest batch held 10-25 MB there (64 images at 64x64, 8-16 at 160x160), and 384 images at 64x64 took
# 1.2-1.6x longer per image than 64. Not on a GPU, which wants bigger calls (there the memory budget alone sets it).
_STACK_PEAK_BYTES = 16 << 20
# Tracing a model and checking the trace (`Site.ablator`) costs about this much per module (0.3-0.8 ms measured on 2
# CPU cores over the torchvision matrix, `benchmarks/small_work.py`); the small-work rule weighs it.
SETUP_SECONDS_PER_MODULE = 0.001
_TIMED_IMAGES = 16


def small_work_reason(
    model: nn.Module,
    layer_module: nn.Module,
    image: torch.Tensor,
    images: int,
    units: int,
    first_pass: tuple[float, float] | None = None,
) -> str | None:
    """Why the hook path is the faster way to ablate each of ``units`` over ``images`` images, or None.

    A forward pass on one image (the model running) tells how long the naive loop takes, one whole forward
    pass per unit, and what share of each pass comes before the layer: the most a traced path can save, since
    it re-runs only what follows the layer. Where that saving is below the cost of tracing the model and
    checking the trace (`SETUP_SECONDS_PER_MODULE` per module), the hook path is faster. One image's pass
    overstates the time per image of a batched one, so a saving too small even by it settles the choice at
    once; where it is near the cost, a pass on a batch of copies of ``image`` is timed to decide.
    ``first_pass``: (seconds of the whole pass, seconds until the layer had run) on one image where the caller
    timed them already (the probe's first pass), in place of timing one. Off the CPU, where calls run
    asynchronously and their wall-clock time means little, None."""
    if image.device.type != "cpu" or SETUP_SECONDS_PER_MODULE <= 0:
        return None
    setup = SETUP_SECONDS_PER_MODULE * sum(1 for _ in model.modules())

    def timed(batch: torch.Tensor) -> tuple[float, float]:
        """(seconds of the whole pass, seconds until the layer had run) on ``batch``."""
        reached: list[float] = []

        def arrive(module: nn.Module, inputs: object, output: object) -> None:
            reached.append(time.perf_counter())

        with forward_hooks([(layer_module, arrive)]):
            start = time.perf_counter()
            model(batch)
            end = time.perf_counter()
        return end - start, (reached[0] if reached else end) - start

    whole, before = timed(image) if first_pass is None else first_pass
    per_image = 1
    if setup <= before * images * (units + 1) < 10 * setup:
        batch = image.expand(min(images, _TIMED_IMAGES), *image.shape[1:]).contiguous()
        (whole, before), per_image = timed(batch), len(batch)
    naive = whole / per_image * images * (units + 1)
    saving = before / per_image * images * (units + 1)
    if saving >= setup:
        return None
    bound = "about" if per_image > 1 else "at most"
    return (
        f"small work: the whole model per unit takes {bound} {naive:.2f} s, and tracing it (about {setup:.2f} s) "
        f"would save at most {saving:.2f} s"
    )


def with_units(activations: torch.Tensor, units: list[int], fill: torch.Tensor) -> torch.Tensor:
    """A copy of ``activations`` (N, units, ...) with ``units`` overwritten by ``fill`` (the per-sample shape)."""
    out = activations.clone()
    out[:, units] = fill[units].to(out.dtype)
    return out


class UnitScores(NamedTuple):
    """Class scores of shape (len(units), len(rows), classes): each of ``units`` replaced in turn, for the
    ``rows`` (a slice) of the chunk's images."""

    units: list[int]
    rows: slice
    scores: torch.Tensor


class Ablator:
    """Ablation of the units (channels) of ``layer``; all methods take cached ``crossing`` values per chunk."""

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        layer_module: nn.Module,
        *,
        untraced_because: str | None = None,
        layer_shape: tuple[int, ...] | None = None,
        peak_bytes: int | None = None,
    ) -> None:
        """``untraced_because``: skip tracing and take the hook path for this reason (e.g. a trace that did
        not reproduce the model's output). ``layer_shape``: the layer's output shape for one image, where the
        caller knows it (the hook path then needs no pass to size its work). ``peak_bytes``: the largest
        tensor of a whole pass on one image, where known: it caps the hook path's stacked calls
        (`_STACK_PEAK_BYTES`)."""
        self.model = model
        self.layer = layer
        self.layer_module = layer_module
        self.layer_shape = layer_shape
        self.peak_bytes = peak_bytes
        self.split: Split | None = None
        self.reason: str | None = None
        self.images_independent = True  # the network after the layer scores each image on its own
        self._slices_checked = False
        self._stack_checked_once = False  # the hook path checked one call's stacking itself (`_hooked`)
        self._layout_checked = False
        self._per_image_cost: tuple[int, int] | None = None
        # the hook path's memory format for the images (None: as given), chosen once by timing (`_hooked`)
        self.memory_format: torch.memory_format | None = None
        self._memory_format_tried = False
        self._last_call: tuple[int, float] | None = None  # (images, seconds) of its latest call of the model
        if untraced_because is not None:
            self.path, self.reason = "hook", untraced_because
            return
        try:
            self.split = split(model, layer)
        except TraceError as err:
            self.path, self.reason = "hook", str(err)
            return
        frontier = self.split.frontier
        if frontier is None:
            self.path, self.reason = "suffix", self.split.no_frontier_reason
        elif frontier.closed_form and isinstance(frontier.ops[0], nn.Linear):
            self.path = "closed_form"
        else:
            self.path = "pushdown"

    def reproduces(self, images: torch.Tensor) -> bool:
        """Whether the traced graph gives the model's own class scores on ``images``: false after a change to
        the model that its parameters do not show (e.g. a Python flag its ``forward`` reads)."""
        if self.split is None:
            return True
        expected = self.model(images)
        got = self.scores(self.crossing(images))
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale + 1e-7)

    def describe(self) -> dict[str, str | None]:
        """For `Ranking.meta`: the path the engine took and why no faster one (None if none was passed over)."""
        return {"engine": self.path, "engine_note": self.reason}

    # -- cached values of the cut ---------------------------------------------------------------------------

    def crossing(self, images: torch.Tensor) -> list[torch.Tensor]:
        """What the suffix needs, computed once per chunk (for the hook path: the images themselves)."""
        if self.split is None:
            return [images]
        return list(self.split.prefix(images))

    def scores(self, crossing: list[torch.Tensor]) -> torch.Tensor:
        """Class scores without any ablation."""
        if self.split is None:
            return self._whole_model(crossing[0])
        return self.split.suffix(*self._fresh(crossing))[0]

    def replaced(self, crossing: list[torch.Tensor], units: Sequence[int], fill: torch.Tensor) -> torch.Tensor:
        """Class scores with all of ``units`` replaced by ``fill`` (per-sample shape of the layer output)."""
        return self.transformed(crossing, partial(with_units, units=list(units), fill=fill))

    def transformed(
        self, crossing: list[torch.Tensor], transform: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Class scores with the layer's output replaced by ``transform(output)`` (which must not modify its
        argument), e.g. a projection that removes principal components."""
        if self.split is None:
            with forward_hooks([(self.layer_module, lambda module, inputs, output: transform(output))]):
                return self._whole_model(crossing[0])
        values = self._fresh(crossing)
        values[0] = transform(values[0])
        return self.split.suffix(*values)[0]

    def each_unit(
        self,
        crossing: list[torch.Tensor],
        units: Sequence[int],
        fill: torch.Tensor,
        base: Sequence[int] = (),
        cached_bytes: int | None = None,
        reference: torch.Tensor | None = None,
    ) -> Iterator[UnitScores]:
        """Class scores with one of ``units`` replaced by ``fill`` at a time, on top of the ``base`` units,
        which stay replaced throughout (the already pruned set of greedy pruning).

        The chunk's images are taken in slices small enough that the working memory stays a fraction of the
        cut's values kept in memory (``cached_bytes``, all chunks'; default: this chunk's), see `work_slices`;
        within a slice, every unit in turn. ``reference``: the chunk's class scores with only ``base`` replaced,
        where the caller has them; on the hook path they stand in for `scores_images_independently`'s own passes
        (`_hooked`).
        """
        units, base = list(units), list(base)
        budget = self.work_budget(crossing, cached_bytes)
        slices = self.work_slices(crossing, budget)
        if len(slices) > 1 and not self.scores_images_independently(crossing):
            slices = self.work_slices(crossing, budget)
        for rows in slices:
            part = rows_of(crossing, rows)
            if self.split is None:
                known = None if reference is None else reference[rows]
                yield from self._hooked(part[0], rows, units, fill, base, budget, known)
            else:
                yield from self._each_unit_in(part, rows, units, fill, base, budget)

    def work_slices(self, crossing: list[torch.Tensor], budget: int | None = None) -> list[slice]:
        """Equal slices of the chunk's images for the unit loop: the values it builds per unit (the frontier
        ops' outputs, or the layer's output) fit in ``budget`` (default: `work_budget` of the chunk), so that
        its working memory stays a fraction of the cached values; but every call of the network after the layer
        still does at least `_MIN_CALL_FLOPS` of work, where a smaller call costs more in fixed overhead than it
        saves."""
        n = crossing[0].shape[0]
        if self.path == "closed_form" or not self.images_independent:
            return [slice(0, n)]
        work_bytes, flops = self.per_image_cost(crossing)
        budget = self.work_budget(crossing) if budget is None else budget
        most = max(1, budget // max(1, work_bytes))
        if flops is not None:
            most = max(most, -(-_MIN_CALL_FLOPS // max(1, flops)))
        parts = -(-n // most)
        size = -(-n // parts)
        return [slice(begin, min(n, begin + size)) for begin in range(0, n, size)]

    def units_per_call(self, crossing: list[torch.Tensor], budget: int) -> int:
        """How many units' ablations of these images go into one call of the network after the layer, stacked
        along the batch: enough for the call to do `_MIN_CALL_FLOPS` (a small call costs more in fixed overhead,
        per op, than in work; as Captum's ``perturbations_per_eval``), within ``budget`` bytes of the values the
        unit loop builds. One on the closed-form path, and where the network mixes images. On the hook path
        the FLOPs are not counted (`per_image_cost`): as many units as the budget holds, and on a CPU as keep
        the call's largest tensor under `_STACK_PEAK_BYTES`."""
        stack = self._units_that_fit(crossing, budget)
        if stack <= 1 or not self.scores_images_independently(crossing):
            return 1
        return stack

    def _units_that_fit(self, crossing: list[torch.Tensor], budget: int) -> int:
        """`units_per_call` where the network after the layer scores images independently."""
        if self.path == "closed_form":
            return 1
        n = crossing[0].shape[0]
        work_bytes, flops = self.per_image_cost(crossing)
        room = budget // max(1, work_bytes * n)
        if flops is None and self.peak_bytes and crossing[0].device.type == "cpu":  # a CPU's caches: see above
            room = min(room, _STACK_PEAK_BYTES // max(1, self.peak_bytes * n))
        wanted = room if flops is None else -(-_MIN_CALL_FLOPS // max(1, flops * n))
        return max(1, int(min(wanted, room)))

    @staticmethod
    def work_budget(crossing: list[torch.Tensor], cached_bytes: int | None = None) -> int:
        """Bytes the unit loop may build at once: 1/`_WORK_SHARE` of the cut's values kept in memory
        (``cached_bytes``; default: the chunk's ``crossing``), at least `_MIN_WORK_BYTES`."""
        cached = sum(_bytes(v) for v in crossing) if cached_bytes is None else cached_bytes
        return max(cached // _WORK_SHARE, _MIN_WORK_BYTES)

    def per_image_cost(self, crossing: list[torch.Tensor]) -> tuple[int, int | None]:
        """(bytes the unit loop builds per unit, FLOPs of the network it re-runs per unit), for one image;
        measured once on the chunk's first image. On the hook path the FLOPs are None: counting them (every op
        dispatched through `FlopCounterMode`) costs as much as the small work that path is chosen for, and the
        whole model re-runs per unit there in any case."""
        if self._per_image_cost is None:
            one = [v.clone() for v in rows_of(crossing, slice(0, 1))]
            if self.split is None:  # the unit loop copies the images and the layer's output per unit
                self._per_image_cost = _bytes(one[0]) + self._layer_bytes(one), None
                return self._per_image_cost
            with FlopCounterMode(display=False) as flops:
                if self.path == "pushdown":
                    assert self.split is not None and self.split.frontier is not None
                    frontier = self.split.frontier
                    xs = frontier.chain(one[0])
                    ys = [op(xs[i]) for op, i in zip(frontier.ops, frontier.inputs_of)]
                    before = flops.get_total_flops()
                    frontier.rest(*ys, *one[1:])
                    self._per_image_cost = sum(_bytes(y) for y in ys), flops.get_total_flops() - before
                else:
                    self.scores(one)
                    self._per_image_cost = sum(_bytes(v) for v in one), flops.get_total_flops()
        return self._per_image_cost

    def _layer_bytes(self, one: list[torch.Tensor]) -> int:
        """Bytes of the layer's output for the one image ``one`` (by its known shape, else by a pass)."""
        if self.layer_shape is not None:
            return math.prod(self.layer_shape) * one[0].element_size()
        layer_bytes: list[int] = []
        with forward_hooks([(self.layer_module, lambda m, i, output: layer_bytes.append(_bytes(output)))]):
            self.scores(one)
        return layer_bytes[0]

    def unit_flops(self, crossing: list[torch.Tensor]) -> int:
        """FLOPs of one unit's ablation on one image: the network the unit loop re-runs (`per_image_cost`),
        plus, on the pushdown path, the correction of the frontier ops (each a conv or product over one of the
        layer's channels)."""
        _, flops = self.per_image_cost(crossing)
        assert flops is not None, "the hook path re-runs the whole model per unit: its FLOPs are not counted"
        if self.path != "pushdown":
            return flops
        assert self.split is not None and self.split.frontier is not None
        frontier = self.split.frontier
        one = rows_of(crossing, slice(0, 1))
        xs = frontier.chain(one[0])
        with FlopCounterMode(display=False) as counter:
            for op, i in zip(frontier.ops, frontier.inputs_of):
                op(xs[i])
        return flops + counter.get_total_flops() // max(1, one[0].shape[1])

    def scores_images_independently(self, crossing: list[torch.Tensor]) -> bool:
        """Whether the network after the layer scores each image on its own (true of eval-mode CNNs), so that
        slicing the images, or taking them in any order, changes nothing; checked once, on the first images of
        ``crossing`` (`slices_exact`). Where it fails, the unit loop works on whole chunks."""
        if not self._slices_checked:
            self._found_independent(slices_exact(lambda *values: self.scores(list(values)), crossing))
        return self.images_independent

    def _found_independent(self, independent: bool) -> None:
        """Note what a check found of whether images are scored independently (and, if not, say so)."""
        self._slices_checked, self.images_independent = True, independent
        if not independent:
            self._noted("the network after the layer does not score images independently, so chunks are not sliced")

    def _noted(self, note: str) -> None:
        """Add ``note`` to `reason`, the engine's note in `Ranking.meta`."""
        self.reason = f"{self.reason}; {note}" if self.reason else note

    def _each_unit_in(
        self,
        crossing: list[torch.Tensor],
        rows: slice,
        units: list[int],
        fill: torch.Tensor,
        base: list[int],
        budget: int,
    ) -> Iterator[UnitScores]:
        if self.path in ("closed_form", "pushdown"):
            assert self.split is not None and self.split.frontier is not None
            frontier = self.split.frontier
            layer_out = crossing[0]
            if base or self.split.mutated[0]:
                layer_out = layer_out.clone()
                layer_out[:, base] = fill[base].to(layer_out.dtype)
            xs = frontier.chain(layer_out)
            if not self._layout_checked:
                problem = _layout_problem(frontier, xs, layer_out.shape[1])
                self._layout_checked = True
                if problem:
                    self.path, self.reason = "suffix", problem
            if self.path != "suffix":
                rs = frontier.chain(fill.unsqueeze(0).to(layer_out.dtype))
                if self.path == "closed_form":
                    scores = _closed_form(frontier, xs, rs, units, layer_out.shape[1], budget)
                else:
                    per_call = self.units_per_call(crossing, budget)
                    scores = self._pushdown(frontier, crossing, xs, rs, units, per_call)
                for block, block_scores in scores:
                    yield UnitScores(block, rows, block_scores)
                return
        per_call = self.units_per_call(crossing, budget)
        if per_call == 1:
            for unit in units:
                yield UnitScores([unit], rows, self.replaced(crossing, [unit, *base], fill).unsqueeze(0))
            return
        assert self.split is not None  # the hook path is `_hooked`
        for begin in range(0, len(units), per_call):
            block = units[begin : begin + per_call]
            values = [with_units(crossing[0], [unit, *base], fill) for unit in block]
            others = _stacked(crossing[1:], len(block), crossing[0].shape[0])
            scores = self.split.suffix(torch.cat(values), *others)[0]
            yield UnitScores(block, rows, scores.reshape(len(block), -1, scores.shape[-1]))

    # -- paths ---------------------------------------------------------------------------------------------

    def _hooked(
        self,
        images: torch.Tensor,
        rows: slice,
        units: list[int],
        fill: torch.Tensor,
        base: list[int],
        budget: int,
        reference: torch.Tensor | None,
    ) -> Iterator[UnitScores]:
        """`each_unit` on the hook path: the whole model per block of units stacked along the batch.

        Stacking needs the model to score images independently. In the first call that would stack, where
        the caller gave the ``reference`` scores (``base`` alone replaced) and that is not known yet, the first
        block carries one more copy of the images, with ``base`` alone replaced, between its first two units'
        copies (so both its ends meet other images, as a model that mixes images would show): its scores must
        match ``reference``, computed on the images alone. That costs one copy of the images instead of
        `scores_images_independently`'s three small passes, which on small work cost more than stacking saves.
        A mismatch shows the model mixes images: the block is done again one unit per call. A match shows
        this call's stacking exact, not the model's independence (a fill such as the mean map can keep the
        batch's statistics), so later calls check that once as usual.

        That first check also chooses the images' memory layout, by timing one unit's pass channels-last
        against the caller's pass on the same images (`_channels_last_trial`). Where channels-last is taken,
        the check's copy is compared in it: a mismatch there could be the layout's fault as well as the
        stacking's, so the layout is dropped and the check made again with the images as given."""
        (images_timed, plain), self._last_call = self._last_call or (0, None), None
        stack = self._units_that_fit([images], budget)
        checked_here = stack > 1 and len(units) > 1 and reference is not None
        if checked_here and not self._slices_checked and not self._stack_checked_once:
            self._stack_checked_once = True
            trial = None
            if not self._memory_format_tried and len(units) > 2:
                timed = plain if images_timed == images.shape[0] else None
                trial = self._channels_last_trial(images, units[0], fill, base, timed)
            rest = units if trial is None else units[1:]
            block = rest[: max(2, stack - 1)]  # with the copy, as many images as a stack (at least 3 copies)
            scores = self._hooked_block(images, [block[0], None, *block[1:]], fill, base)
            scores = scores.reshape(len(block) + 1, -1, scores.shape[-1])
            if outputs_match(reference, scores[1]):
                if trial is not None:
                    yield UnitScores(units[:1], rows, trial.unsqueeze(0))
                    self._noted("the images run channels-last, which this model ran faster")
                yield UnitScores(block, rows, torch.cat([scores[:1], scores[2:]]))
                units, per_call = rest[len(block) :], stack
            elif trial is not None:
                self.memory_format, self._stack_checked_once = None, False
                self._noted("the check of stacked images failed channels-last, so the images run as given")
                yield from self._hooked(images, rows, units, fill, base, budget, reference)
                return
            else:
                self._found_independent(False)
                per_call = 1
        else:
            per_call = stack if stack > 1 and self.scores_images_independently([images]) else 1
        for begin in range(0, len(units), per_call):
            block = units[begin : begin + per_call]
            if len(block) == 1:
                scores = self.replaced([images], [*block, *base], fill).unsqueeze(0)
            else:
                scores = self._hooked_block(images, block, fill, base)
            yield UnitScores(block, rows, scores.reshape(len(block), -1, scores.shape[-1]))

    def _hooked_block(
        self, images: torch.Tensor, block: list[int | None], fill: torch.Tensor, base: list[int]
    ) -> torch.Tensor:
        """Class scores of the whole model on ``images`` repeated once per entry of ``block``, the layer's
        output of copy ``j`` having unit ``block[j]`` (none for None) and ``base`` replaced by ``fill``."""

        def replace(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            out = output.clone()
            copies = out.view(len(block), -1, *out.shape[1:])
            for j, unit in enumerate(block):
                replaced = base if unit is None else [unit, *base]
                if replaced:
                    copies[j, :, replaced] = fill[replaced].to(out.dtype)
            return out

        with forward_hooks([(self.layer_module, replace)]):
            return self._whole_model(images.repeat(len(block), *[1] * (images.ndim - 1)))

    def _whole_model(self, images: torch.Tensor) -> torch.Tensor:
        """The hook path's call of the model, on ``images`` in its chosen `memory_format`; its images and
        seconds are kept for that choice (`_channels_last_trial`, which compares a call on as many images)."""
        if self.memory_format is not None:
            images = images.contiguous(memory_format=self.memory_format)
        start = time.perf_counter()
        scores = self.model(images)
        self._last_call = images.shape[0], time.perf_counter() - start
        return scores

    def _channels_last_trial(
        self, images: torch.Tensor, unit: int, fill: torch.Tensor, base: list[int], plain: float | None
    ) -> torch.Tensor | None:
        """``unit``'s class scores on ``images`` laid out channels-last, where that call ran faster than
        ``plain``, the seconds of the model's call on the same images as given (then `memory_format` becomes
        channels-last); None, with the layout left as given, where it ran slower or failed. On a CPU, oneDNN
        runs many convolution networks faster channels-last (depthwise and 1x1 convs most: 1.2-2.4x on 9 of the
        10 torchvision families of `tests/test_zoo.py`) but some slower (resnet18: 0.6-0.9x), so it is timed per
        model, on real work: one unit's pass (no extra pass where channels-last is taken, one where it is not).
        It is timed against the caller's own pass rather than another unit's pass as given, which would follow
        that pass: in a fresh ranking each is then the first call of its layout at this batch size, and pays
        oneDNN's setup for it alike (a warm pass against a cold one kept mobilenet_v2 `features.1` as given, at
        0.90x the naive loop on one thread). A model that reads memory as channels-first (a ``view`` of a
        conv's output) fails here, and keeps its layout. Whether the scores are right is the caller's check."""
        self._memory_format_tried = True
        if plain is None or images.ndim != 4 or not images.is_floating_point() or images.device.type != "cpu":
            return None
        self.memory_format = torch.channels_last
        start = time.perf_counter()
        try:
            scores = self.replaced([images], [unit, *base], fill)
        except Exception:  # any failure in the other layout means: keep the model's own
            self.memory_format = None
            return None
        if not _faster(time.perf_counter() - start, plain):
            self.memory_format = None
            return None
        return scores

    def _fresh(self, crossing: list[torch.Tensor]) -> list[torch.Tensor]:
        """The crossing values, copied where the suffix writes into them in place."""
        assert self.split is not None
        return [v.clone() if m else v for v, m in zip(crossing, self.split.mutated)]

    def _pushdown(
        self,
        frontier: Frontier,
        crossing: list[torch.Tensor],
        xs: tuple[torch.Tensor, ...],
        rs: tuple[torch.Tensor, ...],
        units: list[int],
        per_call: int,
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        assert self.split is not None
        ys = [op(xs[i]) for op, i in zip(frontier.ops, frontier.inputs_of)]
        n, channels = crossing[0].shape[:2]
        rest_mutated = self.split.mutated[1:]
        for begin in range(0, len(units), per_call):
            block = units[begin : begin + per_call]
            corrected = [
                torch.cat([_subtract_contribution(op, y, xs[i], rs[i], unit, channels) for unit in block])
                for op, y, i in zip(frontier.ops, ys, frontier.inputs_of)
            ]
            if len(block) == 1:
                others = [v.clone() if m else v for v, m in zip(crossing[1:], rest_mutated)]
            else:
                others = _stacked(crossing[1:], len(block), n)
            scores = frontier.rest(*corrected, *others)[0]
            yield block, scores.reshape(len(block), n, scores.shape[-1])


def _faster(seconds: float, than: float) -> bool:
    """Whether a call that took ``seconds`` ran faster than one that took ``than`` (tests fix the answer)."""
    return seconds < than


def _stacked(values: Sequence[torch.Tensor], copies: int, n: int) -> list[torch.Tensor]:
    """The per-image ``values`` (first dimension ``n``) repeated ``copies`` times along it, one copy per unit
    stacked into one call; values shared by every image are passed as they are."""
    return [v.repeat(copies, *[1] * (v.ndim - 1)) if is_per_image(v, n) else v for v in values]


def _bytes(value: torch.Tensor) -> int:
    return value.numel() * value.element_size()


def _layout_problem(frontier: Frontier, xs: tuple[torch.Tensor, ...], channels: int) -> str | None:
    """Why the frontier ops cannot be corrected channel by channel, or None if they can."""
    for op, i in zip(frontier.ops, frontier.inputs_of):
        x = xs[i]
        if isinstance(op, nn.Conv2d) and (x.ndim != 4 or x.shape[1] != channels):
            return f"the conv after the layer sees {x.shape[1]} channels, not the layer's {channels}"
        if isinstance(op, nn.Linear) and (x.ndim != 2 or x.shape[1] % channels):
            return f"the linear layer after the layer sees input of shape {tuple(x.shape)}"
    return None


def _subtract_contribution(
    op: nn.Module, y: torch.Tensor, x: torch.Tensor, r: torch.Tensor, unit: int, channels: int
) -> torch.Tensor:
    """``op``'s output ``y`` with input channel ``unit`` changed from ``x`` to the replacement ``r``."""
    if isinstance(op, nn.Linear):
        size = x.shape[1] // channels
        block = slice(unit * size, (unit + 1) * size)
        delta = x[:, block] - r[:, block]
        return y - delta @ op.weight[:, block].T
    assert isinstance(op, nn.Conv2d)
    in_per_group = op.in_channels // op.groups
    out_per_group = op.out_channels // op.groups
    group, local = divmod(unit, in_per_group)
    outs = slice(group * out_per_group, (group + 1) * out_per_group)
    delta = x[:, unit : unit + 1] - r[:, unit : unit + 1]
    weight = op.weight[outs, local : local + 1]
    if op.padding_mode != "zeros":
        delta = nn.functional.pad(delta, op._reversed_padding_repeated_twice, mode=op.padding_mode)
        change = nn.functional.conv2d(delta, weight, None, op.stride, 0, op.dilation)
    else:
        change = nn.functional.conv2d(delta, weight, None, op.stride, op.padding, op.dilation)
    if op.groups == 1:
        return y - change
    y = y.clone()
    y[:, outs] -= change
    return y


def _closed_form(
    frontier: Frontier,
    xs: tuple[torch.Tensor, ...],
    rs: tuple[torch.Tensor, ...],
    units: list[int],
    channels: int,
    budget: int,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    (op,) = frontier.ops
    assert isinstance(op, nn.Linear)
    x, r = xs[frontier.inputs_of[0]], rs[frontier.inputs_of[0]]
    base = op(x)
    n, features = x.shape
    classes = base.shape[1]
    size = features // channels
    delta = (x - r).reshape(n, channels, size)
    weight = op.weight.reshape(classes, channels, size)
    step = max(1, budget // max(1, n * classes * base.element_size()))
    for begin in range(0, len(units), step):
        block = units[begin : begin + step]
        contribution = torch.einsum("ncs,kcs->cnk", delta[:, block], weight[:, block])
        yield block, base.unsqueeze(0) - contribution
