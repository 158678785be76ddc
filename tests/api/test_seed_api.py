"""The seed's API reference (aio-pika 1.8.1, section 5.7) and aio-pika 10's public names, entry by entry.

Only what the other modules of tests/api do not already exercise: the class attributes of 1.x, un-awaited
``close()``, the names of ``aio_pika.abc``/``aio_pika.exceptions``/``aio_pika.tools``, CallbackCollection
semantics, secrets in failed connects, bad input naming the parameter, and cancellation of waiting calls.
"""

from __future__ import annotations

import gc
import logging
import socket
import traceback
from typing import Any

import anyio
import pytest
from pamqp import commands

import aio_pika
from aio_pika import abc, exceptions, tools

from .conftest import AMQP_URL, Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

# aio-pika 10.2.1's ``aio_pika.exceptions.__all__`` and the names issue 3 lists.
EXCEPTION_NAMES = (
    "AMQPChannelError", "AMQPConnectionError", "AMQPError", "AMQPException", "AuthenticationError",
    "CONNECTION_EXCEPTIONS", "ChannelClosed", "ChannelInvalidStateError", "ChannelNotFoundEntity",
    "ChannelPreconditionFailed", "ConnectionClosed", "DeliveryError", "DuplicateConsumerTag",
    "IncompatibleProtocolError", "InvalidFrameError", "MessageProcessError", "MethodNotImplemented",
    "ProbableAuthenticationError", "ProtocolSyntaxError", "PublishError", "QueueEmpty",
    "ChannelAccessRefused", "ChannelLockedResource", "UnroutableError",
)  # fmt: skip

# aio-pika 10.2.1's ``aio_pika.abc.__all__``, less the two aiormq wrappers (UnderlayChannel/-Connection).
ABC_NAMES = (
    "AbstractChannel", "AbstractConnection", "AbstractExchange", "AbstractIncomingMessage", "AbstractMessage",
    "AbstractProcessContext", "AbstractQueue", "AbstractQueueIterator", "AbstractRobustChannel",
    "AbstractRobustConnection", "AbstractRobustExchange", "AbstractRobustQueue", "AbstractTransaction",
    "CallbackSetType", "CallbackType", "ChannelCloseCallback", "ConnectionCloseCallback",
    "ConnectionParameter", "ConsumerTag", "DateType", "DeclarationResult", "DeliveryMode",
    "ExchangeParamType", "ExchangeType", "FieldValue", "HeadersType", "MILLISECONDS", "MessageInfo",
    "PublishResultType", "SSLOptions", "TimeoutType", "TransactionState", "get_exchange_name",
)  # fmt: skip

TOP_LEVEL_NAMES = (
    "AMQPException", "Channel", "Connection", "DeliveryMode", "Exchange", "ExchangeType", "IncomingMessage",
    "Message", "MessageProcessError", "Queue", "QueueIterator", "RobustChannel", "RobustConnection",
    "RobustExchange", "RobustQueue", "connect", "connect_robust", "patterns", "pool", "abc", "exceptions",
)  # fmt: skip

TOOLS_NAMES = (
    "CallbackCollection", "CallbackSetType", "CallbackType", "create_task", "ensure_awaitable",
    "iscoroutinepartial", "weak_method_callback",
)  # fmt: skip


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def everything_said(error: BaseException) -> str:
    """The traceback text of ``error`` with its whole chain (``__cause__``/``__context__``), and the reprs."""
    text = "".join(traceback.format_exception(error))
    seen: set[int] = set()
    chain: list[BaseException | None] = [error]
    while chain:
        current = chain.pop()
        if current is None or id(current) in seen:  # chains can loop
            continue
        seen.add(id(current))
        text += repr(current) + str(current) + repr(current.args)
        chain += [current.__cause__, current.__context__]
    return text


# ---- names -------------------------------------------------------------------------------------------


