"""Messages against a scripted broker: content assembly, publisher confirms, returns, consumer acks."""

from __future__ import annotations

import datetime
import itertools
import struct

import pytest
from pamqp import commands

from amqp_core import (
    Connection,
    Delivery,
    FrameTooLarge,
    GetOk,
    LocalProtocolError,
    MethodReply,
    PublishConfirmed,
    RemoteProtocolError,
    Returned,
    StaleDelivery,
    UnknownDeliveryTag,
    codec,
)

from .peer import Peer, content, decode_all, deliver, method, opened


def close_code(peer: Peer) -> int:
    frames = decode_all(peer.connection.data_to_send(0.0))
    closes = [f for c, f in frames if c == 0 and isinstance(f, commands.Connection.Close)]
    assert len(closes) == 1, frames
    return closes[0].reply_code


def consuming(channels: int = 1, **settings: object) -> Peer:
    peer = opened(**settings)
    for _ in range(channels):
        peer.open_channel()
    return peer


# ---- content assembly -------------------------------------------------------------------------------

PROPERTIES = commands.Basic.Properties(
    content_type="application/json",
    content_encoding="utf-8",
    headers={"x-n": 1, "nested": {"a": [1, "two", True]}},
    delivery_mode=2,
    priority=5,
    correlation_id="corr",
    reply_to="amq.rabbitmq.reply-to",
    expiration="60000",
    message_id="m-1",
    timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    message_type="order",
    user_id="guest",
    app_id="app",
)


def test_delivery_with_every_property() -> None:
    peer = consuming()
    (delivery,) = peer.feed(deliver(1, 7, b'{"a": 1}', properties=PROPERTIES, redelivered=True, exchange="x"))
    assert delivery == Delivery(1, 1, "ctag", 7, True, "x", "rk", PROPERTIES, b'{"a": 1}')


def test_delivery_with_a_second_property_flags_word() -> None:
    # The spec chains flags words by their low bit; RabbitMQ never sends a second one, so the whole
    # delivery read at once leaves its usual path for the frame-by-frame one, with the same result.
    peer = consuming()
    properties = commands.Basic.Properties(content_type="text/plain", message_id="m-2")
    encoded = codec.encode_properties(properties)
    flags = struct.unpack(">H", encoded[:2])[0] | 1
    payload = struct.pack(">HHQHH", 60, 0, 2, flags, 0) + encoded[2:]
    header = struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
    body = struct.pack(">BHI", 3, 1, 2) + b"ok\xce"
    start = method(1, commands.Basic.Deliver("ctag", 3, False, "", "rk"))
    (delivery,) = peer.feed(start + header + body)
    assert delivery == Delivery(1, 1, "ctag", 3, False, "", "rk", properties, b"ok")


def test_multi_frame_bodies() -> None:
    peer = consuming(frame_max=4096)
    body = bytes(range(256)) * 100  # 25600 bytes: seven body frames
    (delivery,) = peer.feed(deliver(1, 1, body, chunk=4088))
    assert delivery.body == body
    (delivery,) = peer.feed(deliver(1, 2, body, chunk=1))  # one byte per frame
    assert delivery.body == body


def test_empty_body_has_no_body_frame() -> None:
    peer = consuming()
    (delivery,) = peer.feed(deliver(1, 1, b""))
    assert delivery.body == b""


def test_empty_body_frames_are_accepted() -> None:
    peer = consuming()
    empty_body = b"\x03\x00\x01\x00\x00\x00\x00\xce"
    start = method(1, commands.Basic.Deliver("c", 1, False, "", "rk"))
    header_and_body = content(1, b"ab", chunk=1)
    header = header_and_body[: len(header_and_body) - 18]
    bodies = header_and_body[len(header) :]
    assert peer.feed(start, header, empty_body, bodies[:9], empty_body * 1000) == []
    state = peer.connection._channels[1]
    assert state.content_buffer is not None and state.content_buffer.tell() == 1  # the one byte so far
    assert not state.content_chunks  # the empty frames kept nothing
    (delivery,) = peer.feed(bodies[9:])
    assert delivery.body == b"ab"


