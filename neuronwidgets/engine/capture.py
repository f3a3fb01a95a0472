"""Read one layer's output with a forward hook that is removed on every exit path."""

from __future__ import annotations

import torch
from torch import nn


class _StopForward(Exception):
    """Raised by the capture hook once the layer has run: nothing after it needs computing."""


def capture(model: nn.Module, module: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The output of ``module`` when ``model`` runs on ``images``; the rest of the network is skipped.

    The output is cloned inside the hook, before any in-place op later in the network can change it.
    """
    captured: list[torch.Tensor] = []

    def hook(mod: nn.Module, inputs: object, output: torch.Tensor) -> None:
        captured.append(output.detach().clone())
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        model(images)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the layer did not run during the forward pass")
    return captured[0]
