"""Remote procedure calls over queues, with aio-pika's wire format.

::

    rpc = await RPC.create(channel)
    await rpc.register("multiply", multiply, auto_delete=True)   # the callee side
    assert await rpc.proxy.multiply(x=2, y=3) == 6                # the caller side

How it works (the same as aio-pika, so both interoperate):

* a callee declares one queue per method, named after it, with ``x-dead-letter-exchange`` set to
  :attr:`RPC.DLX_NAME`, and consumes it;
* a caller has a result queue (declared with a client-chosen name on robust channels, server-named
  otherwise) which it consumes, and binds it to the ``DLX_NAME`` headers exchange with ``From: <its name>``;
* a call is a message to the method's queue (``mandatory``) with ``reply_to`` and the ``From`` header set
  to the result queue and a fresh ``correlation_id``; the caller waits on one future per outstanding call;
* the callee replies to ``reply_to`` with a ``result`` or ``error`` message carrying the same
  ``correlation_id``, and acknowledges the call once the reply is confirmed (rejects it if the reply is
  refused);
* a call that expires (``expiration=``) before a callee takes it is dead-lettered back to the caller's
  result queue and raises :class:`TimeoutError`; a call no queue takes is returned and raises
  :class:`~aio_pika.exceptions.MessageProcessError`.

Incoming calls go through their queue's consumer (a worker pool per consumer), never a task per message;
results are handled as they are received (unless a subclass overrides how), and the confirms of calls and
replies call back rather than wake a task, so neither side takes a loop iteration of its own per confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, DeliveryMode, ExchangeType, TimeoutType
from aio_pika.exceptions import ChannelClosed, ConnectionClosed, MessageProcessError
from aio_pika.message import Message
from aio_pika.tools import ensure_awaitable

from .base import Base, CallbackType, Proxy, call_maybe_async, running_loop

log = logging.getLogger(__name__)

__all__ = ("RPC", "JsonRPC", "JsonRPCError", "RPCException", "RPCMessageType", "RPCMessageTypes")


class RPCException(RuntimeError):
    """The callee raised something that is not an exception, or the RPC was closed (on trio)."""


class RPCMessageType(str, Enum):  # noqa: UP042 - a str Enum as in aio-pika
    ERROR = "error"
    RESULT = "result"
    CALL = "call"


RPCMessageTypes = RPCMessageType  # aio-pika 6.x's name

# What a message's type says for each member, read once: `.value` is a Python-level property call on
# Python 3.11, and every call and every result reads one.
_VALUES = {member: member.value for member in RPCMessageType}
_ERROR = _VALUES[RPCMessageType.ERROR]
_RESULT = _VALUES[RPCMessageType.RESULT]
_CALL = _VALUES[RPCMessageType.CALL]

_NO_TIMEOUT = contextlib.nullcontext()  # reusable: a call without a timeout makes no context of its own


def _backend(channel: Any) -> Any:
    return channel.connection.backend


def _closed_error() -> BaseException:
    """What pending calls raise when :meth:`RPC.close` is called: CancelledError on asyncio (as aio-pika)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio: a Cancelled cannot be made by hand
        return RPCException("the RPC was closed while the call was waiting for its result")
    return asyncio.CancelledError()


