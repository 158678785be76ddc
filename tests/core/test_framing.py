"""The frame envelope: split invariance over recorded conversations, size limits, and broken frames."""

from __future__ import annotations

import copy
import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands

from amqp_core import Connection, Delivery, RemoteProtocolError

from .peer import (
    HEARTBEAT,
    Peer,
    chunked,
    decode_all,
    deliver,
    load,
    method,
    opened,
    outcome,
    run_recorded,
)
from .scenarios import SCENARIOS

RECORDED = sorted(SCENARIOS)


def split_points(size: int) -> range | list[int]:
    """Every offset inside a burst; for the one huge burst (a 300 kB message), a dense sample.

    The huge burst is cut at every offset within its first and last 512 bytes, around every frame boundary
    and then every 2003 bytes; :func:`test_recorded_conversation_byte_by_byte` cuts it everywhere at once.
    """
    if size <= 4096:
        return range(1, size)
    return sorted({*range(1, 512), *range(size - 512, size), *range(1, size, 2003)})


def near_frame_boundaries(data: bytes) -> list[int]:
    points, pos = [], 0
    while pos + 7 <= len(data):
        size = struct.unpack_from(">I", data, pos + 3)[0]
        for delta in range(-9, 10):
            points.append(pos + delta)
            points.append(pos + 7 + size + delta)
        pos += size + 8
    return points


@pytest.mark.parametrize("name", RECORDED)
def test_every_split_point_of_a_recorded_conversation_decodes_identically(name: str) -> None:
    checked = 0

    def feed(connection: Connection, data: bytes) -> list:
        nonlocal checked
        reference = outcome(copy.deepcopy(connection), [data])
        points = set(split_points(len(data)))
        if len(data) > 4096:
            points.update(p for p in near_frame_boundaries(data) if 0 < p < len(data))
        for point in sorted(points):
            split = outcome(copy.deepcopy(connection), [data[:point], data[point:]])
            assert split == reference, f"{name}: cut at byte {point} of a {len(data)}-byte burst"
            checked += 1
        return connection.receive_data(data, 0.0)

    assert run_recorded(name, feed) == run_recorded(name)
    assert checked > 100


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_conversation_byte_by_byte(name: str) -> None:
    def feed(connection: Connection, data: bytes) -> list:
        events = []
        for i in range(len(data)):
            events += connection.receive_data(data[i : i + 1], 0.0)
            assert len(connection._in) <= connection.frame_max + 8
        return events

    assert run_recorded(name, feed) == run_recorded(name)


@pytest.mark.parametrize("name", RECORDED)
@pytest.mark.parametrize("read_type", [bytearray, memoryview])
def test_reads_of_any_buffer_type_decode_like_bytes(name: str, read_type: type) -> None:
    """A reused bytearray, or a view of one, decodes like bytes, and nothing keeps it afterwards."""

    def feed(connection: Connection, data: bytes) -> list:
        buffer = bytearray(data)
        events = connection.receive_data(read_type(buffer), 0.0)
        buffer[:] = bytes(len(buffer))  # the caller reuses its buffer
        return events

    assert run_recorded(name, feed) == run_recorded(name)


def test_three_way_splits_of_interleaved_deliveries() -> None:
    peer = opened()
    peer.open_channel()
    peer.open_channel()
    stream = deliver(1, 1, b"a" * 10) + deliver(2, 1, b"b" * 5) + HEARTBEAT + deliver(1, 2, b"")
    reference = outcome(copy.deepcopy(peer.connection), [stream])
    assert [type(e) for e in reference[0]] == [Delivery] * 3
    for first in range(0, len(stream), 3):
        for second in range(first, len(stream), 7):
            pieces = [stream[:first], stream[first:second], stream[second:]]
            assert outcome(copy.deepcopy(peer.connection), pieces) == reference


