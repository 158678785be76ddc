"""A bare AMQP 0-9-1 client on a blocking socket, for the benchmark's fixtures and the broker's limit.

It does what the benchmark needs and nothing more: the handshake, a few synchronous methods on channel 1,
publishing pre-encoded frames (encoded once with pamqp, then sent as they are) and reading deliveries,
confirms and get replies with a few ``struct`` calls per frame. It reads with ``recv_into`` a fixed,
preallocated buffer and parses the frames where they lie (``struct.unpack_from``): a body is never
copied in Python, only by the kernel into the buffer, and only the incomplete frame at the end of the
buffered data is ever moved (when the room after it runs low). It is used

* to set up and tear down the queues the scenarios use, and to fill them before a consume scenario
  (outside the timed part, identically for every implementation), and
* as the "raw" implementation: the same scenarios with nothing between the socket and the frames, which
  shows how fast the broker (and the loopback) can go, so each client's figure reads as a fraction of it.

It depends on the standard library and pamqp only, so it runs in the reference virtualenv too.
"""

from __future__ import annotations

import mmap
import socket
import struct
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import body as pamqp_body
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

__all__ = [
    "FAST_WRITE",
    "FRAME_HEAD",
    "METHOD_INDEX",
    "U64",
    "RawConnection",
    "RawError",
    "ack_frame",
    "delete_queues",
    "publish_frames",
]

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_MAX = 131072
CHANNEL = 1
# The receive buffer: reads go into it at the end of the buffered data; the incomplete frame at the end
# is moved to the front only when less than RECV_MIN_ROOM is left after it (or when nothing is left).
RECV_BUFFER = 4 << 20
RECV_MIN_ROOM = 1 << 20
# Publishing without confirms, writes of at most this size (a larger message goes out in slices of it) got
# 1 MiB messages into the broker ~1.4x faster here than one send() per message (64 KiB: ~1.05x), at
# ~100 us more CPU per 1 MiB message; with confirms (a window, or one at a time) they were no faster.
FAST_WRITE = 256 << 10
FRAME_END = 0xCE

# The few wire fields read without pamqp (asyncio_floor.py reads them too).
FRAME_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
METHOD_INDEX = struct.Struct(">I")  # class and method id of a method frame
U64 = struct.Struct(">Q")  # delivery tags, body sizes
_ACK = struct.Struct(">BHIHHQBB")

_DELIVER = commands.Basic.Deliver.index
_GET_OK = commands.Basic.GetOk.index
_GET_EMPTY = commands.Basic.GetEmpty.index
_BASIC_ACK = commands.Basic.Ack.index
_BASIC_NACK = commands.Basic.Nack.index
_CONNECTION_CLOSE = commands.Connection.Close.index
_CHANNEL_CLOSE = commands.Channel.Close.index


class RawError(RuntimeError):
    pass


def publish_frames(
    routing_key: str,
    body: bytes,
    properties: commands.Basic.Properties | None = None,
    exchange: str = "",
    channel: int = CHANNEL,
    frame_max: int = FRAME_MAX,
) -> bytes:
    """One message as pamqp encodes it: Basic.Publish, content header, body frames of frame_max - 8."""
    parts = [
        pamqp_frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), channel),
        pamqp_frame.marshal(
            pamqp_header.ContentHeader(0, len(body), properties or commands.Basic.Properties()), channel
        ),
    ]
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        parts.append(pamqp_frame.marshal(pamqp_body.ContentBody(body[start : start + chunk]), channel))
    return b"".join(parts)


def ack_frame(delivery_tag: int, multiple: bool = False, channel: int = CHANNEL) -> bytes:
    return _ACK.pack(1, channel, 13, 60, 80, delivery_tag, 1 if multiple else 0, 0xCE)


