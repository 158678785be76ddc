"""A queue that is declared, bound and consumed again after its channel comes back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from .abc import (
    AbstractIncomingMessage,
    AbstractRobustQueue,
    Arguments,
    ConsumerTag,
    ExchangeParamType,
    TimeoutType,
    get_exchange_name,
)
from .log import get_logger
from .message import IncomingMessage
from .queue import Queue, QueueIterator
from .robust_exchange import binding_description, binding_key

if TYPE_CHECKING:
    from .robust_channel import RobustChannel

log = get_logger(__name__)

__all__ = ("RobustQueue", "RobustQueueIterator")


class RobustQueue(Queue, AbstractRobustQueue):
    """A :class:`Queue` of a :class:`~aio_pika.RobustChannel`.

    It remembers its bindings and consumers (callback, options and consumer tag); after a reconnection (or
    a reopening of its channel) the channel declares it again, binds it again and restarts its consumers
    with the same callbacks and tags, so the object stays valid. A queue declared without a name gets a
    client-chosen one (``amq_<hex>``, as in aio-pika), so that it keeps its name across reconnections.
    Every method waits while the channel is being restored.
    """

    __slots__ = ("_bindings", "_consumers")

    channel: RobustChannel

    def __init__(
        self,
        channel: RobustChannel,
        name: str | None,
        durable: bool | None = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Arguments = None,
        passive: bool = False,
    ) -> None:
        super().__init__(
            channel, name or f"amq_{uuid.uuid4().hex}", durable, exclusive, auto_delete, arguments, passive
        )
        self._bindings: dict[tuple[str, str, str], tuple[str, str, Arguments]] = {}
        # consumer tag -> dict(callback=, no_ack=, exclusive=, arguments=, on_stop=)
        self._consumers: dict[ConsumerTag, dict[str, Any]] = {}

    async def declare(
        self, timeout: TimeoutType = None, passive: bool | None = None
    ) -> commands.Queue.DeclareOk:
        await self.channel.ready(timeout)
        return await super().declare(timeout, passive)

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> commands.Queue.BindOk:
        """Bind the queue; with ``robust`` (the default) the binding is restored after a reconnection."""
        await self.channel.ready(timeout)
        if routing_key is None:
            routing_key = self.name
        result = await super().bind(exchange, routing_key, arguments=arguments, timeout=timeout)
        if robust:
            source = get_exchange_name(exchange)
            self._bindings[binding_key(source, routing_key, arguments)] = (source, routing_key, arguments)
            self.channel._remember_queue(self)
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Queue.UnbindOk:
        await self.channel.ready(timeout)
        if routing_key is None:
            routing_key = self.name
        result = await super().unbind(exchange, routing_key, arguments, timeout)
        self._bindings.pop(binding_key(get_exchange_name(exchange), routing_key, arguments), None)
        return result

    async def consume(
        self,
        callback: Callable[[AbstractIncomingMessage], Any],
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> ConsumerTag:
        """Start consuming; with ``robust`` (the default) the consumer is restarted after a reconnection,
        with the same callback and consumer tag."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        return await self._consume(
            callback, no_ack=no_ack, exclusive=exclusive, arguments=arguments, consumer_tag=consumer_tag,
            timeout=timeout, robust=robust, on_stop=None,
        )  # fmt: skip

    async def _consume(
        self,
        callback: Callable[[IncomingMessage], Any],
        *,
        no_ack: bool,
        exclusive: bool,
        arguments: Arguments,
        consumer_tag: ConsumerTag | None,
        timeout: TimeoutType,
        robust: bool,
        on_stop: Callable[[BaseException | None], None] | None,
    ) -> ConsumerTag:
        channel = self.channel
        await channel.ready(timeout)
        tag = consumer_tag or f"ctag{channel.number}.{uuid.uuid4().hex}"
        spec = dict(
            callback=callback, no_ack=no_ack, exclusive=exclusive, arguments=arguments, on_stop=on_stop
        )
        if robust:
            # Remembered before Basic.Consume goes out: a connection lost right after ConsumeOk still
            # finds it when restoring.
            if tag in self._consumers:
                from .exceptions import DuplicateConsumerTag

                raise DuplicateConsumerTag(530, f"consumer tag {tag!r} is already used on this queue")
            self._consumers[tag] = spec
            channel._remember_queue(self)
        try:
            return await channel._consume(
                self, callback, no_ack=no_ack, exclusive=exclusive, arguments=arguments, consumer_tag=tag,
                timeout=timeout, on_stop=on_stop,
            )  # fmt: skip
        except BaseException:
            if self._consumers.get(tag) is spec:
                del self._consumers[tag]
            raise

    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> commands.Basic.CancelOk | None:
        """Stop the consumer (it is not restarted after a reconnection any more).

        While the connection is down there is nothing to cancel on the broker: it is only forgotten.
        """
        self._consumers.pop(consumer_tag, None)
        channel = self.channel
        if channel.is_closed and channel._will_restore():
            return None
        return await super().cancel(consumer_tag, timeout, nowait)

    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: TimeoutType = 5
    ) -> IncomingMessage | None:
        await self.channel.ready(timeout)
        return await super().get(no_ack=no_ack, fail=fail, timeout=timeout)

    async def purge(
        self, no_wait: bool = False, timeout: TimeoutType = None
    ) -> commands.Queue.PurgeOk | None:
        await self.channel.ready(timeout)
        return await super().purge(no_wait, timeout)

    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> commands.Queue.DeleteOk:
        await self.channel.ready(timeout)
        result = await super().delete(if_unused=if_unused, if_empty=if_empty, timeout=timeout)
        self._consumers.clear()
        self._bindings.clear()  # gone with the queue on the broker
        self.channel._forget_queue(self.name)
        return result

    def iterator(self, **kwargs: Any) -> RobustQueueIterator:
        """A :class:`RobustQueueIterator`: it keeps iterating across reconnections."""
        return RobustQueueIterator(self, **kwargs)

    # ---- restoring (called by the channel; bypasses the readiness wait) --------------------------------

    async def _restore_declaration(self) -> None:
        await Queue.declare(self)

    def _restore_steps(self) -> list[tuple[str, Any]]:
        steps: list[tuple[str, Any]] = [
            (
                binding_description("queue", self.name, source, routing_key, arguments),
                lambda source=source, routing_key=routing_key, arguments=arguments: Queue.bind(
                    self, source, routing_key, arguments=arguments
                ),
            )
            for source, routing_key, arguments in list(self._bindings.values())
        ]
        for tag, spec in list(self._consumers.items()):
            steps.append(
                (
                    f"consumer {tag!r} of queue {self.name!r}",
                    lambda tag=tag, spec=spec: self._restart(tag, spec),
                )
            )
        return steps

    async def _restart(self, tag: ConsumerTag, spec: dict[str, Any]) -> None:
        if self._consumers.get(tag) is not spec:
            return  # cancelled meanwhile
        await self.channel._consume(
            self, spec["callback"], no_ack=spec["no_ack"], exclusive=spec["exclusive"],
            arguments=spec["arguments"], consumer_tag=tag, on_stop=spec["on_stop"],
        )  # fmt: skip


