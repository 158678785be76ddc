"""aio_pika.patterns: RPC and Master/Worker, on every backend, against the real broker."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import aio_pika
from aio_pika import exceptions
from aio_pika.patterns import (
    RPC,
    JsonMaster,
    JsonRPC,
    JsonRPCError,
    Master,
    NackMessage,
    RejectMessage,
    RPCException,
    Worker,
)

from .conftest import AMQP_URL, Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

LIMIT = 20  # seconds any test may take: nothing may hang


class MyError(Exception):
    """A picklable exception a remote function raises."""


def rpc_class(names: Names, base: type[RPC] = RPC) -> Any:
    """``base`` with a dead-letter exchange of the test's own (the default ``rpc.dlx`` is shared)."""
    return type(base.__name__, (base,), {"DLX_NAME": names.exchange("dlx")})


async def wait_until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def queue_depth(channel: aio_pika.Channel, name: str) -> int:
    queue = await channel.get_queue(name)
    count: int = queue.declaration_result.message_count
    return count


async def declare_unconsumed(rpc: RPC, method: str, arguments: dict[str, Any]) -> None:
    """Declare ``method``'s queue (with ``arguments``) the way ``register`` does, and leave nobody
    consuming it: calls to it wait there, expire or are refused."""

    async def never_runs() -> None:
        raise AssertionError("nobody consumes this queue: no call may run")

    await rpc.register(method, never_runs, arguments=arguments)
    await rpc.unregister(never_runs)  # the queue stays


# ---- RPC ------------------------------------------------------------------------------------------------


async def test_rpc_seed_style_round_trip(channel: aio_pika.Channel, names: Names) -> None:
    """The 1.8.1 documentation's usage, with the default dead-letter exchange."""
    method = names.queue("multiply")

    async def multiply(*, x: int, y: int) -> int:
        return x * y

    with anyio.fail_after(LIMIT):
        rpc = await RPC.create(channel)
        await rpc.register(method, multiply, auto_delete=True)
        assert await getattr(rpc.proxy, method)(x=100, y=3) == 300
        for i in range(5):
            assert await rpc.call(method, kwargs=dict(x=100, y=i)) == 100 * i
        assert rpc.futures == {}
        await rpc.close()


async def test_rpc_plain_and_coroutine_functions(channel: aio_pika.Channel, names: Names) -> None:
    def plain(*, a: str) -> str:
        return a.upper()

    async def coro(*, a: str) -> str:
        await anyio.sleep(0)
        return a * 2

    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        await rpc.register(names.queue("plain"), plain, auto_delete=True)
        await rpc.register(names.queue("coro"), coro, auto_delete=True)
        assert await rpc.call(names.queues[-2], {"a": "x"}) == "X"
        assert await rpc.call(names.queues[-1], {"a": "x"}) == "xx"
        # No arguments at all, and values pickle round-trips.
        await rpc.register(names.queue("echo"), lambda **kw: kw, auto_delete=True)
        assert await rpc.call(names.queues[-1]) == {}
        payload = {"n": [1, 2.5, None], "b": b"\x00\xff", "t": (1, 2)}
        assert await rpc.call(names.queues[-1], payload) == payload
        await rpc.close()


async def test_rpc_exceptions_reach_the_caller(channel: aio_pika.Channel, names: Names) -> None:
    async def fail(*, kind: str) -> None:
        if kind == "mine":
            raise MyError("mine", 42)
        if kind == "value":
            raise ValueError("bad value")
        raise KeyError(kind)

    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        method = names.queue("fail")
        await rpc.register(method, fail, auto_delete=True)
        with pytest.raises(MyError) as info:
            await rpc.call(method, {"kind": "mine"})
        assert info.value.args == ("mine", 42)
        with pytest.raises(ValueError, match="bad value"):
            await rpc.call(method, {"kind": "value"})
        with pytest.raises(KeyError):
            await rpc.call(method, {"kind": "other"})
        # Wrong arguments are the callee's TypeError.
        with pytest.raises(TypeError):
            await rpc.call(method, {"nope": 1})
        # The RPC still works after errors.
        with pytest.raises(ValueError):
            await rpc.proxy.__getattr__(method)(kind="value")
        await rpc.close()