def test_large_reads_decode_like_one_read() -> None:
    """Reads of 16 KiB and more are parsed in place, with a large waiting frame completed first.

    Small, single-frame and multi-frame deliveries on two channels with heartbeats between them, cut
    into reads of random sizes (small ones too, so that both paths meet) and at every offset around
    the frame boundaries of one large message.
    """
    import random

    peer = opened()  # frame_max 131072
    peer.open_channel()
    peer.open_channel()
    rng = random.Random(5)
    stream = b"".join(
        deliver(1 + tag % 2, 1 + tag // 2, bytes([tag]) * size, chunk=131072 - 8) + HEARTBEAT * (tag % 3 == 0)
        for tag, size in enumerate([100, 70_000, 0, 300_000, 20_000, 131064, 131065, 5, 1_000_000, 64])
    )
    reference = outcome(copy.deepcopy(peer.connection), [stream])
    assert [type(e) for e in reference[0]] == [Delivery] * 10
    for _ in range(40):
        cuts, point = [], 0
        while point < len(stream):
            point += rng.choice([rng.randrange(1, 300), rng.randrange(16 * 1024, 300 * 1024)])
            cuts.append(point)
        connection = copy.deepcopy(peer.connection)
        result = outcome(connection, chunked(stream, cuts))
        assert result == reference
        assert all(type(event.body) is bytes for event in result[0])  # never a view of a read
        assert not connection._in and connection._split is None
    big = deliver(1, 1, b"x" * 300_000, chunk=131072 - 8)
    reference = outcome(copy.deepcopy(peer.connection), [big])
    for first in near_frame_boundaries(big):
        for second in (first + 16 * 1024, first + 131072, first + 200_000):
            assert outcome(copy.deepcopy(peer.connection), chunked(big, [first, second])) == reference


def test_recordings_hold_the_scenarios() -> None:
    for name in RECORDED:
        assert load(name).frames, name


# ---- size limits ------------------------------------------------------------------------------------


def close_code(peer: Peer) -> int:
    """The reply code of the Connection.Close the client queued (decoded by pamqp)."""
    frames = decode_all(peer.connection.data_to_send(0.0))
    closes = [f for c, f in frames if c == 0 and isinstance(f, commands.Connection.Close)]
    assert len(closes) == 1, frames
    return closes[0].reply_code


@pytest.mark.parametrize("frame_type", [1, 2, 3, 8])
def test_frame_larger_than_frame_max_is_refused_before_its_payload_arrives(frame_type: int) -> None:
    peer = opened()  # frame_max 131072
    peer.open_channel()
    head = struct.pack(">BHI", frame_type, 1, 131072 - 8 + 1)  # one byte over
    with pytest.raises(RemoteProtocolError, match="more than the negotiated frame_max of 131072") as caught:
        peer.feed(head + b"\x00" * 100)
    assert caught.value.reply_code == 501
    assert len(peer.connection._in) < 200  # the payload was never waited for
    assert close_code(peer) == 501
    assert peer.connection.closed


def test_frame_exactly_frame_max_is_accepted() -> None:
    peer = opened(frame_max=4096)
    peer.open_channel()
    payload = b"x" * (4096 - 8)
    (delivery,) = peer.feed(deliver(1, 1, payload))
    assert delivery.body == payload


def test_huge_announced_size_is_refused_from_the_header_alone() -> None:
    peer = opened()
    with pytest.raises(RemoteProtocolError) as caught:
        peer.feed(struct.pack(">BHI", 3, 1, 0xFFFFFFFF))
    assert caught.value.reply_code == 501
    assert len(peer.connection._in) <= 7


def test_before_tune_the_limit_is_4096() -> None:
    connection = Connection()
    connection.initiate(0.0)
    connection.data_to_send(0.0)
    with pytest.raises(RemoteProtocolError, match="frame_max of 4096") as caught:
        connection.receive_data(struct.pack(">BHI", 1, 0, 4096 - 8 + 1) + b"\x00\x0a", 0.0)
    assert caught.value.reply_code == 501
    assert len(connection._in) < 100
    assert connection.closed


def test_a_start_of_exactly_4096_bytes_is_accepted() -> None:
    start = commands.Connection.Start(server_properties={"pad": ""}, mechanisms="PLAIN")
    size = len(method(0, start))
    start.server_properties = {"pad": "x" * (4096 - size)}
    frame = method(0, start)
    assert len(frame) == 4096
    connection = Connection()
    connection.initiate(0.0)
    assert connection.receive_data(frame, 0.0) == []
    assert connection.server_properties["pad"] == "x" * (4096 - size)


def test_bad_frame_end_octet_is_a_frame_error() -> None:
    peer = opened()
    peer.open_channel()
    frame = bytearray(method(1, commands.Basic.QosOk()))
    frame[-1] = 0x00
    with pytest.raises(RemoteProtocolError, match="frame-end") as caught:
        peer.feed(bytes(frame))
    assert caught.value.reply_code == 501
    assert close_code(peer) == 501


def test_a_body_of_several_frames_keeps_no_read_alive() -> None:
    """Up to 4 MiB, a body is copied into its own buffer as its frames arrive: a read is not kept
    waiting for the rest of the message (with large reads, that made glibc give the heap back and fault
    it in again)."""
    import sys

    peer = opened()  # frame_max 131072
    peer.open_channel()
    message = deliver(1, 1, bytes(range(256)) * 4096, chunk=131072 - 8)  # 1 MiB, 9 body frames
    reads = chunked(message, range(300_000, len(message), 300_000))

    def references() -> list[int]:
        return [sys.getrefcount(read) for read in reads]

    alone = references()
    events = []
    for index in range(len(reads) - 1):
        events += peer.connection.receive_data(reads[index], 0.0)
        # Not even a body frame cut by its end: what arrived of it is copied into the buffer at once.
        assert references() == alone
    assert events == []
    (delivery,) = peer.connection.receive_data(reads[-1], 0.0)
    assert delivery.body == bytes(range(256)) * 4096 and type(delivery.body) is bytes
    assert references() == alone


def test_a_body_over_4_mib_is_assembled_from_its_frames() -> None:
    """A body larger than 4 MiB is not allocated ahead (a peer could announce it and send one frame):
    its frames are kept, as views of immutable reads or as copies of the others, and joined once it is
    complete. Reads of every type, in turn; a bytearray is overwritten once it was fed."""
    import random

    peer = opened()
    peer.open_channel()
    body = bytes(range(251)) * 20_000 + b"end"  # 5,020,003 bytes
    stream = deliver(1, 1, body, chunk=131072 - 8) + deliver(1, 2, b"next")
    rng = random.Random(3)
    cuts, point = [], 0
    while point < len(stream):
        point += rng.choice([rng.randrange(1, 300), rng.randrange(16 * 1024, 600 * 1024)])
        cuts.append(point)
    events = []
    for number, piece in enumerate(chunked(stream, cuts)):
        read = [bytes, bytearray, memoryview][number % 3](piece)
        events += peer.connection.receive_data(read, 0.0)
        if type(read) is bytearray:
            read[:] = bytes(len(read))
    assert [event.body for event in events] == [body, b"next"]
    assert type(events[0].body) is bytes


def frame_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 8 + struct.unpack_from(">I", data, pos + 3)[0]
    return starts


@pytest.mark.parametrize(
    ("frame", "offset"),
    [(0, 3), (0, 20), (1, 3), (1, 12), (2, 3)],
    ids=["method header", "method payload", "content header's header", "content header", "body header"],
)
def test_a_large_read_completes_the_frame_waiting_in_the_buffer_and_is_parsed_in_place(
    frame: int, offset: int
) -> None:
    """Only the rest of the waiting frame is copied into the receive buffer, not the whole read.

    The read is then parsed where it is, as when nothing was waiting: what arrived of the large body
    frame its end cuts is copied into its message's buffer, the rest when the next read brings it.
    """
    peer = opened()  # frame_max 131072
    peer.open_channel()
    message = deliver(1, 1, bytes(range(256)) * 1200, chunk=131072 - 8)  # three body frames
    reference = outcome(copy.deepcopy(peer.connection), [message])
    cut = frame_starts(message)[frame] + offset
    second = frame_starts(message)[3] + 1000  # inside the second body frame
    connection = peer.connection
    assert connection.receive_data(message[:cut], 0.0) == []
    assert connection.receive_data(message[cut:second], 0.0) == []
    assert not connection._in and connection._body_stream is not None
    assert outcome(connection, [message[second:]]) == reference


def body_frame(size: int) -> bytes:
    return struct.pack(">BHI", 3, 1, size) + b"b" * size + b"\xce"


def test_a_body_frame_over_frame_max_is_refused_in_the_middle_of_a_body() -> None:
    peer = opened()  # frame_max 131072
    peer.open_channel()
    start = deliver(1, 1, b"x" * 400_000, chunk=100_000)[: -(3 * 100_008)]  # up to its first body frame
    over = body_frame(131072 - 8 + 1)  # one byte over
    with pytest.raises(RemoteProtocolError, match="more than the negotiated frame_max") as caught:
        peer.feed(start + body_frame(100_000) + over)
    assert caught.value.reply_code == 501


@pytest.mark.parametrize("rest", [0, 30_000], ids=["whole", "cut by the end of the read"])
def test_a_body_frame_larger_than_the_rest_of_its_body_is_an_unexpected_frame(rest: int) -> None:
    peer = opened()
    peer.open_channel()
    start = deliver(1, 1, b"x" * 150_000, chunk=100_000)[:-50_008]  # up to its first body frame
    larger = body_frame(60_000)  # 50,000 are left
    with pytest.raises(RemoteProtocolError, match="larger than its header announced") as caught:
        peer.feed(start + larger[: len(larger) - rest])
    assert caught.value.reply_code == 505


# A body of several frames of 20,000 bytes (copied into its buffer as each read brings them), of
# several frames of 2,000 bytes (too small: each waits whole), and of one frame.
SEVERAL_FRAMES = {"streamed": 20_000, "small frames": 2_000, "one frame": 0}


@pytest.mark.parametrize("chunk", SEVERAL_FRAMES.values(), ids=SEVERAL_FRAMES.keys())
def test_bodies_decode_the_same_at_every_cut_near_their_frame_boundaries(chunk: int) -> None:
    """Two reads, cut at every offset within 9 bytes of a frame's start or end: a read that ends
    just before a body frame's frame-end octet, or just after it, included."""
    peer = opened()
    peer.open_channel()
    stream = (
        deliver(1, 1, bytes(range(256)) * 400, chunk=chunk)
        + deliver(1, 2, b"y" * 50_000, chunk=chunk)
        + deliver(1, 3, b"z")
    )
    reference = outcome(copy.deepcopy(peer.connection), [stream])
    assert [type(event) for event in reference[0]] == [Delivery, Delivery, Delivery]
    for cut in sorted(set(near_frame_boundaries(stream))):
        assert outcome(copy.deepcopy(peer.connection), chunked(stream, [cut])) == reference, cut


def interleaved_deliveries(bodies: dict[int, bytes], chunk: int) -> bytes:
    """A delivery on each channel, their frames taken in turn: the content of one channel is
    contiguous on that channel only, as the spec allows."""
    messages = []
    for channel, body in bodies.items():
        message = deliver(channel, 1, body, chunk=chunk)
        starts = [*frame_starts(message), len(message)]
        messages.append([message[a:b] for a, b in itertools.pairwise(starts)])
    frames = []
    for turn in range(max(map(len, messages))):
        frames += [message[turn] for message in messages if turn < len(message)]
    return b"".join(frames)


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(1, 400_000), max_size=16), chunk=st.sampled_from([20_000, 4096, 4095]))
def test_bodies_of_several_frames_decode_the_same_however_reads_cut_them(cuts: list[int], chunk: int) -> None:
    """Reads of every size, large ones parsed in place and small ones through the receive buffer,
    cutting body frames anywhere, across three or more reads too; the body frames of two channels
    taking turns."""
    peer = opened()
    peer.open_channel()
    peer.open_channel()
    one = bytes(range(256)) * 400  # 102,400 bytes
    stream = b"".join(
        deliver(1, tag, bytes([tag]) * size, chunk=chunk)
        for tag, size in enumerate([150_000, 30, 120_000, 4096], start=1)
    ) + interleaved_deliveries({1: one, 2: one[::-1]}, chunk)
    reference = outcome(copy.deepcopy(peer.connection), [stream])
    bodies = [(event.channel, event.body) for event in reference[0] if isinstance(event, Delivery)]
    assert bodies[-2:] == [(1, one), (2, one[::-1])] or bodies[-2:] == [(2, one[::-1]), (1, one)]
    assert len(bodies) == 6
    assert outcome(peer.connection, chunked(stream, cuts)) == reference


