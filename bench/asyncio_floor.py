"""Every scenario but ``get`` on bare asyncio: what any asyncio client pays, with no client library.

The raw client (``rawamqp.py``) gives the broker's limit with blocking ``send``/``recv``, no event loop,
and bodies parsed where they lie. A library on asyncio also pays for the loop itself: the blocking
``epoll_wait`` before each read, the protocol callback, the future that wakes a waiting task, the loop
iteration that runs it; and a consumer that hands out each body as ``bytes`` copies it once out of the
read. This module runs the scenarios where that matters with that much and nothing more, as the
``floor`` implementation of ``api_bench.py`` (in the same alternation as the others):

* the handshake and setup are done by the blocking raw client, then its socket is handed to an
  ``asyncio.Protocol`` that writes pre-encoded messages and acks, and reads only the frame heads it
  needs to count confirms and deliveries: no encoding, no parsing of methods or properties, no
  channel state;
* ``publish_confirm_seq``: one task publishes, then awaits a future that the protocol completes when
  the confirm arrives;
* ``rpc``: the client publishes a request with a confirm, as the tutorial's code does, and awaits a
  future until both the confirm and the reply have arrived; the server, another process, answers
  inside ``data_received`` (no task at all: less than any library's callback costs) and acks each
  request once its reply is confirmed, as the raw RPC and the libraries' servers do;
* ``consume`` (both consume scenarios): the reads the transport hands over are parsed in place; each
  body is copied once into its own ``bytes`` (a body frame cut by the end of a read is kept as views
  of both reads until then), and each read's messages are acked with one ``multiple`` ack, as the raw
  consumer does. No task, no message object: the bodies are dropped.
* ``publish_confirm_500`` and ``publish_noconfirm``: one task writes blocks of pre-encoded messages
  of about 1 MiB, as the raw client does; each block is first offered to the socket's ``send`` (no
  copy in user space when the socket takes it whole) and the rest, if any, handed to the transport,
  and while the transport is over its high-water mark the task waits for ``resume_writing``, as a
  client that respects flow control must. With confirms it writes a window (500 messages, or 64 of
  1 MiB, as the API scenario's ``gather``), then awaits a future until the broker has confirmed all
  of it; without, it then polls a passive ``Queue.Declare``, as the API scenario does, until the
  broker holds every message.

Its figures are a floor for asyncio clients, above the raw client's: a target that needs more than the
floor delivered (or less CPU than it spent) cannot be met by any client written on asyncio, in that run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from typing import Any

from api_bench import QUEUE_ARGUMENTS, RAW_EQUIVALENT, Clock, Spec, body_of, window_for
from pamqp import commands
from pamqp import frame as pamqp_frame
from rawamqp import CHANNEL, FRAME_HEAD, METHOD_INDEX, U64, RawConnection, ack_frame, publish_frames

__all__ = ["floor_rpc_server", "floor_scenario"]

_BASIC_ACK = commands.Basic.Ack.index
_BASIC_DELIVER = commands.Basic.Deliver.index
_DECLARE_OK = commands.Queue.DeclareOk.index
_CLOSE_OK = commands.Connection.CloseOk.index
_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY = 1, 2, 3

_WRITE_BYTES = 1 << 20
_READ_BYTES = 64 * 1024

Hook = Callable[[int], None]  # called with the count so far (of confirms, or of deliveries)


class FrameCounter(asyncio.Protocol):
    """Counts the confirms and the whole deliveries in the stream, calling the hooks at each, and
    completes ``declare_ok``, when set, with the message count of the next ``Queue.DeclareOk``."""

    def __init__(self, on_confirm: Hook, on_delivery: Hook) -> None:
        self.on_confirm = on_confirm
        self.on_delivery = on_delivery
        self.buffer = bytearray()
        self.confirmed = 0
        self.delivered = 0
        self.body_left = -1  # bytes of the current delivery's body still to come; -1: none started
        self.declare_ok: asyncio.Future[int] | None = None  # completed with the message count
        loop = asyncio.get_running_loop()
        self.close_ok: asyncio.Future[None] = loop.create_future()
        self.writable: asyncio.Future[None] = loop.create_future()  # done while not paused
        self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        while len(buffer) - pos >= 7:
            frame_type, _channel, size = FRAME_HEAD.unpack_from(buffer, pos)
            end = pos + 8 + size
            if end > len(buffer):
                break
            if frame_type == _FRAME_METHOD:
                index = METHOD_INDEX.unpack_from(buffer, pos + 7)[0]
                if index == _BASIC_ACK:
                    # RabbitMQ confirms in publish order: the tag, `multiple` or not, covers every
                    # publish up to it.
                    self.confirmed = U64.unpack_from(buffer, pos + 11)[0]
                    self.on_confirm(self.confirmed)
                elif index == _DECLARE_OK and self.declare_ok is not None:
                    _size, _channel, declare_ok = pamqp_frame.unmarshal(bytes(buffer[pos:end]))
                    self.declare_ok.set_result(declare_ok.message_count)
                    self.declare_ok = None
                elif index == _BASIC_DELIVER:
                    self.body_left = 0
                elif index == _CLOSE_OK and not self.close_ok.done():
                    self.close_ok.set_result(None)
            elif frame_type == _FRAME_HEADER:
                self.body_left = U64.unpack_from(buffer, pos + 11)[0]
                self._check_delivered()
            elif frame_type == _FRAME_BODY:
                self.body_left -= size
                self._check_delivered()
            pos = end
        del buffer[:pos]

    def _check_delivered(self) -> None:
        if self.body_left == 0:
            self.body_left = -1
            self.delivered += 1
            self.on_delivery(self.delivered)


async def _open(raw: RawConnection, on_confirm: Hook, on_delivery: Hook) -> tuple[Any, FrameCounter]:
    raw.sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_connection(
        lambda: FrameCounter(on_confirm, on_delivery), sock=raw.sock
    )
    # The transport's reads are 256 KiB by default, which glibc serves with mmap (page faults on every
    # read) unless something has moved its mmap threshold: 64 KiB, below it, as our client reads
    # while messages are small, so the floor pays no cost an asyncio client can avoid.
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = _READ_BYTES
    return transport, counter


async def _close(transport: asyncio.Transport, counter: FrameCounter | BodyCopier) -> None:
    """Connection.Close and its CloseOk before the socket closes (so the broker logs no abrupt close)."""
    transport.write(pamqp_frame.marshal(commands.Connection.Close(200, "bye", 0, 0), 0))
    try:
        await asyncio.wait_for(counter.close_ok, 5)
    finally:
        transport.close()


class _Waiting:
    """The publishing task's future, completed by the protocol's hooks."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None

    def wake(self, _count: int) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    async def until(self, done: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while not done():
            self.future = loop.create_future()
            await self.future


async def _publish_confirm_seq(spec: Spec, clock: Clock) -> None:
    with RawConnection(spec.url) as raw:
        raw.confirm_select()
        frames = publish_frames(spec.queue, body_of(spec.size), frame_max=raw.frame_max)
        waiting = _Waiting()
        transport, counter = await _open(raw, waiting.wake, waiting.wake)
        clock.start()
        for seq in range(1, spec.count + 1):
            transport.write(frames)
            await waiting.until(lambda seq=seq: counter.confirmed >= seq)
        clock.stop()
        await _close(transport, counter)


async def _publish_batch(spec: Spec, clock: Clock) -> None:
    confirms = spec.scenario == "publish_confirm_500"
    with RawConnection(spec.url) as raw:
        if confirms:
            raw.confirm_select()
        message = publish_frames(spec.queue, body_of(spec.size), frame_max=raw.frame_max)
        declare = pamqp_frame.marshal(commands.Queue.Declare(queue=spec.queue, passive=True), CHANNEL)
        # Writes of about 1 MiB, as the raw client's: the windows cut into blocks of pre-encoded copies.
        window = window_for(spec.size) if confirms else spec.count
        per_write = max(1, _WRITE_BYTES // len(message))
        plan = []  # per window: the blocks' message counts, and the publish count the window ends at
        for first in range(0, spec.count, window):
            last = min(first + window, spec.count)
            plan.append(([min(per_write, last - start) for start in range(first, last, per_write)], last))
        blocks = {count: message * count for counts, _last in plan for count in counts}
        waiting = _Waiting()
        transport, counter = await _open(raw, waiting.wake, waiting.wake)
        loop = asyncio.get_running_loop()
        clock.start()
        for counts, last in plan:
            for count in counts:
                await _write(counter, transport, raw.sock, blocks[count])
            if confirms:
                await waiting.until(lambda last=last: counter.confirmed >= last)
        while not confirms:
            declared: asyncio.Future[int] = loop.create_future()
            counter.declare_ok = declared
            transport.write(declare)
            if await declared >= spec.count:
                break
            await asyncio.sleep(0.001)
        clock.stop()
        await _close(transport, counter)


async def _write(
    counter: FrameCounter, transport: asyncio.Transport, sock: socket.socket, data: bytes
) -> None:
    """Offer ``data`` to the socket and hand the transport what it did not take, once the transport
    is below its high-water mark: no copy in user space unless the socket is full."""
    if not counter.writable.done():
        await counter.writable
    sent = 0
    if not transport.get_write_buffer_size():
        with contextlib.suppress(BlockingIOError):
            sent = sock.send(data)
    if sent < len(data):
        transport.write(memoryview(data)[sent:])


async def _rpc_client(spec: Spec, clock: Clock) -> None:
    from api_bench import start_rpc_server, stop_rpc_server

    reply_queue = f"{spec.queue}-reply"
    with RawConnection(spec.url) as raw:
        raw.queue_declare(reply_queue, arguments=QUEUE_ARGUMENTS)
        raw.start_consume(reply_queue, ack=False)
        raw.confirm_select()
        properties = commands.Basic.Properties(
            content_type="application/octet-stream", correlation_id="0" * 36, reply_to=reply_queue
        )
        request = publish_frames(spec.queue, body_of(spec.size), properties, frame_max=raw.frame_max)
        server = start_rpc_server(spec)
        try:
            waiting = _Waiting()
            transport, counter = await _open(raw, waiting.wake, waiting.wake)
            clock.start()
            for call in range(1, spec.count + 1):
                transport.write(request)
                await waiting.until(lambda call=call: counter.confirmed >= call and counter.delivered >= call)
            clock.stop()
            await _close(transport, counter)
        finally:
            stop_rpc_server(server)


async def floor_rpc_server(spec: Spec) -> None:
    """The server of the floor's RPC: replies from ``data_received``, acks once a reply is confirmed."""
    with RawConnection(spec.url) as raw:
        raw.start_consume(spec.queue)
        raw.confirm_select()
        properties = commands.Basic.Properties(correlation_id="0" * 36)
        reply = publish_frames(f"{spec.queue}-reply", body_of(spec.size), properties, frame_max=raw.frame_max)
        transport: asyncio.Transport | None = None

        def on_delivery(_count: int) -> None:
            assert transport is not None
            transport.write(reply)

        def on_confirm(count: int) -> None:
            assert transport is not None
            transport.write(ack_frame(count))  # request n's reply is publish n: delivery tag n

        transport, counter = await _open(raw, on_confirm, on_delivery)
        stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
        print("READY", flush=True)
        await stop
        await _close(transport, counter)


class BodyCopier(asyncio.Protocol):
    """A consumer: each delivery's body copied once into ``bytes``, each read acked with one ack."""

    def __init__(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        self.left = count
        self.done: asyncio.Future[None] = loop.create_future()
        self.close_ok: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.rest = b""  # the start of a method or header frame cut by the end of a read
        self.skip = 0  # 1: the next read starts with the frame end of a body frame
        self.tag = 0  # the delivery tag of the message being received
        self.body_left = 0  # bytes of its body still to come
        self.parts: list[memoryview] = []  # its body frames (views of the reads)
        self.frame_left = 0  # payload bytes of a body frame cut by the end of a read, still to come
        self.ack_tag = 0  # the last message completed in this read
        self.body_bytes = 0  # in all the bodies made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        pos, self.skip = self.skip, 0
        if self.frame_left:  # the rest of a body frame cut by the previous read
            pos = self._body_part(memoryview(data), 0, self.frame_left)
            if self.frame_left:
                return
            pos += 1  # its frame end
        if self.rest:  # a small frame was cut: only then is (the rest of) a read copied
            data, pos, self.rest = self.rest + data[pos:], 0, b""
        view = memoryview(data)
        end = len(data)
        while end - pos >= 7:
            frame_type, _channel, size = FRAME_HEAD.unpack_from(data, pos)
            payload = pos + 7
            if frame_type == _FRAME_BODY:
                pos = self._body_part(view, payload, size) + 1
                if self.frame_left:
                    break
                continue
            if payload + size >= end:
                break
            if frame_type == _FRAME_METHOD:
                index = METHOD_INDEX.unpack_from(data, payload)[0]
                if index == _BASIC_DELIVER:
                    self.tag = U64.unpack_from(data, payload + 5 + data[payload + 4])[0]
                elif index == _CLOSE_OK and not self.close_ok.done():
                    self.close_ok.set_result(None)
            elif frame_type == _FRAME_HEADER:
                self.body_left = U64.unpack_from(data, payload + 4)[0]
                if not self.body_left:
                    self._complete()
            pos = payload + size + 1
        if not self.frame_left:
            if pos > end:
                self.skip = 1
            elif pos < end:
                self.rest = bytes(data[pos:])
        if self.ack_tag:
            assert self.transport is not None
            self.transport.write(ack_frame(self.ack_tag, multiple=True))
            self.ack_tag = 0

    def _body_part(self, view: memoryview, start: int, size: int) -> int:
        """Take up to ``size`` payload bytes from ``start``; returns where the taken bytes end."""
        end = min(start + size, len(view))
        self.parts.append(view[start:end])
        self.frame_left = size - (end - start)
        self.body_left -= end - start
        if not self.body_left and not self.frame_left:
            self._complete()
        return end

    def _complete(self) -> None:
        parts, self.parts = self.parts, []
        body = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        self.body_bytes += len(body)  # then dropped: making it is what a client pays
        self.ack_tag = self.tag
        self.left -= 1
        if not self.left and not self.done.done():
            self.done.set_result(None)


async def _consume(spec: Spec, clock: Clock) -> None:
    from api_bench import prefetch_for

    body = body_of(spec.size)
    with RawConnection(spec.url) as filler:
        filler.fill(spec.queue, body, spec.count)
    with RawConnection(spec.url) as raw:
        raw.qos(prefetch_for(spec.size))
        raw.sock.setblocking(False)
        loop = asyncio.get_running_loop()
        clock.start()
        # The consumer starts on the asyncio side, so the first deliveries reach the protocol.
        transport, copier = await loop.create_connection(lambda: BodyCopier(spec.count), sock=raw.sock)
        consume = commands.Basic.Consume(queue=spec.queue, consumer_tag="floor")
        transport.write(pamqp_frame.marshal(consume, 1))
        await copier.done
        clock.stop()
        await _close(transport, copier)


def floor_scenario(spec: Spec, clock: Clock) -> dict[str, Any]:
    scenario = RAW_EQUIVALENT[spec.scenario]
    if scenario == "publish_confirm_seq":
        asyncio.run(_publish_confirm_seq(spec, clock))
    elif scenario in ("publish_confirm_500", "publish_noconfirm"):
        asyncio.run(_publish_batch(spec, clock))
    elif scenario == "rpc":
        asyncio.run(_rpc_client(spec, clock))
    elif scenario == "consume":
        asyncio.run(_consume(spec, clock))
    else:
        raise ValueError(f"no asyncio floor for {spec.scenario}")
    return {}