def test_public_names() -> None:
    for name in EXCEPTION_NAMES:
        assert hasattr(exceptions, name), name
    for name in ABC_NAMES:
        assert hasattr(abc, name), name
    for name in TOP_LEVEL_NAMES:
        assert hasattr(aio_pika, name), name
    for name in TOOLS_NAMES:
        assert hasattr(tools, name), name
    # aio-pika's hierarchy, which ``except`` clauses rely on
    assert issubclass(exceptions.AMQPConnectionError, exceptions.AMQPError)
    assert issubclass(exceptions.ProbableAuthenticationError, exceptions.AMQPConnectionError)
    assert issubclass(exceptions.ConnectionClosed, exceptions.AMQPConnectionError)
    assert issubclass(exceptions.ChannelClosed, exceptions.AMQPChannelError)
    assert issubclass(exceptions.AMQPChannelError, exceptions.AMQPError)
    for name in (
        "ChannelNotFoundEntity",
        "ChannelPreconditionFailed",
        "ChannelAccessRefused",
        "ChannelLockedResource",
    ):
        assert issubclass(getattr(exceptions, name), exceptions.ChannelClosed), name
    assert exceptions.UnroutableError is exceptions.PublishError
    assert exceptions.AMQPException is exceptions.AMQPError
    for name in (
        "DeliveryError",
        "PublishError",
        "QueueEmpty",
        "MessageProcessError",
    ):
        assert issubclass(getattr(exceptions, name), exceptions.AMQPError), name
    assert issubclass(exceptions.ChannelInvalidStateError, RuntimeError)  # as in aiormq: not an AMQPError
    assert abc.ConnectionParameter("heartbeat", int, "60").parse("x") == "60"
    assert abc.ConnectionParameter("heartbeat", int, "60").parse("5") == 5


async def test_instances_are_the_abcs_and_class_attributes(
    connection: aio_pika.Connection, names: Names
) -> None:
    assert aio_pika.Connection.CHANNEL_CLASS is aio_pika.Channel
    assert aio_pika.Channel.QUEUE_CLASS is aio_pika.Queue
    assert aio_pika.Channel.EXCHANGE_CLASS is aio_pika.Exchange
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    exchange = await channel.declare_exchange(names.exchange(), auto_delete=True)
    assert isinstance(connection, abc.AbstractConnection)
    assert isinstance(channel, abc.AbstractChannel)
    assert isinstance(queue, abc.AbstractQueue)
    assert isinstance(exchange, abc.AbstractExchange)
    assert isinstance(aio_pika.Message(b""), abc.AbstractMessage)
    async with queue.iterator() as iterator:
        assert isinstance(iterator, abc.AbstractQueueIterator)
    await exchange.delete()


async def test_custom_channel_queue_and_exchange_classes(backend_name: str, names: Names) -> None:
    """1.x: ``CHANNEL_CLASS``, ``QUEUE_CLASS`` and ``EXCHANGE_CLASS`` are the factories the library uses."""

    class MyQueue(aio_pika.Queue):
        pass

    class MyExchange(aio_pika.Exchange):
        pass

    class MyChannel(aio_pika.Channel):
        QUEUE_CLASS = MyQueue
        EXCHANGE_CLASS = MyExchange

    class MyConnection(aio_pika.Connection):
        CHANNEL_CLASS = MyChannel

    async with aio_pika.connect(AMQP_URL, connection_class=MyConnection, backend=backend_name) as connection:
        channel = await connection.channel()
        assert isinstance(channel, MyChannel)
        assert isinstance(channel.default_exchange, MyExchange)
        queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
        assert isinstance(queue, MyQueue)
        exchange = await channel.declare_exchange(names.exchange(), auto_delete=True)
        assert isinstance(exchange, MyExchange)
        await exchange.delete()


# ---- seed-style calls ----------------------------------------------------------------------------------


async def test_seed_style_close_without_await(backend_name: str) -> None:
    """1.x: ``connection.close()`` returned a Task, so not awaiting it still closed; ``closing`` awaits it."""
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as connection:
        channel = await connection.channel()
        connection.close()  # not awaited
        assert connection.close_called
        with anyio.fail_after(5):
            await connection.closing
            await channel.closing
        assert connection.is_closed and channel.is_closed


