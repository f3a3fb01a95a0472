"""Run the model with units of one layer replaced (zeroed or set to their mean), re-running as little as possible.

Four paths, fastest first; `Ablator.path` says which one applies and `Ablator.reason` why a faster one did not:

``closed_form``  only channel-wise ops and one linear classifier follow the layer: every unit's effect on the
                 class scores is one small tensor product, for all units at once.
``pushdown``     channel-wise ops lead to the first conv/linear ops (the frontier); their outputs are computed
                 once per chunk and corrected per unit by subtracting that unit's contribution, then only the
                 network after the frontier is re-run.
``suffix``       the network after the layer is re-run per unit on the cached inputs of the cut (the layer's
                 output and any values that skip over it).
``hook``         the model could not be traced: the whole model is re-run per unit with a forward hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
from torch import nn

from neuronwidgets.engine.graph import Frontier, Split, TraceError, split

# Elements of the (units x images x classes) score tensor built at once on the closed-form path.
_CLOSED_FORM_BLOCK = 1 << 24


def with_units(activations: torch.Tensor, units: list[int], fill: torch.Tensor) -> torch.Tensor:
    """A copy of ``activations`` (N, units, ...) with ``units`` overwritten by ``fill`` (the per-sample shape)."""
    out = activations.clone()
    out[:, units] = fill[units].to(out.dtype)
    return out


class Ablator:
    """Ablation of the units (channels) of ``layer``; all methods take cached ``crossing`` values per chunk."""

    def __init__(self, model: nn.Module, layer: str, layer_module: nn.Module, *, use_split: bool = True) -> None:
        self.model = model
        self.layer = layer
        self.layer_module = layer_module
        self.split: Split | None = None
        self.reason: str | None = None
        if not use_split:
            self.path, self.reason = "hook", "splitting was turned off"
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
        self._layout_checked = False

    # -- cached values of the cut ---------------------------------------------------------------------------

    def crossing(self, images: torch.Tensor) -> list[torch.Tensor]:
        """What the suffix needs, computed once per chunk (for the hook path: the images themselves)."""
        if self.split is None:
            return [images]
        return list(self.split.prefix(images))

    def scores(self, crossing: list[torch.Tensor]) -> torch.Tensor:
        """Class scores without any ablation."""
        if self.split is None:
            return self.model(crossing[0])
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
            handle = self.layer_module.register_forward_hook(lambda module, inputs, output: transform(output))
            try:
                return self.model(crossing[0])
            finally:
                handle.remove()
        values = self._fresh(crossing)
        values[0] = transform(values[0])
        return self.split.suffix(*values)[0]

    def each_unit(
        self,
        crossing: list[torch.Tensor],
        units: Sequence[int],
        fill: torch.Tensor,
        base: Sequence[int] = (),
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """For blocks of ``units``: (the block, class scores of shape (len(block), N, classes)), one unit
        replaced by ``fill`` at a time, on top of the ``base`` units, which stay replaced throughout (the
        already pruned set of greedy pruning)."""
        units, base = list(units), list(base)
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
                    yield from _closed_form(frontier, xs, rs, units, layer_out.shape[1])
                else:
                    yield from self._pushdown(frontier, crossing, xs, rs, units)
                return
        for unit in units:
            yield [unit], self.replaced(crossing, [unit, *base], fill).unsqueeze(0)

    # -- paths ---------------------------------------------------------------------------------------------

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
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        assert self.split is not None
        ys = [op(xs[i]) for op, i in zip(frontier.ops, frontier.inputs_of)]
        channels = crossing[0].shape[1]
        rest_mutated = self.split.mutated[1:]
        for unit in units:
            corrected = [
                _subtract_contribution(op, y, xs[i], rs[i], unit, channels)
                for op, y, i in zip(frontier.ops, ys, frontier.inputs_of)
            ]
            others = [v.clone() if m else v for v, m in zip(crossing[1:], rest_mutated)]
            yield [unit], frontier.rest(*corrected, *others)[0].unsqueeze(0)


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
    step = max(1, _CLOSED_FORM_BLOCK // max(1, n * classes))
    for begin in range(0, len(units), step):
        block = units[begin : begin + step]
        contribution = torch.einsum("ncs,kcs->cnk", delta[:, block], weight[:, block])
        yield block, base.unsqueeze(0) - contribution
