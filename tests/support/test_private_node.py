"""The private-node helper works: its nodes serve AMQP and AMQPS, restart with their data, raise alarms,
close connections, and leave nothing behind. Raw ``amqp_core`` over blocking sockets, no backend."""

from __future__ import annotations

import socket
import ssl
import uuid

import pytest
from pamqp import commands

from amqp_core import (
    AuthenticationRefused,
    ChannelClosed,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionLost,
    ConnectionUnblocked,
    PublishConfirmed,
)
from tests.support.private_node import NodeStartError, PrivateNode, _pids_with_env, rabbitmq_available
from tests.support.raw_amqp import BlockingAMQP, reply

pytest_plugins = ["tests.support.fixtures"]

pytestmark = pytest.mark.private_node


def unique(prefix: str) -> str:
    return f"private-node-test-{prefix}-{uuid.uuid4().hex[:8]}"


# ---- plain AMQP ---------------------------------------------------------------------------------------


def test_plain_connection_reaches_the_private_node(private_node: PrivateNode) -> None:
    assert private_node.amqp_port not in (5672, 5671)
    assert private_node.url == f"amqp://guest:guest@127.0.0.1:{private_node.amqp_port}/"
    with BlockingAMQP(private_node.host, private_node.amqp_port) as amqp:
        opened = amqp.opened
        assert opened is not None
        # The cluster name defaults to the node's name: this is our node, not the shared one.
        assert opened.server_properties["cluster_name"].startswith(private_node.node.split("@")[0] + "@")
        assert opened.server_properties["product"] == "RabbitMQ"
        channel = amqp.open_channel()
        amqp.connection.queue_declare(channel, "", exclusive=True)
        assert amqp.wait_for(reply(commands.Queue.DeclareOk)).method.queue.startswith("amq.gen-")
        # The fast control path (erl_call) reaches the same node.
        assert private_node.rpc("rabbit", "is_running") == "true"
        assert private_node.eval("length(rabbit_networking:connections_local())") == "1"


def test_close_all_connections(private_node: PrivateNode) -> None:
    with (
        BlockingAMQP(private_node.host, private_node.amqp_port) as first,
        BlockingAMQP(private_node.host, private_node.amqp_port) as second,
    ):
        private_node.close_all_connections("bye from the test")
        for amqp in (first, second):
            closed = amqp.wait_for(ConnectionClosed)
            assert (closed.reply_code, closed.by_peer) == (320, True)
            assert "bye from the test" in closed.reply_text


def test_block_publishers_sends_connection_blocked(private_node: PrivateNode) -> None:
    with BlockingAMQP(private_node.host, private_node.amqp_port) as amqp:
        # The core announces the connection.blocked capability by default, so the broker notifies us.
        assert amqp.connection._client_properties["capabilities"]["connection.blocked"] is True
        channel = amqp.open_channel()
        with private_node.publishers_blocked("memory"):
            assert private_node.blocked == "memory"
            assert private_node.alarms() == ["memory"]
            # RabbitMQ blocks (and notifies) a connection when it publishes under the alarm.
            amqp.connection.basic_publish(channel, b"held back", "", "nowhere")
            blocked = amqp.wait_for(ConnectionBlocked)
            assert "memory" in blocked.reason
            shared_node_unaffected()
        assert private_node.blocked is None
        amqp.wait_for(ConnectionUnblocked)
        assert private_node.alarms() == []


def shared_node_unaffected() -> None:
    """While the private node is blocked, a publisher on the shared broker (if there is one) is not."""
    try:
        shared = BlockingAMQP("127.0.0.1", 5672, timeout=3)
    except OSError:
        return
    with shared:
        channel = shared.open_channel()
        shared.connection.basic_publish(channel, b"free", "", "nowhere")
        shared.connection.queue_declare(channel, "", exclusive=True)  # a round trip after the publish
        shared.wait_for(reply(commands.Queue.DeclareOk))
        assert not any(isinstance(event, ConnectionBlocked) for event in shared.events)


@pytest.mark.parametrize(
    "full", [pytest.param(False, id="application-restart"), pytest.param(True, id="full-node-restart")]
)
def test_restart_keeps_durable_queues_and_persistent_messages(private_node: PrivateNode, full: bool) -> None:
    durable, transient = unique("durable"), unique("transient")
    amqp = BlockingAMQP(private_node.host, private_node.amqp_port)
    with amqp:
        channel = amqp.open_channel()
        amqp.connection.queue_declare(channel, durable, durable=True)
        amqp.wait_for(reply(commands.Queue.DeclareOk))
        amqp.connection.queue_declare(channel, transient)
        amqp.wait_for(reply(commands.Queue.DeclareOk))
        amqp.connection.confirm_select(channel)
        amqp.wait_for(reply(commands.Confirm.SelectOk))
        amqp.connection.basic_publish(
            channel, b"kept", "", durable, commands.Basic.Properties(delivery_mode=2)
        )
        assert amqp.wait_for(PublishConfirmed).ack

        with private_node.stopped(full=full):  # the application, or the whole Erlang VM, stops
            assert not private_node.running
            assert private_node.vm_running is not full
            # The broker said goodbye (Connection.Close 320) or just went away.
            assert amqp.wait_for(lambda e: isinstance(e, ConnectionClosed | ConnectionLost))
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((private_node.host, private_node.amqp_port), timeout=5)
        assert private_node.running

    listing = private_node.ctl("list_queues", "name", "durable", "messages").stdout
    assert f"{durable}\ttrue\t1" in listing.splitlines()

    with BlockingAMQP(private_node.host, private_node.amqp_port) as amqp:
        channel = amqp.open_channel()
        amqp.connection.queue_declare(channel, durable, passive=True)
        assert amqp.wait_for(reply(commands.Queue.DeclareOk)).method.message_count == 1
        amqp.connection.queue_delete(channel, durable)
        amqp.wait_for(reply(commands.Queue.DeleteOk))
        amqp.connection.queue_declare(channel, transient, passive=True)
        assert amqp.wait_for(ChannelClosed).reply_code == 404  # non-durable: gone with the restart