async def test_seed_queue_methods(channel: aio_pika.Channel, names: Names) -> None:
    """Queue.declare(passive=True), bind to an exchange given by name, consume/cancel with timeouts."""
    exchange = await channel.declare_exchange(
        names.exchange(), aio_pika.ExchangeType.FANOUT
    )  # the fixture deletes it
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring(), timeout=5)
    result = await queue.declare(timeout=5, passive=True)
    assert result.message_count == 0 and result.consumer_count == 0
    await queue.bind(exchange.name, timeout=5)  # a name, not an Exchange object; routing key: the queue name
    await exchange.publish(aio_pika.Message(b"fan"), routing_key="")
    message = await queue.get(timeout=5, no_ack=True)
    assert message is not None and message.body == b"fan" and message.exchange == exchange.name
    tag = await queue.consume(lambda message: None, timeout=5)
    assert (await queue.cancel(tag, timeout=5)).name == "Basic.CancelOk"  # type: ignore[union-attr]
    await queue.unbind(exchange.name, timeout=5)
    await exchange.publish(aio_pika.Message(b"lost"), routing_key="")
    assert await queue.get(fail=False) is None


async def test_incoming_message_info_keys(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await channel.default_exchange.publish(
        aio_pika.Message(b"i", content_type="text/plain"), routing_key=queue.name
    )
    message = await queue.get(timeout=5)
    assert message is not None
    info = message.info()
    assert set(info) == set(abc.MessageInfo.__annotations__)
    assert info["routing_key"] == queue.name and info["exchange"] == "" and info["delivery_tag"] is not None
    assert info["redelivered"] is False and info["content_type"] == "text/plain" and info["body_size"] == 1
    message.ack()  # 1.x: not awaited, takes effect
    assert message.processed
    assert await queue.get(fail=False) is None


async def test_every_operation_on_a_closed_channel_fails_at_once(
    connection: aio_pika.Connection, names: Names
) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    exchange = await channel.declare_exchange(names.exchange(), auto_delete=True)
    await channel.default_exchange.publish(aio_pika.Message(b"m"), routing_key=queue.name)
    message = await queue.get(timeout=5)
    await channel.close()
    operations = {
        "declare_queue": lambda: channel.declare_queue(exclusive=True),
        "declare_exchange": lambda: channel.declare_exchange(names.exchange()),
        "get_queue": lambda: channel.get_queue(queue.name),
        "get_exchange": lambda: channel.get_exchange(exchange.name),
        "set_qos": lambda: channel.set_qos(prefetch_count=1),
        "flow": lambda: channel.flow(True),
        "queue_delete": lambda: channel.queue_delete(queue.name),
        "exchange_delete": lambda: channel.exchange_delete(exchange.name),
        "queue.declare": lambda: queue.declare(),
        "queue.bind": lambda: queue.bind(exchange),
        "queue.unbind": lambda: queue.unbind(exchange),
        "queue.purge": lambda: queue.purge(),
        "queue.delete": lambda: queue.delete(),
        "queue.get": lambda: queue.get(),
        "queue.consume": lambda: queue.consume(lambda message: None),
        "queue.cancel": lambda: queue.cancel("tag"),
        "iterator": lambda: queue.iterator().__anext__(),
        "exchange.bind": lambda: exchange.bind("amq.fanout"),
        "exchange.delete": lambda: exchange.delete(),
        "publish": lambda: exchange.publish(aio_pika.Message(b""), routing_key="k"),
        "ack": lambda: message.ack(),
        "nack": lambda: message.nack(),
        "reject": lambda: message.reject(),
    }
    for name, operation in operations.items():
        with anyio.fail_after(1), pytest.raises(exceptions.ChannelInvalidStateError, match="closed"):
            result = operation()
            await result  # type: ignore[misc]
        assert name  # for the traceback
    await connection.close()
    with pytest.raises(exceptions.ChannelInvalidStateError, match="connection is closed"):
        connection.channel()
    with anyio.fail_after(1), pytest.raises(exceptions.ChannelInvalidStateError):
        await connection.update_secret("guest", reason="closed")


# ---- CallbackCollection ------------------------------------------------------------------------------


class Sender:
    pass


async def test_callback_collection_semantics(caplog: pytest.LogCaptureFixture) -> None:
    sender = Sender()
    collection = tools.CallbackCollection(sender)
    calls: list[tuple[Any, ...]] = []

    def plain(who: object, *args: object) -> None:
        calls.append(("plain", who, *args))

    async def coroutine(who: object, *args: object) -> None:
        await anyio.sleep(0)
        calls.append(("coroutine", who, *args))

    def failing(who: object, *args: object) -> None:
        raise RuntimeError("boom")

    collection.add(plain)
    collection.add(coroutine)
    collection.add(failing)
    assert len(collection) == 3 and plain in collection and bool(collection)
    with pytest.raises(ValueError):
        collection.add("not callable")  # type: ignore[arg-type]

    caplog.set_level(logging.ERROR)
    result = collection(1, 2)  # the plain callback runs at once, the coroutine when awaited
    assert calls == [("plain", sender, 1, 2)]
    await result
    assert calls == [("plain", sender, 1, 2), ("coroutine", sender, 1, 2)]
    assert "boom" in caplog.text  # logged, never raised

    nested = tools.CallbackCollection(Sender())
    nested_calls: list[tuple[Any, ...]] = []
    nested.add(lambda who, *args: nested_calls.append(args))
    collection.add(nested)  # a nested collection gets the arguments with its own sender
    collection.remove(failing)
    collection.discard(failing)  # absent: no error
    with pytest.raises(KeyError):
        collection.remove(failing)
    calls.clear()
    await collection(3)
    assert nested_calls == [(3,)] and ("plain", sender, 3) in calls

    collection.freeze()
    assert collection.is_frozen
    for change in (lambda: collection.add(plain), lambda: collection.discard(plain), collection.clear):
        with pytest.raises(RuntimeError):
            change()
    with pytest.raises(RuntimeError):
        collection.freeze()
    collection.unfreeze()
    collection.clear()
    assert len(collection) == 0 and not collection

    class Holder:
        def __call__(self, who: object) -> None:
            calls.append(("weak", who))

        def method(self, who: object) -> None:
            calls.append(("method", who))

    holder = Holder()
    collection.add(holder, weak=True)  # weakly held: does not keep `holder` alive
    collection.add(tools.weak_method_callback(Holder().method))  # its instance is gone: a no-op
    kept = Holder()
    collection.add(tools.weak_method_callback(kept.method))
    calls.clear()
    await collection()
    assert sorted(calls) == [("method", sender), ("weak", sender)]
    del holder
    gc.collect()
    assert len(collection) == 2  # the weakly held callable went with its object
    assert await tools.ensure_awaitable(lambda x: x * 2)(21) == 42


# ---- secrets and errors of failed connects --------------------------------------------------------------


@pytest.mark.parametrize("robust", [False, True], ids=["connect", "connect_robust"])
async def test_password_absent_from_failed_connect_errors(
    backend_name: str, robust: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused, unresolvable, timed out, refused login: no password in the error, its chain or the logs."""
    secret = "pw-" + "3f9a1c7e5b"
    caplog.set_level(logging.DEBUG)
    connect = aio_pika.connect_robust if robust else aio_pika.connect
    extra = "?fail_fast=1&timeout=0.5" if robust else "?timeout=0.5"
    with socket.socket() as silent:  # accepts TCP, never answers: the handshake times out
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        urls = {
            "refused": f"amqp://guest:{secret}@127.0.0.1:{unused_port()}/{extra}",
            "unresolvable": f"amqp://guest:{secret}@nonexistent.invalid/{extra}",
            "timeout": f"amqp://guest:{secret}@127.0.0.1:{silent.getsockname()[1]}/{extra}",
            "login": f"amqp://guest:{secret}@127.0.0.1:5672/{extra}",
        }
        errors: dict[str, BaseException] = {}
        for what, url in urls.items():
            with anyio.fail_after(10):
                try:
                    async with connect(url, backend=backend_name):
                        pass  # pragma: no cover
                except Exception as error:
                    errors[what] = error
    assert set(errors) == set(urls)
    for what, error in errors.items():
        assert secret not in everything_said(error), what
    assert secret not in caplog.text
    # distinct, clear errors
    assert isinstance(errors["refused"], exceptions.AMQPConnectionError)
    assert "refused" in str(errors["refused"]) and "127.0.0.1" in str(errors["refused"])
    assert isinstance(errors["unresolvable"], exceptions.AMQPConnectionError)
    assert "nonexistent.invalid" in str(errors["unresolvable"]) and "resolve" in str(errors["unresolvable"])
    assert isinstance(errors["timeout"], TimeoutError)
    assert isinstance(errors["login"], exceptions.ProbableAuthenticationError)
    assert len({str(error) for error in errors.values()}) == len(errors)


# ---- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "parameter"),
    [
        ({"ssl": "yes"}, TypeError, "ssl"),
        ({"ssl_options": 5}, TypeError, "ssl_options"),
        ({"host": ""}, TypeError, "host"),
        ({"virtualhost": 5}, TypeError, "virtualhost"),
        ({"password": None}, TypeError, "password"),
        ({"heartbeat": -1}, ValueError, "heartbeat"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"heartbeat": [1]}, TypeError, "heartbeat"),
    ],
)
def test_more_invalid_connect_parameters(
    kwargs: dict[str, Any], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=parameter):
        aio_pika.connect(**kwargs)


def test_invalid_message_fields_name_the_field() -> None:
    with pytest.raises(ValueError, match="priority"):
        aio_pika.Message(b"", priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delivery_mode"):
        aio_pika.Message(b"", delivery_mode=7)
    assert aio_pika.Message(b"", delivery_mode=2).delivery_mode is aio_pika.DeliveryMode.PERSISTENT


async def test_invalid_channel_arguments_name_the_parameter(
    connection: aio_pika.Connection, channel: aio_pika.Channel, names: Names
) -> None:
    """Rejected before anything is sent: nothing declared or published, the channel open and in step."""
    with pytest.raises(ValueError, match="prefetch_count"):
        await channel.set_qos(prefetch_count=-1)
    with pytest.raises(ValueError, match="prefetch_count"):
        await channel.set_qos(prefetch_count=70_000)
    never = names.queue()
    with pytest.raises(TypeError, match="arguments"):
        await channel.declare_queue(never, exclusive=True, arguments=[("x-expires", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="arguments"):
        await channel.declare_exchange(names.exchange(), arguments="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout"):
        await channel.declare_queue(never, exclusive=True, arguments=expiring(), timeout="5")  # type: ignore[arg-type]
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring(), timeout=5)
    with pytest.raises(TypeError, match="timeout"):
        await channel.default_exchange.publish(aio_pika.Message(b""), routing_key=queue.name, timeout="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="timeout"):
        await queue.get(timeout="5")  # type: ignore[arg-type]
    assert not channel.is_closed
    assert (await queue.declare(timeout=5)).message_count == 0  # the publish was not sent
    assert isinstance(await channel.set_qos(prefetch_count=10), commands.Basic.QosOk)
    other = await connection.channel()
    with pytest.raises(exceptions.ChannelNotFoundEntity):
        await other.get_queue(never)  # the declares were not sent


# ---- cancellation (the trio issue: cancelling never desynchronises the channel) --------------------------


async def test_cancelled_publish_does_not_desynchronise(
    channel: aio_pika.Channel, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled while waiting for the confirm: the message is sent, its ack comes late
        await channel.default_exchange.publish(aio_pika.Message(b"first"), routing_key=queue.name)
    assert scope.cancelled_caught
    with anyio.fail_after(5):
        while channel._confirms:  # its ack, alone: nothing else is in flight
            await anyio.sleep(0.001)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]

    async def publish(index: int) -> None:
        await channel.default_exchange.publish(aio_pika.Message(b"%d" % index), routing_key=queue.name)

    async with anyio.create_task_group() as group:  # many waiting publishers cancelled at once
        for index in range(20):
            group.start_soon(publish, index)
        await anyio.sleep(0)
        group.cancel_scope.cancel()
    with anyio.fail_after(5):
        result = await channel.default_exchange.publish(aio_pika.Message(b"last"), routing_key=queue.name)
    assert isinstance(result, commands.Basic.Ack)
    assert not channel._confirms  # every abandoned waiter is gone
    assert (await queue.declare()).message_count == 22  # the cancelled ones were published all the same


async def test_cancelled_publish_then_the_channel_closes(
    channel: aio_pika.Channel, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    missing = await channel.get_exchange(names.exchange(), ensure=False)
    closed = anyio.Event()
    channel.close_callbacks.add(lambda *args: closed.set())
    with anyio.CancelScope() as scope:
        scope.cancel()  # gone before the broker answers: it closes the channel over the missing exchange
        await missing.publish(aio_pika.Message(b"lost"), routing_key="any")
    assert scope.cancelled_caught
    with anyio.fail_after(5):
        await closed.wait()
    assert channel.is_closed and not channel._confirms
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_cancelled_get_does_not_desynchronise(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await channel.default_exchange.publish(aio_pika.Message(b"kept"), routing_key=queue.name)
    with anyio.CancelScope() as scope:
        scope.cancel()  # the Basic.Get is sent; its GetOk arrives late and the message is requeued
        await queue.get()
    assert scope.cancelled_caught
    other = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring(), timeout=5)
    assert other.name != queue.name  # the next reply on the channel is its own
    with anyio.fail_after(5):
        message = await queue.get(fail=False) or await queue.get()
    assert message.body == b"kept"
    await message.ack()


async def test_cancelled_consume_leaves_no_consumer(channel: aio_pika.Channel, names: Names) -> None:
    """The late Basic.ConsumeOk of a cancelled consume: that consumer is cancelled, never gets a message."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    received: list[bytes] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        await queue.consume(lambda message: received.append(message.body), no_ack=True)
    assert scope.cancelled_caught
    with anyio.fail_after(5):
        while (await queue.declare()).consumer_count:  # the late ConsumeOk came and its consumer went
            await anyio.sleep(0.01)
    await channel.default_exchange.publish(aio_pika.Message(b"stays"), routing_key=queue.name)
    message = await queue.get(timeout=5, no_ack=True)
    assert message.body == b"stays" and received == []


async def test_commands_behind_a_consume_keep_their_replies(channel: aio_pika.Channel, names: Names) -> None:
    """RabbitMQ sends ConsumeOk/CancelOk from the queue's process: a later command's reply could overtake
    them. Consumes, cancels and declares running concurrently on one channel must still each get their own."""
    queues = [
        await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring()) for _ in range(3)
    ]
    tags: dict[str, str] = {}

    async def consume(queue: aio_pika.Queue) -> None:
        tags[queue.name] = await queue.consume(lambda message: None, no_ack=True)

    async def declare(queue: aio_pika.Queue) -> None:
        result = await queue.declare()
        assert isinstance(result, commands.Queue.DeclareOk) and result.queue == queue.name

    for _ in range(5):
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for queue in queues:
                    group.start_soon(consume, queue)
                    group.start_soon(declare, queue)
                    group.start_soon(channel.set_qos, 10)
            async with anyio.create_task_group() as group:
                for queue in queues:
                    group.start_soon(queue.cancel, tags[queue.name])
                    group.start_soon(declare, queue)
        tags.clear()
    assert not channel.is_closed
