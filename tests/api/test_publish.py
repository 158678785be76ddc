"""Publishing: confirms (ack / nack), mandatory returns, no-confirm channels, concurrency on one channel."""

from __future__ import annotations

import logging

import anyio
import pytest
from pamqp import commands

import aio_pika
from aio_pika import exceptions

from .conftest import Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_confirmed_publish_returns_the_ack(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    result = await channel.default_exchange.publish(aio_pika.Message(b"confirmed"), routing_key=queue.name)
    assert isinstance(result, commands.Basic.Ack)
    # 1.x style: positional routing key and the mandatory/immediate keywords
    result = await channel.default_exchange.publish(aio_pika.Message(b"again"), queue.name, mandatory=False)
    assert isinstance(result, commands.Basic.Ack)
    assert (await queue.declare()).message_count == 2


async def test_publish_without_confirms(connection: aio_pika.Connection, names: Names) -> None:
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    assert await channel.default_exchange.publish(aio_pika.Message(b"fire"), routing_key=queue.name) is None
    # Without confirms the publish is done when the call returns, so not awaiting it works too.
    channel.default_exchange.publish(aio_pika.Message(b"and forget"), routing_key=queue.name)
    first = await queue.get(timeout=5, no_ack=True)
    second = await queue.get(timeout=5, no_ack=True)
    assert first is not None and second is not None
    assert [first.body, second.body] == [b"fire", b"and forget"]


async def test_nack_raises_delivery_error(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(
        names.queue(),
        exclusive=True,
        arguments=expiring({"x-max-length": 1, "x-overflow": "reject-publish"}),
    )
    await channel.default_exchange.publish(aio_pika.Message(b"fits"), routing_key=queue.name)
    with pytest.raises(exceptions.DeliveryError) as info:
        await channel.default_exchange.publish(aio_pika.Message(b"overflows"), routing_key=queue.name)
    assert isinstance(info.value.frame, commands.Basic.Nack)
    assert "Nack" in str(info.value)
    # the channel is still fine
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=names.queue("unrouted"))


async def test_unroutable_mandatory_with_on_return_raises(
    connection: aio_pika.Connection, names: Names
) -> None:
    channel = await connection.channel(on_return_raises=True)
    routing_key = names.queue("nowhere")
    with pytest.raises(exceptions.PublishError) as info:
        await channel.default_exchange.publish(aio_pika.Message(b"lost"), routing_key=routing_key)
    error = info.value
    assert isinstance(error, exceptions.DeliveryError)
    assert error is not None and isinstance(error.frame, commands.Basic.Return)
    assert error.frame.reply_code == 312
    assert error.message.body == b"lost"
    assert exceptions.UnroutableError is exceptions.PublishError  # aio-pika 1.x's name
    # not mandatory: the broker drops it silently and acks
    result = await channel.default_exchange.publish(
        aio_pika.Message(b"dropped"), routing_key=routing_key, mandatory=False
    )
    assert isinstance(result, commands.Basic.Ack)


async def test_publish_ack_and_close_return_coroutines(
    connection: aio_pika.Connection, names: Names, anyio_backend: str
) -> None:
    """Task groups' ``start_soon`` and ``asyncio.create_task`` take what they return, whether or not it
    is an ``async def`` coroutine underneath, as they take aio-pika's async methods."""
    confirmed = await connection.channel()
    unconfirmed = await connection.channel(publisher_confirms=False)
    queue = await confirmed.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    async with anyio.create_task_group() as group:
        group.start_soon(confirmed.default_exchange.publish, aio_pika.Message(b"confirmed"), queue.name)
        group.start_soon(unconfirmed.default_exchange.publish, aio_pika.Message(b"unconfirmed"), queue.name)
    received = [await queue.get(timeout=5) for _ in range(2)]
    assert sorted(message.body for message in received if message is not None) == [
        b"confirmed",
        b"unconfirmed",
    ]
    async with anyio.create_task_group() as group:
        for message in received:
            assert message is not None
            group.start_soon(message.ack)
        group.start_soon(unconfirmed.close)
    assert unconfirmed.is_closed
    if anyio_backend == "asyncio":
        import asyncio

        task = asyncio.create_task(confirmed.default_exchange.publish(aio_pika.Message(b"task"), queue.name))
        assert isinstance(await task, commands.Basic.Ack)
        message = await queue.get(timeout=5)
        assert message is not None and message.body == b"task"
        await asyncio.create_task(message.ack())
        await asyncio.create_task(confirmed.close())
        assert confirmed.is_closed


@pytest.mark.parametrize("on_return_raises", [False, True])
async def test_cancelled_publisher_of_a_returned_message(
    connection: aio_pika.Connection, names: Names, caplog: pytest.LogCaptureFixture, on_return_raises: bool
) -> None:
    channel = await connection.channel(on_return_raises=on_return_raises)
    returned = anyio.Event()
    channel.return_callbacks.add(lambda *args: returned.set())
    with anyio.CancelScope() as scope:
        scope.cancel()  # gone before its message comes back
        await channel.default_exchange.publish(aio_pika.Message(b"lost"), routing_key=names.queue("nowhere"))
    assert scope.cancelled_caught
    with anyio.fail_after(5):
        await returned.wait()  # with on_return_raises too: nobody is left to raise to
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    result = await channel.default_exchange.publish(
        aio_pika.Message(b"x"), routing_key=names.queue("x"), mandatory=False
    )
    assert isinstance(result, commands.Basic.Ack)


async def test_unroutable_mandatory_goes_to_return_callbacks(channel: aio_pika.Channel, names: Names) -> None:
    returned: list[aio_pika.IncomingMessage] = []
    async_returned = anyio.Event()

    async def on_return_async(sender: aio_pika.Channel, message: aio_pika.IncomingMessage) -> None:
        async_returned.set()

    channel.return_callbacks.add(lambda sender, message: returned.append(message))
    channel.return_callbacks.add(on_return_async)
    routing_key = names.queue("nowhere")
    result = await channel.default_exchange.publish(
        aio_pika.Message(b"returned", message_id="m-1"), routing_key=routing_key
    )
    assert isinstance(result, aio_pika.ReturnedMessage)  # what aio-pika returns: the returned message
    assert result.body == b"returned"
    assert [message.body for message in returned] == [b"returned"]
    assert returned[0].routing_key == routing_key and returned[0].message_id == "m-1"
    with anyio.fail_after(5):
        await async_returned.wait()


async def test_returns_without_confirms(connection: aio_pika.Connection, names: Names) -> None:
    channel = await connection.channel(publisher_confirms=False)
    returned = anyio.Event()
    channel.return_callbacks.add(lambda sender, message: returned.set())
    await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=names.queue("nowhere"))
    with anyio.fail_after(5):
        await returned.wait()


