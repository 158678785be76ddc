"""Queues: declare, bind, consume (callbacks or ``async for``), get, purge, delete."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from .abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractQueueIterator,
    Arguments,
    ConsumerTag,
    ExchangeParamType,
    TimeoutType,
    get_exchange_name,
)
from .exceptions import ChannelInvalidStateError, QueueEmpty
from .log import get_logger
from .message import IncomingMessage
from .tools import CallbackCollection, arguments_dict

if TYPE_CHECKING:
    from backends import Waiter

    from .channel import Channel

log = get_logger(__name__)

__all__ = ("ConsumerTag", "Queue", "QueueIterator")


class Queue(AbstractQueue):
    """A queue on a channel. The declared arguments stay on the object, so it can be declared again."""

    __slots__ = (
        "__weakref__",
        "arguments",
        "auto_delete",
        "channel",
        "close_callbacks",
        "declaration_result",
        "durable",
        "exclusive",
        "name",
        "passive",
    )

    channel: Channel  # AbstractQueue's channel, as this library implements it

    def __init__(
        self,
        channel: Channel,
        name: str | None,
        durable: bool | None,
        exclusive: bool,
        auto_delete: bool,
        arguments: Arguments,
        passive: bool = False,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self.close_callbacks = CallbackCollection(self)
        self.channel = channel
        self.name = name or ""
        self.durable = bool(durable)
        self.exclusive = bool(exclusive)
        self.auto_delete = bool(auto_delete)
        self.arguments = arguments_dict(arguments)
        self.passive = bool(passive)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__}({self}): auto_delete={self.auto_delete}, durable={self.durable}, "
            f"exclusive={self.exclusive}, arguments={self.arguments!r}>"
        )

    async def declare(
        self, timeout: TimeoutType = None, passive: bool | None = None
    ) -> commands.Queue.DeclareOk:
        """Declare the queue (``passive``: only check it exists); a server-named queue learns its name."""
        if passive is not None:
            self.passive = passive
        result: commands.Queue.DeclareOk = await self.channel._call(
            lambda core, number: core.queue_declare(
                number, self.name, passive=self.passive, durable=self.durable, exclusive=self.exclusive,
                auto_delete=self.auto_delete, arguments=self.arguments,
            ),
            timeout,
        )  # fmt: skip
        self.declaration_result = result
        self.name = result.queue if result.queue is not None else self.name
        return result

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Queue.BindOk:
        """Bind the queue to ``exchange`` (``routing_key`` defaults to the queue's name)."""
        if routing_key is None:
            routing_key = self.name
        source = get_exchange_name(exchange)
        log.debug("Binding queue %r: exchange=%r, routing_key=%r", self.name, source, routing_key)
        result: commands.Queue.BindOk = await self.channel._call(
            lambda core, number: core.queue_bind(number, self.name, source, routing_key, arguments=arguments),
            timeout,
        )
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Queue.UnbindOk:
        """Remove a binding made with :meth:`bind`."""
        if routing_key is None:
            routing_key = self.name
        source = get_exchange_name(exchange)
        log.debug("Unbinding queue %r: exchange=%r, routing_key=%r", self.name, source, routing_key)
        result: commands.Queue.UnbindOk = await self.channel._call(
            lambda core, number: core.queue_unbind(
                number, self.name, source, routing_key, arguments=arguments
            ),
            timeout,
        )
        return result

    async def consume(
        self,
        callback: Callable[[AbstractIncomingMessage], Any],
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
    ) -> ConsumerTag:
        """Start consuming: ``callback(message)`` is called for every delivery; returns the consumer tag.

        A plain function is called as soon as the message arrives. A coroutine function runs in a small pool
        of worker tasks of this consumer, so up to the channel's ``prefetch_count`` messages (or
        ``Channel.DEFAULT_CONSUMER_CONCURRENCY`` without QoS) are processed concurrently.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        return await self.channel._consume(
            self, callback, no_ack=no_ack, exclusive=exclusive, arguments=arguments,
            consumer_tag=consumer_tag, timeout=timeout,
        )  # fmt: skip

    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> commands.Basic.CancelOk | None:
        """Stop the consumer ``consumer_tag``; returns ``Basic.CancelOk`` (``None`` with ``nowait``)."""
        return await self.channel._cancel(consumer_tag, timeout=timeout, nowait=nowait)

    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: TimeoutType = 5
    ) -> IncomingMessage | None:
        """Fetch one message (``Basic.Get``): QueueEmpty when there is none (None when ``fail`` is false)."""
        message = await self.channel._get(self, no_ack=no_ack, timeout=timeout)
        if message is None and fail:
            raise QueueEmpty()
        return message

    async def purge(
        self, no_wait: bool = False, timeout: TimeoutType = None
    ) -> commands.Queue.PurgeOk | None:
        """Remove every ready message from the queue."""
        log.info("Purging queue: %r", self.name)
        if no_wait:
            self.channel._send(lambda core, number: core.queue_purge(number, self.name, nowait=True))
            return None
        result: commands.Queue.PurgeOk | None = await self.channel._call(
            lambda core, number: core.queue_purge(number, self.name), timeout
        )
        return result

    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> commands.Queue.DeleteOk:
        """Delete the queue (by default only when it has no consumers and no messages)."""
        log.info("Deleting %r", self)
        result: commands.Queue.DeleteOk = await self.channel._call(
            lambda core, number: core.queue_delete(number, self.name, if_unused=if_unused, if_empty=if_empty),
            timeout,
        )
        return result

    def __aiter__(self) -> QueueIterator:
        return self.iterator()

    def iterator(self, **kwargs: Any) -> QueueIterator:
        """An async iterator over the queue's messages (``async with queue.iterator() as it: async for …``).

        Keyword arguments go to :meth:`consume` (``no_ack``, ``exclusive``, ``arguments``, ``consumer_tag``),
        and ``timeout`` bounds the wait for each message (TimeoutError, after closing the iterator).
        """
        return QueueIterator(self, **kwargs)


class QueueIterator(AbstractQueueIterator):
    """Consumes a queue into a buffer that ``async for`` reads.

    Closing it (leaving ``async with``, or :meth:`close`) cancels the consumer and returns the messages still
    in the buffer to the queue (``Basic.Nack`` with requeue).
    """

    DEFAULT_CLOSE_TIMEOUT = 5

    def __init__(self, queue: Queue, **kwargs: Any) -> None:
        self._amqp_queue = queue
        self._timeout: TimeoutType = kwargs.pop("timeout", None)
        self._consume_kwargs = kwargs
        self._buffer: deque[IncomingMessage] = deque()
        self._waiter: Waiter[None] | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._closed = False
        self._closing = False

    @property
    def consumer_tag(self) -> ConsumerTag | None:
        return self._consumer_tag

    def __str__(self) -> str:
        return f"queue[{self._amqp_queue}](...)"

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}: queue={self._amqp_queue.name!r} ctag={self._consumer_tag!r}>"

    def _on_message(self, message: IncomingMessage) -> None:
        self._buffer.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    def _on_consumer_stopped(self, exc: BaseException | None) -> None:
        # The broker cancelled the consumer (exc is None: the buffer can still be read and acknowledged),
        # or the channel closed (the broker requeues the buffered messages by itself).
        self._consumer_tag = None
        self._closed = True
        if exc is not None:
            self._buffer.clear()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Put a message in the buffer (aio-pika's hook; the consumer calls the synchronous path)."""
        self._on_message(message)  # type: ignore[arg-type]

    async def consume(self) -> None:
        """Start the consumer (done by ``async with`` or the first ``__anext__``)."""
        if self._consumer_tag is not None or self._closed:
            return
        kwargs = dict(self._consume_kwargs)
        self._consumer_tag = await self._amqp_queue.channel._consume(
            self._amqp_queue,
            self._on_message,
            no_ack=kwargs.pop("no_ack", False),
            exclusive=kwargs.pop("exclusive", False),
            arguments=kwargs.pop("arguments", None),
            consumer_tag=kwargs.pop("consumer_tag", None),
            timeout=kwargs.pop("consume_timeout", None),
            on_stop=self._on_consumer_stopped,
        )

    async def close(self) -> None:
        """Cancel the consumer and return the buffered messages to the queue."""
        if self._closed and self._consumer_tag is None and not self._buffer:
            return
        self._closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set_result(None)
        tag, self._consumer_tag = self._consumer_tag, None
        channel = self._amqp_queue.channel
        try:
            if tag is not None and not channel.is_closed:
                try:
                    with contextlib.suppress(ChannelInvalidStateError):
                        await channel._cancel(tag, timeout=self.DEFAULT_CLOSE_TIMEOUT)
                except BaseException:
                    # Cancelled (a cancel scope stays cancelled: on trio and anyio every await fails) or no
                    # CancelOk in time: the Basic.Cancel may not even have been sent. Cancel without
                    # waiting, so no consumer is left filling a buffer nobody reads.
                    if not channel.is_closed:
                        with contextlib.suppress(ChannelInvalidStateError):
                            channel._cancel_nowait(tag)
                    raise
        finally:
            self._requeue_buffer()

    def _requeue_buffer(self) -> None:
        buffer = self._buffer
        no_ack = self._consume_kwargs.get("no_ack", False)
        while buffer:
            message = buffer.popleft()
            if no_ack:
                log.warning(
                    "Message %r lost: iterator %r consumed it with no_ack", message.delivery_tag, self
                )
                continue
            if message.processed:
                continue
            try:
                message.nack(requeue=True)
            except Exception as error:  # the channel is closed: the broker requeues it by itself
                log.debug("Could not nack message %r: %s", message.delivery_tag, error)

    def __aiter__(self) -> QueueIterator:
        return self

    async def __aenter__(self) -> QueueIterator:
        await self.consume()
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.close()

    async def __anext__(self) -> IncomingMessage:
        buffer = self._buffer
        if buffer:
            return buffer.popleft()
        if self._closed:
            raise StopAsyncIteration
        if self._consumer_tag is None:
            await self.consume()
        channel = self._amqp_queue.channel
        while not buffer:
            if self._closed:
                raise StopAsyncIteration
            waiter = self._waiter = channel._connection._backend.create_waiter()
            try:
                with channel._connection._backend.timeout(self._timeout):
                    await waiter.wait()
            except TimeoutError:
                await self.close()
                raise
            except GeneratorExit:
                raise  # the coroutine is being closed: it may not await any more
            except BaseException:
                # Cancelled while waiting: as aio-pika, close the iterator, so that a bare `async for` in a
                # task that gets cancelled leaves no consumer behind taking the queue's messages.
                with contextlib.suppress(Exception):
                    await self.close()
                raise
        return buffer.popleft()
