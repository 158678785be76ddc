"""connect_robust: reconnection and full state recovery, on every backend, against a private broker node.

Every test here uses the session's private node (``private_node``): they close all its connections
(320 CONNECTION_FORCED), stop and start it, and raise alarms on it — never on the shared broker.
Blocking node commands run in a worker thread, so that the event loop keeps serving the connections.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from pamqp import commands

import aio_pika
from aio_pika import exceptions
from aio_pika.patterns import RPC, Master
from aio_pika.robust_queue import RobustQueueIterator
from tests.support.private_node import PrivateNode

from .conftest import Names

pytest_plugins = ["tests.support.fixtures"]

pytestmark = [pytest.mark.anyio]

RECONNECT_INTERVAL = 0.2
LIMIT = 60  # seconds for a whole test: nothing may hang
RECOVERY = 30  # seconds a recovery may take (a broker restart included)


def robust_url(node: PrivateNode, **params: Any) -> str:
    return node.url + "?" + urlencode({"reconnect_interval": RECONNECT_INTERVAL, **params})


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(partial(function, *args, **kwargs))


async def wait_until(predicate: Callable[[], bool], timeout: float = RECOVERY) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.02)


async def rows(node: PrivateNode, *args: str) -> list[list[str]]:
    output = (await in_thread(node.ctl, *args, "--no-table-headers")).stdout
    return [line.split("\t") for line in output.splitlines() if line.strip()]


async def consumers_of(node: PrivateNode, queue: str) -> list[list[str]]:
    """``list_consumers`` rows (consumer tag, prefetch count) of one queue."""
    found = await rows(node, "list_consumers", "queue_name", "consumer_tag", "prefetch_count")
    return [row[1:] for row in found if row[0] == queue]


async def plain_do(node: PrivateNode, backend_name: str, action: Any) -> None:
    async with aio_pika.connect(node.url, backend=backend_name) as plain:
        await action(await plain.channel())


class Reconnects:
    """Counts the reconnect callbacks of a connection."""

    def __init__(self, connection: aio_pika.RobustConnection) -> None:
        self.count = 0
        connection.reconnect_callbacks.add(self)

    def __call__(self, connection: Any) -> None:
        self.count += 1

    async def wait(self, count: int = 1) -> None:
        await wait_until(lambda: self.count >= count)


class Inbox:
    """A consumer callback collecting message bodies (a coroutine function: the worker-pool path)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, message: aio_pika.IncomingMessage) -> None:
        async with message.process():
            self.bodies.append(message.body)

    async def wait_for(self, *bodies: bytes) -> None:
        await wait_until(lambda: all(body in self.bodies for body in bodies), timeout=10)


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    return Names(f"test-robust.{request.node.originalname}.{uuid.uuid4().hex[:6]}")


# ---- basics ---------------------------------------------------------------------------------------------


async def test_async_with_connect_robust(private_node: PrivateNode, backend_name: str, names: Names) -> None:
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            assert isinstance(connection, aio_pika.RobustConnection)
            assert connection.reconnect_interval == RECONNECT_INTERVAL
            assert connection.fail_fast is True
            assert not connection.is_closed and not connection.reconnecting
            channel = await connection.channel()
            assert isinstance(channel, aio_pika.RobustChannel)
            assert isinstance(channel.default_exchange, aio_pika.RobustExchange)
            exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.FANOUT)
            assert isinstance(exchange, aio_pika.RobustExchange)
            queue = await channel.declare_queue(exclusive=True)
            assert isinstance(queue, aio_pika.RobustQueue)
            assert queue.name.startswith("amq_")  # client-chosen, so that it survives reconnections
            assert isinstance(queue.iterator(), RobustQueueIterator)
            await queue.bind(exchange)
            inbox = Inbox()
            await queue.consume(inbox)
            assert isinstance(await exchange.publish(aio_pika.Message(b"hello"), ""), commands.Basic.Ack)
            await inbox.wait_for(b"hello")
        assert connection.is_closed
        assert channel.is_closed


