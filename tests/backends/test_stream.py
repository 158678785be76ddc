"""Streams: data both ways, coalesced writes, back-pressure, read sizes, closing and connection_lost."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable

import anyio
import pytest

from backends import Backend

from .helpers import (
    PieceProducer,
    Recorder,
    accept,
    echo,
    listener,
    recv,
    recv_all,
    recv_exactly,
    send_all,
    serve,
    wait_until,
)

pytestmark = pytest.mark.anyio


async def test_round_trip_through_echo_server(make_backend: Callable[[], Backend]) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, bigger than any single read or write
    recorder = Recorder()
    async with make_backend() as backend, serve(echo) as port:
        stream = await backend.connect_tcp("127.0.0.1", port, recorder)
        for start in range(0, len(payload), 300_000):
            recorder.send(stream, payload[start : start + 300_000])
        await wait_until(lambda: len(recorder.received) == len(payload))
        assert recorder.received == payload
        stream.close()
        await wait_until(lambda: bool(recorder.lost))
    assert recorder.lost == [None]


async def test_wake_writer_coalesces_into_one_pull(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                await anyio.sleep(0.01)
                assert recorder.pulls == 0, "nothing is pulled before wake_writer"
                expected = b""
                for number in range(100):  # one event-loop iteration: no await in between
                    message = b"%03d;" % number
                    expected += message
                    recorder.send(stream, message)
                assert await recv_exactly(peer, len(expected)) == expected
                await anyio.sleep(0.01)
                # The asyncio backend writes the first wake of an iteration at once (a task waiting for
                # a reply saves an iteration); everything after it in the iteration is one more pull.
                assert recorder.pulls <= 2
                stream.close()


async def test_batched_wakes_make_one_write(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                expected = b""
                for number in range(100):  # acks for a read's deliveries, in one iteration
                    message = b"%03d;" % number
                    expected += message
                    recorder.outgoing += message
                    stream.wake_writer_batched()
                assert await recv_exactly(peer, len(expected)) == expected
                await anyio.sleep(0.01)
                assert recorder.pulls == 1
                stream.close()


@pytest.mark.parametrize("loop_and_backend", [("asyncio", "asyncio")], ids=["asyncio"])
async def test_batched_wake_goes_with_the_next_eager_write(make_backend: Callable[[], Backend]) -> None:
    """Acks are never written at once on their own, but go with a command written at once after them
    (only the asyncio backend writes eagerly)."""
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                recorder.outgoing += b"ack;"
                stream.wake_writer_batched()
                assert recorder.pulls == 0, "a batched wake waits for the loop"
                recorder.send(stream, b"publish;")
                assert recorder.pulls == 1, "the first wake_writer of the iteration writes at once"
                recorder.send(stream, b"publish;")
                assert recorder.pulls == 1, "later ones in the iteration are coalesced"
                expected = b"ack;publish;publish;"
                assert await recv_exactly(peer, len(expected)) == expected
                assert recorder.pulls == 2
                stream.close()


@pytest.mark.parametrize("loop_and_backend", [("asyncio", "asyncio")], ids=["asyncio"])
async def test_one_eager_write_per_iteration(make_backend: Callable[[], Backend]) -> None:
    """A command alone in its iteration is written at once and costs no second pull; a read starts a
    new iteration, whose first command is written at once again (a round trip: publish, confirm)."""
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                recorder.send(stream, b"publish 1;")
                assert recorder.pulls == 1
                assert await recv_exactly(peer, 10) == b"publish 1;"
                for _ in range(5):
                    await anyio.sleep(0)
                assert recorder.pulls == 1, "nothing was left to pull after the eager write"
                peer.sendall(b"confirm 1;")
                await wait_until(lambda: len(recorder.received) == 10)
                recorder.send(stream, b"publish 2;")
                assert recorder.pulls == 2, "the first command after a read is written at once"
                assert await recv_exactly(peer, 10) == b"publish 2;"
                stream.close()


class Producer(Recorder):
    """Has another chunk to send every time it is asked, until told which pull is the last."""

    CHUNK = b"x" * 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.produced = 0
        self.last_pull: int | None = None

    def data_to_send(self) -> bytes:
        self.pulls += 1
        if self.last_pull is not None and self.pulls > self.last_pull:
            return b""
        self.produced += len(self.CHUNK)
        return self.CHUNK


async def test_back_pressure_stops_pulling_until_the_peer_reads(
    make_backend: Callable[[], Backend], backend_name: str
) -> None:
    producer = Producer()
    with listener(receive_buffer=64 * 1024) as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], producer)
            with accept(server) as peer:
                # The peer does not read: keep asking to write until the backend stops pulling.
                history: list[int] = []
                while len(history) < 20 or history[-1] != history[-20]:
                    assert len(history) < 500, "the backend never stopped pulling"
                    stream.wake_writer()
                    await anyio.sleep(0.005)
                    history.append(producer.pulls)
                stalled_at = producer.pulls
                # What the kernel buffers, plus a chunk or two in the backend: not unbounded.
                assert producer.produced < 32 * 1024 * 1024
                if backend_name == "asyncio":
                    assert stream._paused  # type: ignore[attr-defined]  # the transport paused us
                # (The anyio writer task is blocked in `await stream.send()`.)

                for _ in range(10):  # wakes while paused pull nothing
                    stream.wake_writer()
                    await anyio.sleep(0.005)
                assert producer.pulls == stalled_at

                # The peer reads: writing resumes by itself, since a wake came while paused,
                # and everything pulled arrives. The next pull is the last one with data.
                producer.last_pull = stalled_at + 1
                received = 0
                with anyio.fail_after(10):
                    while producer.pulls <= stalled_at or received < producer.produced:
                        received += len(await recv(peer))
                assert received == producer.produced
                stream.abort()


async def test_pieces_arrive_whole_and_in_order_through_a_slow_reader(
    make_backend: Callable[[], Backend],
) -> None:
    import random

    rng = random.Random(7)
    batches: list[list[bytes | memoryview]] = []
    for batch in range(4):
        pieces: list[bytes | memoryview] = []
        for number in range(rng.randrange(1, 120)):
            size = rng.choice([1, 8, 50, 4096, 65536, 300_000, 1_100_000])
            chunk = bytes([(batch * 31 + number) % 251]) * size
            pieces.append(memoryview(chunk)[: size - size // 3] if number % 2 else chunk)
        batches.append(pieces)
    await send_through_a_slow_reader(make_backend, batches)


async def test_messages_of_a_few_pieces_arrive_whole_through_a_slow_reader(
    make_backend: Callable[[], Backend],
) -> None:
    # Each batch is what one large publish queues (frame heads between slices of its body): small
    # enough for one writev() of all of it, which the full socket takes only in part.
    batches: list[list[bytes | memoryview]] = []
    for number in range(6):
        body = bytes(range(number, number + 251)) * 5000
        view = memoryview(body)
        batches.append([b"head" * 20, view[:600_000], b"8 bytes.", view[600_000:], b"\xce"])
    await send_through_a_slow_reader(make_backend, batches)


async def test_a_piece_larger_than_the_socket_buffer_arrives_whole(
    make_backend: Callable[[], Backend],
) -> None:
    # One body bigger than the socket takes: writes stop inside it, not only between pieces.
    body = bytes(range(251)) * (8 * 1024 * 1024 // 251)
    await send_through_a_slow_reader(make_backend, [[b"head", body, b"\xce"], [body[7:]]])


def test_a_message_that_finds_the_socket_full_arrives_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The asyncio backend writes a few pieces with one writev(); when the socket takes none of
    them (EAGAIN) or part of them, the rest goes through the transport, in order."""
    import asyncio
    import os

    from backends import AsyncioBackend

    real_writev = os.writev
    # What the writev() calls find: the first batch's first (EAGAIN), the second batch's first
    # (room for a few bytes); the rest, room for everything.
    outcomes = ["full", "room", "part"]

    def writev(fd: int, buffers: list[bytes | memoryview]) -> int:
        outcome = outcomes.pop(0) if outcomes else "room"
        if outcome == "full":
            raise BlockingIOError
        if outcome == "part":
            return real_writev(fd, [memoryview(buffers[0])[:5]])
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    body = bytes(range(251)) * 400
    batches: list[list[bytes | memoryview]] = [
        [b"first head", memoryview(body)[3:], b"end"],
        [b"second head", body, b"end"],
        [b"third head", body[::-1], b"end"],
    ]
    expected = b"".join(b"".join(pieces) for pieces in batches)

    async def main() -> None:
        producer = PieceProducer(batches)
        with listener() as server:
            async with AsyncioBackend() as backend:
                stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], producer)
                with accept(server) as peer:
                    received = bytearray()
                    async with asyncio.timeout(10):
                        while len(received) < len(expected):
                            if producer.batches:
                                stream.wake_writer()
                            await asyncio.sleep(0.001)
                            received += await recv(peer)
                    assert received == expected
                    assert not outcomes, "each batch went through writev()"
                    stream.abort()

    asyncio.run(main())