def test_content_interleaved_across_channels() -> None:
    peer = consuming(channels=3)
    one = deliver(1, 1, b"1" * 30, chunk=7, consumer_tag="c1")
    two = deliver(2, 1, b"2" * 20, chunk=3, consumer_tag="c2")
    three = deliver(3, 1, b"3" * 5, chunk=5, consumer_tag="c3")
    frames = [split_frames(one), split_frames(two), split_frames(three)]
    # Round-robin: a frame of each channel in turn, so all three messages are in flight at once.
    stream = b""
    while any(frames):
        for queue in frames:
            if queue:
                stream += queue.pop(0)
    events = peer.feed(stream)
    assert sorted((e.channel, e.consumer_tag, e.body) for e in events) == [
        (1, "c1", b"1" * 30),
        (2, "c2", b"2" * 20),
        (3, "c3", b"3" * 5),
    ]
    # In the order they completed: channel 3's three frames, channel 1's seven, channel 2's nine.
    assert [e.channel for e in events] == [3, 1, 2]


def split_frames(data: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">I", data, pos + 3)[0]
        frames.append(data[pos : pos + size + 8])
        pos += size + 8
    return frames


def test_body_size_cap_is_refused_at_the_header() -> None:
    peer = consuming(max_body_size=1000)
    start = method(1, commands.Basic.Deliver("c", 1, False, "", "rk"))
    header = content(1, b"x" * 1001)[:-1009]  # the header frame only: the body never comes
    with pytest.raises(RemoteProtocolError, match="more than this client's max_body_size of 1000") as caught:
        peer.feed(start, header)
    assert caught.value.reply_code == 506
    assert close_code(peer) == 506
    assert len(peer.connection._in) == 0
    # Exactly the cap is fine.
    peer = consuming(max_body_size=1000)
    (delivery,) = peer.feed(deliver(1, 1, b"x" * 1000, chunk=100))
    assert len(delivery.body) == 1000


@pytest.mark.parametrize("chunk", [0, 400], ids=["one body frame", "several body frames"])
def test_body_size_cap_is_refused_when_the_whole_message_is_in_one_read(chunk: int) -> None:
    peer = consuming(max_body_size=1000)
    with pytest.raises(RemoteProtocolError, match="max_body_size of 1000") as caught:
        peer.feed(deliver(1, 1, b"x" * 1001, chunk=chunk))
    assert caught.value.reply_code == 506


def test_a_huge_announced_body_is_refused_without_allocating() -> None:
    peer = consuming()
    start = method(1, commands.Basic.Deliver("c", 1, False, "", "rk"))
    header = bytearray(content(1, b"x")[:-9])
    struct.pack_into(">Q", header, 11, 2**63)  # the body-size field
    with pytest.raises(RemoteProtocolError) as caught:
        peer.feed(start, bytes(header))
    assert caught.value.reply_code == 506


def test_malformed_content_header_is_a_syntax_error() -> None:
    peer = consuming()
    start = method(1, commands.Basic.Deliver("c", 1, False, "", "rk"))
    with pytest.raises(RemoteProtocolError, match="malformed content header") as caught:
        peer.feed(start, b"\x02\x00\x01\x00\x00\x00\x03abc\xce")
    assert caught.value.reply_code == 502


def test_get_ok_carries_its_message() -> None:
    peer = consuming()
    peer.connection.basic_get(1, "q")
    peer.sent()
    events = peer.feed(
        method(1, commands.Basic.GetOk(3, True, "x", "rk", 41)), content(1, b"got", PROPERTIES)
    )
    assert events == [GetOk(1, 1, 3, True, "x", "rk", 41, PROPERTIES, b"got")]


def test_get_ok_nobody_asked_for_is_command_invalid() -> None:
    peer = consuming()
    with pytest.raises(RemoteProtocolError, match="no reply was expected") as caught:
        peer.feed(method(1, commands.Basic.GetOk(3, True, "x", "rk", 41)))
    assert caught.value.reply_code == 503


# ---- large bodies, sent by reference ----------------------------------------------------------------


