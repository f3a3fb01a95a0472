"""Read one layer's output, skipping the rest of the network."""

from __future__ import annotations

import torch
from torch import nn

from neuronwidgets.engine.hooks import forward_hooks, recorder


class _StopForward(Exception):
    """Raised by the capture hook once the layer has run: nothing after it needs computing."""


def capture(model: nn.Module, module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The output of ``module`` when ``model`` runs on ``images``; the rest of the network is skipped.

    The output is cloned inside the hook, before any in-place op later in the network can change it.
    """
    captured: list[torch.Tensor] = []
    record = recorder(captured)

    def record_and_stop(mod: nn.Module, inputs: object, output: torch.Tensor) -> None:
        record(mod, inputs, output)
        raise _StopForward

    try:
        with forward_hooks([(module, record_and_stop)]):
            model(images)
    except _StopForward:
        pass
    if not captured:
        raise RuntimeError("the layer did not run during the forward pass")
    return captured[0]
