"""A scripted broker for core tests: builds server frames with pamqp and decodes what the client sent.

No broker and no sockets: a test says which frames the "server" sends, feeds them to the
:class:`~amqp_core.Connection` (in one piece or in any chunking) and checks the events and the frames
the connection queued in answer, decoded by pamqp (the oracle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pamqp import body as pamqp_body
from pamqp import commands, frame, header, heartbeat

from amqp_core import Connection, ConnectionOpened, ConnectionState, Event
from amqp_core.recording import Recording, Replayer

from .scenarios import CONNECTION_SETTINGS, SCENARIOS

SERVER_PROPERTIES: dict[str, Any] = {
    "product": "RabbitMQ",
    "version": "3.12.0",
    "capabilities": {"publisher_confirms": True, "consumer_cancel_notify": True},
}

Frame = Any  # a pamqp method, ContentHeader, ContentBody, Heartbeat or ProtocolHeader


def method(channel: int, value: Any) -> bytes:
    """One method frame from the server."""
    return frame.marshal(value, channel)


def content(
    channel: int,
    payload: bytes,
    properties: commands.Basic.Properties | None = None,
    *,
    chunk: int = 0,
) -> bytes:
    """A content header and body frames (``chunk`` bytes each; 0: one body frame)."""
    properties = properties or commands.Basic.Properties()
    out = [frame.marshal(header.ContentHeader(0, len(payload), properties), channel)]
    step = chunk or len(payload) or 1
    for start in range(0, len(payload), step):
        out.append(frame.marshal(pamqp_body.ContentBody(payload[start : start + step]), channel))
    return b"".join(out)


def deliver(
    channel: int,
    tag: int,
    payload: bytes = b"body",
    *,
    consumer_tag: str = "ctag",
    exchange: str = "",
    routing_key: str = "rk",
    redelivered: bool = False,
    properties: commands.Basic.Properties | None = None,
    chunk: int = 0,
) -> bytes:
    """``Basic.Deliver`` with its content."""
    return method(
        channel, commands.Basic.Deliver(consumer_tag, tag, redelivered, exchange, routing_key)
    ) + content(channel, payload, properties, chunk=chunk)


HEARTBEAT = frame.marshal(heartbeat.Heartbeat(), 0)


def decode_all(data: bytes) -> list[tuple[int, Frame]]:
    """Every frame in ``data`` as ``(channel, pamqp frame)``; the data must hold whole frames only."""
    frames: list[tuple[int, Frame]] = []
    pos = 0
    while pos < len(data):
        size = 8 if data.startswith(b"AMQP", pos) else int.from_bytes(data[pos + 3 : pos + 7], "big") + 8
        consumed, channel, value = frame.unmarshal(data[pos : pos + size])
        assert consumed == size
        frames.append((channel, value))
        pos += size
    return frames


class Peer:
    """Drives one :class:`Connection` as a scripted broker would, with a fake clock."""

    def __init__(self, connection: Connection | None = None, **settings: Any) -> None:
        self.connection = connection if connection is not None else Connection(**settings)
        self.now = 0.0

    def feed(self, *frames: bytes) -> list[Event]:
        return self.connection.receive_data(b"".join(frames), self.now)

    def sent(self) -> list[tuple[int, Frame]]:
        """The frames the connection queued since the last call, decoded by pamqp."""
        return decode_all(self.connection.data_to_send(self.now))

    def sent_methods(self) -> list[Any]:
        return [value for _channel, value in self.sent()]

    def start(
        self,
        mechanisms: str = "PLAIN AMQPLAIN",
        server_properties: dict[str, Any] | None = None,
    ) -> list[Event]:
        self.connection.initiate(self.now)
        return self.feed(
            method(
                0,
                commands.Connection.Start(
                    server_properties=server_properties or SERVER_PROPERTIES, mechanisms=mechanisms
                ),
            )
        )

    def handshake(
        self, *, channel_max: int = 2047, frame_max: int = 131072, heartbeat: int = 0
    ) -> ConnectionOpened:
        """Run the whole handshake; returns the ConnectionOpened event (the client's frames are drained)."""
        self.start()
        events = self.feed(
            method(0, commands.Connection.Tune(channel_max, frame_max, heartbeat)),
            method(0, commands.Connection.OpenOk()),
        )
        self.sent()
        (opened,) = events
        assert isinstance(opened, ConnectionOpened)
        return opened

    def open_channel(self, number: int | None = None) -> int:
        channel = self.connection.open_channel(number)
        assert [type(m) for m in self.sent_methods()] == [commands.Channel.Open]
        self.feed(method(channel, commands.Channel.OpenOk()))
        return channel


def opened(**settings: Any) -> Peer:
    """A peer whose connection finished its handshake."""
    peer = Peer(**settings)
    peer.handshake()
    return peer


def chunked(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (sorted, deduplicated, out-of-range ones ignored)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


# ---- recorded conversations, fed in any chunking ----------------------------------------------------

RECORDINGS = Path(__file__).parent / "recordings"

Feed = Callable[[Connection, bytes], list[Event]]


def load(name: str) -> Recording:
    return Recording.loads((RECORDINGS / f"{name}.json").read_text())


def feed_whole(connection: Connection, data: bytes) -> list[Event]:
    return connection.receive_data(data, 0.0)


def run_recorded(name: str, feed: Feed = feed_whole) -> list[Event]:
    """Run scenario ``name`` against its recording, the broker's bytes going through ``feed``.

    Returns every event the connection reported, in order.
    """
    connection = Connection(**CONNECTION_SETTINGS)
    replayer = Replayer(load(name))
    backlog: list[Event] = []
    every: list[Event] = []

    def wait(predicate: Callable[[Event], bool]) -> list[Event]:
        while True:
            for index, event in enumerate(backlog):
                if predicate(event):
                    found = backlog[: index + 1]
                    del backlog[: index + 1]
                    return found
            replayer.check_sent(connection)
            data = replayer.take_server_bytes()
            if not data:
                raise AssertionError(f"the recording holds no matching event; got {backlog}")
            events = feed(connection, data)
            backlog.extend(events)
            every.extend(events)

    SCENARIOS[name](connection, wait, {"request_server_close": lambda: None})
    replayer.check_sent(connection)
    assert replayer.done
    return every


def outcome(connection: Connection, chunks: Iterable[bytes]) -> tuple[list[Event], bytes, ConnectionState]:
    """Feed ``chunks`` one by one: the events, what the connection queued in answer, and its state."""
    events: list[Event] = []
    for piece in chunks:
        events += connection.receive_data(piece, 0.0)
    return events, connection.data_to_send(0.0), connection.state
