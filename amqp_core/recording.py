"""Record an AMQP conversation and replay it against the core: deterministic tests without a broker.

Record the bytes a real client and broker exchanged (any chunking: they are split into whole frames),
store the recording as text with :meth:`Recording.dumps`, and later let a :class:`Replayer` play the
broker's side against a fresh :class:`~amqp_core.Connection` driven by your test::

    replayer = Replayer(Recording.loads(text))
    connection = Connection()
    connection.initiate(0.0)
    replayer.wait(connection, lambda e: isinstance(e, ConnectionOpened))  # the whole handshake
    channel = connection.open_channel()
    (opened,) = replayer.wait(connection, lambda e: isinstance(e, ChannelOpened))

Each :meth:`Replayer.exchange` call checks that what the connection queued matches the next frames the
client sent in the recording, then feeds every broker frame up to the client's next frame;
:meth:`Replayer.wait` repeats that until an event you are waiting for arrives.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from .connection import Connection
from .events import Event
from .handshake import PROTOCOL_HEADER

__all__ = ["CLIENT", "SERVER", "RecordedFrame", "Recording", "ReplayMismatch", "Replayer"]

Direction = Literal["client", "server"]
CLIENT: Direction = "client"
SERVER: Direction = "server"

_FRAME_HEADER = struct.Struct(">BHI")
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One whole frame (or the 8-byte protocol header) and who sent it."""

    direction: Direction
    data: bytes

    def signature(self) -> tuple[int, int, bytes]:
        """What a loose comparison looks at: frame type, channel, and the method id or body bytes.

        Method arguments are left out on purpose: client properties (platform, versions) and generated
        names differ from run to run while the conversation is the same.
        """
        if self.data.startswith(b"AMQP"):
            return (0, 0, self.data)
        frame_type, channel, _size = _FRAME_HEADER.unpack_from(self.data)
        if frame_type == 1:
            return (frame_type, channel, self.data[7:11])
        if frame_type == 3:
            return (frame_type, channel, self.data[7:-1])
        return (frame_type, channel, b"")

    def describe(self) -> str:
        frame_type, channel, key = self.signature()
        if frame_type == 1:
            class_id, method_id = struct.unpack(">HH", key)
            return f"{self.direction} method {class_id}.{method_id} on channel {channel}"
        names = {0: "protocol header", 2: "content header", 3: "content body", 8: "heartbeat"}
        return f"{self.direction} {names.get(frame_type, f'frame type {frame_type}')} on channel {channel}"


def split_frames(buffer: bytearray, at_start: bool) -> Iterator[bytes]:
    """Take whole frames off the front of ``buffer``; at the start of a stream, a protocol header first."""
    if at_start and buffer[:4] == b"AMQP"[: len(buffer)]:
        if len(buffer) < len(PROTOCOL_HEADER):
            return
        yield bytes(buffer[:8])
        del buffer[:8]
    while len(buffer) >= 7:
        size = _FRAME_HEADER.unpack_from(buffer)[2]
        if len(buffer) < size + 8:
            return
        yield bytes(buffer[: size + 8])
        del buffer[: size + 8]


class Recording:
    """The frames of one conversation, in the order they crossed the wire."""

    def __init__(self, frames: Iterable[RecordedFrame] = ()) -> None:
        self.frames = list(frames)
        self._pending: dict[Direction, bytearray] = {CLIENT: bytearray(), SERVER: bytearray()}

    def record(self, direction: Direction, data: bytes) -> None:
        """Add bytes that ``direction`` sent; they may hold parts of frames."""
        buffer = self._pending[direction]
        buffer += data
        at_start = not any(frame.direction == direction for frame in self.frames)
        for frame in split_frames(buffer, at_start):
            self.frames.append(RecordedFrame(direction, frame))
            at_start = False

    def dumps(self) -> str:
        """The recording as JSON text (one frame per line, hex-encoded)."""
        lines = ",\n".join(
            json.dumps({"dir": frame.direction, "hex": frame.data.hex()}) for frame in self.frames
        )
        return f'{{"version": {_FORMAT_VERSION}, "frames": [\n{lines}\n]}}\n'

    @classmethod
    def loads(cls, text: str) -> Recording:
        document = json.loads(text)
        if document.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported recording format version {document.get('version')!r}")
        frames = []
        for entry in document["frames"]:
            if entry["dir"] not in (CLIENT, SERVER):
                raise ValueError(f"a recorded frame's direction must be client or server: {entry!r}")
            frames.append(RecordedFrame(entry["dir"], bytes.fromhex(entry["hex"])))
        return cls(frames)


