"""The one way the engine attaches forward hooks: registered for a block, removed on every exit path."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from neuronwidgets.engine.guard import no_yield

ForwardHook = Callable[[nn.Module, Any, Any], Any]


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, ForwardHook]]) -> Iterator[None]:
    """Register each ``(module, hook)`` pair as a forward hook for the block; every hook registered so far is
    removed when the block ends, by an error or an interrupt too (also one raised while registering). While
    the hooks are on, the model is not lent to other work (`no_yield`): its forward would run them."""
    handles = []
    try:
        with no_yield():
            for module, hook in hooks:
                handles.append(module.register_forward_hook(hook))
            yield
    finally:
        for handle in handles:
            handle.remove()


def recorder(into: list[torch.Tensor]) -> ForwardHook:
    """A hook that appends a detached copy of the module's output to ``into``; copied at once, because an
    in-place op later in the network would otherwise change what was kept."""

    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        into.append(output.detach().clone())

    return record


def gradient_leaf(into: list[torch.Tensor]) -> ForwardHook:
    """A forward hook that turns autograd on from the module onwards (the caller turns it off again after the
    pass) and appends the module's output to ``into`` as a leaf that requires grad, so the gradient of a later
    score can be taken with respect to it alone: parameters' ``.grad`` are never touched, and the graph holds
    only the network after the module. The model goes on with a clone, so in-place ops later in the network
    change the clone, not the leaf."""

    def hold(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        torch.set_grad_enabled(True)
        leaf = output.detach().requires_grad_(True)
        into.append(leaf)
        return leaf.clone()

    return hold
