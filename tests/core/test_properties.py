"""Property-based tests (hypothesis): split invariance, hostile input, and random valid conversations."""

from __future__ import annotations

import copy
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pamqp import commands

from amqp_core import (
    Connection,
    Delivery,
    HandshakeError,
    PublishConfirmed,
    RemoteProtocolError,
    Returned,
    UnknownDeliveryTag,
)

from .peer import HEARTBEAT, Peer, chunked, content, decode_all, deliver, method, opened, outcome
from .scenarios import SCENARIOS

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every broker burst of every recorded conversation, with the connection state it arrives in.
_BURSTS: list[tuple[str, Connection, bytes]] = []


def recorded_bursts() -> list[tuple[str, Connection, bytes]]:
    """(scenario, a copy of the connection just before the burst, the burst's bytes), for every burst."""
    if not _BURSTS:
        from .peer import run_recorded

        for name in sorted(SCENARIOS):

            def keep(connection: Connection, data: bytes, name: str = name) -> list[Any]:
                if len(data) < 20_000:  # the 300 kB message is split-tested in test_framing
                    _BURSTS.append((name, copy.deepcopy(connection), data))
                return connection.receive_data(data, 0.0)

            run_recorded(name, keep)
    return _BURSTS


cuts = st.lists(st.integers(min_value=1, max_value=1 << 20), max_size=30)


@FAST
@given(index=st.integers(min_value=0), cut=cuts)
def test_random_chunkings_of_recorded_bursts_decode_identically(index: int, cut: list[int]) -> None:
    bursts = recorded_bursts()
    name, connection, data = bursts[index % len(bursts)]
    reference = outcome(copy.deepcopy(connection), [data])
    pieces = chunked(data, [c % (len(data) + 1) for c in cut])
    assert outcome(copy.deepcopy(connection), pieces) == reference, name


# ---- random valid conversations -------------------------------------------------------------------

bodies = st.binary(max_size=200)
properties = st.builds(
    commands.Basic.Properties,
    content_type=st.none() | st.sampled_from(["text/plain", "application/json"]),
    headers=st.none()
    | st.dictionaries(st.text(max_size=8), st.integers(-100, 100) | st.text(max_size=8), max_size=3),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 9),
    message_id=st.none() | st.text(max_size=20),
)


@st.composite
def interleaved_deliveries(draw: st.DrawFn) -> tuple[bytes, dict[int, list[tuple[int, bytes]]]]:
    """Deliveries on channels 1-3 whose frames are interleaved at random, heartbeats sprinkled in.

    Returns the stream and, per channel, the (tag, body) of its deliveries in order.
    """
    per_channel: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
    expected: dict[int, list[tuple[int, bytes]]] = {1: [], 2: [], 3: []}
    for _ in range(draw(st.integers(1, 8))):
        channel = draw(st.sampled_from([1, 2, 3]))
        body = draw(bodies)
        tag = len(expected[channel]) + 1
        frames = split(
            deliver(
                channel,
                tag,
                body,
                properties=draw(properties),
                chunk=draw(st.sampled_from([1, 7, 7, 64, 64, 4088, 4088])),
                redelivered=draw(st.booleans()),
            )
        )
        per_channel[channel] += frames
        expected[channel].append((tag, body))
    stream = []
    queues = {c: list(f) for c, f in per_channel.items() if f}
    while queues:
        channel = draw(st.sampled_from(sorted(queues)))
        stream.append(queues[channel].pop(0))
        if not queues[channel]:
            del queues[channel]
        if draw(st.integers(0, 9)) == 0:
            stream.append(HEARTBEAT)
    return b"".join(stream), expected


def split(data: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">I", data, pos + 3)[0]
        frames.append(data[pos : pos + size + 8])
        pos += size + 8
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversation=interleaved_deliveries(), cut=cuts)
def test_random_interleaved_deliveries(
    conversation: tuple[bytes, dict[int, list[tuple[int, bytes]]]], cut: list[int]
) -> None:
    stream, expected = conversation
    peer = opened(frame_max=4096)
    for _ in range(3):
        peer.open_channel()
    reference = outcome(copy.deepcopy(peer.connection), [stream])
    events = reference[0]
    assert all(isinstance(e, Delivery) for e in events)
    for channel, messages in expected.items():
        got = [(e.delivery_tag, e.body) for e in events if isinstance(e, Delivery) and e.channel == channel]
        assert got == messages
    assert reference[1] == b""  # nothing to answer
    pieces = chunked(stream, [c % (len(stream) + 1) for c in cut])
    assert outcome(peer.connection, pieces) == reference


# ---- hostile input ----------------------------------------------------------------------------------

SLACK = 64  # what the input buffer may hold beyond one frame of frame_max bytes