class ReplayMismatch(AssertionError):
    """The connection sent something other than what the client sent in the recording."""


class Replayer:
    """Plays the broker's side of a :class:`Recording` against a :class:`~amqp_core.Connection`.

    :param strict: compare client frames byte for byte instead of by :meth:`RecordedFrame.signature`.
    """

    def __init__(self, recording: Recording, *, strict: bool = False) -> None:
        self._frames = recording.frames
        self._position = 0
        self._strict = strict
        self._sent = bytearray()
        self._client_started = False
        self._backlog: list[Event] = []

    @property
    def position(self) -> int:
        """How many recorded frames were checked or fed so far."""
        return self._position

    @property
    def done(self) -> bool:
        """Whether every recorded frame was checked or fed."""
        return self._position >= len(self._frames)

    def exchange(self, connection: Connection, now: float = 0.0) -> list[Event]:
        """Check the connection's pending output, then feed the broker's next frames; returns the events.

        The same as :meth:`check_sent` followed by feeding :meth:`take_server_bytes` to
        ``connection.receive_data`` in one piece; call those two yourself to feed the bytes differently.
        """
        self.check_sent(connection, now)
        replies = self.take_server_bytes()
        return connection.receive_data(replies, now) if replies else []

    def wait(
        self, connection: Connection, predicate: Callable[[Event], bool], now: float = 0.0
    ) -> list[Event]:
        """Exchange until an event matching ``predicate`` arrives; returns the events up to and with it.

        Events that arrived after the match are kept for the next :meth:`wait`.

        :raises ReplayMismatch: the connection sent something the recorded client did not, or the
            recording ran out of broker frames before a matching event.
        """
        while True:
            for index, event in enumerate(self._backlog):
                if predicate(event):
                    found = self._backlog[: index + 1]
                    del self._backlog[: index + 1]
                    return found
            self.check_sent(connection, now)
            replies = self.take_server_bytes()
            if not replies:
                raise ReplayMismatch(
                    f"the recording has no more broker frames at frame {self._position}, and no event "
                    f"matched; the events were {self._backlog}"
                )
            self._backlog += connection.receive_data(replies, now)

    def check_sent(self, connection: Connection, now: float = 0.0) -> None:
        """Drain the connection's pending output and check it against the recording's client frames.

        :raises ReplayMismatch: the connection sent something the recorded client did not.
        """
        self._sent += connection.data_to_send(now)
        for data in split_frames(self._sent, at_start=not self._client_started):
            self._client_started = True
            self._check_client_frame(RecordedFrame(CLIENT, data))

    def take_server_bytes(self) -> bytes:
        """The broker's recorded frames up to the client's next frame (``b""`` when none are next)."""
        replies = bytearray()
        while self._position < len(self._frames) and self._frames[self._position].direction == SERVER:
            replies += self._frames[self._position].data
            self._position += 1
        return bytes(replies)

    def _check_client_frame(self, actual: RecordedFrame) -> None:
        if self.done:
            raise ReplayMismatch(f"the connection sent {actual.describe()} after the recording ended")
        expected = self._frames[self._position]
        if expected.direction == SERVER:
            raise ReplayMismatch(
                f"the connection sent {actual.describe()}, but the recording expects the broker's "
                f"{expected.describe()} first"
            )
        same = expected.data == actual.data if self._strict else expected.signature() == actual.signature()
        if not same:
            raise ReplayMismatch(
                f"frame {self._position}: the recording has {expected.describe()}, "
                f"the connection sent {actual.describe()}"
            )
        self._position += 1