async def test_await_connect_robust(private_node: PrivateNode, backend_name: str) -> None:
    """``connection = await connect_robust(url)`` (detached backend): native asyncio only."""
    if backend_name == "anyio":
        with pytest.raises(RuntimeError, match="async with"):
            await aio_pika.connect_robust(robust_url(private_node), backend=backend_name)
        return
    with anyio.fail_after(LIMIT):
        connection = await aio_pika.connect_robust(robust_url(private_node), backend=backend_name)
        reconnects = Reconnects(connection)
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await in_thread(private_node.close_all_connections)
        await reconnects.wait()
        await channel.default_exchange.publish(aio_pika.Message(b"x"), queue.name)
        assert (await queue.get(timeout=5)).body == b"x"
        await connection.close()
        assert connection.is_closed


def test_parameters() -> None:
    connection = aio_pika.RobustConnection("amqp://h/?reconnect_interval=2.5&fail_fast=false")
    assert connection.reconnect_interval == 2.5
    assert connection.fail_fast is False
    assert "reconnect_interval" not in connection.kwargs
    connection = aio_pika.RobustConnection("amqp://h/")
    assert (connection.reconnect_interval, connection.fail_fast) == (5, True)
    context = aio_pika.connect_robust("amqp://h/", reconnect_interval=1, fail_fast=0)
    connection = context._factory()
    assert (connection.reconnect_interval, connection.fail_fast) == (1, False)
    context.close()
    with pytest.raises(ValueError, match="reconnect_interval"):
        aio_pika.connect_robust("amqp://h/?reconnect_interval=soon")
    with pytest.raises(ValueError, match="fail_fast"):
        aio_pika.connect_robust("amqp://h/", fail_fast="maybe")
    with pytest.raises(TypeError, match="connection_class"):
        aio_pika.connect_robust("amqp://h/", connection_class=object)  # type: ignore[arg-type]


# ---- recovery -------------------------------------------------------------------------------------------


