"""Weight L1 norm (Li et al. 2017): the size of the filter that produces each unit.

Where a BatchNorm takes the filter's output (conv -> bn -> relu), the size that reaches the rest of the network
is the filter's times the BatchNorm's scale ``gamma / sqrt(running_var + eps)``, which differs per channel: by
default that scale is folded into the filter first, as a conv+BN fusion would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from neuronwidgets.engine.graph import TraceError, is_channelwise, is_linear_op, trace
from neuronwidgets.engine.guard import evaluating
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking

_BATCHNORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
# Modules that hand their input on unchanged in eval mode (the mode every pass runs the model in).
_PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)  # fmt: skip


@dataclass(frozen=True)
class Filter:
    """The conv or linear module producing a layer's units and, where one is folded, the BatchNorm after it.

    ``scale`` is that BatchNorm's per-channel factor in eval mode (None where none is folded); ``note`` says why
    a BatchNorm that follows the filter was not folded (None otherwise).
    """

    name: str
    module: nn.Module
    batchnorm: str | None = None
    scale: torch.Tensor | None = None
    note: str | None = None


def incoming_filter(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """The conv or linear module whose output channels become ``layer``'s units, found by walking back
    through channel-wise ops (BatchNorm, ReLU, pooling). Returns its name (relative to the model) and itself.
    """
    found = find_filter(model, layer, fold_batchnorm=False)
    return found.name, found.module


def find_filter(model: nn.Module, layer: str, *, fold_batchnorm: bool = True) -> Filter:
    """`incoming_filter`'s filter and, with ``fold_batchnorm``, the eval-mode BatchNorm that takes its output.

    That BatchNorm must be the first op to change the filter's output (only Identity or eval-mode Dropout may
    come between) and the only consumer of it; it may come before ``layer`` (conv -> bn -> relu, ranked at the
    bn or the relu) or after it (ranked at the conv itself).
    """
    module = model.get_submodule(layer)
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if not fold_batchnorm or not any(isinstance(m, _BATCHNORMS) for m in model.modules()):
            return Filter(layer, module)
        try:
            with evaluating(model):
                gm = trace(model, layer)
        except TraceError as err:
            return Filter(layer, module, note=f"could not look for a BatchNorm after {layer!r}: {err}")
        calls = _calls_of(gm, layer)
        if len(calls) != 1:
            return Filter(layer, module, note=_called_note(layer, len(calls)))
        return _with_batchnorm(model, gm, "", calls[0], layer, module)
    with evaluating(model):
        if any(True for _ in module.children()):
            gm, prefix = trace(module), f"{layer}."
            node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        else:
            gm, prefix = trace(model, layer), ""
            node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer)
    modules = dict(gm.named_modules())
    while isinstance(node, fx.Node) and not is_linear_op(node, modules):
        if not is_channelwise(node, modules) and node.target != layer:
            raise ValueError(
                f"weight_l1 needs a layer whose units come from one conv or linear layer through channel-wise "
                f"ops; {layer!r} is produced by {_describe(node, modules)} ({node.name}), which mixes "
                "several inputs. Pick the conv (or its BatchNorm/ReLU) inside the block instead."
            )
        node = node.args[0] if node.args else None
    if not isinstance(node, fx.Node):
        raise ValueError(f"no conv or linear layer produces {layer!r}")
    name, filter_module = prefix + str(node.target), modules[node.target]
    if not fold_batchnorm:
        return Filter(name, filter_module)
    calls = _calls_of(gm, str(node.target))
    if len(calls) != 1:
        return Filter(name, filter_module, note=_called_note(name, len(calls)))
    return _with_batchnorm(model, gm, prefix, node, name, filter_module)


def _calls_of(gm: fx.GraphModule, target: str) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_module" and n.target == target]


def _called_note(name: str, calls: int) -> str:
    return (
        f"{name!r} is called {calls} times in the forward pass, so no single BatchNorm after it can be folded "
        "into its filters"
    )


def _is_batchnorm(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], _BATCHNORMS)


def _passes_through(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the node's output is its first input unchanged (in eval mode), and it takes no other tensor."""
    if any(isinstance(a, fx.Node) for a in (*node.args[1:], *node.kwargs.values())):
        return False
    if node.op == "call_module":
        return isinstance(modules[node.target], _PASS_THROUGH)
    return node.op == "call_method" and node.target == "contiguous"


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return str(getattr(node.target, "__name__", node.target))


