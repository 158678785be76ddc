"""Events: what :meth:`Connection.receive_data` and :meth:`Connection.handle_timer` report.

Every event is immutable and typed. Rare events are frozen slotted dataclasses. The per-message events
(:class:`Delivery`, :class:`GetOk`, :class:`Returned`, :class:`PublishConfirmed`) are ``NamedTuple``\\ s:
building a frozen dataclass costs four times as much (every field goes through ``object.__setattr__``),
and these are built once per message on the hot path. Both kinds are immutable and compare by value.

Channel numbers are the AMQP channel ids. ``incarnation`` identifies one opening of a channel: a channel
number that is closed and opened again gets a new incarnation, so a delivery can be traced to the exact
channel that gave it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pamqp import base, commands

__all__ = [
    "ChannelClosed",
    "ChannelFlow",
    "ChannelOpened",
    "ConnectionBlocked",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionOpened",
    "ConnectionUnblocked",
    "ConsumerCancelled",
    "Delivery",
    "Event",
    "GetOk",
    "HeartbeatTimeout",
    "MethodReply",
    "PublishConfirmed",
    "Returned",
    "SecretUpdated",
]


# ---- connection ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionOpened:
    """The handshake finished (``Connection.OpenOk`` arrived) with these negotiated limits.

    ``frame_max`` and ``channel_max`` of 0 and ``heartbeat`` of 0 mean "no limit" / "disabled".
    """

    frame_max: int
    channel_max: int
    heartbeat: int
    server_properties: dict[str, Any] = field(hash=False)


@dataclass(frozen=True, slots=True)
class ConnectionBlocked:
    """The broker stopped reading from this connection's publishers (``Connection.Blocked``)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionUnblocked:
    """The broker resumed reading from this connection (``Connection.Unblocked``)."""


@dataclass(frozen=True, slots=True)
class SecretUpdated:
    """The broker accepted a new secret (``Connection.UpdateSecretOk``)."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is closed at the protocol level; the transport can be dropped.

    ``by_peer`` is true when the broker closed it (its ``Close`` was answered with ``CloseOk``, already
    queued), false when it completes a :meth:`Connection.close` the caller asked for.
    """

    reply_code: int
    reply_text: str
    class_id: int = 0
    method_id: int = 0
    by_peer: bool = True


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The transport ended (end of stream) without a closing handshake."""


@dataclass(frozen=True, slots=True)
class HeartbeatTimeout:
    """Nothing arrived from the broker for two heartbeat intervals: it is considered dead."""

    silence: float


# ---- channels --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """``Channel.OpenOk`` arrived: the channel accepts commands."""

    channel: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The channel is closed and its number is free again.

    ``by_peer`` is true when the broker closed it (a channel error such as 404 or 406, ``CloseOk`` already
    queued); false when it completes :meth:`Connection.close_channel`. When both sides closed at once the
    broker's reason is reported.
    """

    channel: int
    reply_code: int
    reply_text: str
    class_id: int = 0
    method_id: int = 0
    by_peer: bool = True


@dataclass(frozen=True, slots=True)
class ChannelFlow:
    """The broker asked to pause (``active=False``) or resume publishing; ``FlowOk`` is already queued."""

    channel: int
    active: bool


@dataclass(frozen=True, slots=True)
class MethodReply:
    """The reply to a synchronous command, in the order the commands were issued on the channel.

    ``method`` is the pamqp method: ``Exchange.DeclareOk``, ``Queue.DeclareOk`` (with ``queue``,
    ``message_count``, ``consumer_count``), ``Basic.ConsumeOk``, ``Basic.GetEmpty``, ``Tx.CommitOk``, …
    A reply that does not match the oldest outstanding command is a protocol error, never reported here.
    """

    channel: int
    method: base.Frame

    # pamqp methods compare by identity; compare the method's type and arguments instead, so that this
    # event, like every other, compares by value.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MethodReply):
            return NotImplemented
        return self.channel == other.channel and _method_key(self.method) == _method_key(other.method)

    def __hash__(self) -> int:
        return hash((self.channel, type(self.method)))


def _method_key(method: base.Frame) -> tuple[Any, ...]:
    return (type(method), *(getattr(method, name, None) for name in method.__slots__))


@dataclass(frozen=True, slots=True)
class ConsumerCancelled:
    """The broker cancelled a consumer (``Basic.Cancel`` from the server, e.g. its queue was deleted)."""

    channel: int
    consumer_tag: str


# ---- messages (hot path) ---------------------------------------------------------------------------


class Delivery(NamedTuple):
    """A message pushed to a consumer (``Basic.Deliver`` with its content)."""

    channel: int
    incarnation: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: commands.Basic.Properties
    body: bytes


class GetOk(NamedTuple):
    """The message answering a ``Basic.Get`` (``Basic.GetOk`` with its content).

    It is the reply to the oldest outstanding ``Basic.Get`` on the channel; an empty queue answers with
    :class:`MethodReply` carrying ``Basic.GetEmpty`` instead.
    """

    channel: int
    incarnation: int
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    message_count: int
    properties: commands.Basic.Properties
    body: bytes


class Returned(NamedTuple):
    """A mandatory (or immediate) publish the broker could not route (``Basic.Return`` with its content).

    ``publish_seq`` is the publisher-confirm sequence number of the publish it answers when the channel is
    in confirm mode, else ``None``. The return itself does not name its publish; the core ties it to the
    oldest unconfirmed mandatory publish to the same exchange and routing key (the broker sends the return
    before the confirm of the same publish). ``None`` too when no such publish is outstanding. This is
    exact unless publishes to one address can route differently while in flight (headers exchanges,
    bindings changing meanwhile); see ``docs/core.md``.
    """

    channel: int
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    properties: commands.Basic.Properties
    body: bytes
    publish_seq: int | None


class PublishConfirmed(NamedTuple):
    """The broker confirmed (``ack=True``) or refused (``ack=False``) publishes ``first`` … ``last``.

    Sequence numbers in the range that an earlier confirm already settled are not settled twice: a consumer
    of this event pops each number from its table and ignores the ones already gone.
    """

    channel: int
    first: int
    last: int
    ack: bool


Event = (
    ConnectionOpened
    | ConnectionBlocked
    | ConnectionUnblocked
    | SecretUpdated
    | ConnectionClosed
    | ConnectionLost
    | HeartbeatTimeout
    | ChannelOpened
    | ChannelClosed
    | ChannelFlow
    | MethodReply
    | ConsumerCancelled
    | Delivery
    | GetOk
    | Returned
    | PublishConfirmed
)
