"""Normalise whatever the user has (Dataset, DataLoader, tensors, (images, labels), one image) into chunks.

Everything downstream sees `Chunk`s of at most ``chunk_size`` images, so memory is bounded by the chunk
size and never by the size of the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler


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


class DataSource:
    """Chunked, ordered access to images and optional labels; image ``i`` always means the same image."""

    def __init__(self, data: Any, chunk_size: int = 128) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._loader: DataLoader | None = None
        self._dataset: Dataset | None = None
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self.classes: list[str] | None = None
        self._setup(data)
        if len(self) == 0:
            raise ValueError("the data is empty: give at least one image")

    def _setup(self, data: Any) -> None:
        if isinstance(data, DataLoader):
            if isinstance(data.sampler, RandomSampler):
                raise ValueError(
                    "the DataLoader shuffles its data, so image indices would change between passes. "
                    "Pass DataLoader(..., shuffle=False) or the dataset itself."
                )
            self._loader = data
            self.classes = _classes_of(data.dataset)
        elif isinstance(data, IterableDataset):
            raise TypeError("an IterableDataset has no fixed length or order; wrap it in a DataLoader or a list")
        elif _is_images_labels_pair(data):
            images = _as_tensor(data[0], "images")
            labels = _as_tensor(data[1], "labels")
            if images.ndim == 3:
                images = images.unsqueeze(0)
            if labels.ndim == 0:
                labels = labels.reshape(1)
            if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
                raise ValueError(
                    f"labels must be a 1-D array with one label per image: got labels of shape "
                    f"{tuple(labels.shape)} for {images.shape[0]} images"
                )
            self._images, self._labels = images, _check_label_dtype(labels)
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
        assert self._loader is not None
        return len(self._loader.dataset)  # type: ignore[arg-type]

    @property
    def num_chunks(self) -> int:
        if self._loader is not None:
            return len(self._loader)
        return -(-len(self) // self.chunk_size)

    def chunks(self) -> Iterator[Chunk]:
        """Every image once, in order, as validated chunks."""
        if self._loader is not None:
            start = 0
            for batch in self._loader:
                images, labels = _split_item(batch)
                chunk = _make_chunk(start, images, labels)
                start += len(chunk)
                yield chunk
            return
        for start in range(0, len(self), self.chunk_size):
            stop = min(start + self.chunk_size, len(self))
            yield self._slice(start, stop)

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
            raise IndexError(f"image indices {bad[:5]} are out of range for {n} images")
        idx = [i % n for i in idx]
        if self._images is not None:
            labels = None if self._labels is None else self._labels[idx]
            return _make_chunk(0, self._images[idx], labels)
        if self._dataset is not None:
            return _collate(0, [self._dataset[i] for i in idx])
        wanted = {i: None for i in idx}
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


def _is_images_labels_pair(data: Any) -> bool:
    """``(images, labels)`` with array images, as opposed to a sequence of (image, label) samples."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    images, labels = data
    arrays = (torch.Tensor, np.ndarray)
    labels_like = isinstance(labels, list) or (isinstance(labels, arrays) and labels.ndim <= 1)
    return isinstance(images, arrays) and labels_like


def _classes_of(data: Any) -> list[str] | None:
    classes = getattr(data, "classes", None)
    if isinstance(classes, (list, tuple)) and classes:
        return [str(c) for c in classes]
    return None


def _check_label_dtype(labels: torch.Tensor) -> torch.Tensor:
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise ValueError("labels must be integer class indices, got non-integer floats")
        labels = labels.long()
    elif labels.dtype == torch.bool:
        raise ValueError("labels must be integer class indices, got booleans")
    return labels.long()


def _make_chunk(start: int, images: Any, labels: Any) -> Chunk:
    images = _as_tensor(images, "images")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise ValueError(f"images {start}..: expected a batch of shape (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        images = images.float()
    if not torch.isfinite(images).all():
        bad = (~torch.isfinite(images.flatten(1))).any(dim=1).nonzero().flatten()[:5] + start
        raise ValueError(f"the data contains NaN or infinite values (images {bad.tolist()}, ...)")
    if labels is not None:
        labels = _check_label_dtype(_as_tensor(labels, "labels").reshape(-1))
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"images {start}..: {images.shape[0]} images but {labels.shape[0]} labels")
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
    labels = torch.as_tensor([int(y) for _, y in pairs]) if all(has_labels) else None
    return _make_chunk(start, images, labels)
