"""Weight L1 norm (Li et al. 2017): the size of the filter that produces each unit."""

from __future__ import annotations

from torch import fx, nn

from neuronwidgets.engine.graph import TraceError, is_channelwise, is_linear_op, trace
from neuronwidgets.engine.guard import evaluating
from neuronwidgets.engine.progress import CancelFlag, ProgressOption
from neuronwidgets.engine.site import Site
from neuronwidgets.ranking import Ranking


def incoming_filter(model: nn.Module, layer: str) -> tuple[str, nn.Module]:
    """The conv or linear module whose output channels become ``layer``'s units, found by walking back
    through channel-wise ops (BatchNorm, ReLU, pooling). Returns its name (relative to the model) and itself.
    """
    module = model.get_submodule(layer)
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return layer, module
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
            what = node.target if node.op != "call_module" else type(modules[node.target]).__name__
            raise ValueError(
                f"weight_l1 needs a layer whose units come from one conv or linear layer through channel-wise "
                f"ops; {layer!r} is produced by {getattr(what, '__name__', what)} ({node.name}), which mixes "
                "several inputs. Pick the conv (or its BatchNorm/ReLU) inside the block instead."
            )
        node = node.args[0] if node.args else None
    if not isinstance(node, fx.Node):
        raise ValueError(f"no conv or linear layer produces {layer!r}")
    return prefix + str(node.target), modules[node.target]


def rank(site: Site, *, progress: ProgressOption = None, cancel: CancelFlag = None) -> Ranking:
    """L1 norm of the unit's incoming filter (all its input channels and kernel positions).

    For a BatchNorm or ReLU site this is the filter of the conv before it. No data needed.
    """
    try:
        name, module = incoming_filter(site.model, site.layer)
    except TraceError as err:
        raise ValueError(f"weight_l1 could not find the filter producing {site.layer!r}: {err}") from err
    weight = module.weight.detach()
    if weight.shape[0] != site.units:
        raise ValueError(
            f"{name!r} has {weight.shape[0]} filters but {site.layer!r} has {site.units} units; "
            "weight_l1 needs the units to be that layer's output channels"
        )
    scores = weight.abs().reshape(weight.shape[0], -1).sum(1).double().cpu().numpy()
    return Ranking(scores=scores, method="weight_l1", layer=site.layer, meta={"filter": name})
