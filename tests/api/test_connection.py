"""Connections: both ways of connecting, closing semantics, callbacks, URL parameters, errors, secrets."""

from __future__ import annotations

import logging
import socket
import warnings

import anyio
import pytest

import aio_pika
from aio_pika import exceptions

from .conftest import AMQP_URL

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

PASSWORD = "guest"


async def test_async_with_connect(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        assert isinstance(connection, aio_pika.Connection)
        assert not connection.is_closed
        channel = await connection.channel()
        assert not channel.is_closed
    assert connection.is_closed
    assert channel.is_closed


async def test_await_connect_on_asyncio(backend_name: str, anyio_backend: str) -> None:
    """``await connect()`` needs a detached backend: native asyncio only; anyio says to use async with."""
    if backend_name == "anyio":
        with pytest.raises(RuntimeError, match="async with"):
            await aio_pika.connect(AMQP_URL, backend=backend_name)
        return
    connection = await aio_pika.connect(AMQP_URL, backend=backend_name)
    async with connection:  # the seed's style: connect, then "async with connection"
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)
    assert connection.is_closed


async def test_keyword_arguments_instead_of_url(backend_name: str) -> None:
    async with aio_pika.connect(
        host="127.0.0.1", port=5672, login="guest", password=PASSWORD, virtualhost="/", backend=backend_name
    ) as connection:
        assert connection.url.host == "127.0.0.1"
        await (await connection.channel()).declare_queue(exclusive=True)


async def test_user_managed_backend(backend_name: str) -> None:
    """A Backend the caller entered can be passed in: then ``await connect()`` works on trio too."""
    import backends

    async with backends.create_backend(backend_name) as backend:
        connection = await aio_pika.connect(AMQP_URL, backend=backend)
        await (await connection.channel()).declare_queue(exclusive=True)
        await connection.close()
        assert connection.is_closed


