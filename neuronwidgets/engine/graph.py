"""Trace the model with torch.fx and cut it after one layer.

The cut gives a *prefix* (input → every value the rest of the network needs, the layer's output first) and
a *suffix* (those values → class scores). Values that skip over the layer, such as a residual branch's
identity, cross the cut as extra inputs of the suffix, so re-running only the suffix stays exact.

For zero or mean ablation the analysis also looks for a *frontier*: the first linear ops (conv, linear)
reached from the layer through ops that act on each channel separately (ReLU, eval-mode BatchNorm, pooling,
a mean over spatial dimensions, flatten, dropout). Ablating a channel then only changes those ops' inputs by a
known amount, so their outputs can be corrected by subtracting the channel's contribution instead of being
recomputed.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

_CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
    nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.PReLU,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
)  # fmt: skip
_CHANNELWISE_FUNCTIONS = {
    torch.relu, F.relu, F.relu6, torch.sigmoid, torch.tanh, F.gelu, F.silu, F.leaky_relu, F.hardswish,
    F.hardsigmoid, F.elu, F.mish, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.max_pool2d, F.avg_pool2d,
    F.dropout, torch.flatten, torch.relu_, F.relu_,
}  # fmt: skip
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "flatten", "contiguous"}
# Reductions that are channel-wise when they reduce only spatial dimensions (``x.mean([2, 3])``).
_REDUCTION_METHODS = {"mean", "sum", "amax"}
_REDUCTION_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
_INPLACE_FUNCTIONS = {torch.relu_, F.relu_, operator.iadd, operator.isub, operator.imul, operator.itruediv}


class TraceError(RuntimeError):
    """The model could not be traced or cut at the layer; callers fall back to plain hooks."""


class _LayerTracer(fx.Tracer):
    """Keeps the chosen layer as one call, so its output is a single node even for a container block."""

    def __init__(self, layer: str | None) -> None:
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.layer or super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module, layer: str | None = None) -> fx.GraphModule:
    """Symbolically trace ``model`` (which must be in eval mode), keeping ``layer`` as a leaf call."""
    tracer = _LayerTracer(layer)
    try:
        graph = tracer.trace(model)
    except Exception as err:  # fx raises many kinds of errors for data-dependent control flow
        raise TraceError(f"torch.fx could not trace the model ({type(err).__name__}: {err})") from err
    return fx.GraphModule(tracer.root, graph)


def _flatten_is_from_dim1(node: fx.Node) -> bool:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _reduces_only_spatial_dims(node: fx.Node) -> bool:
    """Whether a mean/sum/amax node reduces explicit dimensions, all of them 2 or later (never the batch or the
    channels). Negative dimensions are refused: without the tensor's rank, -2 may be the channel axis."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = [dims] if isinstance(dims, int) else dims
    if not isinstance(dims, (list, tuple)) or not dims:
        return False
    return all(isinstance(d, int) and not isinstance(d, bool) and d >= 2 for d in dims)


