"""Master/Worker: a master publishes tasks to a queue, workers consume and run them.

::

    master = Master(channel)
    await master.create_worker("resize", resize, auto_delete=True)   # the worker side
    await master.proxy.resize(path="a.png")                         # the master side

A task is one persistent message to the default exchange, routed to the queue named after the task, whose
body is the serialized keyword arguments. The worker's function runs inside ``message.process()``: the
message is acknowledged on success and rejected (requeued by default) on an exception;
:class:`RejectMessage` and :class:`NackMessage` let the function choose.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, DeliveryMode
from aio_pika.message import Message
from aio_pika.tools import ensure_awaitable

from .base import Base, CallbackType, Proxy, call_maybe_async, running_loop

if TYPE_CHECKING:
    from aio_pika.queue import Queue

log = logging.getLogger(__name__)

__all__ = (
    "CompressedJsonMaster",
    "JsonMaster",
    "Master",
    "MessageProcessingError",
    "NackMessage",
    "RejectMessage",
    "Worker",
)


class MessageProcessingError(Exception):
    """Base class of the exceptions a worker raises to settle its message itself."""


class NackMessage(MessageProcessingError):
    """Raise in a worker to nack the task (``requeue=True`` puts it back in the queue)."""

    def __init__(self, requeue: bool = False) -> None:
        super().__init__(requeue)
        self.requeue = requeue


class RejectMessage(MessageProcessingError):
    """Raise in a worker to reject the task (``requeue=True`` puts it back in the queue)."""

    def __init__(self, requeue: bool = False) -> None:
        super().__init__(requeue)
        self.requeue = requeue


class _Background:
    """An operation started at once in the connection's task group; awaiting it waits for its result.

    What ``Worker.close()`` returns: like aio-pika's task, the cancellation happens whether or not the caller
    awaits it, and works on every backend (trio has no free-standing tasks).
    """

    __slots__ = ("_waiter",)

    def __init__(self, backend: Any, function: Callable[[], Awaitable[Any]], name: str) -> None:
        waiter = self._waiter = backend.create_waiter()

        async def run() -> None:
            try:
                result = await function()
            except Exception as error:
                log.debug("%s failed: %r", name, error)
                waiter.set_exception(error)
            except BaseException:
                waiter.set_exception(RuntimeError(f"{name} was cancelled: the connection is closing"))
                raise
            else:
                waiter.set_result(result)

        try:
            backend.spawn(run, name=name)
        except RuntimeError as error:
            waiter.set_exception(error)

    def done(self) -> bool:
        return bool(self._waiter.done())

    def __await__(self) -> Generator[Any, None, Any]:
        return self._waiter.wait().__await__()  # type: ignore[no-any-return]


class Worker:
    """A consumer made by :meth:`Master.create_worker`; :meth:`close` stops it."""

    __slots__ = ("_closing", "consumer_tag", "loop", "queue")

    def __init__(self, queue: Queue, consumer_tag: str, loop: Any = None) -> None:
        self.queue = queue
        self.consumer_tag = consumer_tag
        self.loop = loop
        self._closing: _Background | None = None

    def close(self) -> Awaitable[None]:
        """Cancel the consumer. It starts at once; await the result to wait for the broker's CancelOk."""
        if self._closing is None:
            queue, tag = self.queue, self.consumer_tag
            self._closing = _Background(
                queue.channel.connection.backend,
                lambda: queue.cancel(tag),
                f"closing worker {tag}",
            )
        return self._closing

    def __repr__(self) -> str:
        return f"<Worker queue={self.queue.name!r} consumer_tag={self.consumer_tag!r}>"