async def test_rpc_unpicklable_result_is_an_error(channel: aio_pika.Channel, names: Names) -> None:
    import threading

    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        method = names.queue("lock")
        await rpc.register(method, lambda: threading.Lock(), auto_delete=True)
        with pytest.raises(TypeError, match="pickle"):
            await rpc.call(method)
        await rpc.close()


async def test_rpc_unknown_method(connection: aio_pika.Connection, names: Names) -> None:
    with anyio.fail_after(LIMIT):
        channel = await connection.channel()
        rpc = await rpc_class(names).create(channel)
        with pytest.raises(exceptions.MessageProcessError, match="returned"):
            await rpc.call(names.queue("nobody-serves-this"), {"x": 1})
        assert rpc.futures == {}
        await rpc.close()

        # With on_return_raises the publish itself raises.
        channel = await connection.channel(on_return_raises=True)
        rpc = await rpc_class(names).create(channel)
        with pytest.raises(exceptions.PublishError):
            await rpc.call(names.queue("nobody-serves-this"))
        assert rpc.futures == {}
        await rpc.close()


@pytest.mark.parametrize("confirms", [True, False], ids=["confirms", "no-confirms"])
async def test_rpc_callee_acks_each_call(
    connection: aio_pika.Connection, names: Names, confirms: bool
) -> None:
    """With prefetch 1 the broker sends the callee its next call only once the last one is acked: the
    callee acks each call (once its reply is confirmed, or at once on a channel without confirms)."""
    with anyio.fail_after(LIMIT):
        callee_channel = await connection.channel(publisher_confirms=confirms)
        await callee_channel.set_qos(prefetch_count=1)
        callee = await rpc_class(names).create(callee_channel)
        method = names.queue("square")
        await callee.register(method, lambda *, x: x * x, auto_delete=True)
        caller = await type(callee).create(await connection.channel())
        assert [await caller.call(method, {"x": x}) for x in range(5)] == [0, 1, 4, 9, 16]
        assert await queue_depth(callee_channel, method) == 0


async def test_rpc_call_the_broker_refuses(channel: aio_pika.Channel, names: Names) -> None:
    """A call the broker nacks (its queue is full) raises DeliveryError, as a nacked publish does."""
    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        method = names.queue("full")
        full = expiring({"x-max-length": 0, "x-overflow": "reject-publish"})
        await declare_unconsumed(rpc, method, full)
        with pytest.raises(exceptions.DeliveryError):
            await rpc.call(method)
        assert rpc.futures == {}
        await rpc.close()


