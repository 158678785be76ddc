"""Per-channel protocol state: lifecycle, outstanding synchronous replies, consumer acks, publisher confirms.

The connection owns one :class:`ChannelState` per open channel number and routes frames to it. Nothing here
builds frames or raises peer-violation errors itself: it answers questions ("is this reply the one we
wait for?", "which publishes does this confirm settle?") and the connection acts on the answers.
"""

from __future__ import annotations

import enum
import io
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from pamqp import base, commands

from .errors import ChannelStateError, UnknownDeliveryTag
from .events import ChannelClosed

__all__ = ["ChannelPhase", "ChannelState", "ExpectedReply"]


class ChannelPhase(enum.Enum):
    """Where a channel is in its lifecycle (the channel's state table)."""

    OPENING = "opening"  # Channel.Open sent, waiting for OpenOk
    OPEN = "open"
    CLOSING = "closing"  # Channel.Close sent, waiting for CloseOk; every other frame is discarded


@dataclass(slots=True)
class ExpectedReply:
    """One synchronous command waiting for its reply."""

    replies: tuple[type[base.Frame], ...]
    # Basic.Consume / Basic.Get with no_ack: their deliveries need no acknowledgement bookkeeping.
    no_ack: bool = False


class ChannelState:
    """The state of one incarnation of a channel."""

    __slots__ = (
        "_mandatory",
        "_unacked",
        "_unacked_order",
        "close_event",
        "confirm_floor",
        "confirm_mode",
        "content_buffer",
        "content_chunks",
        "content_fields",
        "content_kind",
        "content_properties",
        "content_remaining",
        "expected",
        "incarnation",
        "no_ack_consumers",
        "number",
        "phase",
        "publish_seq",
    )

    def __init__(self, number: int, incarnation: int) -> None:
        self.number = number
        self.incarnation = incarnation
        self.phase = ChannelPhase.OPENING
        self.expected: deque[ExpectedReply] = deque()
        # What ChannelClosed will report once the closing handshake completes.
        self.close_event: ChannelClosed | None = None

        # Incoming content being assembled: the method's decoded fields, then header, then body frames.
        self.content_kind = 0  # 0: none; otherwise the method index of Deliver / GetOk / Return
        self.content_fields: tuple[Any, ...] = ()
        self.content_properties: commands.Basic.Properties | None = None
        self.content_remaining = -1  # -1: waiting for the content header
        # A body of several frames: copied into content_buffer as its frames arrive, or for a very large
        # one, its frames kept in content_chunks until it is joined (docs/core.md).
        self.content_buffer: io.BytesIO | None = None
        self.content_chunks: list[bytes | memoryview] = []

        # Consumer side: deliveries given out and not yet settled. A set for membership, plus the tags in
        # arrival order so a `multiple` ack settles a prefix without scanning the whole set.
        self.no_ack_consumers: set[str] = set()
        self._unacked: set[int] = set()
        self._unacked_order: deque[int] = deque()

        # Publisher side.
        self.confirm_mode = False
        self.publish_seq = 0  # the last sequence number handed out
        self.confirm_floor = 0  # every publish <= floor is settled
        # Unconfirmed mandatory publishes, oldest first: seq -> (exchange, routing_key). An OrderedDict
        # so that a `multiple` confirm pops them from the front without walking its whole range.
        self._mandatory: OrderedDict[int, tuple[str, str]] = OrderedDict()

    # ---- lifecycle ---------------------------------------------------------------------------------

    def require_open(self) -> None:
        if self.phase is not ChannelPhase.OPEN:
            raise ChannelStateError(f"channel {self.number} is {self.phase.value}, not open")

    def drop_content(self) -> None:
        """Forget a message whose content is still arriving (the channel is being closed)."""
        self.content_kind = 0
        self.content_fields = ()
        self.content_properties = None
        self.content_remaining = -1
        self.content_buffer = None
        self.content_chunks = []

    def body_kept(self) -> bool:
        """Whether part of the body being received is kept already (in its buffer, or as chunks)."""
        return self.content_buffer is not None or bool(self.content_chunks)

    # ---- consumer acknowledgements -----------------------------------------------------------------

    def track_delivery(self, delivery_tag: int) -> None:
        self._unacked.add(delivery_tag)
        self._unacked_order.append(delivery_tag)

    def settle(self, delivery_tag: int, multiple: bool) -> bool:
        """Check and record an ack/nack/reject the caller is about to send; returns whether no delivery
        up to ``delivery_tag`` is left unsettled (then a ``multiple`` ack of it settles nothing more)."""
        unacked, order = self._unacked, self._unacked_order
        if multiple:
            if delivery_tag == 0:  # "everything outstanding", as the spec defines it
                unacked.clear()
                order.clear()
                return True
            if delivery_tag not in unacked:
                raise UnknownDeliveryTag(self._unknown_tag_message(delivery_tag))
            while order and order[0] <= delivery_tag:
                unacked.discard(order.popleft())
            return True
        try:
            unacked.remove(delivery_tag)
        except KeyError:
            raise UnknownDeliveryTag(self._unknown_tag_message(delivery_tag)) from None
        # Drop already-settled tags from the front so the order queue stays as small as the set.
        while order and order[0] not in unacked:
            order.popleft()
        return not order or order[0] > delivery_tag

    def forget_deliveries(self) -> None:
        """Every unacknowledged delivery is void (``Basic.Recover`` redelivers them with new tags)."""
        self._unacked.clear()
        self._unacked_order.clear()

    def _unknown_tag_message(self, delivery_tag: int) -> str:
        return (
            f"channel {self.number} has no unacknowledged delivery with tag {delivery_tag} "
            "(already acknowledged, consumed with no_ack, or never delivered)"
        )

    # ---- publisher confirms ------------------------------------------------------------------------

    def next_publish(self, exchange: str, routing_key: str, mandatory: bool) -> int | None:
        if not self.confirm_mode:
            return None
        self.publish_seq += 1
        if mandatory:
            self._mandatory[self.publish_seq] = (exchange, routing_key)
        return self.publish_seq

    def confirm_range(self, delivery_tag: int, multiple: bool) -> tuple[int, int] | None:
        """The publishes a Basic.Ack/Nack settles, or None when it names a publish never made.

        Costs O(1) plus one step per mandatory publish it settles, however long the range: the
        settled range is reported as ``(first, last)``, never enumerated. ``first`` is one past the
        floor below which everything is settled; numbers in the range that single confirms already
        settled are reported again (the reader skips them).
        """
        # A tag past 2**63 decodes as negative (delivery tags are read signed, as pamqp does).
        if not 0 <= delivery_tag <= self.publish_seq or (delivery_tag == 0 and not multiple):
            return None
        mandatory = self._mandatory
        if not multiple:
            if delivery_tag == self.confirm_floor + 1:
                self.confirm_floor = delivery_tag
            if mandatory:
                mandatory.pop(delivery_tag, None)
            return delivery_tag, delivery_tag
        last = delivery_tag or self.publish_seq  # multiple with tag 0: everything published so far
        if last == 0:
            return None
        if last <= self.confirm_floor:
            return last, last  # settles nothing new
        first = self.confirm_floor + 1
        self.confirm_floor = last
        while mandatory and next(iter(mandatory)) <= last:
            mandatory.popitem(last=False)
        return first, last

    def match_return(self, exchange: str, routing_key: str) -> int | None:
        """The sequence number of the oldest unconfirmed mandatory publish to (exchange, routing_key).

        The broker sends Basic.Return before the confirm of the same publish and in publish order, so
        the oldest unconfirmed mandatory publish with the same address is the one returned.
        """
        for seq, address in self._mandatory.items():
            if address == (exchange, routing_key):
                del self._mandatory[seq]
                return seq
        return None
