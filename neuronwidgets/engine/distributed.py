"""Data-parallel work across the ranks of a torch.distributed process group; everything torch.distributed is here.

Under an initialised process group (torchrun, ``init_process_group``) or an explicit ``group=``, each rank reads
a contiguous shard of the data (`Group.shard`: every image exactly once across the ranks, shards differing by at
most one image, never padded), and the statistics that a result is built from, which the engine keeps as sums
(`engine.stats`), are all-reduced; per-image arrays are all-gathered in rank order, which is image order. So a
result on N ranks is the result of one process: counts exactly, float64 sums up to their rounding.

Failures. Every call that runs collectives runs inside `guarded`: a rank whose work raises reports its error in
one status exchange (an all-gather of a small buffer: a flag and a message) and raises it; the other ranks
meet that exchange at their next collective, which begins with the same status exchange, and raise a
`DistributedError` naming the rank and its error. A call that succeeds ends with a last status exchange, so a
rank that fails after the last reduction is still seen. A rank that dies or never makes the call leaves the
others' collective waiting until the process group's timeout (``init_process_group(timeout=...)``; for NCCL
its watchdog), when they raise a `DistributedError` too. The status exchange also carries a description of the
call, so ranks that make different calls (another layer, other options) are refused instead of reducing
mismatched sums.

This module imports torch.distributed only when a group is in use, so the core runs where it is not built.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from neuronwidgets.engine.stats import LayerSummary, Moments, OutcomeCounts

# The passes over the data that merge their statistics over the ranks; any other pass is refused under a group.
SUPPORTED = (
    "rank('activation')",
    "rank('selectivity')",
    "rank('taylor')",
    "rank('ablation') (exact, and sampled: top= or fraction=)",
    "rank('car')",
    "evaluate()",
    "components()",
    "faithfulness()",
    "completeness()",
    "top_images(by='activation')",
)
# How the ranks share an exact ablation: "auto" (`Site._shares_units`: the units where the data is small, else
# the images), "images" or "units" (tests and benchmarks compare both).
SHARE_UNITS = "auto"
STATUS_BYTES = 4096  # one rank's status: a flag byte and a UTF-8 message or call description
_OK, _FAILED = 0, 1


class DistributedError(RuntimeError):
    """Another rank failed, a collective failed or timed out, or the ranks disagree on the work."""


class GroupMismatch(DistributedError, ValueError):
    """The ranks disagree on the data, the model, the layer or the call: raised alike on every rank."""


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def resolve(group: Any, model_device: torch.device) -> Group | None:
    """The process group a Probe works across: ``group`` (a ``torch.distributed.ProcessGroup``), or by default
    (None) the default group where one is initialised; False, or a group of one process: none."""
    if group is False:
        return None
    available = torch.distributed.is_available()
    if group is None:
        if not available or not _dist().is_initialized():
            return None
    elif not available or not isinstance(group, _dist().ProcessGroup):
        raise TypeError(
            f"group must be a torch.distributed ProcessGroup, None (the default group, if initialised) or False "
            f"(this process alone), got {type(group).__name__}"
        )
    dist = _dist()
    size = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the process group given as group=")
    if size == 1:
        return None
    backend = str(dist.get_backend(group))
    if "gloo" in backend or "mpi" in backend:
        device = torch.device("cpu")
    elif model_device.type == "cuda":
        device = model_device
    else:
        raise ValueError(
            f"the process group's backend {backend!r} cannot reduce CPU tensors, and the model is on "
            f"{model_device}: use the gloo backend for a model on the CPU"
        )
    return Group(group, rank, size, device)


class Group:
    """The ranks of one process group, as a Probe uses them: this rank's shard and the collectives."""

    def __init__(self, handle: Any, rank: int, size: int, device: torch.device) -> None:
        self.handle = handle  # the ProcessGroup, None for the default group
        self.rank = rank
        self.size = size
        self.device = device  # where collectives' tensors live: the CPU for gloo, the model's GPU for NCCL
        self._lock = threading.RLock()  # one guarded call at a time: collectives must come in the same order
        self._depth = 0
        self._call = ""  # the guarded call under way, as `describe` gives it
        self._broken: str | None = None

    def __repr__(self) -> str:
        return f"Group(rank={self.rank}, size={self.size}, device={self.device})"

    # -- the data -------------------------------------------------------------------------------------------

    def bounds(self, images: int, rank: int) -> range:
        """The images of ``rank``: a contiguous range, the ranks' ranges in order covering each image once."""
        return range(rank * images // self.size, (rank + 1) * images // self.size)

    def shard(self, images: int) -> range:
        """This rank's images."""
        return self.bounds(images, self.rank)

    # -- collectives ----------------------------------------------------------------------------------------

    def _collective(self, what: str, run: Any) -> None:
        if self._broken is not None:
            raise DistributedError(
                f"rank {self.rank}: the process group failed in an earlier call ({self._broken}); make a new group"
            )
        try:
            run()
        except Exception as err:
            self._broken = f"{type(err).__name__}: {err}"
            raise DistributedError(
                f"rank {self.rank} of {self.size}: a collective during {what} failed or timed out "
                f"({type(err).__name__}: {err}). Another rank may have died, hung, or not made the same call; "
                "the wait is the process group's timeout (init_process_group(timeout=...))"
            ) from err

    def _gather_status(self, what: str, flag: int, text: str) -> list[tuple[int, str]]:
        """Every rank's (flag, text), in rank order: one all-gather of `STATUS_BYTES` per rank."""
        data = text.encode()[: STATUS_BYTES - 1]
        buffer = torch.zeros(STATUS_BYTES, dtype=torch.uint8)
        buffer[0] = flag
        buffer[1 : 1 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else buffer[1:1]
        buffer = buffer.to(self.device)
        parts = [torch.empty_like(buffer) for _ in range(self.size)]
        self._collective(what, lambda: _dist().all_gather(parts, buffer, group=self.handle))
        statuses = []
        for part in parts:
            raw = part.cpu().numpy().tobytes()
            statuses.append((raw[0], raw[1:].rstrip(b"\0").decode(errors="replace")))
        return statuses

    def check_in(self, what: str) -> None:
        """A status exchange saying this rank is well and making call ``what``: raises `DistributedError` if
        another rank failed, `GroupMismatch` if another makes a different call."""
        statuses = self._gather_status(what, _OK, f"{self._call or 'a call'}: {what}")
        failed = [(rank, text) for rank, (flag, text) in enumerate(statuses) if flag == _FAILED]
        if failed:
            told = "; ".join(f"rank {rank}: {text}" for rank, text in failed)
            ranks = ", ".join(str(rank) for rank, _ in failed)
            raise DistributedError(f"rank {self.rank} of {self.size} stopped: rank {ranks} failed ({told})")
        calls = {text for _, text in statuses}
        if len(calls) > 1:
            told = "; ".join(f"rank {rank}: {text}" for rank, (_, text) in enumerate(statuses))
            raise GroupMismatch(f"the ranks make different calls, so their results cannot be combined ({told})")

    def report(self, what: str, error: BaseException) -> None:
        """Tell the other ranks, in the status exchange they are waiting in, that this rank failed."""
        self._gather_status(what, _FAILED, f"{type(error).__name__} during {what}: {error}")

    def agree(self, what: str, facts: dict[str, Any]) -> None:
        """Refuse, with the same `GroupMismatch` on every rank, ranks whose ``facts`` (JSON values) differ."""
        self.check_in(what)
        statuses = self._gather_status(what, _OK, json.dumps(facts, sort_keys=True))
        seen = [json.loads(text) for _, text in statuses]
        differ = [key for key in facts if len({json.dumps(s.get(key)) for s in seen}) > 1]
        if differ:
            told = "; ".join(
                f"{key}: " + ", ".join(f"rank {rank} {s.get(key)!r}" for rank, s in enumerate(seen)) for key in differ
            )
            raise GroupMismatch(
                f"the {self.size} ranks disagree on {', '.join(differ)} ({told}): every rank must give the Probe the "
                "same model, data and layer (each reads only its own share of the data)"
            )

    def sum(self, what: str, *arrays: np.ndarray) -> list[np.ndarray]:
        """Each array summed over the ranks (int64 exactly, float64 up to rounding), after a status exchange."""
        self.check_in(what)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]

        def run() -> None:
            for tensor in tensors:
                _dist().all_reduce(tensor, group=self.handle)

        self._collective(what, run)
        return [t.cpu().numpy().reshape(np.shape(a)) for t, a in zip(tensors, arrays)]

    def every(self, what: str, holds: bool) -> bool:
        """Whether ``holds`` is true on every rank: a choice that each rank weighs on its own (by timing, say)
        but all must make alike."""
        (votes,) = self.sum(what, np.array([int(holds)]))
        return int(votes[0]) == self.size

    def gather(self, what: str, rows: np.ndarray, images: int) -> np.ndarray:
        """Every rank's per-image ``rows`` (this rank's shard of ``images``) in image order, after a status
        exchange."""
        sizes = [len(self.bounds(images, rank)) for rank in range(self.size)]
        if rows.shape[0] != sizes[self.rank]:  # before the exchange, so that the others hear of it
            raise RuntimeError(f"rank {self.rank} has {rows.shape[0]} rows for its {sizes[self.rank]} images")
        self.check_in(what)
        tensor = torch.from_numpy(np.ascontiguousarray(rows))
        padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype)
        padded[: len(tensor)] = tensor
        padded = padded.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        self._collective(what, lambda: _dist().all_gather(parts, padded, group=self.handle))
        return np.concatenate([part[:size].cpu().numpy() for part, size in zip(parts, sizes)])


