"""The anyio backend's :class:`~backends.base.Future` on trio (imported only when trio is running)."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")


class TrioFuture(Generic[T]):
    """The waiting task parks itself with trio's low-level scheduling API; filling it reschedules that task.

    An ``anyio.Event`` per future cost about three times as many Python calls per publish (its
    creation goes through anyio's backend lookup, its wait through a parking lot). Like the other
    futures it is a coroutine too (``send``, ``throw``, ``close`` drive one wait, started on first use).
    """

    __slots__ = ("_done", "_exc", "_task", "_value", "_waiting")

    _value: T

    def __init__(self) -> None:
        self._done = False
        self._exc: BaseException | None = None
        self._task: trio.lowlevel.Task | None = None
        self._waiting: Coroutine[Any, Any, T] | None = None

    def set_result(self, result: T, /) -> None:
        self._value = result
        self._fill()

    def set_exception(self, exception: BaseException, /) -> None:
        self._exc = exception
        self._fill()

    def _fill(self) -> None:
        self._done = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def done(self) -> bool:
        return self._done

    def __await__(self) -> Generator[Any, None, T]:
        return self._wait().__await__()

    def _started(self) -> Coroutine[Any, Any, T]:
        if self._waiting is None:
            self._waiting = self._wait()
        return self._waiting

    def send(self, value: None, /) -> Any:
        return self._started().send(value)

    def throw(self, exception: BaseException, /) -> Any:
        return self._started().throw(exception)

    def close(self) -> None:
        if self._waiting is not None:
            self._waiting.close()

    async def _wait(self) -> T:
        if not self._done:
            self._task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        if self._exc is not None:
            raise self._exc
        return self._value

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        # Cancelled with its task, as an asyncio future is: done, and never filled.
        self._task = None
        self._done = True
        return trio.lowlevel.Abort.SUCCEEDED