def test_pieces_to_send_hold_large_bodies_by_reference_between_joined_small_frames() -> None:
    peer = consuming(frame_max=131072)
    c = peer.connection
    small, large, other = b"s" * 100, bytes(range(256)) * 1024, b"L" * 70_000  # 256 KiB: 2 frames
    c.basic_publish(1, small, routing_key="a")
    c.basic_publish(1, small, routing_key="b")
    c.basic_publish(1, large, routing_key="c")
    c.basic_publish(1, other, routing_key="d")  # right after a large one
    c.basic_publish(1, small, routing_key="e")
    c.basic_publish(1, bytearray(other), routing_key="f")  # not bytes: copied, as a small frame is
    c.basic_publish(1, large, routing_key="g")
    c.basic_publish(1, small, routing_key="h")
    pieces = c.data_to_send_pieces(peer.now)
    assert c.data_to_send_pieces(peer.now) == []
    # Every byte in order: the same frames as publishing the same messages and taking bytes.
    expected = opened_with_channel_publishing(
        [
            (small, "a"),
            (small, "b"),
            (large, "c"),
            (other, "d"),
            (small, "e"),
            (other, "f"),
            (large, "g"),
            (small, "h"),
        ]
    )
    assert b"".join(pieces) == expected

    # The bodies are the caller's bytes (a body of several frames as slices of them), never copied;
    # what lies between them is one piece per run of frames.
    def by_reference(piece: bytes | memoryview) -> bool:
        return isinstance(piece, memoryview) or piece is other

    bodies = [
        piece.obj if isinstance(piece, memoryview) else piece
        for piece in pieces
        if len(piece) > 1000 and by_reference(piece)
    ]
    assert [id(body) for body in bodies] == [id(large)] * 2 + [id(other)] + [id(large)] * 2

    def small_frames(piece: bytes | memoryview) -> bool:
        return not by_reference(piece) and len(piece) < 16 * 1024

    assert not any(
        small_frames(before) and small_frames(after) for before, after in itertools.pairwise(pieces)
    )


def opened_with_channel_publishing(messages: list[tuple[bytes, str]]) -> bytes:
    """What a connection sends for these publishes on channel 1, taken as bytes."""
    c = consuming(frame_max=131072).connection
    for body, routing_key in messages:
        c.basic_publish(1, body, routing_key=routing_key)
    return c.data_to_send(0.0)


# ---- publisher confirms -----------------------------------------------------------------------------


def confirming(channels: int = 1) -> Peer:
    peer = consuming(channels)
    for channel in range(1, channels + 1):
        peer.connection.confirm_select(channel)
        peer.sent()
        peer.feed(method(channel, commands.Confirm.SelectOk()))
    return peer


def test_sequence_numbers_start_at_one_per_channel() -> None:
    peer = confirming(channels=2)
    assert [peer.connection.basic_publish(1, b"m") for _ in range(3)] == [1, 2, 3]
    assert [peer.connection.basic_publish(2, b"m") for _ in range(2)] == [1, 2]
    peer.sent()
    peer.open_channel()
    assert peer.connection.basic_publish(3, b"m") is None  # not in confirm mode


def test_single_and_multiple_acks_and_nacks() -> None:
    peer = confirming()
    for _ in range(10):
        peer.connection.basic_publish(1, b"m")
    events = peer.feed(
        method(1, commands.Basic.Ack(1, False)),
        method(1, commands.Basic.Ack(3, True)),
        method(1, commands.Basic.Nack(4, False, False)),
        method(1, commands.Basic.Ack(6, False)),
        method(1, commands.Basic.Nack(8, True, True)),
        method(1, commands.Basic.Ack(10, True)),
    )
    assert events == [
        PublishConfirmed(1, 1, 1, True),
        PublishConfirmed(1, 2, 3, True),
        PublishConfirmed(1, 4, 4, False),
        PublishConfirmed(1, 6, 6, True),
        PublishConfirmed(1, 5, 8, False),  # 6 is inside, already settled: the reader skips it
        PublishConfirmed(1, 9, 10, True),
    ]


def test_multiple_confirm_covers_only_the_unsettled_tail() -> None:
    peer = confirming()
    for _ in range(5):
        peer.connection.basic_publish(1, b"m")
    events = peer.feed(
        method(1, commands.Basic.Ack(3, True)),
        method(1, commands.Basic.Ack(2, True)),  # settles nothing new
        method(1, commands.Basic.Ack(5, True)),
    )
    assert events[0] == PublishConfirmed(1, 1, 3, True)
    assert events[1].first <= events[1].last <= 3
    assert events[2] == PublishConfirmed(1, 4, 5, True)