async def test_full_recovery_after_forced_close(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """Every piece of state comes back after the broker closed the connection (320 CONNECTION_FORCED)."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            reopened: list[Any] = []
            channel = await connection.channel()  # publisher confirms
            await channel.set_qos(prefetch_count=7)
            channel.reopen_callbacks.add(lambda ch: reopened.append(ch))
            plain = await connection.channel(channel_number=9, publisher_confirms=False)
            numbers = (channel.number, plain.number)

            source = await channel.declare_exchange(names.exchange("src"), aio_pika.ExchangeType.TOPIC)
            fanout = await channel.declare_exchange(names.exchange("dst"), aio_pika.ExchangeType.FANOUT)
            await fanout.bind(source, "e2e.#")  # exchange-to-exchange binding

            # A server-named exclusive queue with a coroutine consumer and an explicit consumer tag.
            server_named = await channel.declare_queue(exclusive=True)
            await server_named.bind(source, "a.*")
            inbox_a = Inbox()
            tag_a = await server_named.consume(inbox_a, consumer_tag=f"tag-a-{uuid.uuid4().hex}")
            # A named auto-delete queue on another channel, bound to the second exchange, plain callback.
            auto_delete = await plain.declare_queue(names.queue("b"), auto_delete=True)
            await auto_delete.bind(fanout)
            bodies_b: list[bytes] = []

            def on_b(message: aio_pika.IncomingMessage) -> None:
                bodies_b.append(message.body)
                message.ack()

            tag_b = await auto_delete.consume(on_b)
            # A queue read with get().
            polled = await channel.declare_queue(names.queue("c"), auto_delete=False, exclusive=True)
            await polled.bind(source, "c")

            async def publish_round(label: bytes) -> None:
                ack = await source.publish(aio_pika.Message(b"a" + label), "a.x")
                assert isinstance(ack, commands.Basic.Ack)
                await source.publish(aio_pika.Message(b"b" + label), "e2e.y")
                await source.publish(aio_pika.Message(b"c" + label), "c")
                await inbox_a.wait_for(b"a" + label)
                await wait_until(lambda: b"b" + label in bodies_b, timeout=10)
                message = await polled.get(timeout=5)
                assert message.body == b"c" + label
                await message.ack()

            await publish_round(b"0")
            queue_name = server_named.name

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)

            assert not connection.is_closed and not connection.reconnecting
            assert connection.connection_attempt == 2
            assert (channel.number, plain.number) == numbers
            assert not channel.is_closed and not plain.is_closed
            assert reopened == [channel]
            assert server_named.name == queue_name  # the same Queue object, the same name
            await publish_round(b"1")

            consumers = {row[1]: row for row in await rows(private_node, "list_consumers", "queue_name",
                                                           "consumer_tag", "prefetch_count")}  # fmt: skip
            assert consumers[tag_a][0] == queue_name
            assert consumers[tag_a][2] == "7"  # QoS restored
            assert consumers[tag_b][0] == auto_delete.name

            # And again: recovery is repeatable.
            await in_thread(private_node.close_all_connections)
            await reconnects.wait(2)
            await publish_round(b"2")
            assert inbox_a.bodies == [b"a0", b"a1", b"a2"]
            assert bodies_b == [b"b0", b"b1", b"b2"]


@pytest.mark.parametrize("full", [False, True], ids=["app-restart", "node-restart"])
async def test_recovery_after_broker_restart(
    private_node: PrivateNode, backend_name: str, names: Names, full: bool
) -> None:
    """The broker goes down and comes back without the transient topology: it is declared again."""
    with anyio.fail_after(LIMIT * 2):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.DIRECT)
            transient = await channel.declare_queue(names.queue("transient"), auto_delete=True)
            await transient.bind(exchange, "k")
            durable = await channel.declare_queue(names.queue("durable"), durable=True)
            inbox, durable_inbox = Inbox(), Inbox()
            await transient.consume(inbox)
            # A persistent message waiting in a durable queue survives the restart.
            await channel.default_exchange.publish(
                aio_pika.Message(b"kept", delivery_mode=aio_pika.DeliveryMode.PERSISTENT), durable.name
            )

            await in_thread(private_node.stop, full=full)
            await wait_until(lambda: connection.reconnecting)
            await in_thread(private_node.start)
            await reconnects.wait(1)

            await exchange.publish(aio_pika.Message(b"after"), "k")
            await inbox.wait_for(b"after")
            await durable.consume(durable_inbox)
            await durable_inbox.wait_for(b"kept")
            await durable.delete(if_unused=False, if_empty=False)


async def test_publishes_awaiting_confirms_fail_on_loss(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """Publishes whose confirm is pending when the connection drops raise (never hang, never silently
    lost), and can be published again once the connection is back."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue(), durable=False)
            results: dict[int, Any] = {}

            async def publish(n: int) -> None:
                try:
                    results[n] = await channel.default_exchange.publish(
                        aio_pika.Message(b"%d" % n), queue.name
                    )
                except Exception as error:
                    results[n] = error

            # With a memory alarm the broker stops reading from publishing connections: no confirm comes.
            await in_thread(private_node.block_publishers)
            try:
                async with anyio.create_task_group() as group:
                    for n in range(50):
                        group.start_soon(publish, n)
                    # The broker blocks the connection at the first publish it reads, and reads no more.
                    await wait_until(lambda: connection.blocked is not None)
                    assert len(results) < 50
                    await in_thread(private_node.close_all_connections)
            finally:
                await in_thread(private_node.unblock_publishers)
            failed = [n for n, result in results.items() if isinstance(result, Exception)]
            assert failed
            for n in failed:
                assert isinstance(results[n], exceptions.AMQPConnectionError), results[n]
            await reconnects.wait(1)
            for n in failed:
                ack = await channel.default_exchange.publish(aio_pika.Message(b"%d" % n), queue.name)
                assert isinstance(ack, commands.Basic.Ack)
            received = set()
            async with queue.iterator() as iterator:
                async for message in iterator:
                    received.add(int(message.body))
                    await message.ack()
                    if received >= set(failed):
                        break


async def test_operations_wait_during_an_outage(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """While reconnecting, publish/declare/consume/new channels wait for the recovery (bounded by their
    timeout), then go through."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue(), auto_delete=True)
            inbox = Inbox()
            await queue.consume(inbox)

            await in_thread(private_node.stop)
            await wait_until(lambda: connection.reconnecting)
            assert not connection.is_closed
            with pytest.raises(TimeoutError):
                await channel.default_exchange.publish(aio_pika.Message(b"lost?"), queue.name, timeout=0.3)
            with pytest.raises(TimeoutError):
                await channel.declare_queue(names.queue(), timeout=0.3)

            done: dict[str, Any] = {}

            async def publish() -> None:
                done["publish"] = await channel.default_exchange.publish(
                    aio_pika.Message(b"waited"), queue.name
                )

            async def declare() -> None:
                done["declare"] = await channel.declare_queue(names.queue("late"), auto_delete=True)

            async def new_channel() -> None:
                done["channel"] = await connection.channel()

            async with anyio.create_task_group() as group:
                group.start_soon(publish)
                group.start_soon(declare)
                group.start_soon(new_channel)
                await anyio.sleep(0.5)
                assert done == {}
                await in_thread(private_node.start)
            assert reconnects.count == 1
            assert isinstance(done["publish"], commands.Basic.Ack)
            assert isinstance(done["declare"], aio_pika.RobustQueue)
            assert not done["channel"].is_closed
            await inbox.wait_for(b"waited")


async def test_close_stops_reconnecting(private_node: PrivateNode, backend_name: str, names: Names) -> None:
    name = names.queue("connection-name")
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(
            robust_url(private_node, name=name), backend=backend_name
        ) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(auto_delete=True)
            iterated: list[Any] = []

            async def iterate() -> None:
                async for message in queue.iterator():
                    iterated.append(message)
                iterated.append("end")

            listing = await in_thread(private_node.list_connections, "client_properties")
            assert name in str(listing)
            async with anyio.create_task_group() as group:
                group.start_soon(iterate)
                await in_thread(private_node.stop)
                await wait_until(lambda: connection.reconnecting)
                with anyio.fail_after(5):
                    await connection.close()
                await wait_until(lambda: iterated == ["end"], timeout=5)  # the iterator ends too
            assert connection.is_closed
            await wait_until(lambda: not connection.reconnecting, timeout=5)
            with pytest.raises(exceptions.ChannelInvalidStateError):
                await channel.declare_queue(names.queue())
            with pytest.raises(exceptions.ChannelInvalidStateError):
                connection.channel()
            await in_thread(private_node.start)
            await anyio.sleep(RECONNECT_INTERVAL * 5)
            listing = await in_thread(private_node.list_connections, "client_properties")
            assert name not in str(listing)


async def test_fail_fast(private_node: PrivateNode, backend_name: str) -> None:
    await in_thread(private_node.stop)
    with anyio.fail_after(LIMIT):
        with pytest.raises(exceptions.AMQPConnectionError):
            async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name):
                pass  # pragma: no cover

        # Without fail_fast the first connection is retried until the broker is there.
        async with anyio.create_task_group() as group:

            async def start_later() -> None:
                await anyio.sleep(1)
                await in_thread(private_node.start)

            group.start_soon(start_later)
            url = robust_url(private_node, fail_fast="false")
            async with aio_pika.connect_robust(url, backend=backend_name) as connection:
                channel = await connection.channel()
                await channel.declare_queue(exclusive=True)


async def test_queue_iterator_survives_reconnection(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            received: list[bytes] = []
            async with anyio.create_task_group() as group:

                async def iterate() -> None:
                    async with queue.iterator() as iterator:
                        async for message in iterator:
                            async with message.process():
                                received.append(message.body)
                    received.append(b"end")

                group.start_soon(iterate)
                await wait_until(lambda: bool(queue._consumers))
                await channel.default_exchange.publish(aio_pika.Message(b"1"), queue.name)
                await wait_until(lambda: received == [b"1"], timeout=10)
                await in_thread(private_node.close_all_connections)
                await reconnects.wait(1)
                await channel.default_exchange.publish(aio_pika.Message(b"2"), queue.name)
                await wait_until(lambda: received == [b"1", b"2"], timeout=10)
                await channel.close()  # the user closing the channel ends the iteration
                await wait_until(lambda: received == [b"1", b"2", b"end"], timeout=10)


async def test_channel_reopens_after_a_channel_error(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            channel = await connection.channel()
            reopened: list[Any] = []
            channel.reopen_callbacks.add(lambda ch: reopened.append(ch))
            queue = await channel.declare_queue(names.queue(), auto_delete=True)
            inbox = Inbox()
            tag = await queue.consume(inbox)
            number = channel.number
            with pytest.raises(exceptions.ChannelNotFoundEntity):
                await channel.get_queue(names.queue("missing"))
            # The next call waits for the channel to be reopened and restored.
            other = await channel.declare_queue(names.queue("other"), auto_delete=True)
            assert not channel.is_closed and channel.number == number
            assert reopened == [channel]
            await channel.default_exchange.publish(aio_pika.Message(b"still here"), queue.name)
            await inbox.wait_for(b"still here")
            assert tag in queue._consumers
            await channel.default_exchange.publish(aio_pika.Message(b"other"), other.name)
            assert (await other.get(timeout=5)).body == b"other"
            # An explicit reopen() is harmless (it is open), and works after close() too.
            await channel.reopen()
            await channel.close()
            await channel.reopen()
            await channel.default_exchange.publish(aio_pika.Message(b"again"), queue.name)
            await inbox.wait_for(b"again")


async def test_what_the_user_undid_is_not_restored(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            closed = await connection.channel()
            exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.DIRECT)
            kept = await channel.declare_queue(names.queue("kept"), auto_delete=False)
            deleted = await channel.declare_queue(names.queue("deleted"))
            temporary = await channel.declare_queue(names.queue("temporary"), robust=False)
            await kept.bind(exchange, "stays")
            await kept.bind(exchange, "goes")
            await kept.unbind(exchange, "goes")
            await kept.consume(Inbox())
            cancelled = await kept.consume(Inbox())
            await kept.cancel(cancelled)
            await deleted.delete()
            await closed.close()

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            assert closed.is_closed
            # Checked over a plain connection of its own.
            async with aio_pika.connect(private_node.url, backend=backend_name) as plain:
                check = await plain.channel(on_return_raises=True)
                assert (
                    await check.declare_queue(kept.name, passive=True)
                ).declaration_result.consumer_count == 1
                await check.declare_queue(temporary.name, passive=True)  # never deleted: still there
                with pytest.raises(exceptions.ChannelNotFoundEntity):
                    await check.declare_queue(deleted.name, passive=True)
                check = await plain.channel(on_return_raises=True)
                source = await check.get_exchange(exchange.name)
                await source.publish(aio_pika.Message(b"routed"), "stays")
                with pytest.raises(exceptions.PublishError):
                    await source.publish(aio_pika.Message(b"unroutable"), "goes")
            await kept.delete(if_unused=False, if_empty=False)
            await channel.queue_delete(temporary.name)


async def test_patterns_survive_reconnection(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """RPC and Master/Worker keep working across a reconnection; a call pending at the loss fails."""
    release = anyio.Event()

    async def hang() -> str:
        await release.wait()
        return "released"

    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            rpc_class = type("RPC", (RPC,), {"DLX_NAME": names.exchange("dlx")})
            callee = await rpc_class.create(await connection.channel())
            caller = await rpc_class.create(await connection.channel())
            method, slow = names.queue("double"), names.queue("hang")
            await callee.register(method, lambda *, x: 2 * x, auto_delete=True)
            await callee.register(slow, hang, auto_delete=True)
            master = Master(await connection.channel())
            tasks: list[int] = []
            await master.create_worker(names.queue("tasks"), lambda *, n: tasks.append(n), auto_delete=True)
            assert await caller.proxy.__getattr__(method)(x=21) == 42
            result_queue = caller.result_queue.name

            outcome: list[BaseException] = []

            async def pending_call() -> None:
                try:
                    await caller.call(slow)
                except Exception as error:
                    outcome.append(error)

            async with anyio.create_task_group() as group:
                group.start_soon(pending_call)
                await wait_until(lambda: bool(caller.futures), timeout=10)
                await in_thread(private_node.close_all_connections)
            assert len(outcome) == 1 and isinstance(outcome[0], exceptions.AMQPConnectionError)
            release.set()
            # Made while the channels are being restored: the call waits for them, then goes through.
            assert await caller.call(method, {"x": 4}) == 8
            await reconnects.wait(1)
            assert caller.result_queue.name == result_queue
            assert await caller.call(method, {"x": 5}) == 10
            await master.proxy.__getattr__(names.queues[-1])(n=1)
            await wait_until(lambda: tasks == [1], timeout=10)


async def test_reconnect_closed_and_ready(private_node: PrivateNode, backend_name: str) -> None:
    """``reconnect()`` forces a reconnection; ``closed()`` waits for the final close, not a lost connection;
    ``ready()`` raises once the connection is closed."""
    finished: list[str] = []
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)

            async def wait_closed() -> None:
                await connection.closed()
                finished.append("closed")

            async with anyio.create_task_group() as group:
                group.start_soon(wait_closed)
                await connection.reconnect()
                assert reconnects.count == 1
                await connection.ready()
                await channel.default_exchange.publish(aio_pika.Message(b"x"), queue.name)
                assert (await queue.get(timeout=5)).body == b"x"
                await anyio.sleep(0.1)
                assert finished == []
                await connection.close()
            assert finished == ["closed"]
            with pytest.raises(exceptions.ChannelInvalidStateError):
                await connection.ready()
            with pytest.raises(exceptions.ChannelInvalidStateError):
                await connection.reconnect()


async def test_restore_skips_what_the_broker_refuses(
    private_node: PrivateNode, backend_name: str, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue deleted behind the connection's back (declared passively here) cannot be restored: that is
    logged and skipped, and the rest comes back. A channel closed during an outage stays closed."""
    doomed_name = names.queue("doomed")

    async def plain_channel_do(action: Callable[[aio_pika.Channel], Any]) -> None:
        async with aio_pika.connect(private_node.url, backend=backend_name) as plain:
            await action(await plain.channel())

    with anyio.fail_after(LIMIT):
        await plain_channel_do(lambda channel: channel.declare_queue(doomed_name))
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            other = await connection.channel()
            doomed = await channel.get_queue(doomed_name)  # passive: checked again, passively
            kept = await channel.declare_queue(names.queue("kept"), auto_delete=True)
            inbox = Inbox()
            await kept.consume(inbox)
            await plain_channel_do(lambda channel: channel.queue_delete(doomed.name))

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            assert f"Could not restore the queue {doomed_name!r}" in caplog.text
            assert not channel.is_closed
            await channel.default_exchange.publish(aio_pika.Message(b"kept"), kept.name)
            await inbox.wait_for(b"kept")

            await in_thread(private_node.stop)
            await wait_until(lambda: connection.reconnecting)
            with anyio.fail_after(5):
                await other.close()
            await in_thread(private_node.start)
            await reconnects.wait(2)
            assert other.is_closed and not channel.is_closed
            await channel.default_exchange.publish(aio_pika.Message(b"again"), kept.name)
            await inbox.wait_for(b"again")


# ---- channel errors, closes and deletions during and between restores -----------------------------------


async def test_skipped_restore_step_keeps_the_rest_of_the_channel(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """A restore step the broker refuses (here a passive declaration of a queue deleted meanwhile, and a
    binding to an exchange deleted meanwhile) closes the channel; what was restored on it before the
    failure (QoS, consumers) must be there again on the reopened channel."""
    doomed_queue, doomed_exchange = names.queue("doomed"), names.exchange("doomed")

    async def create(channel: aio_pika.Channel) -> None:
        await channel.declare_queue(doomed_queue)
        await channel.declare_exchange(doomed_exchange)

    async def delete(channel: aio_pika.Channel) -> None:
        await channel.queue_delete(doomed_queue)
        await channel.exchange_delete(doomed_exchange)

    with anyio.fail_after(LIMIT):
        await plain_do(private_node, backend_name, create)
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=3)
            first = await channel.declare_queue(names.queue("first"), auto_delete=True)
            inbox_first = Inbox()
            tag_first = await first.consume(inbox_first)
            await channel.get_queue(doomed_queue)  # passive: checked again, passively, after the QoS
            second = await channel.declare_queue(names.queue("second"), auto_delete=True)
            # Bound after `first` was consumed: restored after its consumer.
            await second.bind(await channel.get_exchange(doomed_exchange), "k")
            inbox_second = Inbox()
            tag_second = await second.consume(inbox_second)
            await plain_do(private_node, backend_name, delete)

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)

            assert not channel.is_closed
            assert await consumers_of(private_node, first.name) == [[tag_first, "3"]]
            assert await consumers_of(private_node, second.name) == [[tag_second, "3"]]
            await channel.default_exchange.publish(aio_pika.Message(b"first"), first.name)
            await channel.default_exchange.publish(aio_pika.Message(b"second"), second.name)
            await inbox_first.wait_for(b"first")
            await inbox_second.wait_for(b"second")


async def test_new_channel_right_after_a_channel_error(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """A channel closed by the broker (404) reopens with its own number; a channel opened meanwhile must not
    take that number — neither the reopening nor the later reconnections may fail for it."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue(), auto_delete=True)
            inbox = Inbox()
            await queue.consume(inbox)
            number = channel.number
            with pytest.raises(exceptions.ChannelNotFoundEntity):
                await channel.get_queue(names.queue("missing"))
            other = await connection.channel()  # at once, while the first one is being reopened
            assert other.number != number
            await channel.ready(timeout=10)
            assert channel.number == number and not channel.is_closed
            await channel.default_exchange.publish(aio_pika.Message(b"reopened"), queue.name)
            await inbox.wait_for(b"reopened")

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            assert not channel.is_closed and not other.is_closed
            assert channel.number == number and other.number != number
            await other.default_exchange.publish(aio_pika.Message(b"reconnected"), queue.name)
            await inbox.wait_for(b"reconnected")


async def test_channel_closed_right_after_a_channel_error_stays_closed(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """``except ChannelNotFoundEntity: await channel.close()``: the reopening the 404 started must not undo
    the user's close (reopen the channel, restart its consumers, restore it after reconnections)."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue(), auto_delete=False)
            inbox = Inbox()
            await queue.consume(inbox)
            with pytest.raises(exceptions.ChannelNotFoundEntity):
                await channel.get_queue(names.queue("missing"))
            await channel.close()
            # A channel opened and closed afterwards: when it is done, a reopening would have run too.
            async with await connection.channel() as probe:
                await probe.declare_queue(queue.name, passive=True)
            assert channel.is_closed
            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            assert channel.is_closed
            assert await consumers_of(private_node, queue.name) == []
            other = await connection.channel()
            await other.queue_delete(queue.name)


async def test_bindings_of_a_deleted_exchange_are_not_restored(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """Deleting an exchange deletes its bindings on the broker: declared again, it routes nothing to the
    queues that were bound to it — and a reconnection must not bring those bindings back."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel(on_return_raises=True)
            other = await connection.channel()
            exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.DIRECT)
            downstream = await channel.declare_exchange(names.exchange("down"), aio_pika.ExchangeType.FANOUT)
            queue = await other.declare_queue(names.queue(), auto_delete=True)  # on another channel
            await queue.bind(exchange.name, "k")
            await downstream.bind(exchange, "e2e")
            await exchange.delete()
            exchange = await channel.declare_exchange(exchange.name, aio_pika.ExchangeType.DIRECT)
            for routing_key in ("k", "e2e"):
                with pytest.raises(exceptions.PublishError):
                    await exchange.publish(aio_pika.Message(b"unroutable"), routing_key)

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            for routing_key in ("k", "e2e"):
                with pytest.raises(exceptions.PublishError):
                    await exchange.publish(aio_pika.Message(b"still unroutable"), routing_key)
            await exchange.delete()
            await downstream.delete()


async def test_channel_closed_while_it_is_restored_stays_closed(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """A channel the user closes while the reconnection restores it (here from a consumer of a channel
    restored before it, while it restores its many bindings) stays closed: not reopened, no consumers."""
    with anyio.fail_after(LIMIT):
        # A long pause before reconnecting: the message that triggers the close is queued meanwhile.
        url = robust_url(private_node, reconnect_interval=3)
        async with aio_pika.connect_robust(url, backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            first = await connection.channel()
            second = await connection.channel()
            trigger = await first.declare_queue(names.queue("trigger"), auto_delete=False)
            exchange = await second.declare_exchange(names.exchange(), aio_pika.ExchangeType.DIRECT)
            queue = await second.declare_queue(names.queue("closed"), auto_delete=False)
            for n in range(100):
                await queue.bind(exchange, f"key-{n}")
            await queue.consume(Inbox())
            closed: list[Any] = []

            async def close_second(message: aio_pika.IncomingMessage) -> None:
                await message.ack()
                # A coroutine callback runs in a worker task: the restore is waiting for a reply then.
                closed.append(second.close())

            await trigger.consume(close_second)
            await in_thread(private_node.close_all_connections)
            async with aio_pika.connect(private_node.url, backend=backend_name) as plain:
                await (await plain.channel()).default_exchange.publish(aio_pika.Message(b"go"), trigger.name)
            assert connection.connection_attempt == 1  # not reconnected yet
            await reconnects.wait(1)
            assert len(closed) == 1
            await closed[0]
            assert second.is_closed
            assert await consumers_of(private_node, queue.name) == []
            await first.queue_delete(trigger.name)
            await first.queue_delete(queue.name)
            await first.exchange_delete(exchange.name)


async def test_channel_that_failed_to_open_is_not_restored(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """``await channel.initialize(timeout=…)`` that raised left the user without a channel: a reconnection
    must not open it behind their back (a channel leaked on the broker at every reconnection)."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel()
            failed = connection.channel()
            with pytest.raises(TimeoutError):
                await failed.initialize(timeout=0.000001)
            await channel.declare_queue(names.queue(), auto_delete=True)  # the broker answered the open too
            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            assert [row[1:] for row in await rows(private_node, "list_channels", "name", "number")] == [
                [str(channel.number)]
            ]
            with pytest.raises(exceptions.ChannelInvalidStateError):
                await failed.ready()


async def test_deleted_objects_declared_again_keep_no_old_bindings(
    private_node: PrivateNode, backend_name: str, names: Names
) -> None:
    """A queue or an exchange deleted and declared again through the same object has only its new
    bindings on the broker: a reconnection must not restore the old ones."""
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect_robust(robust_url(private_node), backend=backend_name) as connection:
            reconnects = Reconnects(connection)
            channel = await connection.channel(on_return_raises=True)
            source = await channel.declare_exchange(names.exchange("src"), aio_pika.ExchangeType.DIRECT)
            exchange = await channel.declare_exchange(names.exchange(), aio_pika.ExchangeType.FANOUT)
            queue = await channel.declare_queue(names.queue(), auto_delete=False)
            await queue.bind(source, "old")
            await exchange.bind(source, "old-e2e")
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
            await queue.declare()
            await exchange.declare()
            await queue.bind(source, "new")
            await exchange.bind(source, "new-e2e")

            await in_thread(private_node.close_all_connections)
            await reconnects.wait(1)
            await source.publish(aio_pika.Message(b"new"), "new")
            for routing_key in ("old", "old-e2e"):
                with pytest.raises(exceptions.PublishError):
                    await source.publish(aio_pika.Message(b"old"), routing_key)
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
            await source.delete()
