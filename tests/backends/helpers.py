"""Test doubles for the backend tests: a recording protocol and local servers."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener

from backends import Stream


class Recorder:
    """A StreamProtocol that records what arrives and sends what the test queues."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.outgoing = bytearray()
        self.pulls = 0
        self.lost: list[BaseException | None] = []

    def data_received(self, data: bytes) -> None:
        self.received += data

    def data_to_send(self) -> bytes:
        self.pulls += 1
        data = bytes(self.outgoing)
        self.outgoing.clear()
        return data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def send(self, stream: Stream, data: bytes) -> None:
        self.outgoing += data
        stream.wake_writer()


class PieceProducer(Recorder):
    """Hands its data over as lists of pieces (bytes and memoryviews), as large publishes do."""

    def __init__(self, batches: list[list[bytes | memoryview]]) -> None:
        super().__init__()
        self.batches = batches

    def data_to_send(self) -> list[bytes | memoryview]:  # type: ignore[override]
        self.pulls += 1
        return self.batches.pop(0) if self.batches else []


async def wait_until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.002)


async def echo(stream: anyio.abc.ByteStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send(chunk)


@asynccontextmanager
async def serve(
    handler: Callable[[Any], Awaitable[None]], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve handler on 127.0.0.1 (over TLS with ssl_context); yields the port."""
    tcp_listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = tcp_listener.extra(anyio.abc.SocketAttribute.local_port)
    listener: anyio.abc.Listener[Any] = tcp_listener
    if ssl_context is not None:
        listener = TLSListener(tcp_listener, ssl_context, standard_compatible=False)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handler)
        yield port
        task_group.cancel_scope.cancel()


@contextmanager
def listener(receive_buffer: int | None = None) -> Iterator[socket.socket]:
    """A plain listening socket on 127.0.0.1, for tests that play the peer by hand.

    Plain sockets, because anyio's accepted streams on asyncio read eagerly into memory, which
    would hide back-pressure. receive_buffer shrinks the accepted sockets' kernel receive
    buffer (they inherit it), so that a peer that does not read pushes back quickly.
    """
    with socket.socket() as sock:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def accept(server: socket.socket) -> socket.socket:
    """The connection connect_tcp has opened (it is queued already, so this does not block)."""
    peer, _ = server.accept()
    peer.setblocking(False)
    return peer


async def recv(peer: socket.socket, size: int = 1024 * 1024) -> bytes:
    """Some bytes, or b"" once the other side has closed."""
    while True:
        await anyio.wait_readable(peer)
        try:
            return peer.recv(size)
        except BlockingIOError:
            continue


async def recv_exactly(peer: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await recv(peer)
        assert chunk, "closed early"
        data += chunk
    return bytes(data)


async def recv_all(peer: socket.socket) -> bytes:
    """Everything until the other side closes."""
    data = bytearray()
    while chunk := await recv(peer):
        data += chunk
    return bytes(data)


async def send_all(peer: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        await anyio.wait_writable(peer)
        try:
            view = view[peer.send(view) :]
        except BlockingIOError:
            continue