def test_a_wake_with_nothing_to_send_makes_no_system_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import os

    from backends import AsyncioBackend

    calls: list[int] = []
    real_writev = os.writev

    def writev(fd: int, buffers: list[bytes | memoryview]) -> int:
        calls.append(len(buffers))
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)

    async def main() -> None:
        producer = PieceProducer([[b"head", bytes(70_000), b"end"]])
        with listener() as server:
            async with AsyncioBackend() as backend:
                stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], producer)
                with accept(server) as peer:
                    for _ in range(3):  # the first pull has the batch, the others nothing
                        stream.wake_writer()
                        await asyncio.sleep(0.001)
                    assert len(await recv_exactly(peer, 70_007)) == 70_007
                    assert producer.pulls == 3
                    assert calls == [3]
                    stream.abort()

    asyncio.run(main())


async def send_through_a_slow_reader(
    make_backend: Callable[[], Backend], batches: list[list[bytes | memoryview]]
) -> None:
    expected = b"".join(b"".join(pieces) for pieces in batches)
    producer = PieceProducer([list(pieces) for pieces in batches])
    with listener(receive_buffer=64 * 1024) as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], producer)
            with accept(server) as peer:
                received = bytearray()
                with anyio.fail_after(30):
                    while len(received) < len(expected):
                        if producer.batches:
                            stream.wake_writer()
                        await anyio.sleep(0.001)  # a slow reader: the socket fills, writes are partial
                        received += await recv(peer)
                assert received == expected
                stream.abort()