def feed_hostile(connection: Connection, pieces: list[bytes]) -> None:
    """Feed pieces; only the core's own errors may come out, and the buffer stays bounded."""
    for piece in pieces:
        try:
            connection.receive_data(piece, 0.0)
        except (RemoteProtocolError, HandshakeError):
            assert connection.closed
            assert len(connection._in) == 0
            # After the error, more input is ignored.
            assert connection.receive_data(piece, 0.0) == []
            return
        limit = connection.frame_max or 1 << 32
        assert len(connection._in) <= limit + SLACK
        connection.data_to_send(0.0)


def consuming_connection() -> Connection:
    peer = Peer(max_body_size=10_000)
    peer.handshake(frame_max=4096)
    for _ in range(2):
        peer.open_channel()
    c = peer.connection
    c.basic_consume(1, "q", "ctag")
    c.confirm_select(2)
    peer.sent()
    peer.feed(method(1, commands.Basic.ConsumeOk("ctag")), method(2, commands.Confirm.SelectOk()))
    for _ in range(3):
        c.basic_publish(2, b"m", "x", "k", mandatory=True)
    c.basic_get(1, "q")
    c.queue_declare(2, "q")
    c.data_to_send(0.0)
    return c


METHOD_IDS = sorted(commands.INDEX_MAPPING)


@st.composite
def envelope_frames(draw: st.DrawFn) -> bytes:
    """A frame with a plausible envelope (mostly) and a random payload, to get past the framing layer."""
    frame_type = draw(st.sampled_from([1, 1, 1, 2, 3, 8]) | st.integers(0, 255))
    channel = draw(st.sampled_from([0, 1, 2, 3]) | st.integers(0, 65535))
    payload = draw(st.binary(max_size=64))
    if frame_type == 1 and draw(st.booleans()):
        payload = struct.pack(">I", draw(st.sampled_from(METHOD_IDS))) + payload
    if frame_type == 2 and draw(st.booleans()):
        payload = (
            struct.pack(">HHQH", 60, 0, draw(st.integers(0, 20)), draw(st.integers(0, 0xFFFF))) + payload
        )
    size = len(payload) if draw(st.integers(0, 9)) else draw(st.integers(0, 0xFFFFFFFF))
    end = 0xCE if draw(st.integers(0, 9)) else draw(st.integers(0, 255))
    return struct.pack(">BHI", frame_type, channel, size) + payload + bytes([end])


@FAST
@given(data=st.binary(max_size=2000), cut=cuts)
def test_random_bytes_after_the_handshake(data: bytes, cut: list[int]) -> None:
    feed_hostile(consuming_connection(), chunked(data, cut))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(envelope_frames(), max_size=12), cut=cuts)
def test_random_frames_after_the_handshake(frames: list[bytes], cut: list[int]) -> None:
    stream = b"".join(frames)
    feed_hostile(consuming_connection(), chunked(stream, [c % (len(stream) + 1) for c in cut]))


@FAST
@given(data=st.binary(max_size=2000), cut=cuts, stage=st.sampled_from(["start", "tune", "open-ok"]))
def test_random_bytes_during_the_handshake(data: bytes, cut: list[int], stage: str) -> None:
    peer = Peer()
    peer.connection.initiate(0.0)
    if stage != "start":
        peer.feed(method(0, commands.Connection.Start(mechanisms="PLAIN")))
    if stage == "open-ok":
        peer.feed(method(0, commands.Connection.Tune(0, 0, 0)))
    feed_hostile(peer.connection, chunked(data, cut))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(envelope_frames(), max_size=8), cut=cuts)
def test_random_frames_during_the_handshake(frames: list[bytes], cut: list[int]) -> None:
    peer = Peer()
    peer.connection.initiate(0.0)
    feed_hostile(peer.connection, chunked(b"".join(frames), cut))


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    """A valid stream of deliveries, confirms and returns with a few bytes overwritten, cut or inserted."""
    parts = [
        deliver(1, 1, b"hello", properties=commands.Basic.Properties(headers={"a": [1, {"b": "c"}]})),
        method(2, commands.Basic.Ack(1, False)),
        method(2, commands.Basic.Return(312, "NO_ROUTE", "x", "k")) + content(2, b"r"),
        method(1, commands.Basic.GetOk(2, False, "", "q", 0)) + content(1, b"got", chunk=1),
        method(2, commands.Queue.DeclareOk("q", 1, 2)),
        method(2, commands.Basic.Nack(3, True, False)),
        method(1, commands.Channel.Flow(False)),
        method(0, commands.Connection.Blocked("x")),
    ]
    stream = bytearray(b"".join(draw(st.permutations(parts))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(stream) - 1))
        action = draw(st.sampled_from(["set", "delete", "insert"]))
        if action == "set":
            stream[at] = draw(st.integers(0, 255))
        elif action == "delete":
            del stream[at : at + draw(st.integers(1, 8))]
        else:
            stream[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(stream)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=mutated_streams(), cut=cuts)
