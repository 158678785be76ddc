"""connect_tcp: TLS, and the errors it promises."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import anyio.abc
import pytest

from backends import Backend

from .helpers import PieceProducer, Recorder, echo, serve, wait_until

pytestmark = pytest.mark.anyio


@contextmanager
def silent_socket(listen: bool) -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections, or accepts them and then never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        if listen:
            sock.listen()  # the kernel completes the TCP handshake; nobody ever reads
        yield sock.getsockname()[1]


async def test_refused(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        with silent_socket(listen=False) as port, pytest.raises(ConnectionRefusedError):
            await backend.connect_tcp("127.0.0.1", port, Recorder())


async def test_unknown_host(make_backend: Callable[[], Backend]) -> None:
    async with make_backend() as backend:
        with pytest.raises(socket.gaierror):
            await backend.connect_tcp("no-such-host.invalid", 5672, Recorder(), timeout=10)


async def test_timeout_covers_the_tls_handshake(
    make_backend: Callable[[], Backend], client_ssl_context: ssl.SSLContext
) -> None:
    async with make_backend() as backend:
        with silent_socket(listen=True) as port:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await backend.connect_tcp(
                    "127.0.0.1", port, Recorder(), ssl_context=client_ssl_context, timeout=0.2
                )
            assert time.monotonic() - started < 2


async def test_tls_round_trip(
    make_backend: Callable[[], Backend],
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    recorder = Recorder()
    payload = b"hello over TLS " * 10_000
    async with make_backend() as backend, serve(echo, server_ssl_context) as port:
        # The certificate is checked against the host name by default.
        stream = await backend.connect_tcp(
            "localhost", port, recorder, ssl_context=client_ssl_context, timeout=5
        )
        assert isinstance(stream.get_extra_info("ssl_object"), ssl.SSLObject)
        assert stream.get_extra_info("peercert")["subject"] == ((("commonName", "localhost"),),)
        recorder.send(stream, payload)
        await wait_until(lambda: len(recorder.received) == len(payload))
        assert recorder.received == payload
        stream.close()
        await wait_until(lambda: bool(recorder.lost))
    assert recorder.lost == [None]


async def test_tls_carries_large_pieces_in_order(
    make_backend: Callable[[], Backend],
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    # What a large publish hands over (frame heads between slices of its body), more than one
    # write slice long: over TLS every piece goes through the transport, a slice at a time.
    body = bytes(range(251)) * 4000
    view = memoryview(body)
    batches: list[list[bytes | memoryview]] = [
        [b"head" * 20, view[:700_000], b"8 bytes.", view[700_000:], b"\xce"],
        [b"next", body],
    ]
    expected = b"".join(b"".join(pieces) for pieces in batches)
    producer = PieceProducer(batches)
    async with make_backend() as backend, serve(echo, server_ssl_context) as port:
        stream = await backend.connect_tcp(
            "localhost", port, producer, ssl_context=client_ssl_context, timeout=5
        )
        with anyio.fail_after(20):
            while len(producer.received) < len(expected):
                if producer.batches:
                    stream.wake_writer()  # a batch per wake, as the core queues a publish per wake
                await anyio.sleep(0.001)
        assert producer.received == expected
        stream.close()
        await wait_until(lambda: bool(producer.lost))


async def test_tls_server_hostname_overrides_host(
    make_backend: Callable[[], Backend],
    server_ssl_context: ssl.SSLContext,
    client_ssl_context: ssl.SSLContext,
) -> None:
    async with make_backend() as backend, serve(echo, server_ssl_context) as port:
        stream = await backend.connect_tcp(
            "127.0.0.1", port, Recorder(), ssl_context=client_ssl_context, server_hostname="localhost"
        )
        stream.close()
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await backend.connect_tcp(
                "127.0.0.1", port, Recorder(), ssl_context=client_ssl_context, server_hostname="wrong.test"
            )


async def test_peer_hanging_up_during_the_tls_handshake(
    make_backend: Callable[[], Backend], client_ssl_context: ssl.SSLContext
) -> None:
    async def hang_up(stream: anyio.abc.ByteStream) -> None:
        await stream.aclose()

    async with make_backend() as backend, serve(hang_up) as port:
        with pytest.raises(OSError):
            await backend.connect_tcp("127.0.0.1", port, Recorder(), ssl_context=client_ssl_context)
