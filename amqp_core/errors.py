"""The core's exceptions, in three families that never mix.

* :class:`LocalProtocolError` — the caller misused the API (publishing on a closed channel, an ack for a
  delivery the channel never gave out, a frame that cannot fit). Nothing was sent; the connection is fine.
* :class:`RemoteProtocolError` — the broker broke the protocol (garbage bytes, an oversized frame, a reply
  nobody asked for). By the time it is raised the core has already queued ``Connection.Close`` with the
  matching reply code; the caller should flush :meth:`~amqp_core.Connection.data_to_send` and drop the socket.
* :class:`HandshakeError` — the broker refused the connection while it was being opened (another
  protocol, bad credentials, a closed door). Nothing more can be sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Event

__all__ = [
    "AMQPCoreError",
    "AuthenticationRefused",
    "BrokerClosedDuringHandshake",
    "ChannelStateError",
    "ConnectionStateError",
    "FrameTooLarge",
    "HandshakeError",
    "LocalProtocolError",
    "MechanismNotOffered",
    "RemoteProtocolError",
    "StaleDelivery",
    "UnknownDeliveryTag",
    "WrongProtocol",
]

# Connection-level reply codes from the AMQP 0-9-1 specification, used when the core closes the connection.
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
INTERNAL_ERROR = 541
ACCESS_REFUSED = 403


class AMQPCoreError(Exception):
    """Base class of every exception raised by :mod:`amqp_core`."""


class LocalProtocolError(AMQPCoreError):
    """The caller asked for something the protocol or the connection's state does not allow."""


class ConnectionStateError(LocalProtocolError):
    """The connection is not in a state that allows the command (not open yet, closing or closed)."""


class ChannelStateError(LocalProtocolError):
    """The channel does not exist, is not open, or no channel number is free."""


class FrameTooLarge(LocalProtocolError):
    """A frame the caller asked for would exceed the negotiated ``frame_max``."""


class UnknownDeliveryTag(LocalProtocolError):
    """An ack, nack or reject names a delivery tag this channel has no unacknowledged delivery for."""


class StaleDelivery(LocalProtocolError):
    """An ack, nack or reject for a delivery received on an earlier incarnation of the channel.

    Delivery tags restart at 1 on every channel, so acking such a delivery on the reopened channel would
    settle a different message; the core refuses instead.
    """


class RemoteProtocolError(AMQPCoreError):
    """The broker violated the protocol; ``Connection.Close`` with :attr:`reply_code` is already queued.

    :attr:`events` holds the events that the same :meth:`~amqp_core.Connection.receive_data` call decoded
    before the violation (a publisher confirm among them still counts).
    """

    def __init__(self, message: str, reply_code: int) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.events: list[Event] = []


class HandshakeError(AMQPCoreError):
    """The broker refused or abandoned the connection while it was being opened."""


class WrongProtocol(HandshakeError):
    """The server answered with a protocol header for a protocol or version this client does not speak."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the server does not speak AMQP 0-9-1: {detail}")


class AuthenticationRefused(HandshakeError):
    """The broker rejected the credentials (or the authentication mechanism)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the broker refused the credentials: {reason}")
        self.reason = reason


class MechanismNotOffered(AuthenticationRefused):
    """The broker does not offer the authentication mechanism the client was configured with."""

    def __init__(self, mechanism: str, offered: list[str]) -> None:
        super().__init__(
            f"the broker does not offer the {mechanism} mechanism (it offers: {', '.join(offered) or 'none'})"
        )
        self.mechanism = mechanism
        self.offered = offered


class BrokerClosedDuringHandshake(HandshakeError):
    """The broker closed the connection before it was open (for example: unknown virtual host)."""

    def __init__(self, reason: str, reply_code: int = 0) -> None:
        super().__init__(f"the broker closed the connection while it was being opened: {reason}")
        self.reason = reason
        self.reply_code = reply_code