def test_mutated_valid_streams(stream: bytes, cut: list[int]) -> None:
    feed_hostile(consuming_connection(), chunked(stream, [c % (len(stream) + 1) for c in cut]))


@FAST
@given(size=st.integers(4096 - 7, 0xFFFFFFFF), frame_type=st.sampled_from([1, 2, 3, 8]))
def test_oversized_frames_are_refused_from_their_header(size: int, frame_type: int) -> None:
    c = consuming_connection()  # frame_max 4096
    try:
        c.receive_data(struct.pack(">BHI", frame_type, 1, size), 0.0)
    except RemoteProtocolError as error:
        assert error.reply_code == 501
    else:
        raise AssertionError("an oversized frame was accepted")
    assert decode_all(c.data_to_send(0.0))[0][1].reply_code == 501


# ---- a random conversation checked against a model --------------------------------------------------


class AcksAndConfirms(RuleBasedStateMachine):
    """Deliveries, acks, publishes, confirms and returns in random order, against a simple model."""

    @initialize()
    def setup(self) -> None:
        self.peer = Peer()
        self.peer.handshake()
        self.peer.open_channel()  # 1: consuming
        self.peer.open_channel()  # 2: confirm mode
        self.connection = self.peer.connection
        self.connection.confirm_select(2)
        self.peer.sent()
        self.peer.feed(method(2, commands.Confirm.SelectOk()))
        self.next_tag = 1
        self.unacked: list[int] = []
        self.published = 0
        self.settled: set[int] = set()
        self.mandatory: dict[int, str] = {}  # unconfirmed mandatory publishes -> routing key

    @rule()
    def deliver(self) -> None:
        (event,) = self.peer.feed(deliver(1, self.next_tag))
        assert isinstance(event, Delivery) and event.delivery_tag == self.next_tag
        self.unacked.append(self.next_tag)
        self.next_tag += 1

    @rule(tag=st.integers(0, 40), multiple=st.booleans(), kind=st.sampled_from(["ack", "nack", "reject"]))
    def settle(self, tag: int, multiple: bool, kind: str) -> None:
        if kind == "reject":
            multiple = False
        c = self.connection
        call = {
            "ack": lambda: c.basic_ack(1, tag, multiple=multiple),
            "nack": lambda: c.basic_nack(1, tag, multiple=multiple),
            "reject": lambda: c.basic_reject(1, tag),
        }[kind]
        valid = (multiple and tag == 0) or tag in self.unacked
        if not valid:
            try:
                call()
            except UnknownDeliveryTag:
                assert c.data_to_send(0.0) == b""
                return
            raise AssertionError(f"{kind} {tag} multiple={multiple} was accepted; unacked {self.unacked}")
        call()
        (sent,) = self.peer.sent_methods()
        assert sent.delivery_tag == tag
        if multiple:
            self.unacked = [t for t in self.unacked if tag and t > tag]
        else:
            self.unacked.remove(tag)

    @rule(mandatory=st.booleans(), key=st.sampled_from(["a", "b"]))
    def publish(self, mandatory: bool, key: str) -> None:
        seq = self.connection.basic_publish(2, b"p", "x", key, mandatory=mandatory)
        self.published += 1
        assert seq == self.published
        if mandatory:
            self.mandatory[seq] = key
        self.connection.data_to_send(0.0)

    @precondition(lambda self: self.published > 0)
    @rule(data=st.data(), multiple=st.booleans(), ack=st.booleans())
    def confirm(self, data: st.DataObject, multiple: bool, ack: bool) -> None:
        tag = data.draw(st.integers(1, self.published))
        frame = commands.Basic.Ack(tag, multiple) if ack else commands.Basic.Nack(tag, multiple, False)
        (event,) = self.peer.feed(method(2, frame))
        assert isinstance(event, PublishConfirmed) and event.ack is ack
        assert 1 <= event.first <= event.last == tag
        now = set(range(1, tag + 1)) if multiple else {tag}
        # Every publish the confirm settles is inside the reported range.
        assert {s for s in now - self.settled} <= set(range(event.first, event.last + 1))
        self.settled |= now
        for seq in now:
            self.mandatory.pop(seq, None)

    @precondition(lambda self: bool(self.mandatory))
    @rule(data=st.data())
    def broker_returns(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(set(self.mandatory.values()))))
        expected = min(seq for seq, k in self.mandatory.items() if k == key)
        (event,) = self.peer.feed(
            method(2, commands.Basic.Return(312, "NO_ROUTE", "x", key)), content(2, b"p")
        )
        assert isinstance(event, Returned) and event.publish_seq == expected
        del self.mandatory[expected]

    @invariant()
    def nothing_left_to_send(self) -> None:
        if hasattr(self, "connection"):
            assert self.connection.data_to_send(0.0) == b""
            assert not self.connection.closed


TestAcksAndConfirms = AcksAndConfirms.TestCase
TestAcksAndConfirms.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