def test_confirms_resolve_by_range_on_a_long_backlog() -> None:
    peer = confirming()
    for n in range(50_000):
        peer.connection.basic_publish(1, b"", mandatory=n % 2 == 0)
    peer.connection.data_to_send(0.0)
    (event,) = peer.feed(method(1, commands.Basic.Ack(49_999, True)))
    assert event == PublishConfirmed(1, 1, 49_999, True)
    (event,) = peer.feed(method(1, commands.Basic.Ack(50_000, False)))
    assert event == PublishConfirmed(1, 50_000, 50_000, True)


@pytest.mark.parametrize(
    "confirm",
    [
        commands.Basic.Ack(4, False),
        commands.Basic.Ack(4, True),
        commands.Basic.Nack(9, False, True),
        commands.Basic.Ack(0, False),
        # 2**64 - 1, which a signed decoder reads as -1
        b"\x01\x00\x01\x00\x00\x00\x0d\x00\x3c\x00\x50" + b"\xff" * 8 + b"\x00\xce",
    ],
)
def test_confirm_for_an_unpublished_sequence_is_command_invalid(confirm: object) -> None:
    peer = confirming()
    for _ in range(3):
        peer.connection.basic_publish(1, b"m")
    peer.sent()
    with pytest.raises(RemoteProtocolError, match="only 3 were published") as caught:
        peer.feed(confirm if isinstance(confirm, bytes) else method(1, confirm))
    assert caught.value.reply_code == 503
    assert close_code(peer) == 503


def test_confirm_outside_confirm_mode_is_command_invalid() -> None:
    peer = consuming()
    peer.connection.basic_publish(1, b"m")
    peer.sent()
    with pytest.raises(RemoteProtocolError, match="not in confirm mode") as caught:
        peer.feed(method(1, commands.Basic.Ack(1, False)))
    assert caught.value.reply_code == 503


def test_multiple_ack_of_zero_confirms_everything() -> None:
    peer = confirming()
    for _ in range(4):
        peer.connection.basic_publish(1, b"m")
    peer.feed(method(1, commands.Basic.Ack(1, False)))
    assert peer.feed(method(1, commands.Basic.Ack(0, True))) == [PublishConfirmed(1, 2, 4, True)]


# ---- returns ----------------------------------------------------------------------------------------


def returned(channel: int, exchange: str, routing_key: str, body: bytes = b"r") -> bytes:
    return method(channel, commands.Basic.Return(312, "NO_ROUTE", exchange, routing_key)) + content(
        channel, body
    )


def test_return_without_confirms_has_no_sequence() -> None:
    peer = consuming()
    peer.connection.basic_publish(1, b"r", "x", "nowhere", mandatory=True)
    (event,) = peer.feed(returned(1, "x", "nowhere"))
    assert event == Returned(1, 312, "NO_ROUTE", "x", "nowhere", commands.Basic.Properties(), b"r", None)


def test_return_is_tied_to_the_publish_it_answers() -> None:
    peer = confirming()
    c = peer.connection
    assert c.basic_publish(1, b"a", "x", "routed", mandatory=True) == 1
    assert c.basic_publish(1, b"b", "x", "lost", mandatory=True) == 2
    assert c.basic_publish(1, b"c", "x", "lost") == 3  # not mandatory: never returned
    assert c.basic_publish(1, b"d", "y", "lost", mandatory=True) == 4
    assert c.basic_publish(1, b"e", "x", "lost", mandatory=True) == 5
    peer.sent()
    events = peer.feed(
        returned(1, "x", "lost", b"b"),
        method(1, commands.Basic.Ack(2, False)),
        returned(1, "y", "lost", b"d"),
        returned(1, "x", "lost", b"e"),
        method(1, commands.Basic.Ack(5, True)),
    )
    seqs = [(e.routing_key, e.body, e.publish_seq) for e in events if isinstance(e, Returned)]
    assert seqs == [("lost", b"b", 2), ("lost", b"d", 4), ("lost", b"e", 5)]
    # A return after every publish was confirmed matches nothing.
    (late,) = peer.feed(returned(1, "x", "routed"))
    assert late.publish_seq is None


def test_confirmed_publishes_are_no_longer_candidates_for_a_return() -> None:
    peer = confirming()
    c = peer.connection
    c.basic_publish(1, b"a", "x", "k", mandatory=True)
    c.basic_publish(1, b"b", "x", "k", mandatory=True)
    c.basic_publish(1, b"c", "x", "k", mandatory=True)
    peer.feed(method(1, commands.Basic.Ack(1, False)), method(1, commands.Basic.Nack(3, False, False)))
    (event,) = peer.feed(returned(1, "x", "k"))
    assert event.publish_seq == 2


