"""The client side of one AMQP 0-9-1 connection, as a synchronous state machine with no I/O.

Bytes from the socket go into :meth:`Connection.receive_data`, which returns :mod:`events <amqp_core.events>`;
commands (``open_channel``, ``queue_declare``, ``basic_publish``, …) queue frames that
:meth:`Connection.data_to_send` hands back for the socket. Replies the protocol requires (``CloseOk``,
``FlowOk``, heartbeats, the handshake's ``StartOk``/``TuneOk``/``Open``) are queued automatically while
receiving. Time is passed in: :meth:`next_timer` says when to call :meth:`handle_timer`.
"""

from __future__ import annotations

import enum
import io
import struct
from collections.abc import Mapping
from typing import Any, TypeVar

from pamqp import base, commands

from . import codec
from .channel import ChannelPhase, ChannelState, ExpectedReply
from .errors import (
    ACCESS_REFUSED,
    CHANNEL_ERROR,
    COMMAND_INVALID,
    FRAME_ERROR,
    RESOURCE_ERROR,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    AuthenticationRefused,
    BrokerClosedDuringHandshake,
    ChannelStateError,
    ConnectionStateError,
    FrameTooLarge,
    LocalProtocolError,
    MechanismNotOffered,
    RemoteProtocolError,
    StaleDelivery,
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
from .handshake import PROTOCOL_HEADER, Credentials, build_client_properties, negotiate

__all__ = ["Connection", "ConnectionState"]

FieldTable = Mapping[str, Any]
_Method = TypeVar("_Method", bound=base.Frame)

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_OVERHEAD = 8  # 7-byte header + frame-end octet
MIN_FRAME_MAX = 4096  # the spec's floor, and the limit before Tune

DEFAULT_MAX_BODY_SIZE = 128 * 1024 * 1024  # RabbitMQ's own default max_message_size

_FRAME_TYPES = frozenset({FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT})
_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_INDEX = struct.Struct(">I")
# After a method frame's payload: its frame-end octet, then a content-header frame's head (type,
# channel, payload size) and the fixed part of its payload (class-id, weight, body size, first
# property-flags word).
_AFTER_METHOD = struct.Struct(">BBHIHHQH")
_PROPERTIES_AFTER_METHOD = _AFTER_METHOD.size  # where a content header's property list starts
# After a content header's payload: its frame-end octet, then a body frame's head.
_AFTER_HEADER = struct.Struct(">BBHI")
# Bodies of several frames up to this size are assembled in a buffer allocated at their full size
# when their first frame arrives (so a peer can make the client allocate this much for one frame).
_BODY_BUFFER_MAX = 4 * 1024 * 1024
# Reads from this size on are parsed in place (see receive_data) instead of being appended to the
# receive buffer first, even when a frame cut by the previous read waits there (smaller reads are
# parsed in place only when nothing does).
_IN_PLACE = 16 * 1024
# A body frame from this size on that a read ends in the middle of does not wait in the receive
# buffer: it is copied into its message's buffer as its parts arrive (_start_body_stream), or else
# kept by reference into an immutable read until it is whole (_keep_rest).
_LARGE_BODY_FRAME = codec.LARGE_BODY // 4

# Method indexes (class-id << 16 | method-id) of the frames decoded by hand.
_DELIVER = commands.Basic.Deliver.index
_GET_OK = commands.Basic.GetOk.index
_RETURN = commands.Basic.Return.index
_ACK = commands.Basic.Ack.index
_NACK = commands.Basic.Nack.index

# Channel methods the broker sends as replies to our synchronous commands.
_REPLIES: frozenset[type[base.Frame]] = frozenset(
    {
        commands.Channel.OpenOk,
        commands.Channel.FlowOk,
        commands.Exchange.DeclareOk,
        commands.Exchange.DeleteOk,
        commands.Exchange.BindOk,
        commands.Exchange.UnbindOk,
        commands.Queue.DeclareOk,
        commands.Queue.BindOk,
        commands.Queue.UnbindOk,
        commands.Queue.PurgeOk,
        commands.Queue.DeleteOk,
        commands.Basic.QosOk,
        commands.Basic.ConsumeOk,
        commands.Basic.CancelOk,
        commands.Basic.GetOk,
        commands.Basic.GetEmpty,
        commands.Basic.RecoverOk,
        commands.Confirm.SelectOk,
        commands.Tx.SelectOk,
        commands.Tx.CommitOk,
        commands.Tx.RollbackOk,
    }
)


class ConnectionState(enum.Enum):
    """The connection's state table."""

    IDLE = "idle"  # nothing sent yet
    AWAIT_START = "await-start"  # protocol header sent
    AWAIT_TUNE = "await-tune"  # StartOk sent (Secure may come first)
    AWAIT_OPEN_OK = "await-open-ok"  # TuneOk + Open sent
    OPEN = "open"
    CLOSING = "closing"  # Connection.Close sent; only Close/CloseOk are read
    CLOSED = "closed"


# The states the hot paths test, as module globals: on Python 3.11 reading a member through its
# enum class (`ChannelPhase.OPEN`) takes five times as long as reading a global (timeit: 0.1 µs).
_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED
_CHANNEL_OPEN = ChannelPhase.OPEN
_new_tuple = tuple.__new__
_HANDSHAKE = frozenset(
    {ConnectionState.AWAIT_START, ConnectionState.AWAIT_TUNE, ConnectionState.AWAIT_OPEN_OK}
)


class Connection:
    """One client connection. Not thread-safe; drive it from one place.

    :param username: login name.
    :param password: secret for PLAIN/AMQPLAIN; never shown in repr, logs or errors.
    :param virtual_host: the vhost to open.
    :param auth_mechanism: ``"PLAIN"``, ``"AMQPLAIN"`` or ``"EXTERNAL"`` (TLS client certificate).
    :param client_properties: merged over the defaults (product, platform, capabilities, …);
        ``connection_name`` shows in the management UI.
    :param heartbeat: the interval the client proposes in seconds; 0 accepts the broker's value.
    :param frame_max: the largest frame the client accepts; the smaller of the two sides' values wins.
    :param channel_max: the highest channel number the client will use.
    :param max_body_size: incoming messages larger than this are refused before any byte is buffered.
    :param max_table_depth: how deeply field tables from the broker may nest.
    """

    def __init__(
        self,
        *,
        username: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
        auth_mechanism: str = "PLAIN",
        client_properties: FieldTable | None = None,
        heartbeat: int = 0,
        frame_max: int = 131072,
        channel_max: int = 2047,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        max_table_depth: int = codec.DEFAULT_MAX_TABLE_DEPTH,
        locale: str = "en_US",
    ) -> None:
        for name, value, low, high in (
            ("heartbeat", heartbeat, 0, 65535),
            ("frame_max", frame_max, 0, 2**32 - 1),
            ("channel_max", channel_max, 0, 65535),
        ):
            if not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
        if 0 < frame_max < MIN_FRAME_MAX:
            raise ValueError(f"frame_max must be 0 or at least {MIN_FRAME_MAX}, not {frame_max}")
        if max_body_size < 0:
            raise ValueError(f"max_body_size must not be negative, not {max_body_size}")
        self._credentials = Credentials(username, password, auth_mechanism)
        self._virtual_host = virtual_host
        self._client_properties = build_client_properties(client_properties)
        self._locale = locale
        # Encoded now so that bad settings fail here, not halfway through the handshake.
        try:
            self._start_ok = codec.encode_method(
                0,
                commands.Connection.StartOk(
                    self._client_properties, auth_mechanism, self._credentials.response(), locale
                ),
            )
            self._open = codec.encode_method(0, commands.Connection.Open(virtual_host))
        except (ValueError, TypeError) as error:
            raise ValueError(f"invalid connection settings: {error}") from error
        if len(self._start_ok) > MIN_FRAME_MAX:
            raise ValueError(
                f"the client properties make Connection.StartOk {len(self._start_ok)} bytes, more than "
                f"the {MIN_FRAME_MAX} bytes a frame may have before tuning"
            )
        self._wanted_heartbeat = heartbeat
        self._wanted_frame_max = frame_max
        self._wanted_channel_max = channel_max
        self.max_body_size = max_body_size
        self.max_table_depth = max_table_depth

        self.state = ConnectionState.IDLE
        # Negotiated values; until Tune the spec's minimum frame size applies.
        self.frame_max = MIN_FRAME_MAX
        self.channel_max = channel_max or 65535
        self.heartbeat = 0
        self.server_properties: dict[str, Any] = {}
        self._max_payload = MIN_FRAME_MAX - FRAME_OVERHEAD

        self._in = bytearray()
        self._parsed = 0  # where the last _parse stopped
        # A large body frame that a large read ended in the middle of: its bytes so far, by reference
        # into that read (see _keep_rest); the receive buffer is empty meanwhile.
        self._split: memoryview | None = None
        # A body frame cut by the end of a read whose message is being copied into its buffer: its
        # channel, and how many bytes of it are still to come (the rest of its payload, then its
        # frame-end octet), copied as they arrive (see _start_body_stream).
        self._body_stream: ChannelState | None = None
        self._body_left = 0
        # What is queued for the socket, in order. Large published bodies sit here by reference, as
        # memoryview pieces (codec.encode_publish_parts); _out_pieces says whether any of them does.
        # Then _out holds the pieces data_to_send_pieces returns, but for its last run of small frames,
        # from _out_run on, which it joins.
        self._out: list[bytes | memoryview] = []
        self._out_pieces = False
        self._out_run = 0
        # The last Basic.Ack queued, as (frame, channel), when it settles every delivery up to its tag:
        # an ack that extends it replaces it (see basic_ack).
        self._prefix_ack: tuple[bytes, int] | None = None
        self._channels: dict[int, ChannelState] = {}
        self._incarnations = 0
        self._closing_reply: tuple[int, str] | None = None
        self._last_received = 0.0
        self._last_sent = 0.0

    @property
    def closed(self) -> bool:
        """Whether the connection is finished at the protocol level (the transport can be dropped)."""
        return self.state is ConnectionState.CLOSED

    def __repr__(self) -> str:
        return (
            f"<amqp_core.Connection {self.state.value} user={self._credentials.username!r} "
            f"vhost={self._virtual_host!r} channels={len(self._channels)}>"
        )

    # ---- driving the connection ---------------------------------------------------------------------

    def initiate(self, now: float) -> None:
        """Queue the protocol header that starts the handshake."""
        if self.state is not ConnectionState.IDLE:
            raise ConnectionStateError("the handshake was already started")
        self._out.append(PROTOCOL_HEADER)
        self.state = ConnectionState.AWAIT_START
        self._last_received = self._last_sent = now

    @property
    def has_data_to_send(self) -> bool:
        """Whether frames are queued (commands, or replies queued automatically while receiving)."""
        return bool(self._out)

    def data_to_send(self, now: float) -> bytes:
        """Everything queued for the socket since the last call (``b""`` when nothing is)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 or self._out_pieces else out[0]
        out.clear()
        self._out_pieces = False
        self._last_sent = now
        return bytes(data)  # out[0] is a memoryview only when _out_pieces

    def data_to_send_pieces(self, now: float) -> list[bytes | memoryview]:
        """:meth:`data_to_send` as pieces to be written in order, without copying large bodies.

        Small frames come joined into one ``bytes`` per run; the body of a large published message
        (:data:`codec.LARGE_BODY` bytes or more, given as ``bytes``) comes as ``memoryview`` slices of
        the caller's own ``bytes`` object, so a socket can send it without any copy. Returns ``[]``
        when nothing is queued.
        """
        out = self._out
        if not out:
            return []
        self._last_sent = now
        if not self._out_pieces:
            data = b"".join(out) if len(out) > 1 else out[0]
            out.clear()
            return [data]
        self._out_pieces = False
        run, self._out_run = self._out_run, 0
        _join_run(out, run)
        self._out = []
        return out

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the socket; returns the events they complete.

        Nothing keeps a reference to a ``bytearray`` or ``memoryview`` once this returns: the caller
        may reuse its buffer.

        :raises RemoteProtocolError: the broker broke the protocol (``Connection.Close`` is queued; the
            events decoded before the violation are in its ``events``).
        :raises HandshakeError: the broker refused the connection while it was being opened.
        """
        if self.state is _CLOSED or not data:
            return []
        if isinstance(data, memoryview):
            data = data.tobytes()  # the decoders read strings out of bytes and bytearrays only
        self._last_received = now
        buf = self._in
        events: list[Event] = []
        start = 0
        if self._body_stream is not None:
            start = self._continue_body_stream(data, events)
            if start == len(data):
                return events
        elif self._split is not None:
            start = self._complete_split(data, events)
        if self.state is _OPEN and (not buf or len(data) - start >= _IN_PLACE):
            # The read is parsed where it is rather than first appended to the receive buffer:
            # only what ends up incomplete at its end is copied (or, for a large body frame, kept by
            # reference). A frame cut by the end of the last read, waiting in the buffer, is
            # completed first with the start of this one.
            in_place = True
            if buf:
                # (The buffer is empty after _complete_split completed a frame: start is 0 here.)
                if len(buf) < 7:  # its header was cut too
                    start = 7 - len(buf)
                    buf += memoryview(data)[:start]
                # The header is checked by _receive_buffered (size, type) before anything is read.
                end = 8 + _FRAME_HEADER.unpack_from(buf, 0)[2] - len(buf) + start
                if end <= len(data):
                    buf += memoryview(data)[start:end]
                    self._receive_buffered(buf, events)  # exactly that frame
                    start = end
                else:
                    in_place = False  # this read does not hold all of it
            if in_place:
                if self.state is _CLOSED:
                    return events
                try:
                    self._parse(data, start, events)
                except RemoteProtocolError as error:
                    error.events = events
                    raise
                finally:
                    if self.state is _CLOSED:
                        buf.clear()
                    elif self._parsed < len(data):
                        self._keep_rest(data, self._parsed)
                return events
        buf += memoryview(data)[start:] if start else data
        if self.state is ConnectionState.AWAIT_START and buf[:4] == b"AMQP"[: len(buf)]:
            if len(buf) < len(PROTOCOL_HEADER):
                return []  # maybe a protocol header: wait for all of it
            self.state = ConnectionState.CLOSED
            header = bytes(buf[:8])
            buf.clear()
            raise WrongProtocol(f"it answered with protocol header {header!r}")
        self._receive_buffered(buf, events)
        return events

    def _keep_rest(self, data: bytes, pos: int) -> None:
        """Keep the incomplete frame at the end of a read parsed in place.

        A large body frame is kept by reference (``data`` is immutable), so its bytes are copied once,
        into the message body; anything else goes to the receive buffer.
        """
        rest = memoryview(data)[pos:]
        if (
            len(rest) >= 7
            and rest[0] == FRAME_BODY
            and type(data) is bytes
            and _FRAME_HEADER.unpack_from(rest, 0)[2] >= _LARGE_BODY_FRAME
        ):
            self._split = rest  # its header was checked by _parse (size, type)
        else:
            self._in += rest

    def _complete_split(self, data: bytes, events: list[Event]) -> int:
        """Finish the body frame kept by :meth:`_keep_rest`; returns where the frames after it start.

        When this read does not hold the rest of it, the frame goes to the receive buffer instead
        (returns 0).
        """
        split, self._split = self._split, None
        assert split is not None
        channel: int
        size: int
        _frame_type, channel, size = _FRAME_HEADER.unpack_from(split, 0)
        frame_end = 7 + size - len(split)  # in data
        if frame_end >= len(data):
            self._in += split
            return 0
        try:
            if data[frame_end] != codec.FRAME_END:
                raise self._bad_frame_end(channel)
            self._on_body_parts(channel, split[7:], memoryview(data)[:frame_end], events)
        except RemoteProtocolError as error:
            error.events = events
            raise
        return frame_end + 1

    def _continue_body_stream(self, data: bytes, events: list[Event]) -> int:
        """Copy the next part of the body frame :meth:`_start_body_stream` began; returns where the
        frames after it start (``len(data)`` when this read is all its payload)."""
        state = self._body_stream
        assert state is not None
        left = self._body_left
        buffer = state.content_buffer  # None once closing the channel dropped the message
        if left > len(data):
            if buffer is not None:
                buffer.write(data)
            self._body_left = left - len(data)
            return len(data)
        self._body_stream = None
        if buffer is not None and left > 1:
            with memoryview(data) as view:
                buffer.write(view[: left - 1])
        try:
            if data[left - 1] != codec.FRAME_END:
                raise self._bad_frame_end(state.number)
            if buffer is not None and not state.content_remaining and self.state is _OPEN:
                self._body_received(state, 0, events)
        except RemoteProtocolError as error:
            error.events = events
            raise
        return left

    def _start_body_stream(self, channel: int, buf: bytes | bytearray, pos: int, end: int, size: int) -> bool:
        """Copy what has arrived of a body frame cut by the end of the read at ``end`` into the buffer
        of its message, and the rest as it comes; returns False, and copies nothing, when its message
        is not assembled in a buffer (then the frame is handled once whole).

        Each read then costs the body one write, however the frames fall across reads.
        """
        state = self._channels.get(channel)
        if (
            state is None
            or (buffer := state.content_buffer) is None
            or size > state.content_remaining
            or self.state is not _OPEN
        ):
            # Not the next frame of a body being assembled (whose checks are those of
            # _copy_body_frames): its first frame, or one to refuse or to discard.
            if state is not None and size == state.content_remaining:
                return False  # a body of one frame (or the last of a larger one): handled whole
            state = self._body_channel(channel, size)
            if state is None:
                return False
            remaining = state.content_remaining
            if state.body_kept() or remaining > _BODY_BUFFER_MAX:
                return False  # a body over _BODY_BUFFER_MAX is kept in chunks
            buffer = state.content_buffer = _body_buffer(remaining)
        with memoryview(buf) as view:
            buffer.write(view[pos + 7 : end])
        state.content_remaining -= size
        self._body_stream = state
        self._body_left = pos + 8 + size - end
        return True

    def _receive_buffered(self, buf: bytearray, events: list[Event]) -> None:
        """Read the whole frames in the receive buffer, and drop them from it."""
        try:
            self._parse(buf, 0, events)
        except RemoteProtocolError as error:
            error.events = events
            raise
        finally:
            if self.state is _CLOSED:
                buf.clear()  # nothing more will be read
            else:
                del buf[: self._parsed]

    def _parse(self, buf: bytes | bytearray, pos: int, events: list[Event]) -> int:
        """Handle the whole frames in ``buf`` from ``pos`` on; returns (and leaves in ``_parsed``,
        also when it raises) the position of the first byte not read."""
        end = len(buf)
        unpack_header = _FRAME_HEADER.unpack_from
        unpack_index = _METHOD_INDEX.unpack_from
        try:
            while end - pos >= 7:
                frame_type, channel, size = unpack_header(buf, pos)
                # Checked from the 7-byte header alone, before any of the payload is waited for.
                if size > self._max_payload or frame_type not in _FRAME_TYPES:
                    self._reject_frame(buf, pos, frame_type, size)
                frame_end = pos + 7 + size
                if frame_end >= end:  # need more data
                    if (
                        frame_type == FRAME_BODY
                        and size >= _LARGE_BODY_FRAME
                        and self._start_body_stream(channel, buf, pos, end, size)
                    ):
                        pos = end
                    break
                if buf[frame_end] != codec.FRAME_END:
                    raise self._bad_frame_end(channel)
                if frame_type == FRAME_METHOD:
                    if size > 4 and unpack_index(buf, pos + 7)[0] == _DELIVER:
                        after = self._receive_whole_delivery(buf, pos, frame_end, end, channel, events)
                        if after:
                            pos = after
                            continue
                    self._on_method(channel, buf, pos + 7, frame_end, events)
                elif frame_type == FRAME_BODY:
                    after = self._copy_body_frames(channel, buf, pos, end, events)
                    if after:
                        pos = after
                        continue
                    self._on_body(channel, buf, pos + 7, frame_end, events)
                elif frame_type == FRAME_HEADER:
                    self._on_header(channel, buf, pos + 7, frame_end, events)
                elif channel:
                    raise self._violation(FRAME_ERROR, f"heartbeat frame on channel {channel}, not 0")
                pos = frame_end + 1
                if self.state is _CLOSED:  # the broker's Close: whatever follows it is not ours to read
                    break
        finally:
            self._parsed = pos
        return pos

    def receive_eof(self) -> list[Event]:
        """The socket reached end of stream.

        :raises HandshakeError: when the connection was still being opened.
        """
        state, self.state = self.state, ConnectionState.CLOSED
        self._channels.clear()
        if state is ConnectionState.AWAIT_TUNE:
            raise AuthenticationRefused(
                "the broker dropped the connection right after receiving the credentials"
            )
        if state in _HANDSHAKE:
            raise BrokerClosedDuringHandshake("the broker dropped the connection")
        if state is ConnectionState.CLOSED:
            return []
        return [ConnectionLost()]

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None: no timer is needed)."""
        if not self.heartbeat or self.state not in (ConnectionState.OPEN, ConnectionState.CLOSING):
            return None
        return min(self._last_sent + self.heartbeat / 2, self._last_received + 2 * self.heartbeat)

    def handle_timer(self, now: float) -> list[Event]:
        """Send a heartbeat when nothing was sent for half the interval; detect a silent broker."""
        if not self.heartbeat or self.state not in (ConnectionState.OPEN, ConnectionState.CLOSING):
            return []
        # Compared with the very sums next_timer() returns: `now - last >= interval` can be false at
        # `now == last + interval` (the sum rounds down), and a driver woken at the deadline it was
        # given would then find nothing done and the same deadline again.
        if now >= self._last_received + 2 * self.heartbeat:
            self.state = ConnectionState.CLOSED
            self._channels.clear()
            return [HeartbeatTimeout(now - self._last_received)]
        if now >= self._last_sent + self.heartbeat / 2:
            self._out.append(codec.HEARTBEAT_FRAME)
            self._last_sent = now
        return []

    # ---- connection commands ------------------------------------------------------------------------

    def close(
        self,
        reply_code: int = 200,
        reply_text: str = "Normal shutdown",
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        """Start the closing handshake; :class:`ConnectionClosed` reports its end."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        if self.state is ConnectionState.IDLE:
            self.state = ConnectionState.CLOSED
            return
        self._send_method(0, _build(commands.Connection.Close, reply_code, reply_text, class_id, method_id))
        self._closing_reply = (reply_code, reply_text)
        self.state = ConnectionState.CLOSING

    def update_secret(self, new_secret: str, reason: str) -> None:
        """Replace the credentials' secret (e.g. a refreshed OAuth token); answered by SecretUpdated."""
        self._require_open()
        self._send_method(0, _build(commands.Connection.UpdateSecret, new_secret, reason))

    # ---- channel commands ---------------------------------------------------------------------------

    def open_channel(self, channel: int | None = None) -> int:
        """Open a channel (the lowest free number unless one is given); :class:`ChannelOpened` follows."""
        self._require_open()
        if channel is None:
            channel = next((n for n in range(1, self.channel_max + 1) if n not in self._channels), 0)
            if not channel:
                raise ChannelStateError(f"all {self.channel_max} channels are in use")
        elif not 1 <= channel <= self.channel_max:
            raise ChannelStateError(f"channel number must be from 1 to {self.channel_max}, not {channel}")
        elif channel in self._channels:
            raise ChannelStateError(f"channel {channel} is already in use")
        self._incarnations += 1
        state = ChannelState(channel, self._incarnations)
        state.expected.append(ExpectedReply((commands.Channel.OpenOk,)))
        self._channels[channel] = state
        self._send_method(channel, _build(commands.Channel.Open))
        return channel

    def close_channel(
        self,
        channel: int,
        reply_code: int = 200,
        reply_text: str = "Normal shutdown",
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        """Close a channel; :class:`ChannelClosed` follows. Replies still owed to it are discarded."""
        self._require_open()
        state = self._channel(channel)
        if state.phase is ChannelPhase.CLOSING:
            return
        # Encoded first: arguments that cannot be sent must leave the channel as it was.
        frame = self._encode_method(
            channel, _build(commands.Channel.Close, reply_code, reply_text, class_id, method_id)
        )
        state.phase = ChannelPhase.CLOSING
        state.expected.clear()
        # The rest of a message being received is discarded with everything else the channel gets
        # from now on; what was received of it must not make the CloseOk look out of place.
        state.drop_content()
        state.close_event = ChannelClosed(channel, reply_code, reply_text, class_id, method_id, by_peer=False)
        self._out.append(frame)

    def channel_flow(self, channel: int, active: bool) -> None:
        """Ask the broker to stop (``active=False``) or restart deliveries; answered by FlowOk."""
        self._sync(channel, _build(commands.Channel.Flow, active), commands.Channel.FlowOk)

    def channel_incarnation(self, channel: int) -> int:
        """The incarnation of the channel currently using this number."""
        return self._channel(channel).incarnation

    # ---- exchanges ----------------------------------------------------------------------------------

    def exchange_declare(
        self,
        channel: int,
        exchange: str,
        exchange_type: str = "direct",
        *,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        nowait: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        method = _build(
            commands.Exchange.Declare, 0, exchange, exchange_type, passive, durable, auto_delete,
            internal, nowait, _table(arguments),
        )  # fmt: skip
        self._sync(channel, method, None if nowait else commands.Exchange.DeclareOk)

    def exchange_delete(
        self, channel: int, exchange: str, *, if_unused: bool = False, nowait: bool = False
    ) -> None:
        method = _build(commands.Exchange.Delete, 0, exchange, if_unused, nowait)
        self._sync(channel, method, None if nowait else commands.Exchange.DeleteOk)

    def exchange_bind(
        self,
        channel: int,
        destination: str,
        source: str,
        routing_key: str = "",
        *,
        nowait: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        method = _build(
            commands.Exchange.Bind, 0, destination, source, routing_key, nowait, _table(arguments)
        )
        self._sync(channel, method, None if nowait else commands.Exchange.BindOk)

    def exchange_unbind(
        self,
        channel: int,
        destination: str,
        source: str,
        routing_key: str = "",
        *,
        nowait: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        method = _build(
            commands.Exchange.Unbind, 0, destination, source, routing_key, nowait, _table(arguments)
        )
        self._sync(channel, method, None if nowait else commands.Exchange.UnbindOk)

    # ---- queues -------------------------------------------------------------------------------------

    def queue_declare(
        self,
        channel: int,
        queue: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        nowait: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        method = _build(
            commands.Queue.Declare,
            0,
            queue,
            passive,
            durable,
            exclusive,
            auto_delete,
            nowait,
            _table(arguments),
        )
        self._sync(channel, method, None if nowait else commands.Queue.DeclareOk)

    def queue_bind(
        self,
        channel: int,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        nowait: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        method = _build(commands.Queue.Bind, 0, queue, exchange, routing_key, nowait, _table(arguments))
        self._sync(channel, method, None if nowait else commands.Queue.BindOk)

    def queue_unbind(
        self,
        channel: int,
        queue: str,
        exchange: str,
        routing_key: str = "",
        *,
        arguments: FieldTable | None = None,
    ) -> None:
        method = _build(commands.Queue.Unbind, 0, queue, exchange, routing_key, _table(arguments))
        self._sync(channel, method, commands.Queue.UnbindOk)

    def queue_purge(self, channel: int, queue: str, *, nowait: bool = False) -> None:
        self._sync(
            channel,
            _build(commands.Queue.Purge, 0, queue, nowait),
            None if nowait else commands.Queue.PurgeOk,
        )

    def queue_delete(
        self,
        channel: int,
        queue: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> None:
        method = _build(commands.Queue.Delete, 0, queue, if_unused, if_empty, nowait)
        self._sync(channel, method, None if nowait else commands.Queue.DeleteOk)

    # ---- basic --------------------------------------------------------------------------------------

    def basic_qos(
        self,
        channel: int,
        *,
        prefetch_size: int = 0,
        prefetch_count: int = 0,
        global_: bool = False,
    ) -> None:
        method = _build(commands.Basic.Qos, prefetch_size, prefetch_count, global_)
        self._sync(channel, method, commands.Basic.QosOk)

    def basic_consume(
        self,
        channel: int,
        queue: str,
        consumer_tag: str = "",
        *,
        no_local: bool = False,
        no_ack: bool = False,
        exclusive: bool = False,
        nowait: bool = False,
        arguments: FieldTable | None = None,
    ) -> None:
        """Start a consumer; ``Basic.ConsumeOk`` (a :class:`MethodReply`) carries the tag.

        ``nowait`` needs an explicit ``consumer_tag``: without a reply the tag could never be learnt.
        """
        if nowait and not consumer_tag:
            raise LocalProtocolError("basic_consume with nowait=True needs a consumer_tag")
        method = _build(
            commands.Basic.Consume,
            0,
            queue,
            consumer_tag,
            no_local,
            no_ack,
            exclusive,
            nowait,
            _table(arguments),
        )
        self._sync(channel, method, None if nowait else commands.Basic.ConsumeOk, no_ack=no_ack)
        if nowait and no_ack:
            self._channels[channel].no_ack_consumers.add(consumer_tag)

    def basic_cancel(self, channel: int, consumer_tag: str, *, nowait: bool = False) -> None:
        method = _build(commands.Basic.Cancel, consumer_tag, nowait)
        self._sync(channel, method, None if nowait else commands.Basic.CancelOk)

    def basic_publish(
        self,
        channel: int,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: commands.Basic.Properties | bytes | None = None,
        *,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> int | None:
        """Queue a message. Returns its confirm sequence number when the channel is in confirm mode.

        ``properties`` may also be given encoded, as :func:`codec.encode_property_values` returns them.
        """
        state = self._channels.get(channel)
        if state is None or state.phase is not _CHANNEL_OPEN or self.state is not _OPEN:
            self._require_open()
            state = self._channel(channel)
            state.require_open()
        try:
            if len(body) < codec.LARGE_BODY:
                self._out.append(
                    codec.encode_publish(
                        channel, exchange, routing_key, mandatory, immediate, properties, body,
                        self.frame_max,
                    )
                )  # fmt: skip
            else:
                # A bytes body is queued by reference: written from the caller's bytes, never copied.
                pieces = codec.encode_publish_parts(
                    channel, exchange, routing_key, mandatory, immediate, properties, body,
                    self.frame_max,
                )  # fmt: skip
                self._queue_pieces(pieces)
        except (ValueError, TypeError) as error:
            raise self._publish_error(properties, error) from error
        return state.next_publish(exchange, routing_key, mandatory)

    def _queue_pieces(self, pieces: list[bytes | memoryview]) -> None:
        """Queue a large message as the pieces :func:`codec.encode_publish_parts` made of it.

        Small frames are written joined, one piece per run of them: the frames of this message up to
        its body join the run queued since the last large message, and its final frame-end starts
        the next. A message that came as one piece (its body copied) stands alone, as a body does.
        """
        out = self._out
        run = self._out_run if self._out_pieces else 0
        if len(pieces) == 1:
            _join_run(out, run)
            out += pieces
            self._out_run = len(out)
        else:
            if len(out) > run:
                out[run:] = [b"".join([*out[run:], pieces[0]])]
                out += pieces[1:]
            else:
                out += pieces
            self._out_run = len(out) - 1
        self._out_pieces = True

    def basic_get(self, channel: int, queue: str, *, no_ack: bool = False) -> None:
        """Ask for one message: :class:`GetOk`, or a :class:`MethodReply` with ``Basic.GetEmpty``."""
        self._sync(
            channel,
            _build(commands.Basic.Get, 0, queue, no_ack),
            (commands.Basic.GetOk, commands.Basic.GetEmpty),
            no_ack=no_ack,
        )

    def basic_ack(
        self,
        channel: int,
        delivery_tag: int,
        *,
        multiple: bool = False,
        incarnation: int | None = None,
    ) -> None:
        """Acknowledge a delivery. Pass the delivery's ``incarnation`` to refuse acks for a closed channel.

        Acks of the oldest deliveries of a channel, queued one after another, go out as one ``multiple``
        ack of the highest: the broker settles exactly the same deliveries, with one frame to handle
        instead of one per message (a consumer acking each message in a batch sends one frame).
        """
        settled = self._settlement_channel(channel, incarnation).settle(delivery_tag, multiple)
        out = self._out
        prefix = self._prefix_ack
        if not delivery_tag:  # multiple with tag 0: every outstanding delivery, whatever its tag
            self._prefix_ack = None
            out.append(codec.encode_ack(channel, 0, multiple))
            return
        # Everything up to the tag settled, and the previous frame is this channel's ack of such a prefix
        # (of a lower tag: settle() refused anything at or below it): one multiple ack covers both.
        if settled and prefix is not None and out and out[-1] is prefix[0] and prefix[1] == channel:
            frame = out[-1] = codec.encode_ack(channel, delivery_tag, True)
        else:
            frame = codec.encode_ack(channel, delivery_tag, multiple)
            out.append(frame)
        self._prefix_ack = (frame, channel) if settled else None

    def basic_nack(
        self,
        channel: int,
        delivery_tag: int,
        *,
        multiple: bool = False,
        requeue: bool = True,
        incarnation: int | None = None,
    ) -> None:
        self._settlement_channel(channel, incarnation).settle(delivery_tag, multiple)
        self._out.append(codec.encode_nack(channel, delivery_tag, multiple, requeue))

    def basic_reject(
        self,
        channel: int,
        delivery_tag: int,
        *,
        requeue: bool = True,
        incarnation: int | None = None,
    ) -> None:
        self._settlement_channel(channel, incarnation).settle(delivery_tag, False)
        self._out.append(codec.encode_reject(channel, delivery_tag, requeue))

    def basic_recover(self, channel: int, *, requeue: bool = True) -> None:
        """Redeliver every unacknowledged message of the channel (answered by ``Basic.RecoverOk``).

        The outstanding delivery tags die with it: the messages come again as new deliveries with new
        tags, so acks for the old ones are refused as :class:`UnknownDeliveryTag` from now on.
        """
        self._sync(channel, _build(commands.Basic.Recover, requeue), commands.Basic.RecoverOk)
        self._channels[channel].forget_deliveries()

    # ---- confirms and transactions ------------------------------------------------------------------

    def confirm_select(self, channel: int, *, nowait: bool = False) -> None:
        """Put the channel in confirm mode; publishes from now on are numbered from 1."""
        self._sync(
            channel,
            _build(commands.Confirm.Select, nowait),
            None if nowait else commands.Confirm.SelectOk,
        )
        self._channels[channel].confirm_mode = True

    def tx_select(self, channel: int) -> None:
        self._sync(channel, _build(commands.Tx.Select), commands.Tx.SelectOk)

    def tx_commit(self, channel: int) -> None:
        self._sync(channel, _build(commands.Tx.Commit), commands.Tx.CommitOk)

    def tx_rollback(self, channel: int) -> None:
        self._sync(channel, _build(commands.Tx.Rollback), commands.Tx.RollbackOk)

    # ---- command plumbing ---------------------------------------------------------------------------

    def _require_open(self) -> None:
        if self.state is not ConnectionState.OPEN:
            raise ConnectionStateError(f"the connection is {self.state.value}, not open")

    def _channel(self, channel: int) -> ChannelState:
        state = self._channels.get(channel)
        if state is None:
            raise ChannelStateError(f"channel {channel} is not open")
        return state

    def _settlement_channel(self, channel: int, incarnation: int | None) -> ChannelState:
        state = self._channels.get(channel)
        if incarnation is not None and (state is None or state.incarnation != incarnation):
            raise StaleDelivery(
                f"the delivery came from an earlier opening of channel {channel}, which has been "
                "closed since; the broker already returned the message to its queue"
            )
        if state is None or state.phase is not _CHANNEL_OPEN or self.state is not _OPEN:
            self._require_open()  # each raises the error that says what is not open
            state = self._channel(channel)
            state.require_open()
        return state

    def _sync(
        self,
        channel: int,
        method: base.Frame,
        reply: type[base.Frame] | tuple[type[base.Frame], ...] | None,
        *,
        no_ack: bool = False,
    ) -> None:
        self._require_open()
        state = self._channel(channel)
        if state.phase is ChannelPhase.CLOSING:
            # An opening channel takes commands: the broker answers them in order after OpenOk.
            state.require_open()
        frame = self._encode_method(channel, method)
        if reply is not None:
            replies = reply if isinstance(reply, tuple) else (reply,)
            state.expected.append(ExpectedReply(replies, no_ack))
        self._out.append(frame)

    def _publish_error(
        self, properties: commands.Basic.Properties | bytes | None, error: Exception
    ) -> LocalProtocolError:
        """Tell a content header that cannot fit in a frame from other bad arguments (off the hot path)."""
        if self.frame_max and isinstance(error, ValueError):
            try:
                encoded = properties if isinstance(properties, bytes) else codec.encode_properties(properties)
                header = 20 + len(encoded)
            except (ValueError, TypeError):
                pass
            else:
                if header > self.frame_max:
                    return FrameTooLarge(
                        f"the message properties make a content header of {header} bytes, more than the "
                        f"negotiated frame_max of {self.frame_max}"
                    )
        return LocalProtocolError(f"cannot publish: {error}")

    def _send_method(self, channel: int, method: base.Frame) -> None:
        self._out.append(self._encode_method(channel, method))

    def _encode_method(self, channel: int, method: base.Frame) -> bytes:
        try:
            frame = codec.encode_method(channel, method)
        except (ValueError, TypeError) as error:
            raise LocalProtocolError(f"cannot encode {method.name}: {error}") from error
        if self.frame_max and len(frame) > self.frame_max:
            raise FrameTooLarge(
                f"{method.name} encodes to {len(frame)} bytes, more than the negotiated "
                f"frame_max of {self.frame_max}"
            )
        return frame

    # ---- receiving: envelope ------------------------------------------------------------------------

    def _receive_whole_delivery(
        self, buf: bytes | bytearray, pos: int, method_end: int, end: int, channel: int, events: list[Event]
    ) -> int:
        """The hot path: a Basic.Deliver whose header and single body frame are already in the buffer.

        Decodes the three frames in one go and returns the position after them; returns 0 whenever
        anything is unusual (split across reads, several body frames, a closing channel, bad bytes) so
        the frame-by-frame path handles it, errors included.
        """
        state = self._channels.get(channel)
        if (
            state is None
            or state.phase is not _CHANNEL_OPEN
            or state.content_kind
            or self.state is not _OPEN
            or end - method_end < _PROPERTIES_AFTER_METHOD
        ):
            return 0
        # The method's frame end, the header frame's head and its payload's fixed part, in one read.
        method_frame_end, frame_type, header_channel, size, _class_id, _weight, body_size, flags = (
            _AFTER_METHOD.unpack_from(buf, method_end)
        )
        header_end = method_end + 8 + size
        if (
            method_frame_end != codec.FRAME_END
            or frame_type != FRAME_HEADER
            or header_channel != channel
            or size > self._max_payload
            or size < 14
            or flags & 1  # a further property-flags word: the frame path reads those
            or header_end >= end
        ):
            return 0
        # The body frame is checked before anything is decoded: a message split across reads (the
        # common case with large bodies) costs no decoding here that the frame path would repeat.
        after: int = header_end + 1
        body_end = 0
        if body_size:
            if body_size > self._max_payload or body_size > self.max_body_size or end - after < 7:
                return 0  # a body of several frames or one to refuse, or its frame not in this read
            header_frame_end, frame_type, body_channel, size = _AFTER_HEADER.unpack_from(buf, header_end)
            body_end = after + 7 + size
            if (
                header_frame_end != codec.FRAME_END
                or frame_type != FRAME_BODY
                or body_channel != channel
                or size != body_size
                or body_end >= end
                or buf[body_end] != codec.FRAME_END
            ):
                return 0
        elif buf[header_end] != codec.FRAME_END:
            return 0
        try:
            consumer_tag, delivery_tag, redelivered, exchange, routing_key = codec.decode_deliver(
                buf, pos + 11, method_end
            )
            properties = codec.decode_properties(
                buf, method_end + _PROPERTIES_AFTER_METHOD, header_end, flags, self.max_table_depth
            )
        except codec.DecodeError:
            return 0
        if body_size:
            start = after + 7
            # _copy_out's own small-body case, inlined: one call fewer per delivery.
            body = bytes(buf[start:body_end]) if body_size < 4096 else _copy_out(buf, start, body_end)
            after = body_end + 1
        else:
            body = b""
        if consumer_tag not in state.no_ack_consumers:
            state.track_delivery(delivery_tag)
        events.append(
            _new_tuple(Delivery, (  # Delivery(...) without the Python-level __new__ of a NamedTuple
                channel, state.incarnation, consumer_tag, delivery_tag, redelivered, exchange, routing_key,
                properties, body,
            ))
        )  # fmt: skip
        return after

    def _reject_frame(self, buf: bytes | bytearray, pos: int, frame_type: int, size: int) -> None:
        if self.state in _HANDSHAKE and frame_type not in _FRAME_TYPES:
            sample = bytes(buf[pos : pos + 32])
            raise self._violation(FRAME_ERROR, f"the server did not speak AMQP 0-9-1: it sent {sample!r}")
        if frame_type not in _FRAME_TYPES:
            raise self._violation(FRAME_ERROR, f"unknown frame type {frame_type}")
        raise self._violation(
            FRAME_ERROR,
            f"the broker sent a frame of {size + FRAME_OVERHEAD} bytes, more than the negotiated "
            f"frame_max of {self._max_payload + FRAME_OVERHEAD}",
        )

    def _bad_frame_end(self, channel: int) -> RemoteProtocolError:
        return self._violation(
            FRAME_ERROR, f"frame on channel {channel} does not end with the frame-end octet 0xCE"
        )

    def _violation(
        self, reply_code: int, message: str, class_id: int = 0, method_id: int = 0
    ) -> RemoteProtocolError:
        """Queue Connection.Close for a peer violation and build the error to raise.

        The connection is finished from then on: the broker's stream cannot be trusted (after a frame
        error it cannot even be split into frames), so nothing more is read; the caller flushes the Close
        and drops the transport.
        """
        if self.state is ConnectionState.OPEN:
            # A shortstr holds 255 bytes of UTF-8, not 255 characters.
            text = message.encode()[:255].decode(errors="ignore")
            self._out.append(
                codec.encode_method(0, commands.Connection.Close(reply_code, text, class_id, method_id))
            )
        # Before Open the broker would not read a Close; while closing, ours is already queued.
        self.state = ConnectionState.CLOSED
        self._channels.clear()
        return RemoteProtocolError(message, reply_code)

    # ---- receiving: methods -------------------------------------------------------------------------

    def _on_method(
        self, channel: int, buf: bytes | bytearray, start: int, end: int, events: list[Event]
    ) -> None:
        if end - start < 4:
            raise self._violation(SYNTAX_ERROR, "method frame shorter than its class and method id")
        index = _METHOD_INDEX.unpack_from(buf, start)[0]
        state = self._channels.get(channel)
        if (
            state is not None
            and state.phase is _CHANNEL_OPEN
            and not state.content_kind
            and self.state is _OPEN
        ):
            # The hot path: content-carrying methods and confirms on an open channel.
            try:
                if index == _DELIVER:
                    fields = codec.decode_deliver(buf, start + 4, end)
                    if fields[0] not in state.no_ack_consumers:
                        state.track_delivery(fields[1])
                    state.content_fields = fields
                    state.content_kind = index
                    return
                if index in (_ACK, _NACK):
                    if index == _ACK:
                        tag, multiple = codec.decode_ack(buf, start + 4, end)
                    else:
                        tag, multiple, _requeue = codec.decode_nack(buf, start + 4, end)
                    self._on_confirm(state, tag, multiple, index == _ACK, events)
                    return
                if index == _GET_OK:
                    no_ack = self._expect_reply(state, commands.Basic.GetOk).no_ack
                    get_ok = codec.decode_get_ok(buf, start + 4, end)
                    if not no_ack:
                        state.track_delivery(get_ok[0])
                    state.content_fields = get_ok
                    state.content_kind = index
                    return
                if index == _RETURN:
                    state.content_fields = codec.decode_return(buf, start + 4, end)
                    state.content_kind = index
                    return
            except codec.DecodeError as error:
                raise self._violation(SYNTAX_ERROR, f"malformed method frame: {error}") from None
        try:
            method = codec.decode_method(buf, start, end)
        except codec.DecodeError as error:
            raise self._violation(SYNTAX_ERROR, f"malformed method frame: {error}") from None
        if channel == 0:
            self._on_connection_method(method, events)
        else:
            self._on_channel_method(channel, state, method, events)

    def _on_connection_method(self, method: base.Frame, events: list[Event]) -> None:
        state = self.state
        if isinstance(method, commands.Connection.Close):
            self._send_method(0, commands.Connection.CloseOk())
            self.state = ConnectionState.CLOSED
            self._channels.clear()
            code, text = method.reply_code or 0, method.reply_text or ""
            if state in _HANDSHAKE:
                if code == ACCESS_REFUSED:
                    raise AuthenticationRefused(f"{code} {text}")
                raise BrokerClosedDuringHandshake(f"{code} {text}", code)
            events.append(ConnectionClosed(code, text, method.class_id or 0, method.method_id or 0))
            return
        if state is ConnectionState.CLOSING:
            if isinstance(method, commands.Connection.CloseOk):
                self.state = ConnectionState.CLOSED
                self._channels.clear()
                code, text = self._closing_reply or (200, "")
                events.append(ConnectionClosed(code, text, by_peer=False))
            return  # everything else is discarded while closing
        if state is ConnectionState.AWAIT_START and isinstance(method, commands.Connection.Start):
            self._on_start(method)
        elif state is ConnectionState.AWAIT_TUNE and isinstance(method, commands.Connection.Secure):
            self._send_method(0, commands.Connection.SecureOk(self._credentials.response()))
        elif state is ConnectionState.AWAIT_TUNE and isinstance(method, commands.Connection.Tune):
            self._on_tune(method)
        elif state is ConnectionState.AWAIT_OPEN_OK and isinstance(method, commands.Connection.OpenOk):
            self.state = ConnectionState.OPEN
            events.append(
                ConnectionOpened(self.frame_max, self.channel_max, self.heartbeat, self.server_properties)
            )
        elif state is ConnectionState.OPEN and isinstance(method, commands.Connection.Blocked):
            events.append(ConnectionBlocked(method.reason))
        elif state is ConnectionState.OPEN and isinstance(method, commands.Connection.Unblocked):
            events.append(ConnectionUnblocked())
        elif state is ConnectionState.OPEN and isinstance(method, commands.Connection.UpdateSecretOk):
            events.append(SecretUpdated())
        else:
            raise self._violation(
                COMMAND_INVALID,
                f"unexpected {method.name} on channel 0 while the connection is {state.value}",
                method.index >> 16,
                method.index & 0xFFFF,
            )

    def _on_start(self, start: commands.Connection.Start) -> None:
        if (start.version_major, start.version_minor) != (0, 9):
            self.state = ConnectionState.CLOSED
            raise WrongProtocol(
                f"it offered AMQP {start.version_major}-{start.version_minor} in Connection.Start"
            )
        mechanisms = start.mechanisms
        if isinstance(mechanisms, bytes):  # a longstr that is not UTF-8
            mechanisms = mechanisms.decode(errors="replace")
        offered = mechanisms.split()
        mechanism = self._credentials.mechanism
        if mechanism not in offered:
            self.state = ConnectionState.CLOSED
            raise MechanismNotOffered(mechanism, offered)
        self.server_properties = dict(start.server_properties or {})
        self._out.append(self._start_ok)
        self.state = ConnectionState.AWAIT_TUNE

    def _on_tune(self, tune: commands.Connection.Tune) -> None:
        if 0 < (tune.frame_max or 0) < MIN_FRAME_MAX:
            raise self._violation(
                SYNTAX_ERROR,
                f"the broker proposed frame_max {tune.frame_max}, "
                f"below the protocol's minimum of {MIN_FRAME_MAX}",
            )
        self.channel_max = negotiate(self._wanted_channel_max, tune.channel_max) or 65535
        self.frame_max = negotiate(self._wanted_frame_max, tune.frame_max)
        self.heartbeat = negotiate(self._wanted_heartbeat, tune.heartbeat)
        self._send_method(0, commands.Connection.TuneOk(self.channel_max, self.frame_max, self.heartbeat))
        self._out.append(self._open)
        self._max_payload = (self.frame_max or 2**32 - 1) - FRAME_OVERHEAD
        self.state = ConnectionState.AWAIT_OPEN_OK

    def _on_channel_method(
        self,
        channel: int,
        state: ChannelState | None,
        method: base.Frame,
        events: list[Event],
    ) -> None:
        if self.state is ConnectionState.CLOSING:
            return
        if self.state is not ConnectionState.OPEN:
            raise self._violation(
                COMMAND_INVALID, f"{method.name} on channel {channel} before the connection opened"
            )
        if state is None:
            raise self._violation(CHANNEL_ERROR, f"{method.name} on channel {channel}, which is not open")
        if state.content_kind:
            raise self._violation(
                UNEXPECTED_FRAME,
                f"{method.name} on channel {channel} while a message's content was expected",
            )
        kind = type(method)
        if kind is commands.Channel.Close:
            assert isinstance(method, commands.Channel.Close)
            self._send_method(channel, commands.Channel.CloseOk())
            closed = ChannelClosed(
                channel,
                method.reply_code or 0,
                method.reply_text or "",
                method.class_id or 0,
                method.method_id or 0,
            )
            if state.phase is ChannelPhase.CLOSING:
                # It crossed our Close: report the broker's reason, but keep the number reserved
                # until the CloseOk for our Close arrives.
                state.close_event = closed
                return
            del self._channels[channel]
            events.append(closed)
            return
        if state.phase is ChannelPhase.CLOSING:
            if kind is commands.Channel.CloseOk:
                del self._channels[channel]
                assert state.close_event is not None
                events.append(state.close_event)
            return  # a closing channel discards everything else
        if kind in _REPLIES:
            expected = self._expect_reply(state, kind)
            if kind is commands.Channel.OpenOk:
                state.phase = ChannelPhase.OPEN
                events.append(ChannelOpened(channel, state.incarnation))
                return
            if kind is commands.Basic.ConsumeOk and expected.no_ack:
                assert isinstance(method, commands.Basic.ConsumeOk)
                state.no_ack_consumers.add(method.consumer_tag or "")
            elif kind is commands.Basic.CancelOk:
                assert isinstance(method, commands.Basic.CancelOk)
                state.no_ack_consumers.discard(method.consumer_tag)
            events.append(MethodReply(channel, method))
        elif kind is commands.Channel.Flow:
            assert isinstance(method, commands.Channel.Flow)
            active = bool(method.active)
            self._send_method(channel, commands.Channel.FlowOk(active))
            events.append(ChannelFlow(channel, active))
        elif kind is commands.Basic.Cancel:
            assert isinstance(method, commands.Basic.Cancel)
            tag = method.consumer_tag or ""
            state.no_ack_consumers.discard(tag)
            if not method.nowait:
                self._send_method(channel, commands.Basic.CancelOk(tag))
            events.append(ConsumerCancelled(channel, tag))
        elif kind in (commands.Basic.Deliver, commands.Basic.Return, commands.Basic.Ack,
                      commands.Basic.Nack):  # fmt: skip
            # Reached only while the channel is still opening: the broker cannot have sent these.
            raise self._violation(
                COMMAND_INVALID, f"{method.name} on channel {channel} before Channel.OpenOk"
            )
        else:
            raise self._violation(
                COMMAND_INVALID,
                f"the broker sent {method.name} on channel {channel}, which a server never sends",
                method.index >> 16,
                method.index & 0xFFFF,
            )

    def _expect_reply(self, state: ChannelState, kind: type[base.Frame]) -> ExpectedReply:
        """Pop the oldest outstanding command if ``kind`` answers it; anything else is a violation."""
        if not state.expected or kind not in state.expected[0].replies:
            waiting = " or ".join(r.name for r in state.expected[0].replies) if state.expected else "no reply"
            raise self._violation(
                COMMAND_INVALID,
                f"the broker sent {kind.name} on channel {state.number} but {waiting} was expected",
            )
        return state.expected.popleft()

    def _on_confirm(
        self, state: ChannelState, tag: int, multiple: bool, ack: bool, events: list[Event]
    ) -> None:
        if not state.confirm_mode:
            raise self._violation(
                COMMAND_INVALID, f"publisher confirm on channel {state.number}, not in confirm mode"
            )
        settled = state.confirm_range(tag, multiple)
        if settled is None:
            raise self._violation(
                COMMAND_INVALID,
                f"the broker confirmed publish {tag} on channel {state.number}, "
                f"but only {state.publish_seq} were published",
            )
        events.append(_new_tuple(PublishConfirmed, (state.number, settled[0], settled[1], ack)))

    # ---- receiving: content -------------------------------------------------------------------------

    def _content_channel(self, channel: int, what: str) -> ChannelState | None:
        """The channel a content frame belongs to; None when it is to be discarded."""
        state = self._channels.get(channel)
        if self.state is ConnectionState.CLOSING or (
            state is not None and state.phase is ChannelPhase.CLOSING
        ):
            return None
        if state is None or self.state is not ConnectionState.OPEN:
            raise self._violation(CHANNEL_ERROR, f"{what} on channel {channel}, which is not open")
        if not state.content_kind:
            raise self._violation(
                UNEXPECTED_FRAME, f"{what} on channel {channel} without a method announcing it"
            )
        return state

    def _on_header(
        self, channel: int, buf: bytes | bytearray, start: int, end: int, events: list[Event]
    ) -> None:
        state = self._content_channel(channel, "content header")
        if state is None:
            return
        if state.content_remaining != -1:
            raise self._violation(
                UNEXPECTED_FRAME, f"second content header on channel {channel} for one message"
            )
        try:
            _class_id, body_size, properties = codec.decode_content_header(
                buf, start, end, self.max_table_depth
            )
        except codec.DecodeError as error:
            raise self._violation(SYNTAX_ERROR, f"malformed content header: {error}") from None
        if body_size > self.max_body_size:
            raise self._violation(
                RESOURCE_ERROR,
                f"the broker announced a message body of {body_size} bytes, more than this "
                f"client's max_body_size of {self.max_body_size}",
            )
        state.content_properties = properties
        state.content_remaining = body_size
        if body_size == 0:
            self._content_complete(state, b"", events)

    def _body_channel(self, channel: int, size: int) -> ChannelState | None:
        """The channel a body frame of ``size`` bytes continues a message on (None: discard it)."""
        state = self._content_channel(channel, "content body")
        if state is None:
            return None
        remaining = state.content_remaining
        if remaining == -1:
            raise self._violation(
                UNEXPECTED_FRAME, f"content body on channel {channel} before its content header"
            )
        if size > remaining:
            raise self._violation(
                UNEXPECTED_FRAME,
                f"content body on channel {channel} larger than its header announced",
            )
        return state

    def _on_body(
        self, channel: int, buf: bytes | bytearray, start: int, end: int, events: list[Event]
    ) -> None:
        size = end - start
        state = self._body_channel(channel, size)
        if state is None or not size:
            return  # an empty body frame: nothing to keep (a list entry per frame would add up)
        if size == state.content_remaining and not state.body_kept():
            self._content_complete(state, _copy_out(buf, start, end), events)
            return
        with memoryview(buf) as view:
            self._add_body_part(state, view[start:end], type(buf) is bytes)
        self._body_received(state, size, events)

    def _copy_body_frames(
        self, channel: int, buf: bytes | bytearray, pos: int, end: int, events: list[Event]
    ) -> int:
        """The hot path of a body of several frames: copy its whole frames from ``pos`` on into the
        buffer it is being assembled in, for as long as they follow one another; returns the
        position after the last one, or 0 when it took none (the frame-by-frame path then handles
        that frame, errors included).

        The body's first frame passed those of _body_channel's checks that cannot change since
        (closing the channel drops its content); the others are made here, for each frame.
        """
        state = self._channels.get(channel)
        if state is None or (buffer := state.content_buffer) is None or self.state is not _OPEN:
            return 0
        remaining = state.content_remaining
        max_payload = self._max_payload
        unpack_header = _FRAME_HEADER.unpack_from
        start = pos
        with memoryview(buf) as view:
            while end - pos >= 7:
                frame_type, frame_channel, size = unpack_header(buf, pos)
                frame_end = pos + 7 + size
                if (
                    frame_type != FRAME_BODY
                    or frame_channel != channel
                    or size > remaining
                    or size > max_payload
                    or frame_end >= end
                    or buf[frame_end] != codec.FRAME_END
                ):
                    break
                buffer.write(view[pos + 7 : frame_end])
                remaining -= size
                pos = frame_end + 1
                if not remaining:
                    break
        if pos == start:
            return 0
        state.content_remaining = remaining
        if not remaining:
            self._body_received(state, 0, events)  # its last frame
        return pos

    def _on_body_parts(self, channel: int, head: memoryview, tail: memoryview, events: list[Event]) -> None:
        """A body frame that arrived in two reads, as views of both."""
        size = len(head) + len(tail)
        state = self._body_channel(channel, size)
        if state is None:
            return
        if size == state.content_remaining and not state.body_kept():
            self._content_complete(state, b"".join((head, tail)), events)
            return
        self._add_body_part(state, head, True)  # _keep_rest keeps views of bytes reads only
        self._add_body_part(state, tail, type(tail.obj) is bytes)
        self._body_received(state, size, events)

    def _add_body_part(self, state: ChannelState, part: memoryview, immutable: bool) -> None:
        """Keep a frame's part of a body of several frames.

        Up to :data:`_BODY_BUFFER_MAX`, the body is copied into a buffer of its full size as its frames
        arrive, so no read is kept alive waiting for the rest of the message. A larger body keeps views
        of immutable reads (copies of anything else) until it is joined: its buffer would be allocated
        as soon as its first frame arrives, for all the size its header announced.
        """
        if not state.body_kept() and state.content_remaining <= _BODY_BUFFER_MAX:
            state.content_buffer = _body_buffer(state.content_remaining)
        buffer = state.content_buffer
        if buffer is not None:
            buffer.write(part)
        else:
            state.content_chunks.append(part if immutable else bytes(part))

    def _body_received(self, state: ChannelState, size: int, events: list[Event]) -> None:
        state.content_remaining -= size
        if not state.content_remaining:
            buffer = state.content_buffer
            if buffer is not None:
                state.content_buffer = None
                body = buffer.getvalue()
            else:
                body = b"".join(state.content_chunks)
                state.content_chunks = []
            self._content_complete(state, body, events)

    def _content_complete(self, state: ChannelState, body: bytes, events: list[Event]) -> None:
        kind, fields, properties = (
            state.content_kind,
            state.content_fields,
            state.content_properties,
        )
        assert properties is not None
        state.content_kind = 0
        state.content_remaining = -1
        state.content_properties = None
        if kind == _DELIVER:
            consumer_tag, delivery_tag, redelivered, exchange, routing_key = fields
            events.append(
                Delivery(
                    state.number, state.incarnation, consumer_tag, delivery_tag, redelivered, exchange,
                    routing_key, properties, body,
                )
            )  # fmt: skip
        elif kind == _GET_OK:
            delivery_tag, redelivered, exchange, routing_key, message_count = fields
            events.append(
                GetOk(
                    state.number, state.incarnation, delivery_tag, redelivered, exchange, routing_key,
                    message_count, properties, body,
                )
            )  # fmt: skip
        else:
            reply_code, reply_text, exchange, routing_key = fields
            seq = state.match_return(exchange, routing_key)
            events.append(
                Returned(state.number, reply_code, reply_text, exchange, routing_key, properties, body, seq)
            )


def _join_run(out: list[bytes | memoryview], start: int) -> None:
    """Make the small frames queued in ``out`` from ``start`` on one piece."""
    if len(out) - start > 1:
        out[start:] = [b"".join(out[start:])]


def _body_buffer(size: int) -> io.BytesIO:
    """A buffer for a body of ``size`` bytes (2 or more), allocated at that size.

    Written up to its last byte at once, so its ``getvalue()`` (CPython) hands out the buffer's own
    ``bytes`` object rather than a copy of it. BytesIO has no other way to allocate ahead.
    """
    buffer = io.BytesIO()
    buffer.seek(size - 1)
    buffer.write(b"\0")
    buffer.seek(0)
    return buffer


def _copy_out(buf: bytes | bytearray, start: int, end: int) -> bytes:
    """``bytes(buf[start:end])``, copied once for large slices (a bytearray slice is a second copy).

    Through a view, released before the receive buffer is resized; small slices are quicker
    without one.
    """
    if end - start < 4096:
        return bytes(buf[start:end])
    with memoryview(buf) as view:
        return bytes(view[start:end])


def _table(arguments: FieldTable | None) -> dict[str, Any]:
    if not arguments:
        return {}
    table = dict(arguments)
    _check_keys(table)
    return table


def _check_keys(value: Any) -> None:
    """Refuse field-table keys that are not ``str`` (in nested tables and arrays too).

    pamqp, which encodes method arguments, calls each key's ``encode()``: any other key escaped as an
    ``AttributeError`` instead of the caller-misuse error every other unencodable argument raises.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise LocalProtocolError(f"field table keys must be str, not {type(key).__name__}: {key!r}")
            _check_keys(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item)


def _build(kind: type[_Method], *arguments: Any) -> _Method:
    """Build a pamqp method from the caller's arguments; pamqp's validation errors are caller misuse."""
    try:
        return kind(*arguments)
    except (ValueError, TypeError) as error:
        raise LocalProtocolError(f"invalid {kind.name}: {error}") from error