@pytest.mark.parametrize("chunk", SEVERAL_FRAMES.values(), ids=SEVERAL_FRAMES.keys())
def test_bad_frame_end_octet_of_a_body_frame_split_across_large_reads(chunk: int) -> None:
    peer = opened()
    peer.open_channel()
    first = deliver(1, 1, b"a" * 10)
    message = bytearray(deliver(1, 2, b"x" * 100_000, chunk=chunk))
    message[-1] = 0x00
    cut = len(message) - 19_000  # both reads are parsed in place; the last body frame spans them
    assert len(peer.feed(first + message[:cut])) == 1
    with pytest.raises(RemoteProtocolError, match="frame-end") as caught:
        peer.feed(bytes(message[cut:]) + deliver(1, 3))
    assert caught.value.events == []
    assert close_code(peer) == 501


def test_unknown_frame_type_is_a_frame_error() -> None:
    peer = opened()
    with pytest.raises(RemoteProtocolError, match="unknown frame type 9") as caught:
        peer.feed(b"\x09\x00\x00\x00\x00\x00\x00\xce")
    assert caught.value.reply_code == 501
    assert close_code(peer) == 501


def test_short_method_frame_is_a_syntax_error() -> None:
    peer = opened()
    with pytest.raises(RemoteProtocolError, match="shorter than its class and method id") as caught:
        peer.feed(b"\x01\x00\x00\x00\x00\x00\x02\x00\x0a\xce")
    assert caught.value.reply_code == 502
    assert close_code(peer) == 502