class Master(Base):
    """Distributes tasks to workers through queues (one queue per task name)."""

    DELIVERY_MODE = DeliveryMode.PERSISTENT

    def __init__(self, channel: AbstractChannel, requeue: bool = True, reject_on_redelivered: bool = False):
        """:param channel: an open channel.
        :param requeue: requeue a task whose worker raised (other than Reject/NackMessage).
        :param reject_on_redelivered: reject without requeueing a task that was already redelivered.
        """
        self.channel = channel
        self.loop: Any = running_loop()
        self.proxy = Proxy(self.create_task)
        self._requeue = requeue
        self._reject_on_redelivered = reject_on_redelivered
        self.channel.return_callbacks.add(self.on_message_returned)

    @property
    def exchange(self) -> AbstractExchange:
        return self.channel.default_exchange

    @staticmethod
    def on_message_returned(channel: AbstractChannel | None, message: AbstractIncomingMessage) -> None:
        log.warning("Message returned. Probably destination queue does not exists: %r", message)

    @classmethod
    async def execute(cls, func: CallbackType[Any], kwargs: Any) -> Any:
        """Run the worker function with the task's keyword arguments."""
        kwargs = kwargs or {}
        if not isinstance(kwargs, dict):
            log.error("Bad kwargs %r received for the %r", kwargs, func)
            raise RejectMessage(requeue=False)
        return await call_maybe_async(func, kwargs)

    async def on_message(self, func: CallbackType[Any], message: AbstractIncomingMessage) -> None:
        """Run one task: ack on success, reject (``requeue``) on an exception, or as the worker asked."""
        async with message.process(
            requeue=self._requeue, reject_on_redelivered=self._reject_on_redelivered, ignore_processed=True
        ):
            try:
                await self.execute(func, self.deserialize(message.body))
            except RejectMessage as error:
                await message.reject(requeue=error.requeue)
            except NackMessage as error:
                await message.nack(requeue=error.requeue)

    async def create_queue(self, queue_name: str, **kwargs: Any) -> Any:
        """Declare the queue of a task (``kwargs`` go to ``declare_queue``)."""
        return await self.channel.declare_queue(queue_name, **kwargs)

    async def create_worker(self, queue_name: str, func: CallbackType[Any], **kwargs: Any) -> Worker:
        """Declare the queue ``queue_name`` (``kwargs`` go to ``declare_queue``) and run ``func(**task)`` for
        each task in it. ``func`` may be a plain or a coroutine function."""
        queue = await self.create_queue(queue_name, **kwargs)
        # execute() gets a coroutine function, as in aio-pika, whose own execute() (which overrides copy)
        # is `await func(**kwargs)`.
        consumer_tag = await queue.consume(partial(self.on_message, ensure_awaitable(func)))
        return Worker(queue, consumer_tag, self.loop)

    async def create_task(
        self, channel_name: str, kwargs: Mapping[str, Any] = MappingProxyType({}), **message_kwargs: Any
    ) -> Any:
        """Publish a task for the workers of ``channel_name`` (``message_kwargs`` go to :class:`Message`)."""
        message = Message(
            body=self.serialize(dict(kwargs) if isinstance(kwargs, Mapping) else kwargs),
            content_type=self.CONTENT_TYPE,
            delivery_mode=self.DELIVERY_MODE,
            **message_kwargs,
        )
        return await self.exchange.publish(message, channel_name, mandatory=True)


class JsonMaster(Master):
    """A :class:`Master` whose tasks are JSON."""

    SERIALIZER = json
    CONTENT_TYPE = "application/json"

    def serialize(self, data: Any) -> bytes:
        return json.dumps(data, ensure_ascii=False).encode()


class CompressedJsonMaster(Master):
    """A :class:`Master` whose tasks are gzip-compressed JSON."""

    SERIALIZER = json
    CONTENT_TYPE = "application/json;compression=gzip"
    COMPRESS_LEVEL = 6

    def serialize(self, data: Any) -> bytes:
        return gzip.compress(json.dumps(data, ensure_ascii=False).encode(), compresslevel=self.COMPRESS_LEVEL)

    def deserialize(self, data: bytes) -> Any:
        return json.loads(gzip.decompress(data))
