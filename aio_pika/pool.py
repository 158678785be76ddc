"""``aio_pika.pool``: a pool of connections or channels, as in aio-pika 9.x/10.x, on asyncio and trio.

::

    async def get_connection():
        return await aio_pika.connect(url)

    connection_pool = Pool(get_connection, max_size=2)

    async def get_channel():
        async with connection_pool.acquire() as connection:
            return await connection.channel()

    channel_pool = Pool(get_channel, max_size=10)

    async with channel_pool.acquire() as channel:
        await channel.default_exchange.publish(...)

The pool's synchronisation uses anyio (so it works wherever the rest of the package does); it is created
lazily, so a pool may be built before the event loop runs.
"""

from __future__ import annotations

import abc
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

from .log import get_logger

log = get_logger(__name__)

__all__ = ("ConstructorType", "Pool", "PoolInstance", "PoolInvalidStateError", "PoolItemContextManager")

T = TypeVar("T")


class PoolInstance(abc.ABC):
    """What a pool holds: something with an (awaitable) ``close()``."""

    @abc.abstractmethod
    def close(self) -> Awaitable[None]:
        raise NotImplementedError


ConstructorType = Callable[..., Awaitable[Any]]


class PoolInvalidStateError(RuntimeError):
    """The pool is closed."""


class Pool(Generic[T]):
    """Up to ``max_size`` instances made by ``constructor(*args)``, lent out by :meth:`acquire`.

    An instance is created only when none is free and the pool is below ``max_size`` (no limit when it is
    ``None`` or 0); otherwise :meth:`acquire` waits for one to be returned.
    """

    __slots__ = (
        "__args",
        "__closed",
        "__constructor",
        "__created",
        "__free",
        "__instances",
        "__max_size",
        "__waiters",
        "loop",
    )

    def __init__(
        self, constructor: ConstructorType, *args: Any, max_size: int | None = None, loop: Any = None
    ):
        if not callable(constructor):
            raise TypeError(f"constructor must be callable, not {type(constructor).__name__}")
        if max_size is not None and (
            not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0
        ):
            raise ValueError(f"max_size must be None or a non-negative integer, not {max_size!r}")
        self.loop = loop  # accepted for aio-pika compatibility; unused
        self.__constructor = constructor
        self.__args = args
        self.__max_size = max_size
        self.__created = 0  # instances made or being made
        self.__instances: set[Any] = set()
        self.__free: deque[Any] = deque()
        self.__waiters: deque[anyio.Event] = deque()
        self.__closed = False

    @property
    def is_closed(self) -> bool:
        return self.__closed

    def acquire(self) -> PoolItemContextManager[T]:
        """``async with pool.acquire() as item:`` — an instance, returned to the pool after the block."""
        if self.__closed:
            raise PoolInvalidStateError("acquire operation on closed pool")
        return PoolItemContextManager(self)

    def _can_create(self) -> bool:
        return not self.__max_size or self.__created < self.__max_size

    async def _get(self) -> T:
        while True:
            if self.__closed:
                raise PoolInvalidStateError("get operation on closed pool")
            if self.__free:
                item: T = self.__free.popleft()
                return item
            if self._can_create():
                return await self._create()
            event = anyio.Event()
            self.__waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                if event.is_set():
                    self._wake_one()  # this wake-up is not used: pass it on
                else:
                    self.__waiters.remove(event)
                raise

    async def _create(self) -> T:
        self.__created += 1
        try:
            log.debug("Creating a new instance of %r", self.__constructor)
            item: T = await self.__constructor(*self.__args)
        except BaseException:
            self.__created -= 1
            self._wake_one()  # a waiter may create one instead
            raise
        if self.__closed:
            await _close_item(item)
            raise PoolInvalidStateError("create item operation on closed pool")
        self.__instances.add(item)
        return item

    def _wake_one(self) -> None:
        while self.__waiters:
            event = self.__waiters.popleft()
            if not event.is_set():
                event.set()
                return

    def put(self, item: T) -> None:
        """Give an instance back."""
        if self.__closed:
            raise PoolInvalidStateError("put operation on closed pool")
        self.__free.append(item)
        self._wake_one()

    async def close(self) -> None:
        """Close the pool and every instance it made; waiting acquirers get PoolInvalidStateError."""
        if self.__closed:
            return
        self.__closed = True
        waiters, self.__waiters = self.__waiters, deque()
        for event in waiters:
            event.set()
        instances, self.__instances = self.__instances, set()
        self.__free.clear()
        if instances:
            async with anyio.create_task_group() as group:
                for item in instances:
                    group.start_soon(_close_item, item)

    async def __aenter__(self) -> Pool[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _close_item(item: Any) -> None:
    try:
        result = item.close()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("Failed to close pool instance %r", item)


class PoolItemContextManager(Generic[T]):
    """What :meth:`Pool.acquire` returns."""

    __slots__ = ("item", "pool")

    def __init__(self, pool: Pool[T]) -> None:
        self.pool = pool
        self.item: T | None = None

    async def __aenter__(self) -> T:
        self.item = await self.pool._get()
        return self.item

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        item, self.item = self.item, None
        if item is not None and not self.pool.is_closed:
            self.pool.put(item)
