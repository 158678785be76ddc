"""TLS (``amqps://``) against a private TLS-enabled RabbitMQ node the tests start — never the shared node.

The node's certificates are made by the test support code: a throw-away CA, a server certificate for
``localhost`` / ``127.0.0.1``, and a client certificate whose CN is the user EXTERNAL authentication
logs in as.
"""

from __future__ import annotations

import socket
import ssl
import uuid

import pytest

import aio_pika
from aio_pika import exceptions
from tests.support.private_node import PrivateNode

pytest_plugins = ["tests.support.fixtures"]
pytestmark = [pytest.mark.anyio, pytest.mark.broker]


def tls_url(node: PrivateNode, host: str = "localhost", **query: str) -> str:
    url = f"amqps://guest:guest@{host}:{node.tls_port}/"
    if query:
        url += "?" + "&".join(f"{key}={value}" for key, value in query.items())
    return url


async def round_trip(connection: aio_pika.Connection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(f"test-api.tls.{uuid.uuid4().hex[:12]}", exclusive=True)
    await channel.default_exchange.publish(aio_pika.Message(b"over tls"), routing_key=queue.name)
    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None and message.body == b"over tls"


async def test_certificate_verified_with_the_ca(tls_node: PrivateNode, backend_name: str) -> None:
    url = tls_url(tls_node, cafile=str(tls_node.ca_cert))
    async with aio_pika.connect(url, backend=backend_name) as connection:
        assert connection.transport is not None
        assert connection.transport.get_extra_info("ssl_object") is not None
        await round_trip(connection)


async def test_unknown_ca_is_refused(tls_node: PrivateNode, backend_name: str) -> None:
    """``amqps://`` verifies by default: the system CAs do not know the node's CA."""
    with pytest.raises(exceptions.AMQPConnectionError, match="TLS") as info:
        async with aio_pika.connect(tls_url(tls_node), backend=backend_name):
            pass  # pragma: no cover
    assert isinstance(info.value.__cause__, ssl.SSLError)


async def test_host_name_is_verified(tls_node: PrivateNode, backend_name: str) -> None:
    """A name that resolves to the node but is not in its certificate is refused."""
    other_names = [name for name in ("vm", "runsc") if _resolves_to_loopback(name)]
    if not other_names:
        pytest.skip("no other name for 127.0.0.1 in /etc/hosts")
    url = tls_url(tls_node, host=other_names[0], cafile=str(tls_node.ca_cert))
    with pytest.raises(exceptions.AMQPConnectionError, match="TLS"):
        async with aio_pika.connect(url, backend=backend_name):
            pass  # pragma: no cover


async def test_no_verify_ssl(tls_node: PrivateNode, backend_name: str) -> None:
    async with aio_pika.connect(tls_url(tls_node, no_verify_ssl="1"), backend=backend_name) as connection:
        await round_trip(connection)


async def test_client_certificate_and_external_auth(tls_node: PrivateNode, backend_name: str) -> None:
    url = (
        f"amqps://localhost:{tls_node.tls_port}/?auth=external&cafile={tls_node.ca_cert}"
        f"&certfile={tls_node.client_cert}&keyfile={tls_node.client_key}"
    )
    async with aio_pika.connect(url, backend=backend_name) as connection:
        await round_trip(connection)


async def test_ssl_context_argument(tls_node: PrivateNode, backend_name: str) -> None:
    context = tls_node.ssl_context(client_cert=False)
    async with aio_pika.connect(tls_url(tls_node), ssl_context=context, backend=backend_name) as connection:
        await round_trip(connection)


async def test_ssl_keyword_and_ssl_options(tls_node: PrivateNode, backend_name: str) -> None:
    """aio-pika 1.x style: host/port keywords, ``ssl=True`` and pika-like ``ssl_options``."""
    async with aio_pika.connect(
        host="localhost",
        port=tls_node.tls_port,
        ssl=True,
        ssl_options={"ca_certs": str(tls_node.ca_cert)},
        backend=backend_name,
    ) as connection:
        assert connection.url.scheme == "amqps"
        await round_trip(connection)


def _resolves_to_loopback(name: str) -> bool:
    try:
        return socket.gethostbyname(name) == "127.0.0.1"
    except OSError:
        return False