class RobustQueueIterator(QueueIterator):
    """A :class:`QueueIterator` that survives reconnections: ``async for`` waits while the connection is
    restored and goes on with the restarted consumer (same consumer tag).

    Messages still in its buffer when the connection is lost are dropped (they cannot be acknowledged any
    more; the broker delivers them again). It ends when the iterator, its channel or the connection is
    closed by the user, or when the broker cancels the consumer.
    """

    _amqp_queue: RobustQueue

    async def consume(self) -> None:
        if self._consumer_tag is not None or self._closed:
            return
        kwargs = dict(self._consume_kwargs)
        self._consumer_tag = await self._amqp_queue._consume(
            self._on_message,
            no_ack=kwargs.pop("no_ack", False),
            exclusive=kwargs.pop("exclusive", False),
            arguments=kwargs.pop("arguments", None),
            consumer_tag=kwargs.pop("consumer_tag", None),
            timeout=kwargs.pop("consume_timeout", None),
            robust=True,
            on_stop=self._on_consumer_stopped,
        )

    def _on_consumer_stopped(self, exc: BaseException | None) -> None:
        queue = self._amqp_queue
        if exc is not None and queue.channel._will_restore():
            # The channel or the connection was lost and will be restored, with this consumer. What is in
            # the buffer came on the lost channel: it cannot be acknowledged, the broker redelivers it.
            self._buffer.clear()
            return
        tag = self._consumer_tag
        if tag is not None:
            queue._consumers.pop(tag, None)
        super()._on_consumer_stopped(exc)

    async def close(self) -> None:
        tag = self._consumer_tag
        if tag is not None:
            self._amqp_queue._consumers.pop(tag, None)
        await super().close()
