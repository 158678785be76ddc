"""Conversations with the broker, written once and run two ways.

``capture_recordings.py`` runs each scenario against the real RabbitMQ through a blocking socket and stores
the frames in ``recordings/``; ``test_replay.py`` runs the very same scenario against the stored recording
with no broker. A scenario drives an ``amqp_core.Connection`` and calls ``wait(predicate)`` whenever it
needs the broker's answer: the driver flushes what the connection queued and returns the events up to the
first one matching the predicate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pamqp import commands

from amqp_core import (
    ChannelClosed,
    ChannelOpened,
    Connection,
    ConnectionClosed,
    ConnectionOpened,
    Delivery,
    Event,
    GetOk,
    MethodReply,
    PublishConfirmed,
    Returned,
)

Wait = Callable[[Callable[[Event], bool]], list[Event]]
Scenario = Callable[[Connection, Wait, dict[str, Any]], None]

# Names are fixed so the recordings replay byte for byte; capture deletes them first.
PREFIX = "amqp-core-recording"


def is_reply(kind: type) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, MethodReply) and isinstance(event.method, kind)


def is_event(kind: type) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, kind)


def open_connection(connection: Connection, wait: Wait) -> int:
    connection.initiate(0.0)
    wait(is_event(ConnectionOpened))
    channel = connection.open_channel()
    wait(is_event(ChannelOpened))
    return channel


def close_connection(connection: Connection, wait: Wait) -> None:
    connection.close()
    (closed,) = [e for e in wait(is_event(ConnectionClosed)) if isinstance(e, ConnectionClosed)]
    assert not closed.by_peer


def handshake(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    connection.initiate(0.0)
    opened = wait(is_event(ConnectionOpened))[-1]
    assert isinstance(opened, ConnectionOpened)
    facts["server_product"] = opened.server_properties.get("product")
    facts["frame_max"] = opened.frame_max
    close_connection(connection, wait)


def declares(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    exchange, queue = f"{PREFIX}-declares-x", f"{PREFIX}-declares-q"
    connection.exchange_declare(channel, exchange, "topic", auto_delete=False)
    wait(is_reply(commands.Exchange.DeclareOk))
    connection.queue_declare(channel, queue, arguments={"x-max-length": 10})
    declared = wait(is_reply(commands.Queue.DeclareOk))[-1]
    assert isinstance(declared, MethodReply)
    facts["queue"] = declared.method.queue
    connection.queue_bind(channel, queue, exchange, "a.#")
    wait(is_reply(commands.Queue.BindOk))
    connection.queue_unbind(channel, queue, exchange, "a.#")
    wait(is_reply(commands.Queue.UnbindOk))
    connection.queue_purge(channel, queue)
    wait(is_reply(commands.Queue.PurgeOk))
    connection.queue_delete(channel, queue)
    wait(is_reply(commands.Queue.DeleteOk))
    connection.exchange_delete(channel, exchange)
    wait(is_reply(commands.Exchange.DeleteOk))
    connection.close_channel(channel)
    wait(is_event(ChannelClosed))
    close_connection(connection, wait)


def publish_confirms(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    queue = f"{PREFIX}-confirms-q"
    connection.queue_declare(channel, queue, exclusive=True)
    wait(is_reply(commands.Queue.DeclareOk))
    connection.confirm_select(channel)
    wait(is_reply(commands.Confirm.SelectOk))
    seqs = [connection.basic_publish(channel, b"message %d" % n, "", queue) for n in range(3)]
    assert seqs == [1, 2, 3]
    settled: set[int] = set()
    while len(settled) < 3:
        for event in wait(is_event(PublishConfirmed)):
            if isinstance(event, PublishConfirmed):
                assert event.ack
                settled.update(range(event.first, event.last + 1))
    assert settled == {1, 2, 3}
    close_connection(connection, wait)


def consume(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    queue = f"{PREFIX}-consume-q"
    connection.queue_declare(channel, queue, exclusive=True)
    wait(is_reply(commands.Queue.DeclareOk))
    connection.basic_qos(channel, prefetch_count=10)
    wait(is_reply(commands.Basic.QosOk))
    properties = commands.Basic.Properties(content_type="text/plain", headers={"n": 1}, delivery_mode=2)
    for n in range(3):
        connection.basic_publish(channel, b"body %d" % n, "", queue, properties)
    connection.basic_consume(channel, queue, "recorded-consumer")
    deliveries: list[Delivery] = []
    while len(deliveries) < 3:
        deliveries += [e for e in wait(is_event(Delivery)) if isinstance(e, Delivery)]
    assert [d.body for d in deliveries] == [b"body 0", b"body 1", b"body 2"]
    assert deliveries[0].properties.headers == {"n": 1}
    connection.basic_ack(channel, deliveries[0].delivery_tag, incarnation=deliveries[0].incarnation)
    connection.basic_ack(channel, deliveries[2].delivery_tag, multiple=True)
    connection.basic_cancel(channel, "recorded-consumer")
    wait(is_reply(commands.Basic.CancelOk))
    close_connection(connection, wait)


def get(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    queue = f"{PREFIX}-get-q"
    connection.queue_declare(channel, queue, exclusive=True)
    wait(is_reply(commands.Queue.DeclareOk))
    connection.basic_publish(channel, b"x" * 300_000, "", queue)  # several body frames
    connection.basic_get(channel, queue)
    got = wait(is_event(GetOk))[-1]
    assert isinstance(got, GetOk) and got.body == b"x" * 300_000
    connection.basic_get(channel, queue)
    wait(is_reply(commands.Basic.GetEmpty))
    connection.basic_ack(channel, got.delivery_tag)
    close_connection(connection, wait)


def mandatory_return(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    connection.confirm_select(channel)
    wait(is_reply(commands.Confirm.SelectOk))
    seq = connection.basic_publish(channel, b"lost", "", f"{PREFIX}-no-such-queue", mandatory=True)
    returned = next(e for e in wait(is_event(Returned)) if isinstance(e, Returned))
    assert returned.reply_code == 312 and returned.publish_seq == seq
    wait(is_event(PublishConfirmed))
    close_connection(connection, wait)


def transactions(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    queue = f"{PREFIX}-tx-q"
    connection.queue_declare(channel, queue, exclusive=True)
    wait(is_reply(commands.Queue.DeclareOk))
    connection.tx_select(channel)
    wait(is_reply(commands.Tx.SelectOk))
    connection.basic_publish(channel, b"kept", "", queue)
    connection.tx_commit(channel)
    wait(is_reply(commands.Tx.CommitOk))
    connection.basic_publish(channel, b"dropped", "", queue)
    connection.tx_rollback(channel)
    wait(is_reply(commands.Tx.RollbackOk))
    connection.queue_declare(channel, queue, passive=True)
    declared = wait(is_reply(commands.Queue.DeclareOk))[-1]
    assert isinstance(declared, MethodReply) and declared.method.message_count == 1
    close_connection(connection, wait)


def channel_error(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    channel = open_connection(connection, wait)
    connection.queue_declare(channel, f"{PREFIX}-missing-q", passive=True)
    closed = wait(is_event(ChannelClosed))[-1]
    assert isinstance(closed, ChannelClosed) and closed.by_peer and closed.reply_code == 404
    assert connection.open_channel() == channel  # the number is free again
    wait(is_event(ChannelOpened))
    close_connection(connection, wait)


def server_close(connection: Connection, wait: Wait, facts: dict[str, Any]) -> None:
    """The capture driver asks rabbitmqctl to close the connection once it is open."""
    open_connection(connection, wait)
    facts["request_server_close"]()
    closed = wait(is_event(ConnectionClosed))[-1]
    assert isinstance(closed, ConnectionClosed) and closed.by_peer and closed.reply_code == 320


SCENARIOS: dict[str, Scenario] = {
    "handshake": handshake,
    "declares": declares,
    "publish_confirms": publish_confirms,
    "consume": consume,
    "get": get,
    "mandatory_return": mandatory_return,
    "transactions": transactions,
    "channel_error": channel_error,
    "server_close": server_close,
}

# Connection settings shared by capture and replay, so the recorded handshake matches.
CONNECTION_SETTINGS: dict[str, Any] = {
    "client_properties": {"connection_name": "amqp-core-recorder"},
    "heartbeat": 0,
}
