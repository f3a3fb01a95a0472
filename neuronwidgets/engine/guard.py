"""Keep the user's model exactly as it was: train/eval flags restored on every exit path, and one pass at a
time on it.

Every pass over a model takes its `ModelLock`. A long pass (a ranking) calls `yield_model` between slices of
its chunks: where another thread waits for the model (a click's overlay, a slider's evaluation), the long pass
lets it run, then carries on. Work a user waits for runs `urgent`: it goes before other waiters, and lends the
model only to other urgent work (a click's overlay gets in between the slices of a slider's evaluation, a
ranking does not). The model still never runs on two threads at once, and never while another pass has hooks
on it: `no_yield` (taken by every hook block) keeps the lock where it is.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn


class Suspendable(Protocol):
    """State a holder keeps in the model (eval flags) that must be undone while the model is lent."""

    def suspend(self) -> None: ...

    def resume(self) -> None: ...


class _Waiter:
    """A place in a `ModelLock`'s queue."""

    __slots__ = ("urgent",)

    def __init__(self, urgent: bool) -> None:
        self.urgent = urgent


class ModelLock:
    """A re-entrant lock granted first come, first served (urgent work first), that its holder can lend out
    between slices of a long pass.

    Compared with `threading.RLock`: waiters are served in arrival order, urgent ones first (so a yielding
    pass re-queues behind the work it yields to and cannot grab the lock straight back), and `lend` releases
    every recursion level at once while someone waits, then takes them all back.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._count = 0
        self._queue: deque[_Waiter] = deque()
        self._states: list[Suspendable] = []  # the holder's, innermost last

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (again, if this thread holds it); False if not got within ``timeout`` seconds."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._count += 1
                return True
            if not blocking and (self._owner is not None or self._queue):
                return False
            self._take(me, 1, None if timeout is None or timeout < 0 else timeout)
            return self._owner == me

    def release(self) -> None:
        """Release one recursion level; the next waiter in line gets the lock when none is left."""
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a model lock this thread does not hold")
            self._count -= 1
            if self._count == 0:
                self._owner = None
                self._cond.notify_all()

    def waiting(self) -> int:
        """How many threads wait for the lock."""
        with self._cond:
            return len(self._queue)

    def held(self) -> bool:
        """True if the calling thread holds the lock."""
        with self._cond:
            return self._owner == threading.get_ident()

    @contextmanager
    def keeping(self, state: Suspendable) -> Iterator[None]:
        """While the block runs (the lock held), ``state`` is suspended whenever the lock is lent and resumed
        when it comes back, so those it is lent to find the model as its user left it."""
        if not self.held():
            raise RuntimeError("keeping() needs the model lock held")
        self._states.append(state)
        try:
            yield
        finally:
            self._states.remove(state)

    def lend(self) -> bool:
        """If this thread holds the lock and others wait: let those waiting run first (in their order), then
        carry on. True if the lock was lent."""
        with self.lent(only_if_waited=True) as lent:
            return lent

    @contextmanager
    def lent(self, only_if_waited: bool = False) -> Iterator[bool]:
        """The block runs with the lock given up, if this thread holds it (and, with ``only_if_waited``, a
        waiter may go first: any waiter, or for `urgent` work an urgent one): the holder's states are undone,
        every level released, and work waiting for the lock runs meanwhile; afterwards the thread queues for
        all its levels and redoes the states. Yields whether it gave the lock up."""
        me = threading.get_ident()
        with self._cond:
            if self._owner != me or (only_if_waited and not self._yields_to_waiter()):
                lendable = False
            else:
                lendable, states, self._states = True, self._states, []
        if not lendable:
            yield False
            return
        for state in reversed(states):
            state.suspend()
        try:
            with self._cond:
                levels, self._owner, self._count = self._count, None, 0
                self._cond.notify_all()
            try:
                yield True
            finally:
                with self._cond:
                    self._take(me, levels, None)
        finally:
            self._states = states
            for state in states:
                state.resume()

    def _yields_to_waiter(self) -> bool:
        """Whether a waiter may have the lock before this thread (the condition is held)."""
        return any(waiter.urgent for waiter in self._queue) if is_urgent() else bool(self._queue)

    def _next(self) -> _Waiter:
        """The waiter served next: the first urgent one, else the first (the condition is held)."""
        return next((waiter for waiter in self._queue if waiter.urgent), self._queue[0])

    def _take(self, me: int, levels: int, timeout: float | None) -> None:
        """Join the queue and wait for the lock (the condition is held); on timeout or an interrupt the
        place in the queue is given up."""
        waiter = _Waiter(is_urgent())
        self._queue.append(waiter)
        try:
            got = self._cond.wait_for(lambda: self._owner is None and self._next() is waiter, timeout)
        except BaseException:
            self._leave(waiter)
            raise
        if not got:
            self._leave(waiter)
            return
        self._queue.remove(waiter)
        self._owner, self._count = me, levels

    def _leave(self, waiter: _Waiter) -> None:
        self._queue.remove(waiter)
        self._cond.notify_all()

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


_LOCKS: weakref.WeakKeyDictionary[nn.Module, ModelLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_LOCAL = threading.local()


def model_lock(model: nn.Module) -> ModelLock:
    """One re-entrant lock per model: work on a model from two threads (a widget's worker and a notebook
    cell) runs one after the other, so neither sees the other's eval mode or hooks."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, ModelLock())