class RPC(Base):
    """Remote Procedure Call helper.

    Create an instance with ``rpc = await RPC.create(channel)``; register functions (which take keyword
    arguments only) with ``await rpc.register("multiply", multiply)``; call them with
    ``await rpc.proxy.multiply(x=2, y=3)`` or ``await rpc.call("multiply", dict(x=2, y=3))``.
    An exception raised by the callee is raised by the caller.
    """

    DLX_NAME = "rpc.dlx"
    DELIVERY_MODE = DeliveryMode.NOT_PERSISTENT

    def __init__(self, channel: AbstractChannel, host_exceptions: bool = False) -> None:
        """:param channel: an open channel.
        :param host_exceptions: also log the exceptions the registered functions raise.
        """
        self.channel = channel
        self.loop: Any = running_loop()
        self.proxy = Proxy(self.call)
        self.futures: dict[str, Any] = {}  # correlation id -> the future of the outstanding call
        self.routes: dict[str, Callable[..., Any]] = {}
        self.queues: dict[Callable[..., Any], Any] = {}
        self.consumer_tags: dict[Callable[..., Any], str] = {}
        self.host_exceptions = host_exceptions
        self.rpc_exchange: Any = None
        # Correlation ids: this RPC's own prefix and a count. A uuid4 per call would read os.urandom
        # each time, for a uniqueness that only this RPC's result queue needs.
        self._correlation_prefix = f"{uuid.uuid4()}."
        self._call_numbers = itertools.count(1)

    def __repr__(self) -> str:
        queue = getattr(self, "result_queue", None)
        return f"<{self.__class__.__name__} result_queue={getattr(queue, 'name', None)!r}>"

    # ---- set-up and tear-down ----------------------------------------------------------------------

    @classmethod
    async def create(
        cls, channel: AbstractChannel, *, host_exceptions: bool | None = None, **kwargs: Any
    ) -> Any:
        """Make an RPC and initialize it (``kwargs`` go to :meth:`initialize`)."""
        rpc = cls(channel)
        if host_exceptions is not None:
            rpc.host_exceptions = host_exceptions
        await rpc.initialize(**kwargs)
        return rpc

    async def initialize(
        self, auto_delete: bool = True, durable: bool = False, exchange: str = "", **kwargs: Any
    ) -> None:
        """Declare and consume the result queue (``kwargs`` go to its ``declare_queue``).

        :param exchange: route calls through this direct exchange (``<exchange>::<method>``) instead of the
            default exchange.
        """
        if hasattr(self, "result_queue"):
            return
        channel = self.channel
        self.rpc_exchange = (
            await channel.declare_exchange(
                exchange, type=ExchangeType.DIRECT, auto_delete=True, durable=durable
            )
            if exchange
            else None
        )
        self.result_queue = await channel.declare_queue(
            None, auto_delete=auto_delete, durable=durable, **kwargs
        )
        self.dlx_exchange = await channel.declare_exchange(
            self.DLX_NAME, type=ExchangeType.HEADERS, auto_delete=True
        )
        await self.result_queue.bind(self.dlx_exchange, "", arguments=self._dlx_binding_arguments())
        cls = type(self)
        inline = (
            cls.on_result_message is RPC.on_result_message
            and cls.deserialize_message is RPC.deserialize_message
        )
        self.result_consumer_tag = await self.result_queue.consume(
            self._on_result_inline if inline else self.on_result_message, exclusive=True, no_ack=True
        )
        channel.close_callbacks.add(self.on_close)
        channel.return_callbacks.add(self.on_message_returned)

    def _dlx_binding_arguments(self) -> dict[str, Any]:
        return {"From": self.result_queue.name, "x-match": "any"}

    async def close(self) -> None:
        """Stop listening for results, delete the result queue, and fail the calls still waiting.

        The calls raise :class:`asyncio.CancelledError` on asyncio (as in aio-pika) and
        :class:`RPCException` on trio. Registered functions keep being served (see :meth:`unregister`).
        """
        if not hasattr(self, "result_queue"):
            log.warning("RPC already closed")
            return
        channel = self.channel
        queue = self.result_queue
        try:
            if not channel.is_closed:
                log.debug("Cancelling listening %r", queue)
                await queue.cancel(self.result_consumer_tag)
                log.debug("Unbinding %r", queue)
                await queue.unbind(self.dlx_exchange, "", arguments=self._dlx_binding_arguments())
                log.debug("Deleting %r", queue)
                await queue.delete(if_unused=False, if_empty=False)
        finally:
            del self.result_queue
            del self.result_consumer_tag
            del self.dlx_exchange
            self.rpc_exchange = None
            channel.close_callbacks.discard(self.on_close)
            channel.return_callbacks.discard(self.on_message_returned)
            self._fail_all(_closed_error())

    def _fail_all(self, exc: BaseException) -> None:
        futures, self.futures = self.futures, {}
        for future in futures.values():
            if not future.done():  # done: its caller was cancelled and has not removed it yet
                future.set_exception(exc)

    def on_close(self, channel: AbstractChannel | None, exc: BaseException | None = None) -> None:
        """The channel closed (or lost its connection): the outstanding calls fail with why."""
        log.debug("Closing RPC futures because %r", exc)
        if exc is None:
            # Closed by the user (the close callbacks get no error then). The calls fail as the channel's
            # own pending operations do, and as in aio-pika: with an AMQPError that callers catch, not a
            # RuntimeError. The connection is already closed when it is what the user closed.
            connection = getattr(channel or self.channel, "connection", None)
            if connection is not None and connection.is_closed:
                exc = ConnectionClosed(200, "Normal shutdown")
            else:
                exc = ChannelClosed(200, "Normal shutdown")
        self._fail_all(exc)

    # ---- the caller side ---------------------------------------------------------------------------

    def create_future(self) -> tuple[Any, str]:
        """The future of a new call (awaited by its caller alone) and its correlation id."""
        future = _backend(self.channel).create_future()
        correlation_id = f"{self._correlation_prefix}{next(self._call_numbers)}"
        self.futures[correlation_id] = future
        return future, correlation_id

    def _format_routing_key(self, method_name: str) -> str:
        return f"{self.rpc_exchange.name}::{method_name}" if self.rpc_exchange else method_name

    async def call(
        self,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        *,
        expiration: int | float | None = None,
        priority: int = 5,
        delivery_mode: DeliveryMode = DELIVERY_MODE,
        timeout: TimeoutType = None,
    ) -> Any:
        """Call a remote method and return its result (or raise the exception it raised).

        :param method_name: the name it was registered with.
        :param kwargs: its keyword arguments.
        :param expiration: seconds the call may wait in the method's queue; when no callee took it by then,
            :class:`TimeoutError` is raised.
        :param priority: the call message's priority.
        :param delivery_mode: the call message's delivery mode.
        :param timeout: seconds to wait for the result in all (TimeoutError); not in aio-pika, where
            ``asyncio.wait_for`` does that (which works here too, as does trio's ``fail_after``).
        :raises TimeoutError: the call expired, or ``timeout`` passed.
        :raises aio_pika.exceptions.MessageProcessError: nothing is registered under that name (the
            broker returned the call).
        """
        if not hasattr(self, "result_queue"):
            raise RuntimeError("the RPC is closed (or was never initialized: use RPC.create)")
        future, correlation_id = self.create_future()
        try:
            message = await self.serialize_message(
                payload=kwargs or {},
                message_type=RPCMessageType.CALL,
                correlation_id=correlation_id,
                delivery_mode=delivery_mode,
                reply_to=self.result_queue.name,
                headers={"From": self.result_queue.name},
                priority=priority,
            )
            if expiration is not None:
                message.expiration = expiration
            routing_key = self._format_routing_key(method_name)
            # Any: _publish_settled is our exchanges' own, not in the abstract interface.
            exchange: Any = self.rpc_exchange or self.channel.default_exchange
            debug = log.isEnabledFor(logging.DEBUG)  # once, for both messages
            if debug:
                log.debug("Publishing calls for %s(%r)", routing_key, kwargs)
            with _backend(self.channel).timeout(timeout) if timeout is not None else _NO_TIMEOUT:
                # A nack, or a return with on_return_raises, fails the call through its future: the
                # caller waits for the result alone, not woken for the confirm first.
                await exchange._publish_settled(message, routing_key, True, partial(_fail_call, future))
                if debug:
                    log.debug("Waiting RPC result for %s(%r)", routing_key, kwargs)
                return await future
        finally:
            self.futures.pop(correlation_id, None)

    def on_message_returned(self, channel: AbstractChannel | None, message: AbstractIncomingMessage) -> None:
        """A call came back unroutable: nothing is registered under its name."""
        if message.correlation_id is None:
            log.warning("Message without correlation_id was returned: %r", message)
            return
        future = self.futures.pop(str(message.correlation_id), None)
        if future is None or future.done():
            log.warning("Unknown message was returned: %r", message)
            return
        future.set_exception(MessageProcessError("Message has been returned", message))

    async def on_result_message(self, message: AbstractIncomingMessage) -> None:
        """A result, an error, or an expired call came back to the result queue."""
        future = self._call_of(message)
        if future is None:
            return
        try:
            payload = await self.deserialize_message(message)
        except Exception as error:
            _undecodable_result(future, message, error)
        else:
            _complete_call(future, message, payload)

    def _on_result_inline(self, message: AbstractIncomingMessage) -> None:
        """:meth:`on_result_message` as a plain consumer callback, run as the result is received rather
        than by the consumer's worker task (a loop iteration fewer per call); used while a subclass
        overrides neither it nor :meth:`deserialize_message`."""
        future = self._call_of(message)
        if future is None:
            return
        try:
            payload = self.deserialize(message.body)
        except Exception as error:
            _undecodable_result(future, message, error)
        else:
            _complete_call(future, message, payload)

    def _call_of(self, message: AbstractIncomingMessage) -> Any:
        """The future of the call a result message answers (forgotten from now on), or None."""
        if message.correlation_id is None:
            log.warning("Message without correlation_id was received: %r", message)
            return None
        future = self.futures.pop(str(message.correlation_id), None)
        if future is None:
            log.warning("Unknown message: %r", message)
        return future

    # ---- the callee side ---------------------------------------------------------------------------

    async def register(self, method_name: str, func: CallbackType[Any], **kwargs: Any) -> None:
        """Serve ``func`` (keyword arguments only; plain or coroutine function) as ``method_name``.

        Declares the queue ``method_name`` (``kwargs`` go to ``declare_queue``, e.g. ``auto_delete=True``)
        and consumes it.

        :raises RuntimeError: ``func`` is already registered, or ``method_name`` is taken.
        """
        routing_key = self._format_routing_key(method_name)
        if func in self.consumer_tags:
            raise RuntimeError("Function already registered")
        if routing_key in self.routes:
            raise RuntimeError(f"Method name already used for {self.routes[routing_key]!r}")
        arguments = dict(kwargs.pop("arguments", None) or {})
        arguments["x-dead-letter-exchange"] = self.DLX_NAME
        kwargs["arguments"] = arguments
        queue = await self.channel.declare_queue(routing_key, **kwargs)
        if self.rpc_exchange:
            await queue.bind(self.rpc_exchange, routing_key)
        # execute() gets a coroutine function, as in aio-pika, whose own execute() (which overrides copy)
        # is `await func(**payload)`; consumer_tags and queues keep the function as given, for unregister.
        self.routes[routing_key] = ensure_awaitable(func)
        self.queues[func] = queue
        try:
            self.consumer_tags[func] = await queue.consume(partial(self.on_call_message, method_name))
        except BaseException:
            self.routes.pop(routing_key, None)
            self.queues.pop(func, None)
            raise

    async def unregister(self, func: CallbackType[Any]) -> None:
        """Stop serving ``func`` (its queue stays unless it is auto-delete)."""
        if func not in self.consumer_tags:
            return
        consumer_tag = self.consumer_tags.pop(func)
        queue = self.queues.pop(func)
        self.routes.pop(queue.name, None)
        await queue.cancel(consumer_tag)

    async def execute(self, func: CallbackType[Any], payload: dict[str, Any]) -> Any:
        """Run a registered function with the call's keyword arguments. Might be overridden."""
        return await call_maybe_async(func, payload)

    async def on_call_message(self, method_name: str, message: AbstractIncomingMessage) -> None:
        """Run one call and send its result (or the exception) to the caller, then ack it."""
        routing_key = self._format_routing_key(method_name)
        func = self.routes.get(routing_key)
        if func is None:
            log.warning("Method %r not registered in %r", method_name, self)
            await message.reject(requeue=True)
            return
        try:
            payload = await self.deserialize_message(message)
            result: Any = await self.execute(func, payload)
            message_type = RPCMessageType.RESULT
        except Exception as error:
            result = self.serialize_exception(error)
            message_type = RPCMessageType.ERROR
            if self.host_exceptions:
                log.exception(error)
        if not message.reply_to:
            log.info('RPC message without "reply_to" header %r call result will be lost', message)
            await message.ack()
            return
        result_message = await self._reply_message(result, message_type, message)
        # The call is acked once its reply is confirmed, from the confirm's processing: this worker goes
        # on to the next call instead of being woken for the confirm.
        settled = partial(_settle_call, message, result_message)
        exchange: Any = self.channel.default_exchange  # Any: as in call()
        try:
            waiting = exchange._publish_settled(result_message, message.reply_to, False, settled)
        except Exception as error:
            settled(error)
            return
        await waiting

    async def _reply_message(
        self, result: Any, message_type: RPCMessageType, call: AbstractIncomingMessage
    ) -> Message:
        try:
            return await self.serialize_message(
                payload=result,
                message_type=message_type,
                correlation_id=call.correlation_id,
                delivery_mode=call.delivery_mode,
            )
        except Exception as error:  # the result (or the exception) does not serialize: send why
            log.debug("Cannot serialize the result of %r", call, exc_info=True)
            for payload in (self.serialize_exception(error), RPCException(repr(error))):
                try:
                    return await self.serialize_message(
                        payload=payload,
                        message_type=RPCMessageType.ERROR,
                        correlation_id=call.correlation_id,
                        delivery_mode=call.delivery_mode,
                    )
                except Exception:
                    continue
            raise

    # ---- serialization -----------------------------------------------------------------------------

    def serialize_exception(self, exception: Exception) -> Any:
        """Make an exception serializable (it is pickled as is by default)."""
        return exception

    async def deserialize_message(self, message: AbstractIncomingMessage) -> Any:
        return self.deserialize(message.body)

    async def serialize_message(
        self,
        payload: Any,
        message_type: RPCMessageType,
        correlation_id: str | None,
        delivery_mode: DeliveryMode,
        **kwargs: Any,
    ) -> Message:
        return Message(
            self.serialize(payload),
            content_type=self.CONTENT_TYPE,
            correlation_id=correlation_id,
            delivery_mode=delivery_mode,
            timestamp=time.time(),
            type=_VALUES[message_type],
            **kwargs,
        )