# ---- TLS ----------------------------------------------------------------------------------------------


def test_tls_connection_verifies_the_server_certificate(tls_node: PrivateNode) -> None:
    assert tls_node.tls_port is not None
    assert tls_node.tls_url == f"amqps://guest:guest@localhost:{tls_node.tls_port}/"
    for hostname in ("localhost", "127.0.0.1"):  # the certificate's DNS and IP subject alternative names
        context = tls_node.ssl_context(client_cert=False)
        with BlockingAMQP(
            tls_node.host, tls_node.tls_port, ssl_context=context, server_hostname=hostname
        ) as amqp:
            assert isinstance(amqp.sock, ssl.SSLSocket)
            certificate = amqp.sock.getpeercert()
            assert certificate is not None
            assert (("commonName", "localhost"),) in certificate["subject"]
            amqp.open_channel()  # PLAIN guest/guest works over TLS too


def test_tls_with_the_wrong_hostname_fails_verification(tls_node: PrivateNode) -> None:
    assert tls_node.tls_port is not None
    context = tls_node.ssl_context(client_cert=False)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        BlockingAMQP(tls_node.host, tls_node.tls_port, ssl_context=context, server_hostname="not-localhost")


def test_tls_without_the_test_ca_fails_verification(tls_node: PrivateNode) -> None:
    assert tls_node.tls_port is not None
    with pytest.raises(ssl.SSLCertVerificationError):
        BlockingAMQP(
            tls_node.host,
            tls_node.tls_port,
            ssl_context=ssl.create_default_context(),
            server_hostname="localhost",
        )


def test_external_auth_logs_in_as_the_client_certificate(tls_node: PrivateNode) -> None:
    assert tls_node.tls_port is not None
    assert tls_node.client_cert.is_file() and tls_node.client_key.is_file() and tls_node.ca_cert.is_file()
    with BlockingAMQP(
        "localhost",
        tls_node.tls_port,
        ssl_context=tls_node.ssl_context(),
        auth_mechanism="EXTERNAL",
        username="",
    ) as amqp:
        channel = amqp.open_channel()
        amqp.connection.confirm_select(channel)
        amqp.wait_for(reply(commands.Confirm.SelectOk))
        # RabbitMQ checks a message's user_id against the authenticated user: this proves who we are.
        as_us = commands.Basic.Properties(user_id=tls_node.tls_client_user)
        amqp.connection.basic_publish(channel, b"me", "", "nowhere", as_us)
        assert amqp.wait_for(PublishConfirmed).ack
        amqp.connection.basic_publish(
            channel, b"guest?", "", "nowhere", commands.Basic.Properties(user_id="guest")
        )
        closed = amqp.wait_for(ChannelClosed)
        assert closed.reply_code == 406 and "user_id" in closed.reply_text


def test_external_auth_needs_a_client_certificate(tls_node: PrivateNode) -> None:
    assert tls_node.tls_port is not None
    context = tls_node.ssl_context(client_cert=False)
    amqp = BlockingAMQP("localhost", tls_node.tls_port, ssl_context=context, auth_mechanism="EXTERNAL")
    try:
        # Without a peer certificate RabbitMQ does not even offer EXTERNAL.
        with pytest.raises(AuthenticationRefused, match="EXTERNAL"):
            amqp.open()
    finally:
        amqp.sock.close()


# ---- the helper itself --------------------------------------------------------------------------------


@pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ is not installed")
def test_a_node_that_does_not_boot_in_time_is_killed_and_reported() -> None:
    node = PrivateNode(name="priv-slow", startup_timeout=1.0)
    try:
        with pytest.raises(NodeStartError, match=node.node):
            node.start()
        assert not node.vm_running
        assert not _pids_with_env(f"RABBITMQ_NODENAME={node.node}")  # the VM it was booting is gone
    finally:
        node.destroy()
    assert not node.base_dir.exists()


@pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ is not installed")
def test_an_application_restart_right_after_boot_brings_the_broker_back() -> None:
    """Listening is not the end of the boot: a stop and start just after it must still start the broker
    (rabbit:start() returns at once while it takes the node for booting)."""
    node = PrivateNode()
    try:
        node.start()
        node.stop()
        node.start()
        assert node.running
        with BlockingAMQP(node.host, node.amqp_port) as amqp:
            amqp.open_channel()
    finally:
        node.destroy()


@pytest.mark.skipif(not rabbitmq_available(), reason="RabbitMQ is not installed")
def test_a_node_never_started_is_cleaned_up() -> None:
    node = PrivateNode(tls=True)
    assert node.ca_cert.is_file() and node.config_file.is_file()
    assert len({node.amqp_port, node.dist_port, node.tls_port, 5672, 25672}) == 5
    node.destroy()
    node.destroy()  # idempotent
    assert not node.base_dir.exists()
