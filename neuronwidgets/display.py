"""Model inputs → pictures as the eye expects them: the rule every overlay, thumbnail and static picture follows.

What a `Probe` shows for image ``i`` is decided once, when it is made, in this order:

1. ``Probe(..., display=...)`` when given:

   - ``{"mean": ..., "std": ...}``, `Unnormalize(mean, std)`, or any object with ``mean`` and ``std``
     (a torchvision ``Normalize``, a ``weights.transforms()`` preset): un-normalise, ``x * std + mean``;
   - a torchvision transform (``Compose``, v1 or v2) or a weights enum member (``ResNet18_Weights.DEFAULT``):
     un-normalise with the ``Normalize`` found in it;
   - ``"minmax"``: each image min-max scaled on its own, one min and max over all its channels (colours keep
     their balance; the old behaviour);
   - ``"auto"`` (the same as not giving it): the rules below;
   - any other callable: ``f(image)`` with the model input (C, H, W) (a float CPU tensor) returning the picture
     (H, W, 3) (or (H, W) grey) as uint8 or as floats in [0, 1] (a PIL image works too).
2. The dataset's ``raw`` attribute (a sequence of un-normalised [0, 1] images, one per image), like the demo's.
3. A ``Normalize`` found in the dataset's transform: torchvision transforms v1 and v2, nested ``Compose`` or
   ``nn.Sequential``, and the ``weights.transforms()`` presets, on the dataset itself, a DataLoader's dataset,
   a ``Subset``, or a ``ConcatDataset`` whose parts agree. Several ``Normalize`` in a row are inverted together.
4. Otherwise, per image: values already in [0, 1] are shown as they are; any other image is min-max scaled
   over the whole image (one min and max over all channels, never per channel).

Channels: 1 is shown as grey, 3 as RGB; of more than 3 the first 3 are shown, of 2 the first as grey (each with a
note in `Display.notes`). uint8 data arrives here already divided by 255 (see `neuronwidgets.data`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from neuronwidgets.data import inner_datasets

Picture = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class Unnormalize:
    """The inverse of ``Normalize(mean, std)`` for display: ``x * std + mean`` per channel, clipped to [0, 1].

    Called on a model input (C, H, W), it returns the picture (H, W, 3) as floats in [0, 1].
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = _numbers(self.mean, "mean"), _numbers(self.std, "std")
        if len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}: give one per channel (or one)")
        if any(s == 0 for s in std):
            raise ValueError(f"std must not contain 0, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def then(self, other: Unnormalize) -> Unnormalize:
        """The one normalisation equal to this one followed by ``other``: (x - m1) / s1 then (· - m2) / s2
        is (x - (m1 + m2 s1)) / (s1 s2)."""
        m1, s1, m2, s2 = (np.asarray(v, dtype=np.float64) for v in (self.mean, self.std, other.mean, other.std))
        return Unnormalize(tuple((m1 + m2 * s1).tolist()), tuple((s1 * s2).tolist()))

    def check_channels(self, channels: int) -> None:
        """Refuse a mean/std whose length is neither 1 nor the images' number of channels."""
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(
                    f"display {name} has {len(values)} values but the images have {channels} channels: give "
                    f"{channels} values (one per channel) or one"
                )

    def __call__(self, image: torch.Tensor | np.ndarray) -> np.ndarray:
        x = np.asarray(image, dtype=np.float64)
        shape = (-1, 1, 1)
        x = x * np.asarray(self.std).reshape(shape) + np.asarray(self.mean).reshape(shape)
        return np.clip(rgb(x)[0], 0.0, 1.0)


def _numbers(values: Any, what: str) -> tuple[float, ...]:
    """A number or a sequence/tensor of numbers as a tuple of floats; anything else refused."""
    try:
        out = tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a number or a sequence of numbers, got {values!r:.60}") from err
    if not out:
        raise ValueError(f"{what} is empty: give one value per channel")
    return out


@dataclass
class Display:
    """How a `Probe` turns its images into pictures, and why (``rule``): see the module's docstring."""

    rule: str
    convert: Picture | None = None  # model input (C, H, W) → picture; None: the default rule
    raw: Sequence[Any] | None = None  # the dataset's un-normalised images, used instead of the model inputs
    minmax: bool = False
    notes: list[str] = field(default_factory=list)

    def pictures(self, indices: Sequence[int], model_images: Callable[[list[int]], torch.Tensor]) -> np.ndarray:
        """uint8 (n, H, W, 3) pictures of images ``indices``; ``model_images`` gives their model inputs."""
        idx = [int(i) for i in indices]
        if self.raw is not None:
            return default_pictures(np.stack([np.asarray(self.raw[i], dtype=np.float64) for i in idx]))
        return self(model_images(idx))

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, 3) pictures of model inputs (n, C, H, W)."""
        if self.convert is None:
            return default_pictures(np.asarray(images, dtype=np.float64), minmax=self.minmax)
        batch = torch.as_tensor(images).detach().cpu().float()
        return np.stack([_as_picture(self.convert(image), self.rule) for image in batch])


# -- the default rule ---------------------------------------------------------------------------------------


def rgb(images: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) or (n, C, H, W) → (…, H, W, 3) by the channel rule, and a note where channels were dropped."""
    x = np.asarray(images)
    batched = x.ndim == 4
    x = x if batched else x[None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape (n, C, H, W) or (C, H, W), got {np.asarray(images).shape}")
    channels, note = x.shape[1], None
    if channels == 2:
        x, note = x[:, :1], "the images have 2 channels: the first is shown as grey"
    elif channels > 3:
        x, note = x[:, :3], f"the images have {channels} channels: the first 3 are shown as RGB"
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    x = x.transpose(0, 2, 3, 1)
    return (x if batched else x[0]), note


def default_pictures(images: np.ndarray, minmax: bool = False) -> np.ndarray:
    """(n, C, H, W) → uint8 (n, H, W, 3): images in [0, 1] as they are (unless ``minmax``), any other image
    min-max scaled with one min and max over all its channels (a constant image shows black)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must have shape (n, C, H, W), got {x.shape}")
    out = np.empty_like(x)
    for i, image in enumerate(x):
        lo, hi = float(image.min()), float(image.max())
        if not minmax and lo >= 0.0 and hi <= 1.0:
            out[i] = image
        else:
            out[i] = (image - lo) / (hi - lo) if hi > lo else 0.0
    return to_uint8(rgb(out)[0])


def to_uint8(pictures: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] → uint8 0..255, rounded to the nearest level."""
    return (np.clip(pictures, 0.0, 1.0) * 255).round().astype(np.uint8)


def _as_picture(value: Any, rule: str) -> np.ndarray:
    """What a display callable returned, as uint8 (H, W, 3); a clear error for anything else."""
    x = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    if x.ndim != 3 or x.shape[2] not in (3, 4):
        raise ValueError(
            f"the display function ({rule}) returned shape {x.shape}; it must return a picture (H, W, 3), or "
            "(H, W) for grey: channels last, not first"
        )
    x = x[..., :3]
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"the display function ({rule}) returned {x.dtype} values; return uint8 or floats in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.01 or hi > 1.01:
        raise ValueError(
            f"the display function ({rule}) returned floats in [{lo:.3g}, {hi:.3g}]; return floats in [0, 1] "
            "or uint8 0..255"
        )
    return to_uint8(x.astype(np.float64))


# -- finding Normalize ----------------------------------------------------------------------------------------


def find_normalize(transform: Any, where: str = "transform") -> tuple[Unnormalize | None, str]:
    """The un-normalisation of every ``Normalize`` in ``transform`` (in the order they run), and where each was
    found; (None, why not) where there is none or it cannot be known (one inside a random choice)."""
    found: Unnormalize | None = None
    path: list[str] = []
    for step, name in _steps(transform, where):
        if step is None:
            return None, name
        found = step if found is None else found.then(step)
        path.append(name)
    if found is None:
        return None, f"no Normalize in the {where}"
    return found, " and ".join(path)


def _steps(transform: Any, where: str) -> Iterator[tuple[Unnormalize | None, str]]:
    """(Unnormalize, where) for each Normalize-like step of a (nested) transform, depth first; (None, why)
    where a step's effect cannot be known."""
    if transform is None:
        return
    name = type(transform).__name__
    if _is_normalize(transform):
        yield (
            Unnormalize(transform.mean, transform.std),
            f"{where}: {name}(mean={_fmt(transform.mean)}, std={_fmt(transform.std)})",
        )
        return
    if name in ("RandomApply", "RandomChoice", "RandomOrder") and any(
        _is_normalize(t) for t in getattr(transform, "transforms", [])
    ):
        yield None, f"a Normalize inside {name} in the {where} may or may not run"
        return
    children = getattr(transform, "transforms", None)
    if isinstance(transform, nn.Sequential):
        children = list(transform)
    if children is None and hasattr(transform, "transform"):  # a VisionDataset's StandardTransform
        children = [transform.transform]
    if isinstance(children, (list, tuple)):
        for child in children:
            yield from _steps(child, f"{where} > {name}")


def _is_normalize(transform: Any) -> bool:
    """A torchvision Normalize (v1 or v2) or a preset that ends in one (``weights.transforms()``)."""
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    return mean is not None and std is not None and not isinstance(transform, (np.ndarray, torch.Tensor))


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in _numbers(values, "values")) + ")"