# ---- consumer acknowledgements and incarnations -------------------------------------------------------


def delivered(peer: Peer, channel: int, *tags: int) -> list[Delivery]:
    events = peer.feed(*(deliver(channel, tag) for tag in tags))
    assert all(isinstance(e, Delivery) for e in events)
    return events  # type: ignore[return-value]


def test_ack_nack_reject_frames() -> None:
    peer = consuming()
    delivered(peer, 1, 1, 2, 3, 4)
    c = peer.connection
    c.basic_ack(1, 1)
    c.basic_nack(1, 2, requeue=False)
    c.basic_reject(1, 3)
    c.basic_nack(1, 4, multiple=True)
    sent = peer.sent_methods()
    assert [(type(m).__name__, m.delivery_tag) for m in sent] == [
        ("Ack", 1),
        ("Nack", 2),
        ("Reject", 3),
        ("Nack", 4),
    ]
    assert (sent[1].requeue, sent[2].requeue, sent[3].multiple, sent[3].requeue) == (False, True, True, True)


def test_unknown_and_double_acks() -> None:
    peer = consuming()
    delivered(peer, 1, 1, 2)
    c = peer.connection
    with pytest.raises(UnknownDeliveryTag, match="tag 9"):
        c.basic_ack(1, 9)
    with pytest.raises(UnknownDeliveryTag):
        c.basic_ack(1, 0)
    with pytest.raises(UnknownDeliveryTag):
        c.basic_ack(1, 9, multiple=True)
    c.basic_ack(1, 1)
    with pytest.raises(UnknownDeliveryTag, match="already acknowledged"):
        c.basic_ack(1, 1)
    with pytest.raises(UnknownDeliveryTag):
        c.basic_reject(1, 1)
    assert [m.delivery_tag for m in peer.sent_methods()] == [1]


def test_multiple_ack_settles_a_prefix() -> None:
    peer = consuming()
    delivered(peer, 1, 1, 2, 3, 4, 5, 6)
    c = peer.connection
    c.basic_ack(1, 2)
    c.basic_ack(1, 4, multiple=True)  # settles 1, 3 and 4
    for tag in (1, 2, 3, 4):
        with pytest.raises(UnknownDeliveryTag):
            c.basic_ack(1, tag)
    c.basic_ack(1, 6)
    c.basic_ack(1, 5)
    c.basic_ack(1, 0, multiple=True)  # nothing outstanding: still valid, "everything"
    assert len(peer.sent_methods()) == 5


def acks_sent(peer: Peer) -> list[tuple[str, int, bool]]:
    return [(type(m).__name__, m.delivery_tag, m.multiple) for m in peer.sent_methods()]


def test_acks_of_the_oldest_deliveries_go_out_as_one_multiple_ack() -> None:
    peer = consuming()
    delivered(peer, 1, 1, 2, 3, 4, 5, 6)
    c = peer.connection
    for tag in (1, 2, 3):
        c.basic_ack(1, tag)
    assert acks_sent(peer) == [("Ack", 3, True)]
    c.basic_ack(1, 5)  # 4 is still outstanding: a multiple ack of 5 would settle it too
    c.basic_ack(1, 4)
    c.basic_ack(1, 6)  # everything up to 6 is settled now: extends the ack of 4
    assert acks_sent(peer) == [("Ack", 5, False), ("Ack", 6, True)]
    for tag in (4, 5, 6):
        with pytest.raises(UnknownDeliveryTag):
            c.basic_ack(1, tag)


def test_acks_are_merged_only_when_nothing_comes_between() -> None:
    peer = consuming()
    peer.open_channel()
    delivered(peer, 1, 1, 2, 3, 4, 5)
    delivered(peer, 2, 1, 2)
    c = peer.connection
    c.basic_ack(1, 1)
    c.basic_nack(1, 2)
    c.basic_ack(1, 3)  # not merged across the nack
    c.basic_ack(2, 1)  # another channel
    c.basic_ack(1, 4)  # not merged across channel 2's ack
    assert acks_sent(peer) == [
        ("Ack", 1, False),
        ("Nack", 2, False),
        ("Ack", 3, False),
        ("Ack", 1, False),
        ("Ack", 4, False),
    ]
    c.basic_ack(1, 5)  # the ack of 4 was written: a new frame
    c.basic_ack(2, 2)
    c.basic_ack(1, 0, multiple=True)  # "everything outstanding" stays as it is
    assert acks_sent(peer) == [("Ack", 5, False), ("Ack", 2, False), ("Ack", 0, True)]