async def test_loop_argument_is_deprecated_and_ignored(backend_name: str, anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("loop= is an asyncio loop: aio-pika 1.x code runs on asyncio")
    import asyncio

    with pytest.warns(DeprecationWarning, match="loop"):
        context = aio_pika.connect(AMQP_URL, loop=asyncio.get_running_loop(), backend=backend_name)
    async with context as connection:
        assert not connection.is_closed


async def test_connection_class(backend_name: str) -> None:
    class MyConnection(aio_pika.Connection):
        marker = "mine"

    async with aio_pika.connect(AMQP_URL, connection_class=MyConnection, backend=backend_name) as connection:
        assert isinstance(connection, MyConnection)
        assert connection.marker == "mine"
    with pytest.raises(TypeError, match="connection_class"):
        aio_pika.connect(AMQP_URL, connection_class=dict)  # type: ignore[arg-type]


async def test_close_semantics_and_callbacks(backend_name: str) -> None:
    modern: list[tuple[object, object]] = []
    async_calls: list[object] = []
    old_style: list[object] = []

    async def async_callback(sender: object, exc: object) -> None:
        await anyio.sleep(0)
        async_calls.append(exc)

    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        connection.close_callbacks.add(lambda sender, exc: modern.append((sender, exc)))
        connection.close_callbacks.add(async_callback)
        connection.add_close_callback(old_style.append)  # aio-pika 1.x
        channel = await connection.channel()
        channel_closed: list[object] = []
        channel.close_callbacks.add(lambda sender, exc: channel_closed.append(exc))
        await connection.close()
        assert connection.is_closed
        assert channel.is_closed
        await connection.closed()  # modern: an awaitable
        await connection.closing  # aio-pika 1.x: a property to await
        await channel.closed()
        await channel.closing
        await connection.close()  # idempotent
    assert modern == [(connection, None)]  # None: closed by the user
    assert async_calls == [None]
    assert channel_closed == [None]
    (future,) = old_style
    assert future.done() and future.result() == "Normal shutdown"  # type: ignore[attr-defined]
    with pytest.raises(exceptions.ChannelInvalidStateError):
        await channel.declare_queue(exclusive=True)
    with pytest.raises(RuntimeError):
        connection.channel()


async def test_operations_after_close_raise_at_once(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        exchange = channel.default_exchange
    with anyio.fail_after(1):
        with pytest.raises(exceptions.ChannelInvalidStateError):
            await queue.get(fail=False)
        with pytest.raises(exceptions.ChannelInvalidStateError):
            await exchange.publish(aio_pika.Message(b"x"), routing_key=queue.name)
        with pytest.raises(exceptions.ChannelInvalidStateError):
            await queue.consume(lambda message: None)
        with pytest.raises(exceptions.ChannelInvalidStateError):
            await channel.set_qos(prefetch_count=1)


async def test_pending_operations_fail_when_the_connection_closes(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        errors: list[BaseException] = []

        async def wait_for_message() -> None:
            try:
                async for _message in queue.iterator():
                    pass
            except BaseException as error:  # pragma: no cover - the iterator just stops
                errors.append(error)

        async with anyio.create_task_group() as group:
            group.start_soon(wait_for_message)
            await anyio.sleep(0.05)
            with anyio.fail_after(5):
                await connection.close()
        assert errors == []  # the iterator ended (StopAsyncIteration), as aio-pika's does


async def test_server_properties_and_connection_name(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL + "?name=api-test&heartbeat=30", backend=backend_name) as connection:
        assert (
            connection.server_properties["product"] == b"RabbitMQ" or connection.server_properties["product"]
        )
        assert connection.heartbeat == 30


async def test_heartbeats_keep_an_idle_connection_open(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL + "?heartbeat=1", backend=backend_name) as connection:
        assert connection.heartbeat == 1
        await anyio.sleep(3.5)  # RabbitMQ drops a client silent for ~3 intervals
        assert not connection.is_closed
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)


async def test_update_secret(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        result = await connection.update_secret(PASSWORD, reason="rotation", timeout=5)
        assert result.name == "Connection.UpdateSecretOk"
        assert not connection.is_closed


# ---- errors -------------------------------------------------------------------------------------------


async def test_wrong_password(backend_name: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "not-the-password-7c1e"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(exceptions.ProbableAuthenticationError) as info:
        async with aio_pika.connect(f"amqp://guest:{secret}@127.0.0.1:5672/", backend=backend_name):
            pass  # pragma: no cover
    assert isinstance(info.value, exceptions.AMQPConnectionError)
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert secret not in caplog.text


async def test_connection_refused(backend_name: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(exceptions.AMQPConnectionError, match="refused"):
        async with aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{port}/", backend=backend_name):
            pass  # pragma: no cover


async def test_unknown_host(backend_name: str) -> None:
    with pytest.raises(exceptions.AMQPConnectionError, match="resolve"):
        async with aio_pika.connect("amqp://guest:guest@no-such-host.invalid/", backend=backend_name):
            pass  # pragma: no cover


async def test_unknown_vhost(backend_name: str) -> None:
    with pytest.raises(exceptions.ConnectionClosed) as info:
        async with aio_pika.connect(AMQP_URL + "no-such-vhost", backend=backend_name):
            pass  # pragma: no cover
    assert info.value.reply_code == 530


async def test_connect_timeout(backend_name: str) -> None:
    """A listener that never answers the protocol header: the handshake times out."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            async with aio_pika.connect(
                f"amqp://guest:guest@127.0.0.1:{port}/", timeout=0.3, backend=backend_name
            ):
                pass  # pragma: no cover


@pytest.mark.parametrize(
    ("url", "kwargs", "error", "parameter"),
    [
        ("http://127.0.0.1/", {}, ValueError, "scheme"),
        ("amqp://127.0.0.1:99999/", {}, ValueError, "port"),
        ("amqp://127.0.0.1/?heartbeat=abc", {}, ValueError, "heartbeat"),
        ("amqp://127.0.0.1/?heartbeat=70000", {}, ValueError, "heartbeat"),
        ("amqp://127.0.0.1/?frame_max=100", {}, ValueError, "frame_max"),
        ("amqp://127.0.0.1/?channel_max=-1", {}, ValueError, "channel_max"),
        ("amqp://127.0.0.1/?auth=kerberos", {}, ValueError, "auth"),
        ("amqp://127.0.0.1/?timeout=soon", {}, ValueError, "timeout"),
        (None, {"port": "5672"}, TypeError, "port"),
        (None, {"port": 0}, ValueError, "port"),
        (None, {"login": 5}, TypeError, "login"),
        (12, {}, TypeError, "url"),
        (AMQP_URL, {"timeout": "1"}, TypeError, "timeout"),
        (AMQP_URL, {"backend": "twisted"}, ValueError, "backend"),
        (AMQP_URL, {"client_properties": []}, TypeError, "client_properties"),
        (AMQP_URL, {"ssl_context": "yes"}, TypeError, "ssl_context"),
    ],
)
async def test_invalid_parameters_name_the_parameter(
    url: object, kwargs: dict[str, object], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=parameter):
        aio_pika.connect(url, **kwargs)  # type: ignore[arg-type]


async def test_url_query_parameters(backend_name: str) -> None:
    url = AMQP_URL + "?name=q-params&heartbeat=20&frame_max=65536&channel_max=100&timeout=5&auth=plain"
    async with aio_pika.connect(url, backend=backend_name) as connection:
        assert connection.heartbeat == 20
        assert connection._core.frame_max == 65536
        assert connection._core.channel_max == 100
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        big = b"x" * 200_000  # split into frames of frame_max
        await channel.default_exchange.publish(aio_pika.Message(big), routing_key=queue.name)
        message = await queue.get(no_ack=True)
        assert message is not None and message.body == big


async def test_password_never_shown(backend_name: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-pw-only-here"
    caplog.set_level(logging.DEBUG)
    url = f"amqp://guest:{secret}@127.0.0.1:5672/"
    context = aio_pika.connect(url, backend=backend_name)
    connection = aio_pika.Connection(url)
    texts = [repr(connection), str(connection), str(connection.url), repr(connection.url), repr(context)]
    texts.append(repr(connection._settings))
    texts.append(repr(connection._core))
    with pytest.raises(exceptions.ProbableAuthenticationError) as info:
        async with context:
            pass  # pragma: no cover
    texts += [str(info.value), repr(info.value), caplog.text]
    for text in texts:
        assert secret not in text
    assert "******" in str(connection)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert secret not in repr(aio_pika.make_url(url).with_password("******"))


async def test_broker_closes_the_connection(backend_name: str) -> None:
    """A connection-level error (an unknown exchange type: 503) closes the connection with that code."""
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        reasons: list[BaseException | None] = []
        connection.close_callbacks.add(lambda sender, exc: reasons.append(exc))
        channel = await connection.channel()
        other = await connection.channel()
        with pytest.raises(exceptions.ConnectionClosed) as info:
            await channel.declare_exchange("test-api.bad-type", "no-such-type", auto_delete=True)
        assert isinstance(info.value, exceptions.ConnectionCommandInvalid)
        assert info.value.reply_code == 503 and "no-such-type" in str(info.value)
        assert connection.is_closed and other.is_closed
        assert reasons == [info.value]
        with anyio.fail_after(1), pytest.raises(exceptions.ChannelInvalidStateError, match="503"):
            await other.declare_queue(exclusive=True)


async def test_lost_connection_fails_pending_operations(backend_name: str) -> None:
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        reasons: list[BaseException | None] = []
        channel_reasons: list[BaseException | None] = []
        connection.close_callbacks.add(lambda sender, exc: reasons.append(exc))
        channel.close_callbacks.add(lambda sender, exc: channel_reasons.append(exc))
        errors: list[BaseException] = []

        async def get() -> None:
            try:
                await queue.declare(timeout=10)
            except BaseException as error:
                errors.append(error)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(get)
                await anyio.sleep(0)
                connection._stream.abort()  # type: ignore[union-attr]  # the network fails
        assert len(errors) == 1 and isinstance(errors[0], exceptions.AMQPConnectionError)
        assert "lost" in str(errors[0])
        assert connection.is_closed and channel.is_closed
        assert len(reasons) == 1 and isinstance(reasons[0], exceptions.AMQPConnectionError)
        assert channel_reasons == reasons
        await connection.closed()


async def test_close_while_connecting(backend_name: str) -> None:
    import backends

    with socket.socket() as server:  # accepts the TCP connection, never answers the protocol header
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        async with backends.create_backend(backend_name) as backend:
            connection = aio_pika.Connection(f"amqp://guest:guest@127.0.0.1:{port}/", backend=backend)
            errors: list[BaseException] = []

            async def connect() -> None:
                try:
                    await connection.connect(timeout=10)
                except BaseException as error:
                    errors.append(error)

            with anyio.fail_after(5):
                async with anyio.create_task_group() as group:
                    group.start_soon(connect)
                    await anyio.sleep(0.1)
                    await connection.close()
            assert len(errors) == 1 and isinstance(errors[0], exceptions.AMQPConnectionError)
            assert connection.is_closed


class FreezableProxy:
    """A TCP proxy to the broker that can stop forwarding (a broker that hangs without closing sockets)."""

    def __init__(self) -> None:
        import threading

        self.frozen = threading.Event()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        try:
            client, _ = self.server.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", 5672))
        self.sockets += [client, upstream]
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.frozen.is_set():
                    target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


async def test_heartbeat_timeout_detects_a_dead_broker(backend_name: str) -> None:
    proxy = FreezableProxy()
    try:
        async with aio_pika.connect(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/?heartbeat=1", backend=backend_name
        ) as connection:
            channel = await connection.channel()
            reasons: list[BaseException | None] = []
            connection.close_callbacks.add(lambda sender, exc: reasons.append(exc))
            proxy.frozen.set()  # the broker goes silent
            with anyio.fail_after(10), pytest.raises(exceptions.AMQPConnectionError, match="heartbeat"):
                await channel.declare_queue(
                    exclusive=True
                )  # never answered: fails when the heartbeat times out
            assert connection.is_closed
            assert len(reasons) == 1 and "heartbeat" in str(reasons[0])
    finally:
        proxy.close()