def describe(call: str, **options: Any) -> str:
    """A call as the ranks compare it: its name and options (plain values shown, others by their type)."""
    shown = []
    for name, value in sorted(options.items()):
        if isinstance(value, (list, tuple, range, np.ndarray)):
            value = [v.item() if isinstance(v, np.generic) else v for v in value]
        plain = value is None or isinstance(value, (bool, int, float, str, list))
        shown.append(f"{name}={value!r}" if plain else f"{name}=<{type(value).__name__}>")
    return f"{call} with {', '.join(shown)}" if shown else call


@contextmanager
def guarded(group: Group | None, what: str) -> Iterator[None]:
    """Run one call's work so that a failure on any rank raises on every rank (see the module's docstring).
    Calls nested inside a guarded call are part of it."""
    if group is None:
        yield
        return
    with group._lock:
        if group._depth:
            yield
            return
        group._depth += 1
        group._call = what
        try:
            try:
                yield
            except DistributedError:
                raise  # every rank knows already (or the group is broken)
            except BaseException as error:
                try:
                    group.report(what, error)
                except DistributedError as problem:
                    error.add_note(f"(the other ranks could not be told: {problem})")
                raise
            group.check_in("the end of the call")
        finally:
            group._depth -= 1
            group._call = ""


# -- the engine's statistics, merged over the ranks -------------------------------------------------------------


def summary(group: Group, part: LayerSummary, images: int) -> LayerSummary:
    """The summary of all the data from this rank's ``part`` (its shard of ``images``)."""
    count, map_sum, square_sum = group.sum("a layer summary", np.array([part.count]), part.map_sum, part.square_sum)
    labels = None if part.labels is None else group.gather("a layer summary", part.labels, images)
    return LayerSummary(
        int(count[0]),
        map_sum,
        square_sum,
        group.gather("a layer summary", part.image_mean, images),
        group.gather("a layer summary", part.image_max, images),
        labels,
    )


def outcomes(group: Group, part: OutcomeCounts) -> OutcomeCounts:
    """Outcome counts summed over the ranks."""
    return OutcomeCounts(*group.sum("outcome counts", part.correct, part.loss, part.images))


def moments(group: Group, part: Moments) -> Moments:
    """Moments summed over the ranks."""
    count, total, outer = group.sum("moments", np.array([part.count]), part.total, part.outer)
    return Moments(int(count[0]), total, outer)
