"""Exchanges and queues: declare (also passive), bind/unbind (queue and exchange-to-exchange), purge,
delete."""

from __future__ import annotations

import pytest

import aio_pika
from aio_pika import exceptions

from .conftest import Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.mark.parametrize(
    "exchange_type",
    [aio_pika.ExchangeType.DIRECT, aio_pika.ExchangeType.FANOUT, aio_pika.ExchangeType.TOPIC, "headers"],
)
async def test_declare_exchange_types(channel: aio_pika.Channel, names: Names, exchange_type: object) -> None:
    name = names.exchange()
    exchange = await channel.declare_exchange(name, exchange_type, durable=False, auto_delete=True)  # type: ignore[arg-type]
    assert isinstance(exchange, aio_pika.Exchange)
    assert isinstance(exchange, aio_pika.abc.AbstractExchange)
    assert exchange.name == name == str(exchange)
    assert exchange.auto_delete and not exchange.durable  # the declared arguments stay on the object
    passive = await channel.declare_exchange(name, exchange_type, passive=True)  # type: ignore[arg-type]
    assert passive.name == name
    result = await exchange.delete()
    assert result.name == "Exchange.DeleteOk"


async def test_declare_queue(channel: aio_pika.Channel, names: Names) -> None:
    name = names.queue()
    queue = await channel.declare_queue(name, durable=True, arguments=expiring())
    assert isinstance(queue, aio_pika.Queue) and isinstance(queue, aio_pika.abc.AbstractQueue)
    assert queue.name == name and queue.durable and not queue.exclusive
    assert queue.arguments == expiring()
    assert queue.declaration_result.message_count == 0
    assert queue.declaration_result.consumer_count == 0
    result = await queue.declare()  # again, idempotent
    assert result.queue == name
    result = await queue.declare(passive=True)
    assert result.queue == name

    unnamed = await channel.declare_queue(exclusive=True)  # the broker names it
    assert unnamed.name.startswith("amq.gen-")
    old_style = await channel.declare_queue(exclusive=True, durable=None)  # 1.x: durable=None
    assert not old_style.durable


async def test_queue_bind_unbind(channel: aio_pika.Channel, names: Names) -> None:
    exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.DIRECT)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    assert (await queue.bind(exchange, "key")).name == "Queue.BindOk"
    await queue.bind(exchange.name)  # by name; the routing key defaults to the queue's name
    await exchange.publish(aio_pika.Message(b"by key"), "key")
    await exchange.publish(aio_pika.Message(b"by name"), queue.name)
    bodies = []
    for _ in range(2):
        message = await queue.get(timeout=5, no_ack=True)
        assert message is not None
        bodies.append(message.body)
    assert bodies == [b"by key", b"by name"]
    assert (await queue.unbind(exchange, "key")).name == "Queue.UnbindOk"
    await queue.unbind(exchange)
    await exchange.publish(aio_pika.Message(b"nowhere"), "key", mandatory=False)
    assert await queue.get(timeout=5, fail=False) is None


async def test_exchange_to_exchange_binding(channel: aio_pika.Channel, names: Names) -> None:
    source = await channel.declare_exchange(names.exchange("src"), aio_pika.ExchangeType.TOPIC)
    destination = await channel.declare_exchange(names.exchange("dst"))
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await queue.bind(destination, "routed")
    assert (await destination.bind(source, "routed")).name == "Exchange.BindOk"
    await source.publish(aio_pika.Message(b"through two exchanges"), routing_key="routed")
    message = await queue.get(timeout=5, no_ack=True)
    assert (
        message is not None and message.body == b"through two exchanges" and message.exchange == source.name
    )
    assert (await destination.unbind(source, "routed")).name == "Exchange.UnbindOk"
    await source.publish(aio_pika.Message(b"dropped"), routing_key="routed", mandatory=False)
    assert await queue.get(timeout=5, fail=False) is None


async def test_purge(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    for _ in range(3):
        await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue.name)
    result = await queue.purge()
    assert result is not None and result.message_count == 3
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue.name)
    assert await queue.purge(no_wait=True) is None
    assert (await queue.declare()).message_count == 0


async def test_queue_delete_defaults(connection: aio_pika.Connection, names: Names) -> None:
    """``Queue.delete()`` deletes only unused, empty queues by default (if_unused=True, if_empty=True)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue.name)
    with pytest.raises(exceptions.ChannelPreconditionFailed):
        await queue.delete()
    await channel.reopen()
    result = await queue.delete(if_unused=False, if_empty=False)
    assert result.message_count == 1
    with pytest.raises(exceptions.ChannelNotFoundEntity):
        await queue.declare(passive=True)