async def test_connection_lost_once_when_the_peer_closes(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                peer.send(b"bye")
            await wait_until(lambda: bool(recorder.lost))
            assert stream.is_closing
            stream.close()
            stream.abort()
            await anyio.sleep(0.05)
    assert recorder.received == b"bye"
    assert recorder.lost == [None]


async def test_connection_lost_reports_a_reset(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # closing with a zero linger time sends RST
            await wait_until(lambda: bool(recorder.lost))
            assert stream.is_closing
            await anyio.sleep(0.05)
    [error] = recorder.lost
    assert isinstance(error, ConnectionResetError)


BODY = b"x" * (4 * 1024 * 1024)  # far more than the socket buffers: the writer blocks in send


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


async def test_peer_closing_while_a_write_is_blocked_is_no_failure(
    make_backend: Callable[[], Backend], caplog: pytest.LogCaptureFixture
) -> None:
    # The broker ends the stream while a large publish waits for room. The writer cut off in the
    # middle of its send is no failure of its own: the end is reported once, as the end of stream
    # (or the reset that the unread data then causes), and nothing is logged as an error.
    producer = PieceProducer([[b"head", memoryview(BODY), b"tail"]])
    with listener(receive_buffer=64 * 1024) as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], producer)
            with accept(server) as peer:
                stream.wake_writer()
                assert await recv(peer)  # the write started; the rest waits for room
                peer.shutdown(socket.SHUT_WR)  # end of stream for the reader, nothing read any more
                await wait_until(lambda: stream.is_closing)
            await wait_until(lambda: bool(producer.lost))
    [end] = producer.lost
    assert end is None or isinstance(end, ConnectionError), repr(end)
    assert errors_logged(caplog) == []


