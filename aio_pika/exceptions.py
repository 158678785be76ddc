"""Exceptions, with aio-pika's (and aiormq's) class names and hierarchy.

Catch :class:`AMQPError` for everything the broker or the protocol reports, :class:`ChannelClosed` (and its
subclasses per reply code) for channel errors, :class:`AMQPConnectionError` for connection problems.
"""

from __future__ import annotations

import asyncio  # only for QueueEmpty, which aio-pika makes a subclass of asyncio.QueueEmpty
from typing import Any

__all__ = (
    "CONNECTION_EXCEPTIONS",
    "AMQPChannelError",
    "AMQPConnectionError",
    "AMQPError",
    "AMQPException",
    "AuthenticationError",
    "ChannelAccessRefused",
    "ChannelClosed",
    "ChannelInvalidStateError",
    "ChannelLockedResource",
    "ChannelNotFoundEntity",
    "ChannelPreconditionFailed",
    "ConnectionChannelError",
    "ConnectionClosed",
    "ConnectionCommandInvalid",
    "ConnectionFrameError",
    "ConnectionInternalError",
    "ConnectionNotAllowed",
    "ConnectionNotImplemented",
    "ConnectionResourceError",
    "ConnectionSyntaxError",
    "ConnectionUnexpectedFrame",
    "DeliveryError",
    "DuplicateConsumerTag",
    "IncompatibleProtocolError",
    "InvalidFrameError",
    "MessageProcessError",
    "MethodNotImplemented",
    "ProbableAuthenticationError",
    "ProtocolSyntaxError",
    "PublishError",
    "QueueEmpty",
    "UnroutableError",
)


class AMQPError(Exception):
    """Base class of the AMQP errors."""

    reason = "An unspecified AMQP error has occurred: %s"

    def __str__(self) -> str:
        if not self.args:
            return self.reason.split(":")[0] if "%" in self.reason else self.reason
        try:
            return self.reason % self.args
        except TypeError:
            return " ".join(str(arg) for arg in self.args)

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}: {self}>"


AMQPException = AMQPError  # the old name


class AMQPConnectionError(AMQPError, ConnectionError):
    """The connection failed or could not be made."""

    reason = "%s"


class IncompatibleProtocolError(AMQPConnectionError):
    reason = "The server does not speak AMQP 0-9-1: %s"


class AuthenticationError(AMQPConnectionError):
    reason = "Authentication failed: %s"


class ProbableAuthenticationError(AMQPConnectionError):
    reason = "The broker refused the connection at the authentication stage (wrong login or password?): %s"


class ConnectionClosed(AMQPConnectionError):
    """The connection was closed; ``reply_code`` and ``reply_text`` say why."""

    reason = "The AMQP connection was closed (%s) %s"

    def __init__(self, reply_code: int | None = None, reply_text: str | None = None, *args: Any) -> None:
        super().__init__(reply_code, reply_text, *args)
        self.reply_code = reply_code
        self.reply_text = reply_text

    def __str__(self) -> str:
        return self.reason % (self.reply_code, self.reply_text)


class ConnectionSyntaxError(ConnectionClosed):
    """The connection was closed with 502 SYNTAX_ERROR."""


class ConnectionFrameError(ConnectionClosed):
    """The connection was closed with 501 FRAME_ERROR."""


class ConnectionCommandInvalid(ConnectionClosed):
    """The connection was closed with 503 COMMAND_INVALID."""


class ConnectionChannelError(ConnectionClosed):
    """The connection was closed with 504 CHANNEL_ERROR."""


class ConnectionUnexpectedFrame(ConnectionClosed):
    """The connection was closed with 505 UNEXPECTED_FRAME."""


class ConnectionResourceError(ConnectionClosed):
    """The connection was closed with 506 RESOURCE_ERROR."""


class ConnectionNotAllowed(ConnectionClosed):
    """The connection was closed with 530 NOT_ALLOWED."""


class ConnectionNotImplemented(ConnectionClosed):
    """The connection was closed with 540 NOT_IMPLEMENTED."""


