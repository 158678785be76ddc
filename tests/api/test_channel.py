"""Channels: opening, closing, channel errors by reply code, reopen, QoS, flow, transactions, timeouts."""

from __future__ import annotations

import anyio
import pytest

import aio_pika
from aio_pika import exceptions
from aio_pika.abc import TransactionState

from .conftest import AMQP_URL, Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_open_styles(connection: aio_pika.Connection) -> None:
    channel = await connection.channel()  # both generations
    assert channel.is_initialized and not channel.is_closed
    assert isinstance(channel.number, int)
    assert isinstance(channel, aio_pika.abc.AbstractChannel)

    async with connection.channel() as scoped:  # modern: closed on exit
        assert not scoped.is_closed
    assert scoped.is_closed

    explicit = await connection.channel(channel_number=42)
    assert explicit.number == 42
    with pytest.raises(exceptions.ChannelInvalidStateError):
        await connection.channel(channel_number=42)  # in use
    await explicit.close()
    assert explicit.is_closed
    await explicit.close()  # idempotent

    not_opened = connection.channel()
    assert not not_opened.is_initialized and not_opened.is_closed
    with pytest.raises(exceptions.ChannelInvalidStateError, match="not opened"):
        await not_opened.declare_queue()
    await not_opened.initialize()
    with pytest.raises(RuntimeError):
        await not_opened.initialize()
    with pytest.raises(ValueError, match="channel_number"):
        connection.channel(channel_number=0)
    with pytest.raises(RuntimeError, match="on_return_raises"):
        connection.channel(publisher_confirms=False, on_return_raises=True)


async def test_not_found_then_reopen(channel: aio_pika.Channel, names: Names) -> None:
    closed_with: list[object] = []
    channel.close_callbacks.add(lambda sender, exc: closed_with.append(exc))
    with pytest.raises(exceptions.ChannelNotFoundEntity) as info:
        await channel.declare_queue(names.queue(), passive=True)
    assert info.value.reply_code == 404
    assert isinstance(info.value, exceptions.ChannelClosed)
    assert "NOT_FOUND" in str(info.value)
    assert channel.is_closed
    assert len(closed_with) == 1 and isinstance(closed_with[0], exceptions.ChannelNotFoundEntity)
    await channel.closed()

    with anyio.fail_after(1), pytest.raises(exceptions.ChannelInvalidStateError, match="404"):
        await channel.declare_queue(names.queue(), exclusive=True)  # raises at once, never hangs

    await channel.reopen()
    assert not channel.is_closed
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await channel.default_exchange.publish(aio_pika.Message(b"after reopen"), routing_key=queue.name)
    message = await queue.get(timeout=5)
    assert message is not None and message.body == b"after reopen"
    await message.ack()


async def test_get_exchange_and_queue(channel: aio_pika.Channel, names: Names) -> None:
    exchange_name, queue_name = names.exchange(), names.queue()
    with pytest.raises(exceptions.ChannelNotFoundEntity):
        await channel.get_exchange(exchange_name)
    await channel.reopen()
    declared = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.FANOUT, auto_delete=True)
    fetched = await channel.get_exchange(exchange_name)
    assert fetched.name == declared.name
    unchecked = await channel.get_exchange("never-declared-anywhere", ensure=False)
    assert unchecked.name == "never-declared-anywhere"

    with pytest.raises(exceptions.ChannelNotFoundEntity):
        await channel.get_queue(queue_name)
    await channel.reopen()
    await channel.declare_queue(queue_name, arguments=expiring())
    queue = await channel.get_queue(queue_name)
    assert queue.name == queue_name
    assert (
        await channel.get_queue("never-declared-anywhere", ensure=False)
    ).name == "never-declared-anywhere"


async def test_precondition_failed(channel: aio_pika.Channel, names: Names) -> None:
    name = names.queue()
    await channel.declare_queue(name, durable=False, arguments=expiring())
    with pytest.raises(exceptions.ChannelPreconditionFailed) as info:
        await channel.declare_queue(name, durable=True, arguments=expiring())
    assert info.value.reply_code == 406


async def test_access_refused(channel: aio_pika.Channel) -> None:
    with pytest.raises(exceptions.ChannelAccessRefused) as info:
        await channel.declare_exchange("amq.reserved-by-the-broker", auto_delete=True)
    assert info.value.reply_code == 403


async def test_locked_resource(connection: aio_pika.Connection, backend_name: str, names: Names) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as other:
        other_channel = await other.channel()
        with pytest.raises(exceptions.ChannelLockedResource) as info:
            await other_channel.declare_queue(queue.name, passive=True)
        assert info.value.reply_code == 405


async def test_set_qos(channel: aio_pika.Channel, names: Names) -> None:
    result = await channel.set_qos(prefetch_count=2)
    assert result.name == "Basic.QosOk"
    with pytest.warns(DeprecationWarning):
        await channel.set_qos(prefetch_count=3, all_channels=False)
    with pytest.raises(TypeError, match="prefetch_count"):
        await channel.set_qos(prefetch_count="3")  # type: ignore[arg-type]

    # prefetch_count=2: the broker hands out two unacknowledged messages and waits.
    await channel.set_qos(prefetch_count=2)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    for index in range(5):
        await channel.default_exchange.publish(aio_pika.Message(str(index).encode()), routing_key=queue.name)
    received: list[aio_pika.IncomingMessage] = []
    two = anyio.Event()

    def on_message(message: aio_pika.IncomingMessage) -> None:
        received.append(message)
        if len(received) == 2:
            two.set()

    await queue.consume(on_message)
    with anyio.fail_after(5):
        await two.wait()
    await anyio.sleep(0.1)
    assert len(received) == 2  # no third one while two are unacknowledged
    received[0].ack()
    with anyio.fail_after(5):
        while len(received) < 3:
            await anyio.sleep(0.01)