def _with_batchnorm(
    model: nn.Module, gm: fx.GraphModule, prefix: str, node: fx.Node, name: str, module: nn.Module
) -> Filter:
    """The filter ``module`` (the call ``node`` of ``gm``) with the BatchNorm that takes its output folded in,
    where there is one that can be folded; otherwise with a note where a BatchNorm follows but cannot be."""
    modules = dict(gm.named_modules())
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1:
            batchnorms = [prefix + str(u.target) for u in users if _is_batchnorm(u, modules)]
            if not batchnorms:
                return Filter(name, module)
            return Filter(
                name,
                module,
                note=(
                    f"{name!r}'s output feeds {len(users)} ops, {batchnorms[0]!r} among them: that BatchNorm's "
                    "scale is not the only one applied to the filter's output, so it is not folded"
                ),
            )
        user = users[0]
        if not user.args or user.args[0] is not current:  # it goes in as another argument (a sum, a concat)
            return Filter(name, module)
        if _is_batchnorm(user, modules):
            break
        if not _passes_through(user, modules):
            later = _batchnorm_further_on(user, modules)
            if later is None:
                return Filter(name, module)
            return Filter(
                name,
                module,
                note=(
                    f"{prefix + str(later.target)!r} follows {name!r} only after {_describe(user, modules)} "
                    f"({user.name}), which changes the filter's output first, so it is not folded"
                ),
            )
        current = user
    bn_name = prefix + str(user.target)
    bn = model.get_submodule(bn_name)
    if bn.running_var is None:
        return Filter(
            name,
            module,
            note=(
                f"{bn_name!r} follows {name!r} but keeps no running statistics (track_running_stats=False): it "
                "normalises every batch by that batch's own variance, so it has no fixed scale to fold into the "
                "filter"
            ),
        )
    channels = module.weight.shape[0]
    if bn.num_features != channels:
        return Filter(
            name,
            module,
            note=f"{bn_name!r} has {bn.num_features} channels but {name!r} has {channels} filters: not folded",
        )
    scale = 1.0 / torch.sqrt(bn.running_var.detach().double().cpu() + bn.eps)
    if bn.weight is not None:  # affine=False: gamma is 1
        scale = scale * bn.weight.detach().double().cpu()
    return Filter(name, module, batchnorm=bn_name, scale=scale)


def _batchnorm_further_on(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """A BatchNorm reached from ``node`` through channel-wise ops with one consumer each (to say why it is not
    folded), or None."""
    while is_channelwise(node, modules) and len(node.users) == 1:
        node = next(iter(node.users))
        if _is_batchnorm(node, modules):
            return node
    return None


def _check_fold(fold_batchnorm: object) -> bool:
    if not isinstance(fold_batchnorm, (bool, np.bool_)):
        raise ValueError(
            "fold_batchnorm must be True (fold the scale of the BatchNorm after the filter into it, the default) "
            f"or False (the raw filter norms), got {fold_batchnorm!r}"
        )
    return bool(fold_batchnorm)


def rank(
    site: Site, *, fold_batchnorm: bool = True, progress: ProgressOption = None, cancel: CancelFlag = None
) -> Ranking:
    """L1 norm of the unit's incoming filter (all its input channels and kernel positions). No data needed.

    For a BatchNorm or ReLU site this is the filter of the conv (or linear layer) before it. Where an eval-mode
    BatchNorm takes that filter's output (conv -> bn -> relu, the usual case; also when the site is the conv
    itself), the score is that of the fused filter: ``|gamma / sqrt(running_var + eps)| * sum|W|`` (gamma is 1
    for ``affine=False``). The BatchNorm rescales every channel by its own factor, so without it the raw norms
    say little about how large the unit's output is: batch-normalised filters need not keep any particular
    size. ``fold_batchnorm=False`` gives the raw filter norms.

    Only a BatchNorm that is the only consumer of the filter's output and the first op to change it (Identity
    or eval-mode Dropout may come between) is folded. One without running statistics
    (``track_running_stats=False``) normalises each batch by its own statistics and has no fixed scale, so it is
    not folded. ``meta``: ``"filter"`` (the filter's module name), ``"batchnorm"`` (the folded BatchNorm's, or
    None) and ``"batchnorm_note"`` (why a BatchNorm that follows the filter was not folded, else None).
    """
    fold = _check_fold(fold_batchnorm)
    try:
        found = find_filter(site.model, site.layer, fold_batchnorm=fold)
    except TraceError as err:
        raise ValueError(f"weight_l1 could not find the filter producing {site.layer!r}: {err}") from err
    weight = found.module.weight.detach()
    if weight.shape[0] != site.units:
        raise ValueError(
            f"{found.name!r} has {weight.shape[0]} filters but {site.layer!r} has {site.units} units; "
            "weight_l1 needs the units to be that layer's output channels"
        )
    scores = weight.abs().reshape(weight.shape[0], -1).sum(1).double().cpu()
    if found.scale is not None:
        scores = scores * found.scale.abs()
    meta = {"filter": found.name, "batchnorm": found.batchnorm, "batchnorm_note": found.note}
    return Ranking(scores=scores.numpy(), method="weight_l1", layer=site.layer, meta=meta)
