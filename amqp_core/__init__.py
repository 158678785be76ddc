"""A sans-IO AMQP 0-9-1 client protocol engine.

Feed received bytes to :meth:`Connection.receive_data` and act on the events it returns; issue commands
and write what :meth:`Connection.data_to_send` returns to the socket; call :meth:`Connection.handle_timer`
when :meth:`Connection.next_timer` says so. No sockets, no event loop, no clock.
"""

from .connection import Connection, ConnectionState
from .errors import (
    AMQPCoreError,
    AuthenticationRefused,
    BrokerClosedDuringHandshake,
    ChannelStateError,
    ConnectionStateError,
    FrameTooLarge,
    HandshakeError,
    LocalProtocolError,
    MechanismNotOffered,
    RemoteProtocolError,
    StaleDelivery,
    UnknownDeliveryTag,
    WrongProtocol,
)
from .events import (
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionLost,
    ConnectionOpened,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    Event,
    GetOk,
    HeartbeatTimeout,
    MethodReply,
    PublishConfirmed,
    Returned,
    SecretUpdated,
)

__all__ = [
    "AMQPCoreError",
    "AuthenticationRefused",
    "BrokerClosedDuringHandshake",
    "ChannelClosed",
    "ChannelFlow",
    "ChannelOpened",
    "ChannelStateError",
    "Connection",
    "ConnectionBlocked",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionOpened",
    "ConnectionState",
    "ConnectionStateError",
    "ConnectionUnblocked",
    "ConsumerCancelled",
    "Delivery",
    "Event",
    "FrameTooLarge",
    "GetOk",
    "HandshakeError",
    "HeartbeatTimeout",
    "LocalProtocolError",
    "MechanismNotOffered",
    "MethodReply",
    "PublishConfirmed",
    "RemoteProtocolError",
    "Returned",
    "SecretUpdated",
    "StaleDelivery",
    "UnknownDeliveryTag",
    "WrongProtocol",
]