def test_multiple_ack_of_zero_settles_everything() -> None:
    peer = consuming()
    delivered(peer, 1, 1, 2, 3)
    peer.connection.basic_nack(1, 0, multiple=True)
    with pytest.raises(UnknownDeliveryTag):
        peer.connection.basic_ack(1, 3)


def test_get_ok_deliveries_are_tracked_unless_no_ack() -> None:
    peer = consuming()
    c = peer.connection
    c.basic_get(1, "q")
    c.basic_get(1, "q", no_ack=True)
    peer.sent()
    peer.feed(method(1, commands.Basic.GetOk(1, False, "", "q", 0)), content(1, b"a"))
    peer.feed(method(1, commands.Basic.GetOk(2, False, "", "q", 0)), content(1, b"b"))
    c.basic_ack(1, 1)
    with pytest.raises(UnknownDeliveryTag):
        c.basic_ack(1, 2)


@pytest.mark.parametrize("nowait", [False, True])
def test_no_ack_consumers_are_not_tracked(nowait: bool) -> None:
    peer = consuming()
    c = peer.connection
    c.basic_consume(1, "q", "auto", no_ack=True, nowait=nowait)
    c.basic_consume(1, "q2", "manual")
    peer.sent()
    if not nowait:
        peer.feed(method(1, commands.Basic.ConsumeOk("auto")))
    peer.feed(method(1, commands.Basic.ConsumeOk("manual")))
    peer.feed(deliver(1, 1, consumer_tag="auto"), deliver(1, 2, consumer_tag="manual"))
    with pytest.raises(UnknownDeliveryTag):
        c.basic_ack(1, 1)
    c.basic_ack(1, 2)
    # Once the no-ack consumer is cancelled, a new consumer with the same tag acknowledges again.
    c.basic_cancel(1, "auto")
    peer.sent()
    peer.feed(method(1, commands.Basic.CancelOk("auto")))
    c.basic_consume(1, "q", "auto")
    peer.sent()
    peer.feed(method(1, commands.Basic.ConsumeOk("auto")), deliver(1, 3, consumer_tag="auto"))
    c.basic_ack(1, 3)


def test_server_cancel_forgets_a_no_ack_consumer() -> None:
    peer = consuming()
    c = peer.connection
    c.basic_consume(1, "q", "auto", no_ack=True)
    peer.sent()
    peer.feed(method(1, commands.Basic.ConsumeOk("auto")), method(1, commands.Basic.Cancel("auto", True)))
    assert "auto" not in c._channels[1].no_ack_consumers


def test_ack_for_a_delivery_from_a_closed_channel_is_stale() -> None:
    peer = consuming()
    (old,) = delivered(peer, 1, 1)
    peer.connection.close_channel(1)
    peer.sent()
    peer.feed(method(1, commands.Channel.CloseOk()))
    peer.open_channel()
    (new,) = delivered(peer, 1, 1)  # the same channel number and delivery tag, another message
    assert (old.channel, old.delivery_tag) == (new.channel, new.delivery_tag)
    assert old.incarnation != new.incarnation
    with pytest.raises(StaleDelivery, match="earlier opening of channel 1"):
        peer.connection.basic_ack(1, old.delivery_tag, incarnation=old.incarnation)
    with pytest.raises(StaleDelivery):
        peer.connection.basic_nack(1, old.delivery_tag, incarnation=old.incarnation)
    with pytest.raises(StaleDelivery):
        peer.connection.basic_reject(1, old.delivery_tag, incarnation=old.incarnation)
    assert peer.connection.data_to_send(0.0) == b""
    peer.connection.basic_ack(1, new.delivery_tag, incarnation=new.incarnation)
    assert [m.delivery_tag for m in peer.sent_methods()] == [1]


def test_ack_after_the_broker_closed_the_channel_is_stale() -> None:
    peer = consuming()
    (old,) = delivered(peer, 1, 1)
    peer.feed(method(1, commands.Channel.Close(406, "PRECONDITION_FAILED", 60, 80)))
    with pytest.raises(StaleDelivery):
        peer.connection.basic_ack(1, old.delivery_tag, incarnation=old.incarnation)