def test_unknown_method_is_a_syntax_error() -> None:
    peer = opened()
    with pytest.raises(RemoteProtocolError, match="malformed method frame") as caught:
        peer.feed(b"\x01\x00\x00\x00\x00\x00\x04\x00\x63\x00\x01\xce")
    assert caught.value.reply_code == 502


def test_malformed_deliver_on_the_fast_path_is_a_syntax_error() -> None:
    peer = opened()
    peer.open_channel()
    frame = method(1, commands.Basic.Deliver("ctag", 1, False, "", "rk"))
    truncated = frame[:7] + frame[7:-3] + b"\xce"
    truncated = truncated[:3] + struct.pack(">I", len(truncated) - 8) + truncated[7:]
    with pytest.raises(RemoteProtocolError, match="malformed method frame") as caught:
        peer.feed(truncated)
    assert caught.value.reply_code == 502
    assert close_code(peer) == 502


def test_heartbeat_frames_are_accepted_silently() -> None:
    peer = opened()
    assert peer.feed(HEARTBEAT, HEARTBEAT) == []
    assert peer.connection.data_to_send(0.0) == b""


def test_nothing_is_read_after_a_violation() -> None:
    peer = opened()
    peer.open_channel()
    bad = bytearray(method(1, commands.Basic.QosOk()))
    bad[-1] = 0
    with pytest.raises(RemoteProtocolError):
        peer.feed(bytes(bad) + method(1, commands.Basic.QosOk()))
    assert close_code(peer) == 501
    # The stream is out of step: whatever comes next is dropped, not parsed (and not buffered).
    assert peer.feed(b"\x01" * 5000) == []
    assert peer.connection.data_to_send(0.0) == b""
    assert len(peer.connection._in) == 0


def test_events_before_a_violation_are_not_lost() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.confirm_select(1)
    peer.sent()
    peer.feed(method(1, commands.Confirm.SelectOk()))
    peer.connection.basic_publish(1, b"m")
    peer.sent()
    bad = bytearray(method(1, commands.Basic.QosOk()))
    bad[-1] = 0
    with pytest.raises(RemoteProtocolError) as caught:
        peer.feed(deliver(1, 1), method(1, commands.Basic.Ack(1, False)), bytes(bad))
    assert [type(e).__name__ for e in caught.value.events] == ["Delivery", "PublishConfirmed"]


def test_heartbeat_on_a_channel_other_than_zero_is_a_frame_error() -> None:
    peer = opened()
    with pytest.raises(RemoteProtocolError, match="heartbeat frame on channel 3") as caught:
        peer.feed(b"\x08\x00\x03\x00\x00\x00\x00\xce")
    assert caught.value.reply_code == 501