@contextmanager
def no_yield() -> Iterator[None]:
    """While the block runs, this thread lends no model lock it holds: hooks are on the model (a forward of
    other work would run them)."""
    _LOCAL.pinned = getattr(_LOCAL, "pinned", 0) + 1
    try:
        yield
    finally:
        _LOCAL.pinned -= 1


@contextmanager
def urgent() -> Iterator[None]:
    """While the block runs, this thread's work is what a user waits for (a click's overlay, the slider's
    evaluation): it is served before other waiters for a model's lock, and lends the lock only to other
    urgent work."""
    before = getattr(_LOCAL, "urgent", False)
    _LOCAL.urgent = True
    try:
        yield
    finally:
        _LOCAL.urgent = before


def is_urgent() -> bool:
    """True inside `urgent`."""
    return getattr(_LOCAL, "urgent", False)


def yielding() -> bool:
    """True where `yield_model` may lend the lock (the calling thread is not inside `no_yield`)."""
    return not getattr(_LOCAL, "pinned", 0)


def yield_model(model: nn.Module) -> bool:
    """A point between slices of a long pass: let work waiting for ``model`` run now, then continue.

    Call it only where the pass keeps no state in the model (no hooks; eval flags are set again by the
    waiting work's own `evaluating`). True if the model was lent.
    """
    return yielding() and model_lock(model).lend()


@contextmanager
def lending(model: nn.Module) -> Iterator[None]:
    """The block runs without ``model``'s lock, where this thread holds it and may lend it (`yield_model`'s
    conditions): for work that does not need the model, such as loading the next chunk of data, so that a
    click's overlay need not wait for it."""
    if not yielding():
        yield
        return
    with model_lock(model).lent():
        yield


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block and restore each module's own flag afterwards.

    Restoring per module (not just ``model.train(was_training)``) matters: a user may keep a frozen,
    eval-mode BatchNorm inside a model that is otherwise training. Holds the model's lock meanwhile; while
    the lock is lent between slices (`yield_model`), the flags are the user's again.
    """
    lock = model_lock(model)
    with lock:
        mode = _EvalMode(model)
        try:
            with lock.keeping(mode):
                yield model
        finally:
            mode.suspend()


class _EvalMode:
    """Every module of a model in eval mode, and each module's own flag to give back (`Suspendable`)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._flags: list[tuple[nn.Module, bool]] = []
        self.resume()

    def resume(self) -> None:
        """Note each module's flag as it is now, then put the model in eval mode."""
        self._flags = [(module, module.training) for module in self._model.modules()]
        if any(flag for _, flag in self._flags):  # eval() on a model in eval mode costs a pass over it for nothing
            self._model.eval()

    def suspend(self) -> None:
        """Give each module its noted flag back (setting only those that differ: an attribute set on a module is
        slow, and on a model in eval mode none differs)."""
        for module, flag in self._flags:
            if module.training != flag:
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

    Used to invalidate cached activations after the user trains or edits the model. Read from each module's
    own tables rather than through ``named_parameters``, whose recursive naming costs more than the small
    rankings it is checked in (about 2x on MobileNet)."""
    return tuple(
        (id(module), key, tensor.data_ptr(), tensor._version)
        for module in model.modules()
        for tensors in (module._parameters, module._buffers)
        for key, tensor in tensors.items()
        if tensor is not None
    )
