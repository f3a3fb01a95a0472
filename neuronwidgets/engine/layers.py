"""Find the inspectable layers of a model with one forward pass on one image."""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass

import torch
from torch import nn

from neuronwidgets.engine.hooks import forward_hooks


@dataclass(frozen=True)
class LayerInfo:
    """What one forward pass showed about a module: its type, output shape (one image) and call count."""

    name: str
    type: str
    shape: tuple[int, ...]  # output shape without the batch dimension, e.g. (32, 16, 16)
    calls: int
    is_output: bool  # its output is the model's output (the class scores themselves)
    channels_last: bool = False  # a 4-D output laid out (N, H, W, C), e.g. inside a ConvNeXt block

    @property
    def units(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def inspectable(self) -> bool:
        return self.calls == 1 and len(self.shape) in (1, 3) and not self.is_output and not self.channels_last


_CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Hardswish, nn.Mish, nn.Tanh)


@dataclass(frozen=True)
class FirstPass:
    """What one forward pass on one image measured: its wall-clock seconds, the seconds until each module's
    output (its first call), and the bytes of the largest tensor a module output. The times overstate a batched
    pass's time per image (one image pays every op's fixed cost, and a first call one-off costs too), which is
    the side the engine's choices can err on."""

    whole: float
    reached: dict[str, float]
    peak_bytes: int


def discover(model: nn.Module, image: torch.Tensor) -> tuple[dict[str, LayerInfo], torch.Tensor, FirstPass]:
    """Run ``model`` once on ``image`` (a batch of one) with a hook on every submodule.

    Returns the info per module name (in call order), the model output and what the pass measured. The hooks are
    removed on every exit path.
    """
    calls: dict[str, int] = {}
    outputs: dict[str, object] = {}
    inputs_of: dict[str, object] = {}
    reached: dict[str, float] = {}
    modules = {name: module for name, module in model.named_modules() if name}

    def counter(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            reached.setdefault(name, time.perf_counter())
            calls[name] = calls.get(name, 0) + 1
            outputs.setdefault(name, output)
            if isinstance(inputs, tuple) and inputs:
                inputs_of.setdefault(name, inputs[0])

        return hook

    with forward_hooks((module, counter(name)) for name, module in modules.items()):
        start = time.perf_counter()
        result = model(image)
        seconds = time.perf_counter() - start
    sizes = [out.numel() * out.element_size() for out in outputs.values() if isinstance(out, torch.Tensor)]
    first = FirstPass(seconds, {name: at - start for name, at in reached.items()}, max(sizes, default=0))
    last = channel_axes(calls, modules, inputs_of, outputs)
    infos = {}
    for name in calls:
        out = outputs[name]
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) and out.ndim >= 1 else ()
        info = LayerInfo(name, type(modules[name]).__name__, shape, calls[name], out is result, last.get(name) == 3)
        infos[name] = info
    return infos, result, first


def channel_axes(
    order: dict[str, int], modules: dict[str, nn.Module], inputs_of: dict[str, object], outputs: dict[str, object]
) -> dict[str, int]:
    """The channel axis (1, or 3 for channels-last) of each module's 4-D output, from one forward pass.

    Images enter channels-first. A ``Permute`` module moves the axis; an ``nn.Linear`` or ``nn.LayerNorm`` (over
    one dimension) given a 4-D input acts on its last dimension, so its output is channels-last; convs and 2-D
    norms read and write (N, C, H, W); any other module keeps the layout of the module that produced its input
    (found by identity of the tensor), or channels-first where no module did. ``order``: modules in the order
    their calls finished (a producer before its consumers).
    """
    produced: dict[int, int] = {}  # id of a module's output tensor -> its channel axis
    axes: dict[str, int] = {}
    for name in order:
        out, given = outputs[name], inputs_of.get(name)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            continue
        axis = _output_axis(modules[name], given, produced)
        axes[name] = axis
        produced.setdefault(id(out), axis)
    return axes


def _output_axis(module: nn.Module, given: object, produced: dict[int, int]) -> int:
    """The channel axis of ``module``'s 4-D output, from its input ``given`` (see `channel_axes`)."""
    if not isinstance(given, torch.Tensor) or given.ndim != 4:
        return 1
    axis_in = produced.get(id(given), 1)
    dims = getattr(module, "dims", None)
    if type(module).__name__ == "Permute" and isinstance(dims, (list, tuple)) and len(dims) == 4:
        return list(dims).index(axis_in) if axis_in in dims else 1
    if type(module).forward is nn.Linear.forward:
        return 3
    if type(module).forward is nn.LayerNorm.forward and len(module.normalized_shape) == 1:
        return 3
    if isinstance(module, _CHANNELS_FIRST):
        return 1
    return axis_in


def default_layer(infos: dict[str, LayerInfo], modules: dict[str, nn.Module]) -> str:
    """A sensible site to start with: the last post-activation output (an activation or a block) that still
    has a spatial map; failing that, the last inspectable layer."""
    candidates = [i for i in infos.values() if i.inspectable]
    spatial = [i for i in candidates if len(i.shape) == 3 and i.shape[1] * i.shape[2] > 1]
    preferred = [
        i for i in spatial if isinstance(modules[i.name], _ACTIVATIONS) or len(list(modules[i.name].children()))
    ]
    for group in (preferred, spatial, candidates):
        if group:
            return group[-1].name
    raise ValueError("the model has no layer whose output has channels (shape (N, C, H, W) or (N, C))")


def unknown_layer_message(name: str, infos: dict[str, LayerInfo], exists: bool = False) -> str:
    """An error message for a layer name that cannot be used, listing valid names, closest first."""
    valid = [i.name for i in infos.values() if i.inspectable]
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.4)
    rest = [v for v in valid if v not in close]
    listing = ", ".join(close + rest)
    if name in infos:
        info = infos[name]
        if info.calls != 1:
            why = f"module {name!r} runs {info.calls} times per forward pass, so its output is ambiguous"
        elif info.is_output:
            why = f"{name!r} produces the class scores themselves"
        elif info.channels_last:
            why = (
                f"the output of {name!r} is channels-last, (N, H, W, C) with {info.shape[-1]} channels (it follows a "
                "permute, or a Linear/LayerNorm acting on the last dimension); neuronwidgets ranks the channels of "
                "(N, C, H, W) maps and would rank image rows here. Rank the conv before it or the block's output"
            )
        else:
            why = f"the output of {name!r} has shape {info.shape}, not (C, H, W) or (C,)"
        return f"{why}. Inspectable layers: {listing}"
    if exists:
        return f"module {name!r} does not run in the model's forward pass. Inspectable layers: {listing}"
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown layer {name!r}.{hint} Inspectable layers: {listing}"