class JsonRPCError(RuntimeError):
    """What a :class:`JsonRPC` caller raises when the callee raised: ``args[1]`` describes the error."""


class JsonRPC(RPC):
    """An :class:`RPC` speaking JSON; exceptions travel as ``{"error": {"type", "message", "args"}}``."""

    SERIALIZER = json
    CONTENT_TYPE = "application/json"

    def serialize(self, data: Any) -> bytes:
        return json.dumps(data, ensure_ascii=False, default=repr).encode()

    def serialize_exception(self, exception: Exception) -> Any:
        return {
            "error": {
                "type": exception.__class__.__name__,
                "message": repr(exception),
                "args": exception.args,
            }
        }

    async def deserialize_message(self, message: AbstractIncomingMessage) -> Any:
        payload = await super().deserialize_message(message)
        if message.type == RPCMessageType.ERROR:
            payload = JsonRPCError("RPC exception", payload)
        return payload


def _fail_call(future: Any, error: BaseException | None) -> None:
    """The call's message was settled: a failure (a nack, a return, the channel closing) fails the call."""
    if error is not None and not future.done():
        future.set_exception(error)


def _undecodable_result(future: Any, message: AbstractIncomingMessage, error: Exception) -> None:
    log.error("Failed to deserialize response on message: %r", message)
    if not future.done():  # done: its caller was cancelled and has not removed it yet
        future.set_exception(error)


def _complete_call(future: Any, message: AbstractIncomingMessage, payload: Any) -> None:
    """Hand a call's decoded result message to its caller."""
    if future.done():  # its caller was cancelled and has not removed it yet
        return
    if message.type == _RESULT:
        future.set_result(payload)
    elif message.type == _ERROR:
        if not isinstance(payload, BaseException):
            payload = RPCException("Wrapped non-exception object", payload)
        future.set_exception(payload)
    elif message.type == _CALL:
        future.set_exception(TimeoutError("Message timed-out", message))
    else:
        future.set_exception(RuntimeError(f"Unknown message type {message.type!r}"))


def _settle_call(call: AbstractIncomingMessage, reply: Message, error: BaseException | None) -> None:
    """The reply to ``call`` was confirmed (ack the call) or refused (reject it, as aio-pika does)."""
    try:
        if error is None:
            call.ack()
        else:
            log.error("Failed to send reply %r due to %s: %s", reply, type(error).__name__, error)
            call.reject(requeue=False)
    except Exception as settle_error:  # the channel closed meanwhile: the broker requeues the call
        log.debug("Cannot settle call %r: %s", call.delivery_tag, settle_error)