def test_ack_after_the_connection_closed_is_stale() -> None:
    peer = consuming()
    (old,) = delivered(peer, 1, 1)
    peer.feed(method(0, commands.Connection.Close(320, "CONNECTION_FORCED", 0, 0)))
    with pytest.raises(StaleDelivery):
        peer.connection.basic_ack(1, old.delivery_tag, incarnation=old.incarnation)


def test_recover_forgets_the_outstanding_deliveries() -> None:
    peer = consuming()
    delivered(peer, 1, 1, 2)
    peer.connection.basic_recover(1)
    peer.sent()
    assert peer.feed(method(1, commands.Basic.RecoverOk())) == [MethodReply(1, commands.Basic.RecoverOk())]
    # The broker redelivers them with new tags; the old ones are dead.
    with pytest.raises(UnknownDeliveryTag):
        peer.connection.basic_ack(1, 1)
    delivered(peer, 1, 3, 4)
    peer.connection.basic_ack(1, 4, multiple=True)


def test_deliveries_on_one_channel_do_not_settle_another() -> None:
    peer = consuming(channels=2)
    delivered(peer, 1, 1)
    delivered(peer, 2, 1, 2)
    peer.connection.basic_ack(2, 2, multiple=True)
    peer.connection.basic_ack(1, 1)
    with pytest.raises(UnknownDeliveryTag):
        peer.connection.basic_ack(2, 1)


def test_ack_with_an_unknown_channel() -> None:
    connection = Connection()
    with pytest.raises(StaleDelivery):
        connection.basic_ack(1, 1, incarnation=1)


def test_a_multiple_confirm_does_not_walk_its_range() -> None:
    from amqp_core.channel import ChannelState

    state = ChannelState(1, 1)
    state.confirm_mode = True
    assert state.next_publish("x", "k", True) == 1
    state.publish_seq = 10**12  # as if a trillion publishes followed: walking them would never end
    assert state.confirm_range(10**12 - 1, True) == (1, 10**12 - 1)
    assert state.match_return("x", "k") is None  # seq 1 was settled, not left behind
    assert state.confirm_range(10**12, False) == (10**12, 10**12)
    assert state.confirm_range(0, True) == (10**12, 10**12)


def test_multiple_zero_with_nothing_published_is_command_invalid() -> None:
    peer = confirming()
    with pytest.raises(RemoteProtocolError, match="only 0 were published"):
        peer.feed(method(1, commands.Basic.Ack(0, True)))


def test_publish_with_a_header_value_that_cannot_be_encoded() -> None:
    peer = consuming()
    with pytest.raises(LocalProtocolError, match="cannot publish") as caught:
        peer.connection.basic_publish(1, b"x", properties=commands.Basic.Properties(headers={"n": 2**70}))
    assert not isinstance(caught.value, FrameTooLarge)
    assert peer.connection.data_to_send(0.0) == b""


def test_publish_with_properties_already_encoded() -> None:
    """The same frames as from a ``Basic.Properties``, and the same check against ``frame_max``."""
    properties = commands.Basic.Properties(content_type="text/plain", headers={"n": 1}, priority=4)
    peer = consuming()
    connection = peer.connection
    for body in (b"", b"x" * 100, b"y" * 300_000):
        connection.basic_publish(1, body, "", "q", properties)
        expected = connection.data_to_send(0.0)
        connection.basic_publish(1, body, "", "q", codec.encode_properties(properties))
        assert connection.data_to_send(0.0) == expected
    too_large = codec.encode_properties(commands.Basic.Properties(headers={"k": "v" * 200_000}))
    with pytest.raises(FrameTooLarge, match="content header of 200033 bytes"):
        connection.basic_publish(1, b"x", "", "q", too_large)
    assert connection.data_to_send(0.0) == b""


def test_method_replies_compare_by_value() -> None:
    reply = MethodReply(1, commands.Queue.DeclareOk("q", 1, 2))
    assert reply == MethodReply(1, commands.Queue.DeclareOk("q", 1, 2))
    assert reply != MethodReply(1, commands.Queue.DeclareOk("q", 1, 3))
    assert reply != MethodReply(2, commands.Queue.DeclareOk("q", 1, 2))
    assert reply != ("not", "an event")
    assert len({reply, MethodReply(1, commands.Queue.DeclareOk("q", 1, 2))}) == 1
