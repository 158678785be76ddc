"""Helpers: aio-pika's :class:`CallbackCollection`, and awaitables that are already complete."""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Mapping, MutableSet
from collections.abc import Set as AbstractSet
from itertools import chain
from typing import Any
from weakref import ReferenceType, WeakMethod, WeakSet, ref

from .log import get_logger

log = get_logger(__name__)

__all__ = (
    "STUB_AWAITABLE",
    "CallbackCollection",
    "CallbackResult",
    "CallbackSetType",
    "CallbackType",
    "Completed",
    "Deferred",
    "create_task",
    "ensure_awaitable",
    "iscoroutinepartial",
    "weak_method_callback",
)

# aio-pika's names for the callback types (a callback is called as ``callback(sender, *args)``).
CallbackType = Callable[..., Any]
CallbackSetType = AbstractSet[CallbackType]


class Completed:
    """An awaitable that is already done: ``await`` returns ``value`` without suspending.

    What ``message.ack()`` and a publish without confirms return, so that calling them without ``await``
    (aio-pika 1.x style) and awaiting them (modern style) both work, with no task or future involved.
    It is a coroutine too (``send``, ``throw``, ``close``), so ``asyncio.create_task()`` takes it as it
    takes the coroutines aio-pika's methods return.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # pragma: no cover - makes this a generator

    def send(self, value: None) -> Any:
        raise StopIteration(self.value)

    def throw(self, exception: BaseException) -> Any:
        raise exception

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<Completed {self.value!r}>"


class _CompletedNone(Completed):
    """``Completed(None)`` whose ``await`` runs no Python code (it is what most awaits of a completed
    result get: a publish without confirms, ``ack()``, once per message)."""

    __slots__ = ()

    # What await calls: an iterator that stops at once, made in C (a method of the empty tuple, not
    # a function, so it is called without self).
    __await__ = ().__iter__  # type: ignore[assignment]


# The result of a call whose effect is queued and which has nothing to return.
DONE: Completed = _CompletedNone()
STUB_AWAITABLE = DONE


class Deferred:
    """An awaitable that runs ``function()`` (a coroutine function) only when awaited.

    For methods whose effect starts at the call and whose result may be awaited or ignored (``close()``):
    ignoring it leaves no "coroutine was never awaited" warning behind. Like :class:`Completed` it is a
    coroutine too, for ``asyncio.create_task()``: the first ``send`` starts ``function()``.
    """

    __slots__ = ("_running", "function")

    def __init__(self, function: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.function = function
        self._running: Coroutine[Any, Any, Any] | None = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.function().__await__()

    def _started(self) -> Coroutine[Any, Any, Any]:
        if self._running is None:
            self._running = self.function()
        return self._running

    def send(self, value: None) -> Any:
        return self._started().send(value)

    def throw(self, exception: BaseException) -> Any:
        return self._started().throw(exception)

    def close(self) -> None:
        if self._running is not None:
            self._running.close()


def is_stray_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is a ``CancelledError`` that user code raised by itself (it awaited a future or a
    task that something else cancelled) while the running task was not being cancelled.

    Such an error ends one callback, as it ends aio-pika's task for that callback; let out of a task of the
    connection's backend it would pass for the cancellation of that task, and in a task group (the anyio
    backend) cancel the whole group: the connection and the user's code around it. On trio user code cannot
    raise a cancellation by itself.
    """
    if not isinstance(error, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no asyncio event loop runs here
        return False
    return task is not None and task.cancelling() == 0


class CallbackResult:
    """The awaitables the callbacks of one :meth:`CallbackCollection.__call__` returned.

    Awaiting it awaits each of them in turn; an exception from one is logged, never raised.
    """

    __slots__ = ("awaitables",)

    def __init__(self, awaitables: list[Awaitable[Any]]) -> None:
        self.awaitables = awaitables

    def __await__(self) -> Generator[Any, None, None]:
        return self._run().__await__()

    async def _run(self) -> None:
        awaitables, self.awaitables = self.awaitables, []
        for awaitable in awaitables:
            try:
                await awaitable
            except Exception:
                log.exception("Callback %r failed", awaitable)
            except BaseException as error:
                if not is_stray_cancellation(error):
                    raise
                log.error("Callback %r raised CancelledError", awaitable, exc_info=error)

    def close(self) -> None:
        """Drop the awaitables without running them (closing coroutines, so Python does not warn)."""
        awaitables, self.awaitables = self.awaitables, []
        for awaitable in awaitables:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()


class CallbackCollection(MutableSet[Any]):
    """A set of callbacks called as ``callback(sender, *args)``, as in aio-pika.

    Callbacks may be plain functions or coroutine functions. Calling the collection runs the plain ones at
    once and returns an awaitable for the coroutines (a :class:`CallbackResult`); the library awaits it or
    runs it in the background. Nested collections are called with the arguments only.
    """

    __slots__ = ("__callbacks", "__lock", "__sender", "__weak_callbacks", "__weakref__")

    def __init__(self, sender: Any) -> None:
        self.__sender: ReferenceType[Any] = sender if isinstance(sender, ReferenceType) else ref(sender)
        self.__callbacks: set[Any] | frozenset[Any] = set()
        self.__weak_callbacks: WeakSet[Any] = WeakSet()
        self.__lock = threading.Lock()

    def add(self, callback: Any, weak: bool = False) -> None:
        if self.is_frozen:
            raise RuntimeError("Collection frozen")
        if not callable(callback):
            raise ValueError("Callback is not callable")
        with self.__lock:
            if weak or isinstance(callback, CallbackCollection):
                self.__weak_callbacks.add(callback)
            else:
                self.__callbacks.add(callback)  # type: ignore[union-attr]

    def remove(self, callback: Any) -> None:
        if self.is_frozen:
            raise RuntimeError("Collection frozen")
        with self.__lock:
            try:
                self.__callbacks.remove(callback)  # type: ignore[union-attr]
            except KeyError:
                self.__weak_callbacks.remove(callback)

    def discard(self, callback: Any) -> None:
        if self.is_frozen:
            raise RuntimeError("Collection frozen")
        with self.__lock:
            if callback in self.__callbacks:
                self.__callbacks.remove(callback)  # type: ignore[union-attr]
            elif callback in self.__weak_callbacks:
                self.__weak_callbacks.remove(callback)

    def clear(self) -> None:
        if self.is_frozen:
            raise RuntimeError("Collection frozen")
        with self.__lock:
            self.__callbacks.clear()  # type: ignore[union-attr]
            self.__weak_callbacks.clear()

    @property
    def is_frozen(self) -> bool:
        return isinstance(self.__callbacks, frozenset)

    def freeze(self) -> None:
        if self.is_frozen:
            raise RuntimeError("Collection already frozen")
        with self.__lock:
            self.__callbacks = frozenset(self.__callbacks)

    def unfreeze(self) -> None:
        if not self.is_frozen:
            raise RuntimeError("Collection is not frozen")
        with self.__lock:
            self.__callbacks = set(self.__callbacks)

    def __contains__(self, x: object) -> bool:
        return x in self.__callbacks or x in self.__weak_callbacks

    def __len__(self) -> int:
        return len(self.__callbacks) + len(self.__weak_callbacks)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(chain(self.__callbacks, self.__weak_callbacks)))

    def __bool__(self) -> bool:
        return bool(self.__callbacks) or bool(self.__weak_callbacks)

    def __copy__(self) -> CallbackCollection:
        instance = self.__class__(self.__sender)
        for callback in self.__callbacks:
            instance.add(callback)
        for callback in self.__weak_callbacks:
            instance.add(callback, weak=True)
        if self.is_frozen:
            instance.freeze()
        return instance

    def __call__(self, *args: Any, **kwargs: Any) -> CallbackResult | Completed:
        with self.__lock:
            sender = self.__sender()
            callbacks = list(chain(self.__callbacks, self.__weak_callbacks))
        awaitables: list[Awaitable[Any]] = []
        for callback in callbacks:
            try:
                if isinstance(callback, CallbackCollection):
                    result = callback(*args, **kwargs)
                else:
                    result = callback(sender, *args, **kwargs)
                if isinstance(result, CallbackResult):
                    awaitables.extend(result.awaitables)
                elif inspect.isawaitable(result) and not isinstance(result, Completed):
                    awaitables.append(result)
            except (Exception, asyncio.CancelledError):
                # A plain call cannot be cancelled: a CancelledError is the callback's own failure, and
                # the callbacks may be called while received data is processed, which must go on.
                log.exception("Callback %r failed", callback)
        if not awaitables:
            return STUB_AWAITABLE
        return CallbackResult(awaitables)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}: {len(self)} callbacks>"


