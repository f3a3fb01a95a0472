"""Numeric arrays in widget traits: sent to the front end as ``{view, dtype, shape}`` (one binary buffer plus
its numpy dtype name and shape, as jupyter-scatter does), decoded there by ``decodeArray`` in ``js/lib/model.js``.

A trait declared with `array_trait` holds a numpy array (or None); the front end never has to guess what the
bytes are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets

# the dtypes the front end has a typed array for (js/lib/model.js ARRAY_TYPES)
DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64")


def array_to_json(value: np.ndarray | None, _widget: Any = None) -> dict | None:
    """``value`` as ``{view: memoryview, dtype, shape}`` (little-endian, C order); None stays None."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.dtype.name not in DTYPES:
        raise ValueError(f"cannot send an array of {array.dtype} to the front end; use one of {', '.join(DTYPES)}")
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {"view": memoryview(array.reshape(-1).view(np.uint8)), "dtype": array.dtype.name, "shape": list(array.shape)}


def array_from_json(value: dict | None, _widget: Any = None) -> np.ndarray | None:
    """The inverse of `array_to_json` (for state saved with a notebook and read back)."""
    if value is None:
        return None
    dtype = np.dtype(value["dtype"]).newbyteorder("<")
    return np.frombuffer(bytes(value["view"]), dtype=dtype).reshape(value["shape"])


ARRAY_CODEC = {"to_json": array_to_json, "from_json": array_from_json}


class Array(traitlets.TraitType):
    """A trait holding a numpy array of one dtype (or None), cast to it on assignment; synced with
    `ARRAY_CODEC` by `array_trait`."""

    default_value = None
    allow_none = True

    def __init__(self, dtype: str, **kwargs: Any) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.info_text = f"a numpy array of {dtype} or None"
        super().__init__(**kwargs)

    def validate(self, obj: Any, value: Any) -> np.ndarray | None:
        if value is None:
            return None
        array = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
        if array is None or array.dtype.kind not in "biuf" or not np.can_cast(array.dtype, self.dtype, "same_kind"):
            self.error(obj, value)
        return np.array(array, dtype=self.dtype)  # a copy: later changes to the caller's array never leak in


def array_trait(dtype: str, help: str = "") -> Array:
    """A synced `Array` trait that travels as ``{view, dtype, shape}``."""
    return Array(dtype, help=help).tag(sync=True, **ARRAY_CODEC)