def detect(dataset: Any) -> tuple[Unnormalize | None, str]:
    """The dataset's normalisation (see `find_normalize`), through Subset/ConcatDataset wrappers; parts of a
    ConcatDataset must agree."""
    if dataset is None:
        return None, "no dataset (the data are tensors)"
    parts = inner_datasets(dataset, "transform")
    results = [_detect_one(part) for part in parts]
    found = {r[0] for r in results}
    if len(found) > 1:
        return None, "the parts of the ConcatDataset are normalised differently"
    return results[0]


def _detect_one(dataset: Any) -> tuple[Unnormalize | None, str]:
    """A VisionDataset's ``transform``, else its joint ``transforms`` (v2 style), else nothing."""
    for attr in ("transform", "transforms"):
        transform = getattr(dataset, attr, None)
        if transform is not None:
            return find_normalize(transform, f"dataset's {attr}")
    return None, "the dataset has no transform"


# -- the option ---------------------------------------------------------------------------------------------


def resolve(display: Any, dataset: Any, channels: int) -> Display:
    """The `Display` for ``Probe(..., display=display)`` over ``dataset`` whose images have ``channels``."""
    chosen = _chosen(display, dataset)
    _, note = rgb(np.zeros((channels, 1, 1)))
    if note and (chosen.convert is None or isinstance(chosen.convert, Unnormalize)):
        chosen.notes.append(note)  # a function of its own decides what to show of the channels
    if isinstance(chosen.convert, Unnormalize):
        try:
            chosen.convert.check_channels(channels)
        except ValueError as err:
            if display is not None and display != "auto":
                raise
            return Display(f"default (the detected normalisation does not fit: {err})", notes=chosen.notes)
    return chosen


