"""Keep the user's model exactly as it was: train/eval flags restored on every exit path."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """One re-entrant lock per model: work on a model from two threads (a widget's worker and a notebook
    cell) runs one after the other, so neither sees the other's eval mode or hooks."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.RLock())


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block and restore each module's own flag afterwards.

    Restoring per module (not just ``model.train(was_training)``) matters: a user may keep a frozen,
    eval-mode BatchNorm inside a model that is otherwise training. Holds the model's lock meanwhile.
    """
    with model_lock(model):
        flags = [(module, module.training) for module in model.modules()]
        try:
            model.eval()
            yield model
        finally:
            for module, flag in flags:
                module.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 if it has none)."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def model_version(model: nn.Module) -> tuple:
    """A cheap fingerprint that changes whenever a parameter or buffer is replaced or updated in place.

    Used to invalidate cached activations after the user trains or edits the model.
    """
    return tuple(
        (name, tensor.data_ptr(), tensor._version)
        for name, tensor in (*model.named_parameters(), *model.named_buffers())
    )