class ConnectionInternalError(ConnectionClosed):
    """The connection was closed with 541 INTERNAL_ERROR."""


class AMQPChannelError(AMQPError):
    reason = "An unspecified AMQP channel error has occurred: %s"


class ChannelClosed(AMQPChannelError):
    """The channel was closed; ``reply_code`` and ``reply_text`` say why (404, 406, … have subclasses)."""

    reason = "The channel was closed (%s) %s"

    def __init__(self, reply_code: int | None = None, reply_text: str | None = None, *args: Any) -> None:
        super().__init__(reply_code, reply_text, *args)
        self.reply_code = reply_code
        self.reply_text = reply_text

    def __str__(self) -> str:
        return self.reason % (self.reply_code, self.reply_text)


class ChannelAccessRefused(ChannelClosed):
    reason = "Access to the entity was refused (%s) %s"


class ChannelNotFoundEntity(ChannelClosed):
    reason = "The entity does not exist (%s) %s"


class ChannelLockedResource(ChannelClosed):
    reason = "The entity is locked by another connection (%s) %s"


class ChannelPreconditionFailed(ChannelClosed):
    reason = "A precondition failed (%s) %s"


class DuplicateConsumerTag(ChannelClosed):
    reason = "The consumer tag is already in use on this channel (%s) %s"


class ProtocolSyntaxError(AMQPError):
    reason = "A protocol syntax error occurred: %s"


class InvalidFrameError(ProtocolSyntaxError):
    reason = "Invalid frame received: %s"


class MethodNotImplemented(AMQPError):
    reason = "Method not implemented: %s"


class DeliveryError(AMQPError):
    """The broker refused a published message (``Basic.Nack``); ``frame`` is that frame."""

    def __init__(self, message: Any, frame: Any, *args: Any) -> None:
        self.message = message
        self.frame = frame
        super().__init__(message, frame, *args)

    def __str__(self) -> str:
        frame = self.frame
        name = getattr(frame, "name", type(frame).__name__)
        details = ", ".join(
            f"{field}={getattr(frame, field)!r}"
            for field in ("delivery_tag", "multiple", "reply_code", "reply_text", "exchange", "routing_key")
            if hasattr(frame, field)
        )
        return f"Message delivery failed: {name}({details})"


class PublishError(DeliveryError):
    """A mandatory message could not be routed and came back (``Basic.Return``), with ``on_return_raises``."""


UnroutableError = PublishError  # aio-pika 1.x's name for it


class ChannelInvalidStateError(RuntimeError):
    """The channel (or its connection) is not open: the operation cannot be performed."""


class MessageProcessError(AMQPError):
    reason = "%s: %r"


class QueueEmpty(AMQPError, asyncio.QueueEmpty):
    reason = "The queue is empty"


CONNECTION_EXCEPTIONS = (
    AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    StopAsyncIteration,
)

# Reply codes → exception classes.
CHANNEL_EXCEPTIONS: dict[int, type[ChannelClosed]] = {
    403: ChannelAccessRefused,
    404: ChannelNotFoundEntity,
    405: ChannelLockedResource,
    406: ChannelPreconditionFailed,
}

CONNECTION_CLOSE_EXCEPTIONS: dict[int, type[ConnectionClosed]] = {
    501: ConnectionFrameError,
    502: ConnectionSyntaxError,
    503: ConnectionCommandInvalid,
    504: ConnectionChannelError,
    505: ConnectionUnexpectedFrame,
    506: ConnectionResourceError,
    530: ConnectionNotAllowed,
    540: ConnectionNotImplemented,
    541: ConnectionInternalError,
}


def channel_closed_error(reply_code: int, reply_text: str) -> ChannelClosed:
    """The exception for a channel closed with this reply code."""
    return CHANNEL_EXCEPTIONS.get(reply_code, ChannelClosed)(reply_code, reply_text)


def connection_closed_error(reply_code: int, reply_text: str) -> ConnectionClosed:
    """The exception for a connection closed with this reply code."""
    return CONNECTION_CLOSE_EXCEPTIONS.get(reply_code, ConnectionClosed)(reply_code, reply_text)