def _chosen(display: Any, dataset: Any) -> Display:
    if display is None or display == "auto":
        return _automatic(dataset)
    if isinstance(display, str):
        if display == "minmax":
            return Display("minmax: each image min-max scaled over all its channels", minmax=True)
        raise ValueError(
            f"unknown display {display!r}; valid: 'auto', 'minmax', a dict with mean and std, or a callable"
        )
    unnormalize = _unnormalize_of(display)
    if unnormalize is not None:
        return Display(f"un-normalised, mean={_fmt(unnormalize.mean)}, std={_fmt(unnormalize.std)}", unnormalize)
    if callable(display):
        return Display(f"given function {getattr(display, '__name__', type(display).__name__)}", display)
    raise TypeError(
        f"display must be 'auto', 'minmax', a dict {{'mean': ..., 'std': ...}}, an object with mean and std, a "
        f"torchvision transform with a Normalize, or a callable; got {type(display).__name__}"
    )


def _unnormalize_of(display: Any) -> Unnormalize | None:
    """The un-normalisation a display option names, None if it is not one of those forms."""
    if isinstance(display, Unnormalize):
        return display
    if isinstance(display, dict):
        unknown = set(display) - {"mean", "std"}
        if unknown or len(display) != 2:
            raise ValueError(f"display dict needs exactly the keys 'mean' and 'std', got {sorted(display)}")
        return Unnormalize(display["mean"], display["std"])
    if _is_normalize(display):
        return Unnormalize(display.mean, display.std)
    if isinstance(getattr(display, "meta", None), dict) and callable(getattr(display, "transforms", None)):
        display = display.transforms()  # a torchvision weights enum member: its preset
    if type(display).__module__.startswith("torchvision.transforms"):
        found, why = find_normalize(display, "display transform")
        if found is None:
            raise ValueError(f"display={type(display).__name__}(...) has no Normalize to invert ({why})")
        return found
    return None


def _automatic(dataset: Any) -> Display:
    raw = getattr(dataset, "raw", None)
    if raw is not None and dataset is not None and len(raw) == len(dataset):
        return Display("the dataset's raw images", raw=raw)
    found, why = detect(dataset)
    if found is not None:
        return Display(f"un-normalised, found in the {why}", found)
    return Display(f"default ({why}): images in [0, 1] as they are, others min-max scaled over all channels")