async def test_flow(channel: aio_pika.Channel) -> None:
    result = await channel.flow(active=True)
    assert result.name == "Channel.FlowOk"


async def test_transaction_commit_and_rollback(connection: aio_pika.Connection, names: Names) -> None:
    confirmed = await connection.channel()
    with pytest.raises(RuntimeError, match="publisher confirms"):
        confirmed.transaction()

    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())

    async with channel.transaction() as transaction:
        assert transaction.state is TransactionState.STARTED
        await channel.default_exchange.publish(aio_pika.Message(b"committed"), routing_key=queue.name)
    assert transaction.state is TransactionState.COMMITED

    transaction = channel.transaction()
    await transaction.select()
    await channel.default_exchange.publish(aio_pika.Message(b"rolled back"), routing_key=queue.name)
    await transaction.rollback()
    assert transaction.state is TransactionState.ROLLED_BACK

    with pytest.raises(ZeroDivisionError):
        async with channel.transaction():
            await channel.default_exchange.publish(
                aio_pika.Message(b"rolled back too"), routing_key=queue.name
            )
            raise ZeroDivisionError

    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None and message.body == b"committed"
    assert await queue.get(timeout=5, fail=False) is None


async def test_timeout_on_a_wait_does_not_desynchronise(channel: aio_pika.Channel, names: Names) -> None:
    first, second = names.queue(), names.queue()
    with pytest.raises(TimeoutError):
        await channel.declare_queue(first, exclusive=True, arguments=expiring(), timeout=1e-9)
    # The late Queue.DeclareOk for `first` is consumed and dropped; the next reply is the right one.
    queue = await channel.declare_queue(second, exclusive=True, arguments=expiring(), timeout=5)
    assert queue.name == second
    assert queue.declaration_result.queue == second


async def test_cancelled_declare_does_not_desynchronise(channel: aio_pika.Channel, names: Names) -> None:
    first, second = names.queue(), names.queue()
    finished = []
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled at its first wait: the Queue.Declare is sent, its reply not yet read
        await channel.declare_queue(first, exclusive=True, arguments=expiring())
        finished.append(True)  # pragma: no cover
    assert scope.cancelled_caught and not finished
    queue = await channel.declare_queue(second, exclusive=True, arguments=expiring(), timeout=5)
    assert queue.name == second  # not the late reply for `first`
    # And the channel keeps going: a full round trip through the queue.
    await channel.default_exchange.publish(aio_pika.Message(b"in sync"), routing_key=second)
    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None and message.body == b"in sync"
    # The cancelled declare did reach the broker.
    assert (await channel.get_queue(first)).name == first


async def test_cancelled_in_a_task_group(channel: aio_pika.Channel, names: Names) -> None:
    """Several declares cancelled together while waiting; the channel stays in step."""

    async def declare(name: str) -> None:
        await channel.declare_queue(name, exclusive=True, arguments=expiring())

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(declare, names.queue())
        await anyio.sleep(0)
        group.cancel_scope.cancel()
    last = names.queue()
    queue = await channel.declare_queue(last, exclusive=True, arguments=expiring(), timeout=5)
    assert queue.name == last


async def test_cancelled_get_gives_the_message_back(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await channel.default_exchange.publish(aio_pika.Message(b"kept"), routing_key=queue.name)
    with pytest.raises(TimeoutError):
        await queue.get(timeout=1e-9)  # the GetOk comes late: the message is requeued, not lost
    # The next get may overtake the requeue (it is sent before the late GetOk arrives); the one after not.
    message = await queue.get(timeout=5, fail=False) or await queue.get(timeout=5)
    assert message is not None and message.body == b"kept"
    await message.ack()


async def test_channel_close_fails_pending_waits(connection: aio_pika.Connection, names: Names) -> None:
    channel = await connection.channel()
    errors: list[BaseException] = []

    async def declare() -> None:
        try:
            await channel.declare_queue(names.queue(), passive=True)  # 404 closes the channel
        except BaseException as error:
            errors.append(error)

    async def declare_after() -> None:
        try:
            await channel.declare_queue(names.queue(), exclusive=True)
        except BaseException as error:
            errors.append(error)

    async with anyio.create_task_group() as group:
        group.start_soon(declare)
        await anyio.sleep(0)
        group.start_soon(declare_after)
    assert isinstance(errors[0], exceptions.ChannelNotFoundEntity)
    # the second one was either refused at once or failed with the channel's error
    assert isinstance(errors[1], exceptions.ChannelNotFoundEntity | exceptions.ChannelInvalidStateError)


async def test_queue_and_exchange_delete_on_channel(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    exchange = await channel.declare_exchange(names.exchange())
    result = await channel.queue_delete(queue.name)
    assert result is not None and result.name == "Queue.DeleteOk"
    assert (await channel.exchange_delete(exchange.name)).name == "Exchange.DeleteOk"  # type: ignore[union-attr]
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    exchange = await channel.declare_exchange(names.exchange())
    assert await channel.queue_delete(queue.name, nowait=True) is None
    assert await channel.exchange_delete(exchange.name, nowait=True) is None
    with pytest.raises(exceptions.ChannelNotFoundEntity):
        await channel.get_queue(queue.name)
