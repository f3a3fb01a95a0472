"""Normalise whatever the user has (Dataset, DataLoader, tensors, (images, labels), one image) into chunks.

Everything downstream sees `Chunk`s of at most ``chunk_size`` images, so memory is bounded by the chunk
size and never by the size of the dataset.

Order: image ``i`` must always be the same image, so a DataLoader must read its dataset in order (the default
``SequentialSampler``, or a ``BatchSampler`` over one); shuffling and other samplers are refused. With
``drop_last=True`` the data is exactly the images the loader yields: its last incomplete batch is left out of
``len``, of every ranking and evaluation, and of the indices that ``take`` accepts.

Images: floating-point images are used as given. ``uint8`` images (tensors, numpy arrays, or a Dataset's
items) are pixel values 0..255 and are divided by 255 into [0, 1], as torchvision's ``ToTensor`` and
``ConvertImageDtype`` do; any normalisation the model expects is still yours to apply (in the Dataset's
transform). Images of any other integer dtype, bool or complex are refused: convert them to float in the scale
your model was trained on.

Labels: one class index per image, as integers or as whole-number floats; an ``(N, 1)`` column counts as
``N`` labels. Non-integer floats, bools, one-hot or probability rows ``(N, classes)`` and non-numbers are
refused, from tensors, Datasets and DataLoaders alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    ConcatDataset,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
)


@dataclass(frozen=True)
class Chunk:
    """Images ``start .. start+len-1`` of the data, their labels (None if the data has none)."""

    start: int
    images: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return self.images.shape[0]


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return torch.tensor(value)
    raise TypeError(f"{what} must be a torch tensor or a numpy array, got {type(value).__name__}")


def as_float_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """``images`` as floats by the module's rule: uint8 pixel values are divided by 255 into [0, 1], floats
    are kept as they are, other dtypes are refused (their scale is unknown)."""
    if images.is_floating_point():
        return images
    if images.dtype == torch.uint8:
        return images.float() / 255
    raise TypeError(
        f"{what} have dtype {images.dtype}, whose pixel scale is unknown: give float images in the scale the "
        "model was trained on, or uint8 pixel values 0..255 (divided by 255 here, as torchvision's ToTensor does)"
    )


def _split_item(item: Any) -> tuple[Any, Any]:
    """An item or batch is either images alone or a (images, labels, ...) pair."""
    if isinstance(item, (tuple, list)):
        if len(item) == 0:
            raise ValueError("the data yielded an empty tuple; expected images or (images, labels)")
        return item[0], (item[1] if len(item) > 1 else None)
    if isinstance(item, dict):
        raise TypeError(
            "the data yields dicts; neuronwidgets needs images or (images, labels) pairs. "
            "Wrap your dataset so that it returns (image, label)."
        )
    return item, None


def _check_chunk_size(chunk_size: Any) -> int:
    """``chunk_size`` as an int >= 1, checked when the data is given rather than on the first pass."""
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(
            f"chunk_size must be an int (images per forward pass), got {chunk_size!r} "
            f"({type(chunk_size).__name__}); e.g. chunk_size=128"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return int(chunk_size)


class DataSource:
    """Chunked, ordered access to images and optional labels; image ``i`` always means the same image."""

    def __init__(self, data: Any, chunk_size: int = 128) -> None:
        self.chunk_size = _check_chunk_size(chunk_size)
        self._loader: DataLoader | None = None
        self._loader_images = 0
        self._dataset: Dataset | None = None
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._all_labels: np.ndarray | None = None
        self.classes: list[str] | None = None
        self._setup(data)
        if len(self) == 0:
            raise ValueError("the data is empty: give at least one image")

    def _setup(self, data: Any) -> None:
        if isinstance(data, DataLoader):
            _check_in_order(data)
            self._loader = data
            self._loader_images = _yielded_images(data)
            self.classes = _classes_of(data.dataset)
        elif isinstance(data, IterableDataset):
            raise TypeError(
                "an IterableDataset has no fixed length or order; make a list of its items, or give it a "
                "__len__ and wrap it in a DataLoader"
            )
        elif _is_images_labels_pair(data):
            images = _as_tensor(data[0], "images")
            if images.ndim == 3:
                images = images.unsqueeze(0)
            self._images = images
            self._labels = _check_labels(_label_tensor(data[1], "labels"), images.shape[0], 0)
        elif isinstance(data, (torch.Tensor, np.ndarray)):
            images = _as_tensor(data, "images")
            self._images = images.unsqueeze(0) if images.ndim == 3 else images
        elif isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            self._dataset = data  # a map-style dataset, or any sequence of images or (image, label) pairs
            self.classes = _classes_of(data)
        else:
            raise TypeError(
                f"unsupported data of type {type(data).__name__}: give a Dataset, a DataLoader, a tensor of "
                "images (N, C, H, W), one image (C, H, W), or a pair (images, labels)"
            )
        if self._images is not None and self._images.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W) or (C, H, W), got {tuple(self._images.shape)}")
        if self._images is not None:
            as_float_images(self._images[:0])  # refuse an unusable dtype now, not on the first pass

    @property
    def dataset(self) -> Any:
        """The user's dataset (or the DataLoader's), None for tensors: for attributes such as ``raw`` display
        images or ``classes``."""
        if self._loader is not None:
            return self._loader.dataset
        return self._dataset

    def __len__(self) -> int:
        if self._images is not None:
            return self._images.shape[0]
        if self._dataset is not None:
            return len(self._dataset)
        return self._loader_images

    @property
    def num_chunks(self) -> int:
        if self._loader is not None:
            return len(self._loader)
        return -(-len(self) // self.chunk_size)

    def count_chunks(self, span: range) -> int:
        """How many chunks `chunks` yields for ``span``."""
        if not span:
            return 0
        if self._loader is not None:
            size = self._loader.batch_size or 1
            return (span.stop - 1) // size - span.start // size + 1
        return -(-len(span) // self.chunk_size)

    def chunks(self, span: range | None = None) -> Iterator[Chunk]:
        """Every image once, in order, as validated chunks; only the images of ``span`` (a contiguous range,
        e.g. one process's shard) where given. A DataLoader is read from its start up to the span's end, its
        batches cut to the span."""
        begin, end = (0, len(self)) if span is None else (span.start, span.stop)
        if self._loader is not None:
            for chunk in self._loader_chunks():
                if chunk.start >= end:
                    return
                low, high = max(begin, chunk.start) - chunk.start, min(end, chunk.start + len(chunk)) - chunk.start
                if low == 0 and high == len(chunk):
                    yield chunk
                elif low < high:
                    labels = None if chunk.labels is None else chunk.labels[low:high]
                    yield Chunk(chunk.start + low, chunk.images[low:high], labels)
            return
        for start in range(begin, end, self.chunk_size):
            stop = min(start + self.chunk_size, end)
            yield self._slice(start, stop)

    def _loader_chunks(self) -> Iterator[Chunk]:
        """The loader's batches as chunks, checking that it yields the number of images counted up front."""
        assert self._loader is not None
        start, expected = 0, self._loader_images
        for batch in self._loader:
            images, labels = _split_item(batch)
            chunk = _make_chunk(start, images, labels)
            start += len(chunk)
            if start > expected:
                break
            yield chunk
        if start != expected:
            raise ValueError(
                f"the DataLoader yielded {'more than ' if start > expected else ''}{start} images, but its "
                f"dataset and batch size give {expected}: a collate_fn or dataset that drops or adds images "
                "changes what image i means. Pass a DataLoader that yields each image of its dataset once."
            )

    def labels(self) -> np.ndarray | None:
        """Every image's label (None for data without labels): at once for tensors, else from one pass that
        reads the data (kept: the data is assumed not to change)."""
        if self._images is not None:
            return None if self._labels is None else self._labels.numpy()
        if self._all_labels is None:
            parts = [chunk.labels for chunk in self.chunks()]
            if any(part is None for part in parts):
                return None
            self._all_labels = torch.cat(parts).numpy()  # type: ignore[arg-type]
        return self._all_labels

    def _slice(self, start: int, stop: int) -> Chunk:
        if self._images is not None:
            labels = None if self._labels is None else self._labels[start:stop]
            return _make_chunk(start, self._images[start:stop], labels)
        assert self._dataset is not None
        return _collate(start, [self._dataset[i] for i in range(start, stop)])

    def first(self) -> Chunk:
        """The first image, for discovering the model's layers."""
        if self._loader is not None:
            chunk = next(iter(self.chunks()))
            return Chunk(0, chunk.images[:1], None if chunk.labels is None else chunk.labels[:1])
        return self._slice(0, 1)

    def take(self, indices: Sequence[int]) -> Chunk:
        """The images (and labels) at the given indices, in the order given."""
        idx = [int(i) for i in indices]
        n = len(self)
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise IndexError(f"image indices {bad[:5]} are out of range for {n} images{self._dropped_note()}")
        idx = [i % n for i in idx]
        if self._images is not None:
            labels = None if self._labels is None else self._labels[idx]
            return _make_chunk(0, self._images[idx], labels)
        if self._dataset is not None:
            return _collate(0, [self._dataset[i] for i in idx])
        return self._take_from_loader(idx)

    def _dropped_note(self) -> str:
        """Why a DataLoader's data has fewer images than its dataset, where it does."""
        if self._loader is None or self._loader_images == len(self._loader.dataset):  # type: ignore[arg-type]
            return ""
        return (
            f" (the DataLoader's drop_last=True leaves out the last incomplete batch of its dataset's "
            f"{len(self._loader.dataset)} images)"  # type: ignore[arg-type]
        )

    def _take_from_loader(self, idx: list[int]) -> Chunk:
        """Images at ``idx`` (each in range): read from the loader's dataset and collated as the loader does,
        where it batches a map-style dataset in order (what it yields as image i is then ``dataset[i]``); else
        in one pass over the loader, stopping once all are found."""
        loader = self._loader
        assert loader is not None
        if loader.batch_sampler is not None and not isinstance(loader.dataset, IterableDataset):
            images, labels = _split_item(loader.collate_fn([loader.dataset[i] for i in idx]))
            return _make_chunk(0, images, labels)
        wanted = set(idx)
        found: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for chunk in self.chunks():
            for j in range(len(chunk)):
                i = chunk.start + j
                if i in wanted:
                    found[i] = (chunk.images[j], None if chunk.labels is None else chunk.labels[j])
            if len(found) == len(wanted):
                break
        images = torch.stack([found[i][0] for i in idx])
        labels = None if found[idx[0]][1] is None else torch.stack([found[i][1] for i in idx])
        return _make_chunk(0, images, labels)


def _check_in_order(loader: DataLoader) -> None:
    """Refuse a DataLoader that does not read its dataset in order: image indices would change between passes."""
    if isinstance(loader.dataset, IterableDataset):
        if not hasattr(loader.dataset, "__len__"):
            raise TypeError(
                "the DataLoader reads an IterableDataset without __len__, so the number of images is unknown: "
                "give the dataset a __len__, or pass a list of its items"
            )
        return  # it yields in its own order; `_loader_chunks` checks the count
    sampler = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    if _reads_in_order(sampler, len(loader.dataset)):  # type: ignore[arg-type]
        return
    if isinstance(loader.sampler, RandomSampler):
        raise ValueError(
            "the DataLoader shuffles its data, so image indices would change between passes. "
            "Pass DataLoader(..., shuffle=False) or the dataset itself."
        )
    raise ValueError(
        f"the DataLoader's {_sampler_name(loader)} does not read the dataset in order, so image i would not "
        "always be the same image. Pass a DataLoader with the default sampler (shuffle=False, no sampler or "
        "batch_sampler) or the dataset itself; for a subset, pass torch.utils.data.Subset(dataset, indices)."
    )


def _reads_in_order(sampler: Any, size: int) -> bool:
    """A `SequentialSampler` over all ``size`` items, or a `BatchSampler` over one (subclasses that keep their
    iteration count too); any other sampler's order is unknown, so it does not."""
    if isinstance(sampler, BatchSampler) and type(sampler).__iter__ is BatchSampler.__iter__:
        return _reads_in_order(sampler.sampler, size)
    if isinstance(sampler, SequentialSampler) and type(sampler).__iter__ is SequentialSampler.__iter__:
        return len(sampler) == size
    return False


def _sampler_name(loader: DataLoader) -> str:
    if loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler:
        return f"batch_sampler ({type(loader.batch_sampler).__name__})"
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
    return f"sampler ({type(sampler).__name__})"


def _yielded_images(loader: DataLoader) -> int:
    """How many images the (in-order) loader yields: all of its dataset, less the last incomplete batch where
    ``drop_last`` leaves it out."""
    size = len(loader.dataset)  # type: ignore[arg-type]
    batches = loader.batch_sampler
    if batches is None or not getattr(batches, "drop_last", False):
        return size
    batch_size = int(batches.batch_size)  # type: ignore[attr-defined]
    return size // batch_size * batch_size


def _is_images_labels_pair(data: Any) -> bool:
    """``(images, labels)`` with array images, as opposed to a sequence of (image, label) samples; labels of
    shape (N, k) beside (N, C, H, W) images count too, so that their error is about the labels."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    images, labels = data
    arrays = (torch.Tensor, np.ndarray)
    if not isinstance(images, arrays):
        return False
    if isinstance(labels, arrays):
        return labels.ndim <= 1 or (labels.ndim == 2 and images.ndim == 4)
    return isinstance(labels, list)


def inner_datasets(data: Any, attribute: str) -> list[Any]:
    """The datasets that say what ``attribute`` (e.g. ``classes``, ``transform``) of ``data`` is: itself, or
    what a ``Subset`` (nested) or the parts of a ``ConcatDataset`` wrap, unless the wrapper has that attribute
    itself (as the CLI's Subset has ``classes``); [] for None."""
    if data is None:
        return []
    if getattr(data, attribute, None) is None and isinstance(data, Subset):
        return inner_datasets(data.dataset, attribute)
    if getattr(data, attribute, None) is None and isinstance(data, ConcatDataset):
        return [d for part in data.datasets for d in inner_datasets(part, attribute)]
    return [data]


def _classes_of(data: Any) -> list[str] | None:
    """The class names of ``data`` (``dataset.classes``, through Subset/ConcatDataset wrappers whose parts
    agree), None where there are none."""
    found = []
    for part in inner_datasets(data, "classes"):
        classes = getattr(part, "classes", None)
        if not isinstance(classes, (list, tuple)) or not classes:
            return None
        found.append([str(c) for c in classes])
    return found[0] if found and all(f == found[0] for f in found) else None


def _label_tensor(value: Any, what: str) -> torch.Tensor:
    """Labels given as a tensor, an array, a number or a (nested) list, as a tensor; anything else refused.
    Python floats stay float64 (through numpy), so that a refused label is shown as it was given."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.from_numpy(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{what} must be integer class indices, got {type(value).__name__} {value!r:.60}") from err


def _check_labels(labels: torch.Tensor, images: int, start: int) -> torch.Tensor:
    """``labels`` of images ``start..`` as a 1-D int64 tensor with one class index per image, by the module's
    rule."""
    where = f"images {start}.."
    labels = _label_shape(labels, images, where)
    if labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class indices, got booleans in {where}: pass class indices "
            "(e.g. labels.long() if True means class 1)"
        )
    if labels.is_complex():
        raise ValueError(f"labels must be integer class indices, got complex numbers in {where}")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        bad = (labels != labels.round()).nonzero().flatten()[:3]
        raise ValueError(
            f"labels must be integer class indices, got non-integer floats: images {(bad + start).tolist()} have "
            f"labels {labels[bad].tolist()}; pass class indices, not scores or regression targets"
        )
    return labels.long()


def _label_shape(labels: torch.Tensor, images: int, where: str) -> torch.Tensor:
    """One label per image: a scalar for one image and an (N, 1) column are fine, (N, k) rows are not."""
    if labels.ndim == 0:
        labels = labels.reshape(1)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2:
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} in {where} have {labels.shape[1]} values per image: they "
            "look one-hot or like class probabilities. Pass one class index per image, e.g. labels.argmax(1)"
        )
    if labels.ndim != 1:
        raise ValueError(f"labels must be one class index per image, shape (N,); got {tuple(labels.shape)} in {where}")
    if labels.shape[0] != images:
        raise ValueError(
            f"labels must be a 1-D array with one label per image: got {labels.shape[0]} labels for {images} "
            f"images in {where}"
        )
    return labels


def _make_chunk(start: int, images: Any, labels: Any) -> Chunk:
    images = _as_tensor(images, "images")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"images {start}..: expected a batch of shape (N, C, H, W), got shape {tuple(images.shape)}")
    images = as_float_images(images, f"images {start}..")
    if not torch.isfinite(images).all():
        bad = (~torch.isfinite(images.flatten(1))).any(dim=1).nonzero().flatten()[:5] + start
        raise ValueError(f"the data contains NaN or infinite values (images {bad.tolist()}, ...)")
    if labels is not None:
        labels = _check_labels(_label_tensor(labels, "labels"), images.shape[0], start)
    return Chunk(start, images, labels)


def _collate(start: int, items: list[Any]) -> Chunk:
    pairs = [_split_item(item) for item in items]
    try:
        images = torch.stack([_as_tensor(x, "images") for x, _ in pairs])
    except RuntimeError as err:
        shapes = sorted({tuple(_as_tensor(x, "images").shape) for x, _ in pairs})
        raise ValueError(f"images {start}.. have different shapes {shapes[:4]}; resize them to one size") from err
    has_labels = [y is not None for _, y in pairs]
    if any(has_labels) and not all(has_labels):
        raise ValueError(f"some items among images {start}.. have labels and some do not")
    labels = _stack_labels([y for _, y in pairs], start) if all(has_labels) else None
    return _make_chunk(start, images, labels)


def _stack_labels(values: list[Any], start: int) -> torch.Tensor:
    """The labels of a Dataset's items as one tensor (checked by `_check_labels` like any other labels)."""
    tensors = [_label_tensor(y, f"labels of images {start}..") for y in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"the items among images {start}.. have labels of different shapes {sorted(shapes)[:4]}")
    return torch.stack(tensors)


def class_names(classes: Any) -> tuple[list[str], str]:
    """Explicit ``classes=``: a sequence of names, or a torchvision weights enum member (its
    ``meta["categories"]``), as a list of str and where it came from; anything else refused."""
    if isinstance(classes, type) and hasattr(classes, "DEFAULT"):
        raise TypeError(
            f"classes={classes.__name__} is a weights enum; pass one of its members, e.g. {classes.__name__}.DEFAULT"
        )
    meta = getattr(classes, "meta", None)
    if isinstance(meta, dict):
        if not meta.get("categories"):
            raise ValueError(f"classes={classes!r} has no meta['categories'] to take the class names from")
        return [str(c) for c in meta["categories"]], f"{classes}.meta['categories']"
    if isinstance(classes, (str, bytes, dict)) or not isinstance(classes, Sequence | np.ndarray):
        raise TypeError(
            f"classes must be a sequence of names (one per model output) or a torchvision weights enum member "
            f"such as ResNet18_Weights.DEFAULT; got {type(classes).__name__}"
        )
    return [str(c) for c in classes], "classes= given"


def choose_classes(given: Any, from_data: list[str] | None, outputs: int) -> tuple[list[str], str]:
    """The probe's class names and a note saying where they came from (and why the dataset's were not used).

    Names given explicitly must match the model's ``outputs`` (a ValueError otherwise); the dataset's
    ``classes`` are only a default, used when their number matches and ignored (with the reason in the note)
    when it does not. Without names the classes are "0", "1", ...
    """
    if given is not None:
        names, source = class_names(given)
        if len(names) != outputs:
            raise ValueError(
                f"{len(names)} class names given ({source}), but the model has {outputs} outputs: give one name "
                "per output, in the order of the outputs"
            )
        return names, f"from {source}"
    if from_data and len(from_data) == outputs:
        return list(from_data), "from the dataset's classes"
    default = [str(i) for i in range(outputs)]
    if from_data:
        shown = ", ".join(repr(c) for c in from_data[:3]) + (", ..." if len(from_data) > 3 else "")
        return default, (
            f"the dataset's {len(from_data)} classes ({shown}) do not match the model's {outputs} outputs, so the "
            f"classes are named '0'..'{outputs - 1}'; the dataset's labels are still read as the model's output "
            "indices: check that they are, or pass classes=..."
        )
    return default, "default: the data has no class names"
