"""Integer indices from user input (units, images, components): ints only, never strings, floats or bools.

Without this check ``ablate="12"`` would ablate units 1 and 2, and ``[1.7]`` unit 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_ACCEPTED = "an int, or a sequence or 1-D array/tensor of ints"


def _is_integer(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        return _integer_dtype(value)
    return False


def _integer_dtype(array: np.ndarray | torch.Tensor) -> bool:
    if isinstance(array, torch.Tensor):
        return not array.dtype.is_floating_point and not array.dtype.is_complex and array.dtype != torch.bool
    return np.issubdtype(array.dtype, np.integer)


def _valid(what: str, count: int, where: str) -> str:
    return f"{where} has {what} 0..{count - 1}" if where else f"valid {what} are 0..{count - 1}"


def as_index(value: Any, what: str, count: int, where: str = "") -> int:
    """``value`` as an index in ``0..count-1``; a TypeError for a non-integer, a ValueError out of range.
    ``what`` names the indices in plural ("units"), ``where`` what they belong to ("layer 'conv1'")."""
    if not _is_integer(value):
        raise TypeError(f"{what} are given as ints, got {value!r} ({type(value).__name__})")
    index = int(value)
    if not 0 <= index < count:
        raise ValueError(f"{what} [{index}] out of range: {_valid(what, count, where)}")
    return index


def as_indices(values: Any, what: str, count: int, where: str = "") -> list[int]:
    """``values`` (one int, or a sequence or 1-D array/tensor of ints) as a list of indices in order, each in
    ``0..count-1``; strings, floats and bools are refused with a TypeError."""
    if _is_integer(values):
        values = [values]
    elif isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim != 1 or (len(values) and not _integer_dtype(values)):
            raise TypeError(
                f"{what} must be {_ACCEPTED}, got an array of shape {tuple(values.shape)} and dtype {values.dtype}"
            )
        values = values.tolist()
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be {_ACCEPTED}, got {values!r} ({type(values).__name__})")
    out = []
    for value in values:
        if not _is_integer(value):
            raise TypeError(f"{what} must be {_ACCEPTED}, got the element {value!r} ({type(value).__name__})")
        out.append(int(value))
    bad = [i for i in out if not 0 <= i < count]
    if bad:
        raise ValueError(f"{what} {bad[:5]} out of range: {_valid(what, count, where)}")
    return out