async def test_rpc_reply_the_broker_refuses_rejects_the_call(
    connection: aio_pika.Connection, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply the broker nacks (the caller's result queue is full): the callee rejects the call without
    requeueing it, so it runs once, and the caller times out."""
    runs = 0

    def count() -> int:
        nonlocal runs
        runs += 1
        return runs

    with anyio.fail_after(LIMIT):
        callee_channel = await connection.channel()
        callee = await rpc_class(names).create(callee_channel)
        method = names.queue("count")
        await callee.register(method, count, auto_delete=True)
        full = expiring({"x-max-length": 0, "x-overflow": "reject-publish"})
        caller = await type(callee).create(await connection.channel(), arguments=full)
        with pytest.raises(TimeoutError):
            await caller.call(method, timeout=1)
        assert runs == 1
        assert await queue_depth(callee_channel, method) == 0
        assert "Failed to send reply" in caplog.text
        assert caller.futures == {}


async def test_rpc_expired_call_raises_timeout(channel: aio_pika.Channel, names: Names) -> None:
    """A call nobody takes within ``expiration`` is dead-lettered back to the caller: TimeoutError."""
    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        method = names.queue("idle")
        await declare_unconsumed(rpc, method, expiring())
        started = anyio.current_time()
        with pytest.raises(TimeoutError):
            await rpc.call(method, expiration=0.3)
        assert anyio.current_time() - started < 5
        assert rpc.futures == {}
        assert await queue_depth(channel, method) == 0
        await rpc.close()


async def test_rpc_call_timeout(channel: aio_pika.Channel, names: Names) -> None:
    release = anyio.Event()

    async def slow() -> str:
        await release.wait()
        return "late"

    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        method = names.queue("slow")
        await rpc.register(method, slow, auto_delete=True)
        with pytest.raises(TimeoutError):
            await rpc.call(method, timeout=0.3)
        assert rpc.futures == {}
        # The caller's own deadline (asyncio.wait_for / trio.fail_after): same clean-up.
        with pytest.raises(TimeoutError), anyio.fail_after(0.3):
            await rpc.call(method)
        assert rpc.futures == {}
        release.set()
        # The late results arrive for calls nobody waits for any more; the RPC keeps working.
        assert await rpc.call(method) == "late"
        await rpc.close()


async def test_rpc_concurrent_calls(connection: aio_pika.Connection, names: Names) -> None:
    """Many calls in flight on one RPC; the callee serves them concurrently and each gets its own result."""
    in_flight = 0
    peak = 0

    async def square(*, x: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await anyio.sleep(0.05)
        in_flight -= 1
        return x * x

    results: dict[int, int] = {}
    with anyio.fail_after(LIMIT):
        callee = await rpc_class(names).create(await connection.channel())
        caller = await type(callee).create(await connection.channel())
        method = names.queue("square")
        await callee.register(method, square, auto_delete=True)

        async def one(x: int) -> None:
            results[x] = await caller.proxy.__getattr__(method)(x=x)

        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            for x in range(200):
                group.start_soon(one, x)
        elapsed = anyio.current_time() - started
    assert results == {x: x * x for x in range(200)}
    assert peak > 10  # served concurrently by the consumer's worker pool ...
    assert elapsed < 200 * 0.05 / 4  # ... not one after the other
    assert caller.futures == {}
    await caller.close()
    await callee.close()


async def test_rpc_between_connections(
    connection: aio_pika.Connection, backend_name: str, names: Names
) -> None:
    cls = rpc_class(names)
    with anyio.fail_after(LIMIT):
        async with aio_pika.connect(AMQP_URL, backend=backend_name) as other:
            callee = await cls.create(await other.channel())
            method = names.queue("add")
            await callee.register(method, lambda *, a, b: a + b, auto_delete=True)
            caller = await cls.create(await connection.channel())
            assert await caller.call(method, {"a": 1, "b": 2}) == 3
            assert await caller.call(method, {"a": "x", "b": "y"}) == "xy"
            await caller.close()


async def test_rpc_through_an_exchange(channel: aio_pika.Channel, names: Names) -> None:
    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel, exchange=names.exchange("rpc"))
        assert rpc.rpc_exchange is not None
        method = names.queue("m")
        await rpc.register(method, lambda *, v: -v, auto_delete=True)
        names.queues.append(f"{rpc.rpc_exchange.name}::{method}")
        assert await rpc.call(method, {"v": 5}) == -5
        with pytest.raises(exceptions.MessageProcessError):
            await rpc.call(names.queue("unknown"), {"v": 5})
        await rpc.close()


async def test_rpc_register_twice_and_unregister(channel: aio_pika.Channel, names: Names) -> None:
    def one() -> int:
        return 1

    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names).create(channel)
        method = names.queue("one")
        await rpc.register(method, one, arguments=expiring())
        with pytest.raises(RuntimeError, match="already registered"):
            await rpc.register(names.queue("other"), one)
        with pytest.raises(RuntimeError, match="already used"):
            await rpc.register(method, lambda: 2)
        assert await rpc.call(method) == 1
        await rpc.unregister(one)
        await rpc.unregister(one)  # a no-op
        assert rpc.routes == {}
        with pytest.raises(TimeoutError):
            await rpc.call(method, expiration=0.2)  # queued, nobody serves it, expires
        await rpc.register(method, one, arguments=expiring())  # and again
        assert await rpc.call(method) == 1
        await rpc.close()


async def test_rpc_close_fails_waiting_calls(
    channel: aio_pika.Channel, names: Names, anyio_backend: str
) -> None:
    release = anyio.Event()

    async def hang() -> None:
        await release.wait()

    outcome: list[BaseException] = []
    with anyio.fail_after(LIMIT):
        callee = await rpc_class(names).create(channel)
        method = names.queue("hang")
        await callee.register(method, hang, auto_delete=True)
        caller = await type(callee).create(channel)
        result_queue = caller.result_queue.name

        async def call() -> None:
            try:
                await caller.call(method)
            except BaseException as error:  # CancelledError on asyncio, as in aio-pika
                outcome.append(error)

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await wait_until(lambda: bool(caller.futures))
            await caller.close()
        release.set()
        assert len(outcome) == 1
        if anyio_backend == "asyncio":
            assert isinstance(outcome[0], asyncio.CancelledError)
        else:
            assert isinstance(outcome[0], RPCException)
        with pytest.raises(RuntimeError, match="closed"):
            await caller.call(method)
        await caller.close()  # twice: a warning, no error
        with pytest.raises(exceptions.ChannelNotFoundEntity):
            await (await channel.connection.channel()).get_queue(result_queue)
        await callee.close()


async def pending_call_outcome(
    callee: Any, caller: Any, names: Names, close: Callable[[], Any]
) -> BaseException:
    """Make a call its callee never answers, run ``close()`` while it waits, and return what it raised."""
    release = anyio.Event()

    async def hang() -> None:
        await release.wait()

    method = names.queue("hang")
    await callee.register(method, hang, arguments=expiring())
    outcome: list[BaseException] = []

    async def call() -> None:
        try:
            await caller.call(method)
        except Exception as error:
            outcome.append(error)

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await wait_until(lambda: bool(caller.futures))
        await close()
    release.set()
    assert len(outcome) == 1
    assert caller.futures == {}
    return outcome[0]


async def test_user_closing_the_rpc_channel_fails_calls_with_channel_closed(
    connection: aio_pika.Connection, names: Names
) -> None:
    """As in aio-pika: a pending call fails with ``ChannelClosed`` (an ``AMQPError``, which callers catch),
    not with a ``RuntimeError``, when its channel is closed by the user."""
    with anyio.fail_after(LIMIT):
        callee = await rpc_class(names).create(await connection.channel())
        caller_channel = await connection.channel()
        caller = await type(callee).create(caller_channel)
        error = await pending_call_outcome(callee, caller, names, caller_channel.close)
    assert isinstance(error, exceptions.ChannelClosed), repr(error)
    assert isinstance(error, exceptions.AMQPError)


async def test_user_closing_the_rpc_connection_fails_calls_with_connection_closed(
    connection: aio_pika.Connection, backend_name: str, names: Names
) -> None:
    """As in aio-pika: a pending call fails with ``ConnectionClosed`` (an ``AMQPConnectionError``) when the
    user closes the caller's connection."""
    with anyio.fail_after(LIMIT):
        callee = await rpc_class(names).create(await connection.channel())
        async with aio_pika.connect(AMQP_URL, backend=backend_name) as other:
            caller = await type(callee).create(await other.channel())
            error = await pending_call_outcome(callee, caller, names, other.close)
    assert isinstance(error, exceptions.ConnectionClosed), repr(error)
    assert isinstance(error, exceptions.AMQPConnectionError)


async def test_json_rpc(channel: aio_pika.Channel, names: Names) -> None:
    def divide(*, a: float, b: float) -> float:
        return a / b

    with anyio.fail_after(LIMIT):
        rpc = await rpc_class(names, JsonRPC).create(channel)
        method = names.queue("divide")
        await rpc.register(method, divide, auto_delete=True)
        assert await rpc.call(method, {"a": 1, "b": 4}) == 0.25
        with pytest.raises(JsonRPCError) as info:
            await rpc.call(method, {"a": 1, "b": 0})
        error = info.value.args[1]["error"]
        assert error["type"] == "ZeroDivisionError"
        assert "division by zero" in error["message"]
        # Non-JSON values go as their repr.
        await rpc.register(names.queue("repr"), lambda: {1, 2}, auto_delete=True)
        assert await rpc.call(names.queues[-1]) == "{1, 2}"
        await rpc.close()


async def test_rpc_does_not_start_a_task_per_call(
    connection: aio_pika.Connection, names: Names, anyio_backend: str, backend_name: str
) -> None:
    """The callee's calls run in its consumer's worker pool: with prefetch 8, at most 8 workers."""
    if anyio_backend != "asyncio":
        pytest.skip("counts asyncio tasks")
    peak_tasks = 0

    async def work() -> None:
        nonlocal peak_tasks
        peak_tasks = max(peak_tasks, len(asyncio.all_tasks()))
        await anyio.sleep(0.01)

    with anyio.fail_after(LIMIT):
        async with aio_pika.connect(AMQP_URL, backend=backend_name) as other:
            callee_channel = await other.channel()
            await callee_channel.set_qos(prefetch_count=8)
            callee = await rpc_class(names).create(callee_channel)
            method = names.queue("work")
            await callee.register(method, work, auto_delete=True)
            caller = await type(callee).create(await connection.channel())
            before = len(asyncio.all_tasks())
            async with anyio.create_task_group() as group:
                for _ in range(100):
                    group.start_soon(caller.call, method)
    # 100 caller tasks + the callee's pool of at most 8 + the caller's result consumer + a few fixed ones.
    assert peak_tasks <= before + 100 + 8 + 4


# ---- Master / Worker ------------------------------------------------------------------------------------


async def test_master_seed_style(connection: aio_pika.Connection, names: Names) -> None:
    """The 1.8.1 documentation's usage: Master(channel), create_worker, proxy and create_task."""
    seen: list[int] = []

    async def worker(*, task_id: int) -> None:
        seen.append(task_id)

    with anyio.fail_after(LIMIT):
        worker_master = Master(await connection.channel())
        queue = names.queue("my_task_name")
        handle = await worker_master.create_worker(queue, worker, auto_delete=True)
        assert isinstance(handle, Worker)

        master = Master(await connection.channel())
        for task_id in range(10):
            await master.proxy.__getattr__(queue)(task_id=task_id)
        for task_id in range(10, 20):
            await master.create_task(queue, kwargs=dict(task_id=task_id))
        await wait_until(lambda: len(seen) == 20)
        assert sorted(seen) == list(range(20))
        await handle.close()


async def test_master_plain_function_worker_and_persistent_tasks(
    channel: aio_pika.Channel, names: Names
) -> None:
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(LIMIT):
        master = Master(channel)
        queue = names.queue("plain")
        await master.create_worker(queue, lambda **kw: seen.append(kw), arguments=expiring())
        await master.create_task(queue, kwargs={"a": 1})
        await master.create_task(queue)  # no arguments
        await wait_until(lambda: len(seen) == 2)
        assert seen == [{"a": 1}, {}]
        # Tasks are persistent messages with the pickle content type.
        probe = await channel.declare_queue(names.queue("probe"), arguments=expiring())
        await master.create_task(probe.name, kwargs={"b": 2})
        message = await probe.get(timeout=5)
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/python-pickle"
        assert master.deserialize(message.body) == {"b": 2}
        await message.ack()


async def test_worker_nack_and_reject(channel: aio_pika.Channel, names: Names) -> None:
    calls: dict[str, int] = {}

    async def worker(*, kind: str) -> None:
        calls[kind] = calls.get(kind, 0) + 1
        if kind == "nack-requeue" and calls[kind] == 1:
            raise NackMessage(requeue=True)
        if kind == "reject-requeue" and calls[kind] == 1:
            raise RejectMessage(requeue=True)
        if kind == "nack-drop":
            raise NackMessage()
        if kind == "reject-drop":
            raise RejectMessage(requeue=False)

    with anyio.fail_after(LIMIT):
        master = Master(channel)
        queue = names.queue("tasks")
        await master.create_worker(queue, worker, arguments=expiring())
        for kind in ("nack-requeue", "reject-requeue", "nack-drop", "reject-drop", "ok"):
            await master.proxy.__getattr__(queue)(kind=kind)
        await wait_until(lambda: calls.get("nack-requeue") == 2 and calls.get("reject-requeue") == 2)
        await wait_until(lambda: calls.get("ok") == 1 and "nack-drop" in calls and "reject-drop" in calls)
        await anyio.sleep(0.3)
        assert calls == {"nack-requeue": 2, "reject-requeue": 2, "nack-drop": 1, "reject-drop": 1, "ok": 1}
        assert await queue_depth(channel, queue) == 0


async def test_worker_exception_requeues_then_reject_on_redelivered(
    channel: aio_pika.Channel, names: Names
) -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise MyError("always")

    with anyio.fail_after(LIMIT):
        # requeue=True (the default) with reject_on_redelivered: tried twice, then dropped.
        master = Master(channel, reject_on_redelivered=True)
        queue = names.queue("failing")
        await master.create_worker(queue, failing, arguments=expiring())
        await master.create_task(queue)
        await wait_until(lambda: calls == 2)
        await anyio.sleep(0.3)
        assert calls == 2
        assert await queue_depth(channel, queue) == 0

        # requeue=False: tried once.
        calls = 0
        master = Master(channel, requeue=False)
        queue = names.queue("failing-once")
        await master.create_worker(queue, failing, arguments=expiring())
        await master.create_task(queue)
        await wait_until(lambda: calls == 1)
        await anyio.sleep(0.3)
        assert calls == 1


async def test_worker_rejects_bad_payload(channel: aio_pika.Channel, names: Names) -> None:
    calls = 0

    def worker(**kwargs: Any) -> None:
        nonlocal calls
        calls += 1

    with anyio.fail_after(LIMIT):
        master = JsonMaster(channel)
        queue = names.queue("bad")
        await master.create_worker(queue, worker, arguments=expiring())
        await master.create_task(queue, kwargs=[1, 2])  # type: ignore[arg-type]  # not a dict: rejected
        await master.create_task(queue, kwargs={"ok": True})
        await wait_until(lambda: calls == 1)
        await anyio.sleep(0.2)
        assert calls == 1
        assert await queue_depth(channel, queue) == 0


async def test_json_master(channel: aio_pika.Channel, names: Names) -> None:
    seen: list[Any] = []
    with anyio.fail_after(LIMIT):
        master = JsonMaster(channel)
        queue = names.queue("json")
        await master.create_worker(queue, lambda **kw: seen.append(kw), arguments=expiring())
        await master.proxy.__getattr__(queue)(text="héllo", pi=math.pi)
        await wait_until(lambda: len(seen) == 1)
        assert seen == [{"text": "héllo", "pi": math.pi}]
        probe = await channel.declare_queue(names.queue("probe"), arguments=expiring())
        await master.create_task(probe.name, kwargs={"x": 1})
        message = await probe.get(timeout=5)
        assert message.content_type == "application/json"
        assert message.body == b'{"x": 1}'
        await message.ack()


async def test_worker_close_stops_consuming(channel: aio_pika.Channel, names: Names) -> None:
    seen: list[int] = []
    with anyio.fail_after(LIMIT):
        master = Master(channel)
        queue = names.queue("closing")
        worker = await master.create_worker(queue, lambda *, n: seen.append(n), arguments=expiring())
        await master.create_task(queue, kwargs={"n": 1})
        await wait_until(lambda: seen == [1])
        await worker.close()
        await master.create_task(queue, kwargs={"n": 2})
        await anyio.sleep(0.2)
        assert seen == [1]
        assert await queue_depth(channel, queue) == 1

        # close() takes effect without await too (aio-pika returned a task).
        worker = await master.create_worker(queue, lambda *, n: seen.append(n), arguments=expiring())
        await wait_until(lambda: seen == [1, 2])
        closing = worker.close()
        assert worker.close() is closing
        await wait_until(closing.done)  # type: ignore[attr-defined]
        await master.create_task(queue, kwargs={"n": 3})
        await anyio.sleep(0.2)
        assert seen == [1, 2]


async def test_unroutable_task_goes_to_the_return_callbacks(
    channel: aio_pika.Channel, names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(LIMIT):
        master = Master(channel)
        await master.create_task(names.queue("nobody"), kwargs={})
        await wait_until(lambda: "Message returned" in caplog.text)


async def test_patterns_loop_is_the_running_event_loop(
    channel: aio_pika.Channel, names: Names, anyio_backend: str
) -> None:
    """aio-pika's ``Master.loop``, ``Worker.loop`` and ``RPC.loop`` are the event loop (code subclassing the
    patterns uses them, e.g. ``self.loop.run_in_executor``); trio has none."""
    with anyio.fail_after(LIMIT):
        master = Master(channel)
        worker = await master.create_worker(names.queue("w"), lambda: None, arguments=expiring())
        rpc = await rpc_class(names).create(channel)
        expected = asyncio.get_running_loop() if anyio_backend == "asyncio" else None
        assert master.loop is expected
        assert worker.loop is expected
        assert rpc.loop is expected
        if expected is not None:
            assert await rpc.loop.run_in_executor(None, sum, [1, 2]) == 3
        await worker.close()
        await rpc.close()


async def test_execute_overrides_may_await_plain_functions(channel: aio_pika.Channel, names: Names) -> None:
    """``execute(func, payload)`` is the documented extension point, and aio-pika hands it a coroutine
    function even for a plain function registered (its own ``execute`` is ``await func(**payload)``): an
    override written that way must work for plain functions too, in RPC and in Master."""
    executed: list[Any] = []

    class LoggingRPC(rpc_class(names)):  # type: ignore[misc]
        async def execute(self, func: Any, payload: dict[str, Any]) -> Any:
            result = await func(**payload)
            executed.append(result)
            return result

    class LoggingMaster(Master):
        @classmethod
        async def execute(cls, func: Any, kwargs: Any) -> Any:
            result = await func(**kwargs)
            executed.append(result)
            return result

    def add(*, a: int, b: int) -> int:
        return a + b

    with anyio.fail_after(LIMIT):
        rpc = await LoggingRPC.create(channel)
        method = names.queue("add")
        await rpc.register(method, add, arguments=expiring())
        assert await rpc.call(method, {"a": 1, "b": 2}) == 3
        await rpc.unregister(add)  # still known by the function the user registered
        assert rpc.routes == {} and rpc.consumer_tags == {}

        master = LoggingMaster(channel, requeue=False)
        queue = names.queue("tasks")
        await master.create_worker(queue, add, arguments=expiring())
        await master.create_task(queue, kwargs={"a": 20, "b": 3})
        await wait_until(lambda: len(executed) == 2)
        assert executed == [3, 23]
        await rpc.close()
