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
  ``correlation_id``, then acknowledges the call;
* a call that expires (``expiration=``) before a callee takes it is dead-lettered back to the caller's
  result queue and raises :class:`TimeoutError`; a call no queue takes is returned and raises
  :class:`~aio_pika.exceptions.MessageProcessError`.

Incoming calls and results go through the queues' consumer callbacks (a worker pool per consumer), never a
task per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, DeliveryMode, ExchangeType, TimeoutType
from aio_pika.exceptions import ChannelInvalidStateError, MessageProcessError
from aio_pika.message import Message

from .base import Base, CallbackType, Proxy, call_maybe_async

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
        self.loop: Any = None
        self.proxy = Proxy(self.call)
        self.futures: dict[str, Any] = {}  # correlation id -> the future of the outstanding call
        self.routes: dict[str, Callable[..., Any]] = {}
        self.queues: dict[Callable[..., Any], Any] = {}
        self.consumer_tags: dict[Callable[..., Any], str] = {}
        self.host_exceptions = host_exceptions
        self.rpc_exchange: Any = None

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
        self.result_consumer_tag = await self.result_queue.consume(
            self.on_result_message, exclusive=True, no_ack=True
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
        self._fail_all(exc if exc is not None else ChannelInvalidStateError("the RPC channel was closed"))

    # ---- the caller side ---------------------------------------------------------------------------

    def create_future(self) -> tuple[Any, str]:
        """The future of a new call (awaited by its caller alone) and its correlation id."""
        future = _backend(self.channel).create_future()
        correlation_id = str(uuid.uuid4())
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
            exchange = self.rpc_exchange or self.channel.default_exchange
            debug = log.isEnabledFor(logging.DEBUG)  # once, for both messages
            if debug:
                log.debug("Publishing calls for %s(%r)", routing_key, kwargs)
            with _backend(self.channel).timeout(timeout) if timeout is not None else _NO_TIMEOUT:
                await exchange.publish(message, routing_key=routing_key, mandatory=True)
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
        if message.correlation_id is None:
            log.warning("Message without correlation_id was received: %r", message)
            return
        future = self.futures.pop(str(message.correlation_id), None)
        if future is None:
            log.warning("Unknown message: %r", message)
            return
        # A future found done belongs to a caller that was cancelled and has not removed it yet.
        try:
            payload = await self.deserialize_message(message)
        except Exception as error:
            log.error("Failed to deserialize response on message: %r", message)
            if not future.done():
                future.set_exception(error)
            return
        if future.done():
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
        self.routes[routing_key] = func
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
        try:
            await self.channel.default_exchange.publish(result_message, message.reply_to, mandatory=False)
        except Exception as error:
            log.error("Failed to send reply %r due to %s: %s", result_message, type(error).__name__, error)
            await message.reject(requeue=False)
            return
        await message.ack()

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