async def test_peer_resetting_while_a_write_is_blocked_reports_the_reset(
    make_backend: Callable[[], Backend], caplog: pytest.LogCaptureFixture
) -> None:
    producer = PieceProducer([[b"head", memoryview(BODY), b"tail"]])
    with listener(receive_buffer=64 * 1024) as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], producer)
            with accept(server) as peer:
                stream.wake_writer()
                assert await recv(peer)
                # closing with a zero linger time sends RST
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await wait_until(lambda: bool(producer.lost))
            assert stream.is_closing
    [error] = producer.lost
    assert isinstance(error, ConnectionError), error
    assert errors_logged(caplog) == []


async def test_connection_lost_once_when_we_close(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                assert not stream.is_closing
                stream.close()
                assert stream.is_closing
                stream.close()
                assert await recv_all(peer) == b""
                await wait_until(lambda: bool(recorder.lost))
                stream.abort()
                await anyio.sleep(0.05)
    assert recorder.lost == [None]


async def test_close_flushes_pending_data(make_backend: Callable[[], Backend]) -> None:
    # More than the peer's receive buffer, so the backend has to wait for the peer to read.
    payload = b"0123456789abcdef" * 256 * 1024  # 4 MiB
    recorder = Recorder()
    with listener(receive_buffer=64 * 1024) as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                recorder.send(stream, payload[:1000])
                recorder.outgoing += payload[1000:]  # queued without a wake: close() pulls it
                stream.close()
                assert await recv_all(peer) == payload
                await wait_until(lambda: bool(recorder.lost))
    assert recorder.lost == [None]


async def test_abort_closes_without_flushing(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                # The first wake of an iteration may be written at once (asyncio backend); the second
                # is queued for the coalesced flush, which abort() must not perform.
                recorder.send(stream, b"first;")
                pulls = recorder.pulls
                recorder.send(stream, b"never sent")
                stream.abort()
                assert stream.is_closing
                stream.abort()
                await wait_until(lambda: bool(recorder.lost))
                assert await recv_all(peer) in (b"", b"first;")
                assert recorder.pulls == pulls
    assert recorder.lost == [None]


async def test_leaving_the_backend_aborts_its_streams(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        async with make_backend() as backend:
            await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            peer = accept(server)
        assert recorder.lost == [None]  # already: leaving waited for it
        with peer:
            assert await recv_all(peer) == b""


async def test_extra_info_and_tcp_nodelay(make_backend: Callable[[], Backend]) -> None:
    recorder = Recorder()
    with listener() as server:
        port = server.getsockname()[1]
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", port, recorder)
            with accept(server):
                assert stream.get_extra_info("peername")[:2] == ("127.0.0.1", port)
                assert stream.get_extra_info("sockname")[0] == "127.0.0.1"
                assert stream.get_extra_info("ssl_object") is None
                assert stream.get_extra_info("peercert", "none") == "none"
                assert stream.get_extra_info("no such thing", 42) == 42
                sock = stream.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                stream.close()


class ReadSizes(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def data_received(self, data: bytes) -> None:
        self.sizes.append(len(data))
        super().data_received(data)


async def test_read_size_follows_the_traffic(make_backend: Callable[[], Backend], backend_name: str) -> None:
    # Reads of a quiet connection stay at 64 KiB, below the allocator's mmap threshold (a bigger
    # buffer would cost system calls and page faults per read); the asyncio backend reads up to
    # 512 KiB once a read fills its buffer: fewer loop iterations for a stream of large messages.
    burst = b"x" * 4 * 1024 * 1024
    recorder = ReadSizes()
    with listener() as server:
        async with make_backend() as backend:
            stream = await backend.connect_tcp("127.0.0.1", server.getsockname()[1], recorder)
            with accept(server) as peer:
                total = 0
                for data in (b"quiet", burst, b"quiet again", burst):
                    first_read = len(recorder.sizes)
                    # Sent before the loop runs again: the first read finds all the kernel took
                    # at once (on loopback, over 100 KiB of a burst).
                    sent = peer.send(data)
                    await send_all(peer, data[sent:])
                    total += len(data)
                    await wait_until(lambda total=total: len(recorder.received) == total)
                    if data is burst:
                        assert recorder.sizes[first_read] <= 64 * 1024
                        grown = max(recorder.sizes[first_read:])
                        if backend_name == "asyncio":
                            assert 64 * 1024 < grown <= 512 * 1024
                        else:
                            assert grown <= 64 * 1024
                stream.close()