async def test_publish_to_exchange_and_internal_exchange(channel: aio_pika.Channel, names: Names) -> None:
    exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await queue.bind(exchange, "a.*")
    await exchange.publish(aio_pika.Message(b"topic"), routing_key="a.b")
    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None and message.exchange == exchange.name and message.routing_key == "a.b"

    internal = await channel.declare_exchange(names.exchange("internal"), internal=True, auto_delete=True)
    with pytest.raises(ValueError, match="internal"):
        await internal.publish(aio_pika.Message(b"x"), routing_key="")
    with pytest.raises(TypeError, match="routing_key"):
        await exchange.publish(aio_pika.Message(b"x"), routing_key=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="message"):
        await exchange.publish(b"not a message", routing_key="a.b")  # type: ignore[arg-type]


async def test_properties_that_cannot_be_sent(channel: aio_pika.Channel, names: Names) -> None:
    """The caller's error, raised before anything is sent: the channel carries on."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    publish = channel.default_exchange.publish
    with pytest.raises(ValueError, match="cannot publish: message_id is 256 bytes"):
        await publish(aio_pika.Message(b"x", message_id="m" * 256), routing_key=queue.name)
    with pytest.raises(ValueError, match="cannot publish: cannot encode object in a field table"):
        await publish(aio_pika.Message(b"x", headers={"x": object()}), routing_key=queue.name)
    with pytest.raises(ValueError, match="more than the negotiated frame_max"):
        await publish(aio_pika.Message(b"x", headers={"big": "x" * 200_000}), routing_key=queue.name)
    await publish(aio_pika.Message(b"fine"), routing_key=queue.name)
    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None and message.body == b"fine"


async def test_any_message_with_a_body_and_pamqp_properties(channel: aio_pika.Channel, names: Names) -> None:
    """As aio-pika takes it: an object of the caller's own with ``body`` and ``properties``."""

    class Plain:
        body = b"plain"
        properties = commands.Basic.Properties(message_id="p", priority=3)

    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await channel.default_exchange.publish(Plain(), routing_key=queue.name)  # type: ignore[arg-type]
    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None
    assert (message.body, message.message_id, message.priority) == (b"plain", "p", 3)


async def test_many_concurrent_confirmed_publishes(channel: aio_pika.Channel, names: Names) -> None:
    """500 publishers on one channel at once: nobody waits for anybody else's confirm."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    results: list[object] = []

    async def publish(index: int) -> None:
        results.append(
            await channel.default_exchange.publish(
                aio_pika.Message(str(index).encode()), routing_key=queue.name
            )
        )

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            for index in range(500):
                group.start_soon(publish, index)
    assert len(results) == 500
    assert all(isinstance(result, commands.Basic.Ack) for result in results)
    assert not channel._confirms  # every waiter was settled and dropped
    assert (await queue.declare()).message_count == 500


async def test_publish_timeout(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    with pytest.raises(TimeoutError):
        await channel.default_exchange.publish(
            aio_pika.Message(b"slow"), routing_key=queue.name, timeout=1e-9
        )
    assert not channel._confirms  # the abandoned waiter is gone; the late ack is ignored
    result = await channel.default_exchange.publish(
        aio_pika.Message(b"fine"), routing_key=queue.name, timeout=5
    )
    assert isinstance(result, commands.Basic.Ack)


async def test_large_message(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    body = bytes(range(256)) * 8192  # 2 MiB, many frames
    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
    message = await queue.get(timeout=10, no_ack=True)
    assert message is not None and message.body == body and message.body_size == len(body)


async def test_publishers_are_held_back_by_the_write_buffer(
    connection: aio_pika.Connection, names: Names
) -> None:
    """A loop of unconfirmed publishes that never yields still lets the writer run: memory stays bounded."""
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    body = b"x" * 65536
    highest = 0
    for _ in range(200):  # 12.5 MiB
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
        highest = max(highest, connection._unflushed)
    assert highest <= connection.WRITE_BUFFER_LIMIT + len(body)
    with anyio.fail_after(10):  # without confirms the queue may report them a moment later
        while (await queue.declare()).message_count < 200:
            await anyio.sleep(0.01)
    await queue.purge()