def is_channelwise(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether channel c of the node's output depends on channel c of its first input only (in eval mode)."""
    if any(isinstance(a, fx.Node) for a in (*node.args[1:], *node.kwargs.values())):
        return False
    if node.op == "call_method" and node.target in _REDUCTION_METHODS:
        return _reduces_only_spatial_dims(node)
    if node.op == "call_function" and node.target in _REDUCTION_FUNCTIONS:
        return _reduces_only_spatial_dims(node)
    if node.op == "call_module":
        module = modules[node.target]
        if not isinstance(module, _CHANNELWISE_MODULES):
            return False
        if isinstance(module, nn.Flatten):
            return module.start_dim == 1 and module.end_dim == -1
        if isinstance(module, nn.PReLU):
            return True
        return not getattr(module, "return_indices", False)
    if node.op == "call_function" and node.target in _CHANNELWISE_FUNCTIONS:
        return node.target is not torch.flatten or _flatten_is_from_dim1(node)
    if node.op == "call_method" and node.target in _CHANNELWISE_METHODS:
        return node.target != "flatten" or _flatten_is_from_dim1(node)
    return False


def is_linear_op(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A conv or linear module: its output is a sum of per-input-channel contributions plus a bias."""
    return node.op == "call_module" and isinstance(modules[node.target], (nn.Conv2d, nn.Linear))


def mutates_first_argument(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the node writes into its first input (in-place ReLU, ``out += identity``, ...)."""
    if node.op == "call_module":
        return bool(getattr(modules[node.target], "inplace", False))
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_")
    return False


def subgraph(
    root: fx.GraphModule, nodes: Sequence[fx.Node], inputs: Sequence[fx.Node], outputs: Sequence[fx.Node]
) -> fx.GraphModule:
    """A new GraphModule that takes ``inputs`` and computes ``outputs`` (a tuple) from ``nodes``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in inputs:
        env[node] = graph.placeholder(node.name)
    for node in nodes:
        if node in env or node.op in ("placeholder", "output"):
            continue
        env[node] = graph.node_copy(node, lambda arg: env[arg])
    graph.output(tuple(env[node] for node in outputs))
    # No dead-code elimination: an in-place op whose result is unused (``x.relu_()``) still changes ``x``.
    return fx.GraphModule(root, graph)


@dataclass
class Frontier:
    """The first conv/linear ops after the layer, reached only through channel-wise ops."""

    chain: fx.GraphModule  # layer output → the input of each frontier op (in ``inputs_of`` order)
    ops: list[nn.Module]  # the frontier modules
    inputs_of: list[int]  # for each op, the index of its input among the chain's outputs
    rest: fx.GraphModule  # (frontier outputs..., other crossing values...) → class scores
    closed_form: bool  # the single frontier op's output *is* the class scores


@dataclass
class Split:
    """The model cut after ``layer``: ``prefix(x) -> crossing``, ``suffix(*crossing) -> scores``."""

    prefix: fx.GraphModule
    suffix: fx.GraphModule
    mutated: list[bool]  # per crossing value: does the suffix write into it (so it must be copied first)
    frontier: Frontier | None
    no_frontier_reason: str | None


def split(model: nn.Module, layer: str) -> Split:
    """Cut ``model`` after ``layer``; raises `TraceError` where that is impossible."""
    gm = trace(model, layer)
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise TraceError(f"the model's forward takes {len(placeholders)} inputs; only one (the images) is supported")
    layer_nodes = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if len(layer_nodes) != 1:
        raise TraceError(f"layer {layer!r} appears {len(layer_nodes)} times in the traced graph, expected once")
    layer_node = layer_nodes[0]
    cut = nodes.index(layer_node) + 1
    before, after = nodes[:cut], nodes[cut:]
    after_set = set(after)
    crossing = [layer_node] + [n for n in before[:-1] if any(u in after_set for u in n.users)]
    output_node = nodes[-1]
    if isinstance(output_node.args[0], (tuple, list, dict)):
        raise TraceError("the model returns several values; only a tensor of class scores is supported")
    prefix = subgraph(gm, before, placeholders, crossing)
    suffix = subgraph(gm, after, crossing, [output_node.args[0]])
    mutated = [any(mutates_first_argument(u, modules) and u.args[0] is n for u in n.users) for n in crossing]
    frontier, reason = _find_frontier(gm, modules, after, crossing, output_node)
    return Split(prefix, suffix, mutated, frontier, reason)


def _find_frontier(
    gm: fx.GraphModule,
    modules: dict[str, nn.Module],
    after: list[fx.Node],
    crossing: list[fx.Node],
    output_node: fx.Node,
) -> tuple[Frontier | None, str | None]:
    layer_node = crossing[0]
    chain: list[fx.Node] = []
    frontier: list[fx.Node] = []
    todo, seen = [layer_node], {layer_node}
    reaches_output = False  # a channel-wise image of the layer's output is itself the class scores
    while todo:
        node = todo.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if is_linear_op(user, modules) and user.args[0] is node:
                frontier.append(user)
            elif is_channelwise(user, modules) and user.args[0] is node:
                chain.append(user)
                todo.append(user)
            elif user.op == "output":
                reaches_output = True
            else:
                what = user.target if user.op != "call_module" else type(modules[user.target]).__name__
                return (
                    None,
                    f"the layer's output reaches {getattr(what, '__name__', what)!s} ({user.name}), "
                    "which is not known to act on each channel alone (it may mix channels or other values)",
                )
    if reaches_output:
        return None, "only channel-wise ops follow the layer up to the class scores (no conv or linear op)"
    if not frontier:
        return None, "no conv or linear op follows the layer"
    for node in chain:
        target = node.args[0]
        if mutates_first_argument(node, modules) and len(target.users) > 1:
            return None, f"{node.name} changes {target.name} in place while other ops also read it"
    order = {n: i for i, n in enumerate(after)}
    chain.sort(key=order.__getitem__)
    frontier.sort(key=order.__getitem__)
    frontier_inputs: list[fx.Node] = []
    for op in frontier:
        if op.args[0] not in frontier_inputs:
            frontier_inputs.append(op.args[0])
    chain_module = subgraph(gm, chain, [layer_node], frontier_inputs)
    removed = set(chain) | set(frontier)
    rest_nodes = [n for n in after if n not in removed]
    rest = subgraph(gm, rest_nodes, frontier + crossing[1:], [output_node.args[0]])
    closed_form = len(frontier) == 1 and output_node.args[0] is frontier[0]
    return (
        Frontier(
            chain=chain_module,
            ops=[modules[n.target] for n in frontier],
            inputs_of=[frontier_inputs.index(n.args[0]) for n in frontier],
            rest=rest,
            closed_form=closed_form,
        ),
        None,
    )
