"""Consuming: callbacks (plain and coroutine), acknowledgements in both styles, process() semantics, cancel,
concurrency, and the queue iterator."""

from __future__ import annotations

import asyncio
import gc

import anyio
import pytest

import aio_pika
from aio_pika import exceptions

from .conftest import Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

WAIT = 10


async def publish(channel: aio_pika.Channel, queue: aio_pika.Queue, *bodies: bytes) -> None:
    for body in bodies:
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)


async def ready_count(connection: aio_pika.Connection, queue_name: str) -> int:
    """Messages ready in the queue, asked on a fresh channel (after the others settled theirs)."""
    channel = await connection.channel()
    try:
        result = await channel.declare_queue(queue_name, passive=True)
        return int(result.declaration_result.message_count)
    finally:
        await channel.close()


async def queue_counts(connection: aio_pika.Connection, queue_name: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, asked on a fresh channel."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0
    finally:
        await channel.close()


async def wait_for_counts(
    connection: aio_pika.Connection, queue_name: str, expected: tuple[int, int]
) -> None:
    """Poll the broker until the queue has ``expected`` (ready messages, consumers)."""
    with anyio.fail_after(WAIT):
        while await queue_counts(connection, queue_name) != expected:
            await anyio.sleep(0.01)


async def wait_until(predicate: object, timeout: float = WAIT) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_plain_callback_with_sync_process(connection: aio_pika.Connection, names: Names) -> None:
    """aio-pika 1.x: a plain function, ``with message.process():``."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    bodies: list[bytes] = []

    def on_message(message: aio_pika.IncomingMessage) -> None:
        with message.process():
            bodies.append(message.body)

    tag = await queue.consume(on_message)
    assert isinstance(tag, str)
    await publish(channel, queue, b"1", b"2", b"3")
    await wait_until(lambda: len(bodies) == 3)
    assert bodies == [b"1", b"2", b"3"]
    await channel.close()  # unacknowledged messages would go back to the queue now
    assert await ready_count(connection, queue.name) == 0


async def test_coroutine_callback_with_async_process(connection: aio_pika.Connection, names: Names) -> None:
    """Modern: a coroutine, ``async with message.process():``."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    bodies: list[bytes] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            await anyio.sleep(0)
            bodies.append(message.body)

    await queue.consume(on_message)
    await publish(channel, queue, b"a", b"b")
    await wait_until(lambda: len(bodies) == 2)
    await channel.close()
    assert sorted(bodies) == [b"a", b"b"]
    assert await ready_count(connection, queue.name) == 0


async def test_ack_styles(connection: aio_pika.Connection, names: Names) -> None:
    """``message.ack()`` takes effect without await (1.x); ``await message.nack()`` (modern)."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    await publish(channel, queue, b"ack me", b"nack me", b"reject me")
    first = await queue.get(timeout=5)
    second = await queue.get(timeout=5)
    third = await queue.get(timeout=5)
    assert first is not None and second is not None and third is not None
    first.ack()  # not awaited
    assert first.processed and first.locked
    with pytest.raises(exceptions.MessageProcessError):
        first.ack()
    await second.nack(requeue=False)
    await third.reject(requeue=True)
    again = await queue.get(timeout=5)
    assert again is not None and again.body == b"reject me" and again.redelivered
    await again.ack()
    await channel.close()
    assert await ready_count(connection, queue.name) == 0


async def test_multiple_ack_and_nack(connection: aio_pika.Connection, names: Names) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    await publish(channel, queue, b"1", b"2", b"3", b"4", b"5")
    messages = [await queue.get(timeout=5) for _ in range(5)]
    assert all(message is not None for message in messages)
    await messages[1].ack(multiple=True)  # settles 1 and 2
    with pytest.raises(exceptions.MessageProcessError):
        messages[0].ack()  # already settled by the multiple ack: refused locally, the channel stays open
    assert not channel.is_closed
    await messages[4].nack(multiple=True, requeue=True)  # 3, 4 and 5 go back
    await channel.close()
    assert await ready_count(connection, queue.name) == 3


async def test_exclusive_consumer(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await queue.consume(lambda message: None, exclusive=True, no_ack=True)
    with pytest.raises(exceptions.ChannelAccessRefused):
        await queue.consume(lambda message: None, no_ack=True)


async def test_no_ack_consumer(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    received: list[aio_pika.IncomingMessage] = []
    await queue.consume(received.append, no_ack=True)
    await publish(channel, queue, b"free")
    await wait_until(lambda: received)
    message = received[0]
    assert message.processed and message.locked
    with pytest.raises(TypeError, match="no_ack"):
        message.ack()
    with pytest.raises(ValueError, match="locked"):
        message.body = b"changed"  # type: ignore[misc]


async def test_cancel(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    received: list[bytes] = []
    tag = await queue.consume(
        lambda message: received.append(message.body), no_ack=True, consumer_tag="my-tag"
    )
    assert tag == "my-tag"
    with pytest.raises(exceptions.DuplicateConsumerTag):
        await queue.consume(lambda message: None, consumer_tag="my-tag")
    await publish(channel, queue, b"before")
    await wait_until(lambda: received)
    result = await queue.cancel(tag)
    assert result is not None and result.name == "Basic.CancelOk"
    await publish(channel, queue, b"after")
    assert (await queue.declare()).message_count == 1
    assert received == [b"before"]
    tag = await queue.consume(lambda message: received.append(message.body), no_ack=True)
    assert await queue.cancel(tag, nowait=True) is None


async def test_process_rejects_on_exception(connection: aio_pika.Connection, names: Names) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    await publish(channel, queue, b"bad")
    message = await queue.get(timeout=5)
    assert message is not None
    with pytest.raises(ZeroDivisionError), message.process():
        raise ZeroDivisionError
    assert message.processed
    await channel.close()
    assert await ready_count(connection, queue.name) == 0  # rejected without requeue: gone


async def test_process_requeue(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await publish(channel, queue, b"retry")
    message = await queue.get(timeout=5)
    assert message is not None and not message.redelivered
    with pytest.raises(ZeroDivisionError):
        async with message.process(requeue=True):
            raise ZeroDivisionError
    again = await queue.get(timeout=5)
    assert again is not None and again.body == b"retry" and again.redelivered
    await again.ack()


async def test_process_reject_on_redelivered(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await publish(channel, queue, b"twice")
    for expected_redelivered in (False, True):
        message = await queue.get(timeout=5)
        assert message is not None and message.redelivered is expected_redelivered
        with pytest.raises(ZeroDivisionError), message.process(requeue=True, reject_on_redelivered=True):
            raise ZeroDivisionError
    # the redelivered one was rejected without requeue
    assert await queue.get(timeout=5, fail=False) is None


async def test_process_ignore_processed(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await publish(channel, queue, b"1", b"2")
    message = await queue.get(timeout=5)
    assert message is not None
    async with message.process(ignore_processed=True):
        await message.reject(requeue=True)  # handled by hand: process() does nothing more

    message = await queue.get(timeout=5)
    assert message is not None and message.body == b"1" and message.redelivered  # requeued by hand
    with pytest.raises(exceptions.MessageProcessError), message.process():
        message.ack()  # processed twice without ignore_processed
    remaining = await queue.get(timeout=5)
    assert remaining is not None and remaining.body == b"2"
    await remaining.ack()


async def test_coroutine_callbacks_run_concurrently_up_to_prefetch(
    channel: aio_pika.Channel, names: Names
) -> None:
    prefetch = 4
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    in_flight = 0
    highest = 0
    done = 0
    release = anyio.Event()

    async def on_message(message: aio_pika.IncomingMessage) -> None:
        nonlocal in_flight, highest, done
        in_flight += 1
        highest = max(highest, in_flight)
        await release.wait()
        in_flight -= 1
        done += 1
        await message.ack()

    await queue.consume(on_message)
    await publish(channel, queue, *[str(index).encode() for index in range(12)])
    await wait_until(lambda: in_flight == prefetch)
    await anyio.sleep(0.1)
    assert highest == prefetch  # concurrent, and bounded by the prefetch count
    release.set()
    await wait_until(lambda: done == 12)
    consumer = next(iter(channel._consumers.values()))
    assert consumer.workers <= prefetch  # a small pool of workers, not a task per message


async def test_non_blocking_coroutine_callbacks_need_few_workers(
    channel: aio_pika.Channel, names: Names
) -> None:
    """Callbacks that never block are run back to back by one worker: no task or wake-up per message."""
    await channel.set_qos(prefetch_count=200)
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    done = 0

    async def on_message(message: aio_pika.IncomingMessage) -> None:
        nonlocal done
        await message.ack()  # complete at once: does not suspend
        done += 1

    await queue.consume(on_message)
    await publish(channel, queue, *[b"x"] * 300)
    await wait_until(lambda: done == 300)
    consumer = next(iter(channel._consumers.values()))
    assert consumer.workers <= 4


async def test_an_idle_consumer_keeps_no_message_alive(channel: aio_pika.Channel, names: Names) -> None:
    """Once its callback has returned, a message (and its body, maybe megabytes) is the caller's alone:
    the worker waiting for the next one holds no reference to it."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    seen: list[aio_pika.IncomingMessage] = []
    handled = anyio.Event()

    async def on_message(message: aio_pika.IncomingMessage) -> None:
        async with message.process():
            seen.append(message)
        handled.set()

    await queue.consume(on_message)
    await publish(channel, queue, b"x" * 200_000)
    with anyio.fail_after(WAIT):
        await handled.wait()
    # Between the callback's return and its next wait the worker does not suspend, so it is waiting
    # for the next message by now.
    gc.collect()
    assert gc.get_referrers(seen[0]) == [seen]


async def test_plain_callback_returning_a_coroutine(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    seen = anyio.Event()

    async def handle(message: aio_pika.IncomingMessage) -> None:
        await message.ack()
        seen.set()

    await queue.consume(lambda message: handle(message))
    await publish(channel, queue, b"x")
    with anyio.fail_after(WAIT):
        await seen.wait()


async def test_callback_exceptions_are_logged_not_fatal(
    channel: aio_pika.Channel, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    bodies: list[bytes] = []

    async def on_message(message: aio_pika.IncomingMessage) -> None:
        async with message.process():
            bodies.append(message.body)
            if message.body == b"boom":
                raise RuntimeError("boom")

    await queue.consume(on_message)
    await publish(channel, queue, b"boom", b"fine")
    await wait_until(lambda: len(bodies) == 2)
    assert "boom" in caplog.text


# ---- get ----------------------------------------------------------------------------------------------


async def test_get(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    with pytest.raises(exceptions.QueueEmpty):
        await queue.get()
    assert await queue.get(fail=False) is None
    await publish(channel, queue, b"1", b"2")
    message = await queue.get(no_ack=True)
    assert message is not None and message.body == b"1"
    assert message.message_count == 1  # what is left in the queue
    assert message.processed  # no_ack
    message = await queue.get(timeout=3)
    assert message is not None and message.delivery_tag is not None
    await message.ack()


# ---- the iterator -------------------------------------------------------------------------------------


async def test_iterator(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await publish(channel, queue, b"1", b"2", b"3")
    bodies = []
    async with queue.iterator() as iterator:
        async for message in iterator:
            async with message.process():
                bodies.append(message.body)
            if len(bodies) == 3:
                break
    assert bodies == [b"1", b"2", b"3"]
    assert iterator.consumer_tag is None


async def test_a_stream_of_large_messages_arrives_intact(channel: aio_pika.Channel, names: Names) -> None:
    """Bodies of one and of several frames, back to back, cut wherever the socket's reads end."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    bodies = [bytes([n]) * 7 + bytes(range(256)) * (n * 700) for n in range(1, 13)]  # up to 2.1 MB
    await publish(channel, queue, *bodies)
    received = []
    async with queue.iterator() as iterator:
        async for message in iterator:
            async with message.process():
                received.append(message.body)
            if len(received) == len(bodies):
                break
    assert received == bodies


async def test_async_for_on_the_queue(channel: aio_pika.Channel, names: Names) -> None:
    """The seed's simple consumer: ``async for message in queue`` and ``with message.process()``."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await publish(channel, queue, b"hello", queue.name.encode())
    bodies = []
    async for message in queue:
        with message.process():
            bodies.append(message.body)
            if queue.name in message.body.decode():
                break
    assert bodies == [b"hello", queue.name.encode()]


async def test_closing_the_iterator_returns_buffered_messages(
    connection: aio_pika.Connection, names: Names
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    await publish(channel, queue, *[str(index).encode() for index in range(10)])
    async with queue.iterator() as iterator:
        async for message in iterator:
            await message.ack()
            await wait_until(lambda: len(iterator._buffer) == 9)  # the other nine were delivered to us
            break
    # closing cancelled the consumer and nacked the nine buffered messages back to the queue
    assert await ready_count(connection, queue.name) == 9
    await channel.close()
    assert await ready_count(connection, queue.name) == 9


async def test_iterator_timeout(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    with anyio.fail_after(WAIT), pytest.raises(TimeoutError):
        async with queue.iterator(timeout=0.2) as iterator:
            async for _message in iterator:
                pass  # pragma: no cover
    assert iterator.consumer_tag is None


async def test_iterator_stops_when_the_broker_cancels_the_consumer(
    connection: aio_pika.Connection, names: Names
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    other = await connection.channel()
    seen = []
    iterator = queue.iterator(no_ack=True)

    async def consume() -> None:
        async for message in iterator:
            seen.append(message.body)  # pragma: no cover

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await wait_until(lambda: iterator.consumer_tag is not None)  # Basic.ConsumeOk arrived
            await other.queue_delete(queue.name)  # the broker sends Basic.Cancel to the consumer
    assert seen == []
    assert not channel.is_closed


async def test_iterator_stops_when_the_channel_closes(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    iterator = queue.iterator()

    async def consume() -> None:
        async for _message in iterator:
            pass  # pragma: no cover

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await wait_until(lambda: iterator.consumer_tag is not None)
            await channel.close()


# Cancelling the future a task awaits is what cancelling that task does to it, on the native backend's
# plain tasks (in an anyio task group, a task ending cancelled cancels the group).
ON_NATIVE_ASYNCIO = pytest.mark.parametrize(
    "variant", [("asyncio", "asyncio")], ids=["asyncio-native"], indirect=True
)


@ON_NATIVE_ASYNCIO
async def test_a_worker_cancelled_while_idle_is_replaced(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    received: list[aio_pika.IncomingMessage] = []

    async def on_message(message: aio_pika.IncomingMessage) -> None:
        received.append(message)

    await queue.consume(on_message, no_ack=True)
    await publish(channel, queue, b"1")
    await wait_until(lambda: len(received) == 1)
    consumer = next(iter(channel._consumers.values()))
    # Cancelled, and gone by the time the next message comes.
    await wait_until(lambda: bool(consumer.idle))
    consumer.idle[-1].cancel()
    await publish(channel, queue, b"2")
    await wait_until(lambda: len(received) == 2)  # a new worker took it
    # Cancelled, with a message arriving before the worker has ended.
    await wait_until(lambda: bool(consumer.idle))
    consumer.idle[-1].cancel()
    consumer.deliver(received[0])
    await wait_until(lambda: len(received) == 3)
    await wait_until(lambda: consumer.workers == 1)
    assert consumer.waking == 0


@ON_NATIVE_ASYNCIO
async def test_stopping_a_consumer_whose_idle_worker_was_cancelled(
    channel: aio_pika.Channel, names: Names
) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    seen: list[bytes] = []

    async def on_message(message: aio_pika.IncomingMessage) -> None:
        seen.append(message.body)
        await message.ack()

    tag = await queue.consume(on_message)
    await publish(channel, queue, b"1")
    await wait_until(lambda: seen == [b"1"])
    consumer = next(iter(channel._consumers.values()))
    await wait_until(lambda: bool(consumer.idle))
    consumer.idle[-1].cancel()
    consumer.stop(None, drop_pending=False)  # finds the cancelled worker's future before the worker ends
    await wait_until(lambda: consumer.workers == 0)
    assert consumer.waking == 0
    await queue.cancel(tag)


# ---- cancellation: of the iterating task, and raised by callbacks themselves --------------------------


async def test_cancelled_iteration_cancels_the_consumer(
    connection: aio_pika.Connection, names: Names
) -> None:
    """aio-pika closes an iterator whose ``__anext__`` is cancelled: a bare ``async for`` in a task that is
    cancelled must not leave a consumer behind that takes the queue's messages into a buffer nobody reads."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    iterator = queue.iterator()
    seen: list[bytes] = []
    got_one = anyio.Event()

    async def consume() -> None:
        async for message in iterator:
            seen.append(message.body)
            await message.ack()
            got_one.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await publish(channel, queue, b"1")
            await got_one.wait()
            group.cancel_scope.cancel()  # consume() is waiting in __anext__ for the next message
    assert seen == [b"1"]
    assert iterator.consumer_tag is None
    await wait_for_counts(connection, queue.name, (0, 0))
    await publish(channel, queue, b"2", b"3")
    assert await queue_counts(connection, queue.name) == (2, 0)  # nobody took them
    assert not channel.is_closed


async def test_iterator_closed_under_cancellation_requeues_its_buffer(
    connection: aio_pika.Connection, names: Names
) -> None:
    """Leaving ``async with queue.iterator()`` because the task is cancelled (a level-triggered cancel
    scope: trio, anyio) still cancels the consumer and gives the buffered messages back to the queue."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=10)
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    await publish(channel, queue, b"1", b"2", b"3")
    iterator = queue.iterator()
    inside = anyio.Event()

    async def consume() -> None:
        async with iterator:
            async for message in iterator:
                await message.ack()
                inside.set()
                await anyio.sleep_forever()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await inside.wait()
            # All three were delivered (prefetch 10): the other two wait in the iterator's buffer.
            await wait_for_counts(connection, queue.name, (0, 1))
            group.cancel_scope.cancel()
    assert iterator.consumer_tag is None
    await wait_for_counts(connection, queue.name, (2, 0))
    assert not channel.is_closed


ON_ASYNCIO = pytest.mark.parametrize(
    "variant",
    [("asyncio", "asyncio"), ("asyncio", "anyio")],
    ids=["asyncio-native", "anyio-on-asyncio"],
    indirect=True,
)


@ON_ASYNCIO
async def test_callback_raising_cancelled_error_spares_the_connection(
    connection: aio_pika.Connection, names: Names
) -> None:
    """A coroutine callback that ends with a CancelledError of its own (it awaited a future or a task that
    something else cancelled) fails like any callback: aio-pika's task for that message ends, the others go
    on. It must not cancel the connection's task group (the anyio backend) and the user's code with it."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    seen: list[bytes] = []
    after = anyio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(message.body)
        if message.body == b"boom":
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # raises CancelledError; this task was not cancelled
        await message.ack()
        if message.body == b"after":
            after.set()

    await queue.consume(on_message)
    with anyio.fail_after(WAIT):
        await publish(channel, queue, b"boom", b"after")
        await after.wait()
    assert seen == [b"boom", b"after"]
    assert not channel.is_closed
    assert not connection.is_closed


@ON_ASYNCIO
async def test_plain_callback_raising_cancelled_error_spares_the_connection(
    connection: aio_pika.Connection, names: Names
) -> None:
    """A plain callback that raises CancelledError (``future.result()`` of a cancelled future) fails like
    any callback: the received data's processing, which called it, goes on; the connection stays up."""
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), arguments=expiring())
    seen: list[bytes] = []
    after = anyio.Event()

    def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen.append(message.body)
        if message.body == b"boom":
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            future.result()  # raises CancelledError
        message.ack()
        if message.body == b"after":
            after.set()

    returned = anyio.Event()

    def on_return(_channel: aio_pika.abc.AbstractChannel, message: aio_pika.IncomingMessage) -> None:
        returned.set()
        raise asyncio.CancelledError

    channel.return_callbacks.add(on_return)
    await queue.consume(on_message)
    with anyio.fail_after(WAIT):
        await publish(channel, queue, b"boom", b"after")
        await after.wait()
        await channel.default_exchange.publish(aio_pika.Message(b"r"), routing_key=names.queue("unrouted"))
        await returned.wait()
        await publish(channel, queue, b"last")
        await queue.cancel(await queue.consume(lambda message: None))  # a round trip on the channel
    assert seen[:2] == [b"boom", b"after"]
    assert not channel.is_closed
    assert not connection.is_closed