def is_coroutine_callable(callback: Callable[..., Any]) -> bool:
    """True when calling ``callback`` makes a coroutine (coroutine function, partial, async ``__call__``)."""
    if inspect.iscoroutinefunction(callback):
        return True
    call = getattr(callback, "__call__", None)  # noqa: B004 - the bound __call__ of a callable object
    return call is not None and inspect.iscoroutinefunction(call)


def arguments_dict(arguments: Any) -> dict[str, Any]:
    """A copy of the ``arguments`` table of a queue or exchange; TypeError naming it if it is no mapping."""
    if not arguments:
        return {}
    if not isinstance(arguments, Mapping):
        raise TypeError(f"arguments must be a dict, not {type(arguments).__name__}")
    return dict(arguments)


def iscoroutinepartial(fn: Callable[..., Any]) -> bool:
    """Deprecated in aio-pika: use :func:`inspect.iscoroutinefunction`."""
    warnings.warn("Use inspect.iscoroutinefunction() instead.", DeprecationWarning, stacklevel=2)
    return is_coroutine_callable(fn)


def ensure_awaitable(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``func`` as a coroutine function: a plain function's result is returned from a coroutine."""
    if is_coroutine_callable(func):
        return func

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    return wrapper


def weak_method_callback(method: Callable[..., Any]) -> Callable[..., Any]:
    """A bound method as a callable that does not keep its instance alive (a no-op once it is gone)."""
    reference = WeakMethod(method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = reference()
        if target is None:
            return None
        return target(*args, **kwargs)

    return wrapper


def create_task(func: Callable[..., Any], *args: Any, loop: Any = None, **kwargs: Any) -> Awaitable[Any]:
    """aio-pika's helper (asyncio only): run ``func(*args, **kwargs)`` as a task, or a plain function soon.

    Kept for code that imports it; the library itself does not use it (it runs on trio too).
    """
    loop = loop or asyncio.get_running_loop()
    if is_coroutine_callable(func):
        return loop.create_task(func(*args, **kwargs))  # type: ignore[no-any-return]
    future = loop.create_future()

    def run() -> None:
        if future.done():
            return
        try:
            future.set_result(func(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)

    loop.call_soon(run)
    result: Awaitable[Any] = future
    return result