class RawConnection:
    """One connection with channel 1 open. Blocking; every call returns when its reply arrived."""

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/", timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Buffered frames are buf[pos:end]; the rest of buf is room for the next read. An anonymous mmap
        # rather than a bytearray (which malloc + memset would make resident at once): only the pages
        # reads reach count in the RSS, so a connection that reads small frames costs a few KiB (the
        # memory scenario keeps one open in the process it measures).
        self.buf = mmap.mmap(-1, RECV_BUFFER)
        self.view = memoryview(self.buf)
        self.pos = self.end = 0
        self.publish_seq = 0
        self.confirmed = 0
        self.server_properties: dict[str, Any] = {}
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._handshake(user, password, vhost)

    # ---- plumbing -----------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.send_method(commands.Connection.Close(200, "bye", 0, 0), 0)
            self.wait_method(commands.Connection.CloseOk, channel=0)
        except (OSError, RawError):
            pass
        finally:
            self.sock.close()
            self.view.release()
            self.buf.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes, slice_bytes: int | None = None) -> None:
        """Write ``data``; with ``slice_bytes``, in slices of at most that size (memoryview, no copy)."""
        if slice_bytes is None or len(data) <= slice_bytes:
            self.sock.sendall(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), slice_bytes):
            self.sock.sendall(view[start : start + slice_bytes])

    def send_method(self, method: Any, channel: int = CHANNEL) -> None:
        self.sock.sendall(pamqp_frame.marshal(method, channel))

    def recv(self) -> None:
        """Read what the socket has (blocking until something comes) into the room after ``self.end``."""
        pos, end = self.pos, self.end
        if pos == end:
            self.pos = self.end = pos = end = 0
        elif len(self.buf) - end < RECV_MIN_ROOM:
            # Little room left: move the incomplete frame at the end (under one frame) to the front.
            self.view[: end - pos] = self.view[pos:end]
            self.pos, self.end = 0, end - pos
            end -= pos
        received = self.sock.recv_into(self.view[end:])
        if not received:
            raise RawError("the broker closed the connection")
        self.end = end + received

    def next_frame(self) -> tuple[int, int, int, int]:
        """(frame type, channel, payload start, payload end) of the next frame, offsets into ``self.buf``.

        The offsets stay valid until the next call.
        """
        while True:
            pos = self.pos
            if self.end - pos >= 7:
                frame_type, channel, size = FRAME_HEAD.unpack_from(self.buf, pos)
                end = pos + 7 + size
                if end < self.end:
                    if self.buf[end] != FRAME_END:
                        raise RawError(f"frame end {self.buf[end]:#x} instead of 0xce")
                    self.pos = end + 1
                    return frame_type, channel, pos + 7, end
            self.recv()

    def _check_close(self, index: int, start: int, end: int) -> None:
        if index in (_CONNECTION_CLOSE, _CHANNEL_CLOSE):
            _n, _ch, method = pamqp_frame.unmarshal(bytes(self.buf[start - 7 : end + 1]))
            raise RawError(f"the broker closed: {method.reply_code} {method.reply_text}")

    def wait_method(self, kind: type, channel: int = CHANNEL) -> Any:
        """Read frames up to the method ``kind`` (decoded by pamqp); confirms seen meanwhile are counted."""
        while True:
            frame_type, frame_channel, start, end = self.next_frame()
            if frame_type != 1:
                continue
            index = METHOD_INDEX.unpack_from(self.buf, start)[0]
            if index == kind.index and frame_channel == channel:
                return pamqp_frame.unmarshal(bytes(self.buf[start - 7 : end + 1]))[2]
            if index in (_BASIC_ACK, _BASIC_NACK):
                self._on_confirm(start)
            self._check_close(index, start, end)

    def call(self, method: Any, reply: type, channel: int = CHANNEL) -> Any:
        self.send_method(method, channel)
        return self.wait_method(reply, channel)

    def _handshake(self, user: str, password: str, vhost: str) -> None:
        self.send(PROTOCOL_HEADER)
        start = self.wait_method(commands.Connection.Start, channel=0)
        self.server_properties = dict(start.server_properties or {})
        response = f"\0{user}\0{password}"
        self.send_method(
            commands.Connection.StartOk(
                client_properties={"product": "bench raw client", "capabilities": {"basic.nack": True}},
                mechanism="PLAIN",
                response=response,
            ),
            0,
        )
        tune = self.wait_method(commands.Connection.Tune, channel=0)
        self.frame_max = min(FRAME_MAX, tune.frame_max or FRAME_MAX)
        self.send_method(commands.Connection.TuneOk(tune.channel_max, self.frame_max, 0), 0)
        self.call(commands.Connection.Open(vhost), commands.Connection.OpenOk, 0)
        self.call(commands.Channel.Open(), commands.Channel.OpenOk)

    # ---- queues and channel settings ----------------------------------------------------------------

    def queue_declare(
        self, name: str, *, passive: bool = False, arguments: dict[str, Any] | None = None
    ) -> int:
        """Declare (or look up, ``passive``) a queue; returns its message count."""
        ok = self.call(
            commands.Queue.Declare(queue=name, passive=passive, arguments=arguments),
            commands.Queue.DeclareOk,
        )
        return int(ok.message_count)

    def queue_delete(self, name: str) -> None:
        self.call(commands.Queue.Delete(queue=name), commands.Queue.DeleteOk)

    def qos(self, prefetch_count: int) -> None:
        self.call(commands.Basic.Qos(prefetch_count=prefetch_count), commands.Basic.QosOk)

    def confirm_select(self) -> None:
        self.call(commands.Confirm.Select(), commands.Confirm.SelectOk)
        self.publish_seq = self.confirmed = 0

    # ---- publishing ---------------------------------------------------------------------------------

    def _on_confirm(self, start: int) -> None:
        tag = U64.unpack_from(self.buf, start + 4)[0]
        if METHOD_INDEX.unpack_from(self.buf, start)[0] == _BASIC_NACK:
            raise RawError(f"the broker nacked publish {tag}")
        # RabbitMQ confirms in publish order, so the highest tag seen covers every publish before it.
        self.confirmed = max(self.confirmed, tag)

    def wait_confirms(self, upto: int) -> None:
        """Read until every publish up to ``upto`` is confirmed (the broker confirms in order)."""
        while self.confirmed < upto:
            frame_type, _channel, start, end = self.next_frame()
            if frame_type != 1:
                continue
            index = METHOD_INDEX.unpack_from(self.buf, start)[0]
            if index in (_BASIC_ACK, _BASIC_NACK):
                self._on_confirm(start)
            else:
                self._check_close(index, start, end)

    def publish_many(
        self, frames: bytes, count: int, *, batch_bytes: int = 1 << 20, slice_bytes: int | None = None
    ) -> None:
        """Send ``count`` copies of one pre-encoded message, in writes of about ``batch_bytes``.

        A message larger than ``batch_bytes`` is one write, or slices of ``slice_bytes`` if given.
        """
        per_write = max(1, batch_bytes // len(frames))
        block = frames * per_write
        left = count
        while left >= per_write:
            self.send(block, slice_bytes)
            left -= per_write
        if left:
            self.send(frames * left, slice_bytes)
        self.publish_seq += count

    def fill(self, queue: str, body: bytes, count: int, window: int = 2000) -> None:
        """Put ``count`` messages in ``queue``, confirmed, at most ``window`` unconfirmed at a time."""
        if not self.publish_seq and not self.confirmed:
            self.confirm_select()
        frames = publish_frames(queue, body, frame_max=self.frame_max)
        window = max(1, min(window, (32 << 20) // len(frames)))
        sent = 0
        while sent < count:
            n = min(window, count - sent)
            self.publish_many(frames, n)
            sent += n
            self.wait_confirms(self.publish_seq)

    def wait_count(self, queue: str, count: int, timeout: float = 300.0) -> None:
        """Poll a passive declare until the queue holds ``count`` messages."""
        deadline = time.monotonic() + timeout
        while self.queue_declare(queue, passive=True) < count:
            if time.monotonic() > deadline:
                raise RawError(f"{queue} did not reach {count} messages in {timeout} s")
            time.sleep(0.001)

    # ---- consuming ----------------------------------------------------------------------------------

    def start_consume(self, queue: str, *, ack: bool = True, tag: str = "raw") -> None:
        self.call(
            commands.Basic.Consume(queue=queue, consumer_tag=tag, no_ack=not ack), commands.Basic.ConsumeOk
        )

    def consume(self, queue: str, count: int, *, ack: bool = True) -> None:
        """Consume ``count`` messages, acking each one as its body completes, then cancel."""
        self.start_consume(queue, ack=ack)
        self.read_deliveries(count, ack=ack)
        self.call(commands.Basic.Cancel("raw"), commands.Basic.CancelOk)

    def read_deliveries(self, count: int, *, ack: bool = True) -> None:
        """Read ``count`` messages, acknowledging each read's messages with one ``multiple`` ack.

        The frames are parsed in the receive buffer, in a loop over everything a read brought; the ack
        of the last message completed goes out, with ``multiple``, before the next blocking read (never
        later: the broker stops delivering once ``prefetch_count`` messages are unacknowledged). It
        settles exactly the read's messages, as the clients' merged acks do (``docs/core.md``).
        """
        buf = self.buf
        head = FRAME_HEAD.unpack_from
        u64 = U64.unpack_from
        index_of = METHOD_INDEX.unpack_from
        got = 0
        tag = 0
        remaining = 0
        completed = 0  # messages completed in this read
        last = 0  # the tag of the last of them
        while True:
            pos, end = self.pos, self.end
            while got < count and end - pos >= 7:
                frame_type, _channel, size = head(buf, pos)
                frame_end = pos + 7 + size
                if frame_end >= end:
                    break
                if frame_type == 3:
                    remaining -= size
                    if not remaining:
                        got += 1
                        completed += 1
                        last = tag
                elif frame_type == 2:
                    remaining = u64(buf, pos + 11)[0]
                    if not remaining:
                        got += 1
                        completed += 1
                        last = tag
                elif frame_type == 1:
                    index = index_of(buf, pos + 7)[0]
                    if index == _DELIVER:
                        tag = u64(buf, pos + 12 + buf[pos + 11])[0]
                    elif index in (_BASIC_ACK, _BASIC_NACK):
                        self._on_confirm(pos + 7)  # a publisher confirm read on the way (RPC)
                    else:
                        self._check_close(index, pos + 7, frame_end)
                if buf[frame_end] != FRAME_END:
                    raise RawError(f"frame end {buf[frame_end]:#x} instead of 0xce")
                pos = frame_end + 1
            self.pos = pos
            if completed:
                if ack:
                    self.send(ack_frame(last, multiple=completed > 1))
                completed = 0
            if got == count:
                return
            self.recv()

    def get(self, queue: str, *, ack: bool = True) -> bytes | None:
        """One Basic.Get; returns the body (None on GetEmpty) and acks it."""
        self.send_method(commands.Basic.Get(queue=queue, no_ack=not ack))
        while True:
            frame_type, _channel, start, end = self.next_frame()
            if frame_type == 1:
                index = METHOD_INDEX.unpack_from(self.buf, start)[0]
                if index == _GET_EMPTY:
                    return None
                if index == _GET_OK:
                    tag = U64.unpack_from(self.buf, start + 4)[0]
                    break
                self._check_close(index, start, end)
        body = self.read_content()
        if ack:
            self.send(ack_frame(tag))
        return body

    def read_content(self) -> bytes:
        """The content header and body frames that follow a content-carrying method."""
        frame_type, _channel, start, _end = self.next_frame()
        if frame_type != 2:
            raise RawError(f"expected a content header, got frame type {frame_type}")
        remaining = U64.unpack_from(self.buf, start + 4)[0]
        chunks: list[bytes] = []
        while remaining:
            frame_type, _channel, start, end = self.next_frame()
            chunks.append(bytes(self.buf[start:end]))
            remaining -= end - start
        return b"".join(chunks)


def delete_queues(url: str, names: Iterable[str]) -> None:
    """Delete the queues (missing ones are fine); used to clean up after a failed scenario."""
    with RawConnection(url) as raw:
        for name in names:
            raw.queue_delete(name)
