"""The API benchmark: this project's aio_pika against aio-pika 10.2.1, same code, same broker, same run.

Every scenario is written once against the public aio_pika API and runs in a fresh subprocess of the
interpreter of the implementation under test, so the process's CPU time (``getrusage``) is attributable
to that client alone, and nothing one run leaves behind (buffers, caches, the GC's state) colours the
next. The orchestrator (this file without ``--worker``) alternates the implementations for each
scenario, repeats, and reports medians and ratios (ours / reference). A third "implementation", ``raw``,
runs the same scenarios, in the same alternation, with pre-encoded frames on a blocking socket
(``rawamqp.py``): the broker's own limit on this machine, so each figure can be read as a fraction of it,
and the raw client's CPU per message, the floor a client pays. A fourth, ``floor``, runs the publishers,
the round trips (sequential confirms, RPC) and the consumers on bare asyncio with pre-encoded frames
(``asyncio_floor.py``): what the event loop alone costs, the limit of any client written on asyncio.

Use ``bench/run`` (it builds the reference virtualenv and writes ``docs/performance.md``); this file can
also be run directly with any interpreter that has pamqp::

    .venv/bin/python bench/api_bench.py --only reference --quick
    .venv/bin/python bench/api_bench.py --scenarios consume_callback --sizes 100 --repeat 5

Scenarios (``--list`` prints them with their message counts):

* ``publish_confirm_seq``: publisher confirms on, each publish awaited before the next;
* ``publish_confirm_500``: confirms on, 500 publishes in flight (``gather`` of 500 at a time; fewer for
  large bodies, so at most 64 MiB is in flight);
* ``publish_noconfirm``: no confirms; the clock stops when a passive ``Queue.Declare`` reports that the
  broker holds every message;
* ``consume_callback``: ``queue.consume(callback)``, the callback awaits ``message.ack()``;
* ``consume_iterator``: ``async with queue.iterator()``, ``async with message.process()`` per message;
* ``get``: ``queue.get()`` + ``message.ack()`` in a loop;
* ``rpc``: the tutorial's RPC client (an exclusive callback queue, ``reply_to`` + ``correlation_id``,
  one call at a time) against the tutorial's server in another process of the same implementation;
* ``rpc_patterns``: ``aio_pika.patterns.RPC`` client and server (skipped where it does not exist).

Consume and get scenarios find their queue filled beforehand by the raw client (not timed). Consumers
use ``prefetch_count = min(1000, max(4, 8 MiB // body size))``.

Memory: ``memory_consume`` consumes N messages (callback + ack, the queue refilled in rounds by the raw
client) and samples the RSS; the growth after the first 10 % (warm-up) is reported. ``memory_idle``
opens idle connections, then channels on one connection, and reports the RSS per connection and per
channel. Backends: our aio_pika on its native asyncio backend, on ``backend="anyio"`` under asyncio
and under trio, the three alternating as the implementations do above.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

DEFAULT_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE_ARGUMENTS = {"x-expires": 30 * 60 * 1000}  # a crashed run's queues go away by themselves
KIB, MIB = 1024, 1024 * 1024
SIZES = (100, 64 * KIB, MIB)
SIZE_NAMES = {100: "100 B", 64 * KIB: "64 KiB", MIB: "1 MiB"}

# scenario -> {body size: messages per run in a default run}. Sized so that aio-pika 10.2.1 spends about one
# second (0.5-1.5 s) on each on this project's 2-core machine (its rates on 2026-11-29, load under 1); ours
# and the raw client spend less. A default bench/run took about 4 minutes there (3.5 of them in this
# file); --quick divides the counts by 10 (under a minute).
# The consume and get queues are filled beforehand: up to 1,000 MiB (consume_callback, 1 MiB bodies) and
# publish_noconfirm leaves up to 800 MiB in the broker until the run's queue is deleted.
COUNTS: dict[str, dict[int, int]] = {
    "publish_confirm_seq": {100: 3000, 64 * KIB: 2000, MIB: 500},
    "publish_confirm_500": {100: 7000, 64 * KIB: 6000, MIB: 768},
    "publish_noconfirm": {100: 15000, 64 * KIB: 8000, MIB: 800},
    "consume_callback": {100: 8000, 64 * KIB: 6000, MIB: 1000},
    "consume_iterator": {100: 8000, 64 * KIB: 5000, MIB: 600},
    "get": {100: 2000},
    "rpc": {100: 1000},
    "rpc_patterns": {100: 700},
}
SCENARIOS = tuple(COUNTS)
# The raw client's version of each scenario (both consume styles run the same raw consumer, both RPCs
# the same raw request / reply); it runs in every scenario's alternation, for its own row.
RAW_EQUIVALENT = {
    "publish_confirm_seq": "publish_confirm_seq",
    "publish_confirm_500": "publish_confirm_500",
    "publish_noconfirm": "publish_noconfirm",
    "consume_callback": "consume",
    "consume_iterator": "consume",
    "get": "get",
    "rpc": "rpc",
    "rpc_patterns": "rpc",
}
# Issue 5's targets: throughput ratio ours / reference (native asyncio backend).
TARGETS = {
    "publish_confirm_500": 5.0,
    "publish_confirm_seq": 2.0,
    "publish_noconfirm": 3.5,
    "consume_callback": 4.0,
    "consume_iterator": 4.0,
    "rpc": 3.0,  # "RPC round trips": the tutorial's client and the patterns' RPC alike
    "rpc_patterns": 3.0,
}
CPU_TARGET = 0.2  # ours / reference CPU per message, publish and consume scenarios
CPU_TARGET_SCENARIOS = (
    "publish_confirm_seq",
    "publish_confirm_500",
    "publish_noconfirm",
    "consume_callback",
    "consume_iterator",
)
# The scenarios that also run on bare asyncio (asyncio_floor.py), as the raw client names them.
FLOOR_SCENARIOS = ("publish_confirm_seq", "publish_confirm_500", "publish_noconfirm", "rpc", "consume")
BACKEND_SCENARIOS = ("publish_confirm_500", "publish_noconfirm", "consume_callback", "consume_iterator")
TRIO_TARGET = 0.6


def prefetch_for(size: int) -> int:
    return min(1000, max(4, 8 * MIB // size))


def window_for(size: int) -> int:
    return min(500, max(8, 64 * MIB // size))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU time of the measured part of a scenario."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._wall = self._cpu = 0.0

    def start(self) -> None:
        self._cpu = cpu_seconds()
        self._wall = time.perf_counter()

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = cpu_seconds() - self._cpu


# =====================================================================================================
# The worker: one scenario, one implementation, one process.
# =====================================================================================================


@dataclass
class Spec:
    impl: str  # "ours", "reference" or "raw" (a label: the interpreter decides which aio_pika it is)
    scenario: str
    size: int
    count: int
    url: str
    queue: str
    loop: str = "asyncio"  # or "trio"
    backend: str | None = None  # None: the default; "anyio": connect(..., backend="anyio")


class AsyncioRuntime:
    name = "asyncio"

    def __init__(self) -> None:
        import asyncio

        self.asyncio = asyncio

    def event(self) -> Any:
        return self.asyncio.Event()

    async def gather(self, awaitables: list[Awaitable[Any]]) -> None:
        await self.asyncio.gather(*awaitables)

    async def sleep(self, seconds: float) -> None:
        await self.asyncio.sleep(seconds)

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any:
        return self.asyncio.run(main())  # type: ignore[arg-type]


class TrioRuntime:
    name = "trio"

    def __init__(self) -> None:
        import trio

        self.trio = trio

    def event(self) -> Any:
        return self.trio.Event()

    async def gather(self, awaitables: list[Awaitable[Any]]) -> None:
        # What the scenarios gather are publishes, each sent when it was called: awaiting their
        # confirms in turn keeps all of them in flight, as asyncio.gather does, which takes the
        # futures they return without a task each. A nursery would start a trio task per publish,
        # which costs more than the publish itself (bench/findings.md).
        for awaitable in awaitables:
            await awaitable

    async def sleep(self, seconds: float) -> None:
        await self.trio.sleep(seconds)

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any:
        return self.trio.run(main)


@contextlib.asynccontextmanager
async def api_connection(spec: Spec, rt: Any) -> Any:
    """A connection through the public API.

    ``connection = await connect(url)`` as aio-pika users write it on the default asyncio backend;
    ``async with connect(url, ...)`` on trio and on the anyio backend, whose tasks live in a task group.
    """
    import aio_pika

    kwargs: dict[str, Any] = {}
    if spec.backend:
        kwargs["backend"] = spec.backend
    if rt.name == "trio" or spec.backend:
        async with aio_pika.connect(spec.url, **kwargs) as connection:
            yield connection
        return
    connection = await aio_pika.connect(spec.url, **kwargs)
    try:
        yield connection
    finally:
        await connection.close()


def body_of(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


async def api_publish(spec: Spec, rt: Any, clock: Clock) -> dict[str, Any]:
    from rawamqp import RawConnection

    import aio_pika

    confirms = spec.scenario != "publish_noconfirm"
    body = body_of(spec.size)
    async with api_connection(spec, rt) as connection:
        channel = await connection.channel(publisher_confirms=confirms)
        exchange = channel.default_exchange
        queue = await channel.declare_queue(spec.queue, passive=True)
        key, n, message = spec.queue, spec.count, aio_pika.Message
        clock.start()
        if spec.scenario == "publish_confirm_seq":
            for _ in range(n):
                await exchange.publish(message(body), routing_key=key)
        elif spec.scenario == "publish_confirm_500":
            window = window_for(spec.size)
            for first in range(0, n, window):
                batch = min(window, n - first)
                await rt.gather([exchange.publish(message(body), routing_key=key) for _ in range(batch)])
        else:
            for _ in range(n):
                await exchange.publish(message(body), routing_key=key)
            polls = 0
            while True:
                declared = await queue.declare()
                polls += 1
                if declared.message_count >= n:
                    break
                await rt.sleep(0.001)
        clock.stop()
    with RawConnection(spec.url) as raw:
        held = raw.queue_declare(spec.queue, passive=True)
    if held != n:
        raise AssertionError(f"the queue holds {held} messages after publishing {n}")
    return {"polls": polls} if spec.scenario == "publish_noconfirm" else {}


async def api_consume(spec: Spec, rt: Any, clock: Clock) -> dict[str, Any]:
    from rawamqp import RawConnection

    with RawConnection(spec.url) as raw:
        raw.fill(spec.queue, body_of(spec.size), spec.count)
    n = spec.count
    async with api_connection(spec, rt) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch_for(spec.size))
        queue = await channel.declare_queue(spec.queue, passive=True)
        count = 0
        if spec.scenario == "consume_callback":
            done = rt.event()

            async def on_message(message: Any) -> None:
                nonlocal count
                await message.ack()
                count += 1
                if count == n:
                    clock.stop()
                    done.set()

            clock.start()
            tag = await queue.consume(on_message)
            await done.wait()
            await queue.cancel(tag)
        else:
            clock.start()
            async with queue.iterator() as iterator:
                async for message in iterator:
                    async with message.process():
                        count += 1
                    if count == n:
                        clock.stop()
                        break
    if count != n:
        raise AssertionError(f"consumed {count} of {n}")
    return {}


async def api_get(spec: Spec, rt: Any, clock: Clock) -> dict[str, Any]:
    from rawamqp import RawConnection

    with RawConnection(spec.url) as raw:
        raw.fill(spec.queue, body_of(spec.size), spec.count)
    async with api_connection(spec, rt) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(spec.queue, passive=True)
        clock.start()
        for _ in range(spec.count):
            message = await queue.get(timeout=30)
            await message.ack()
        clock.stop()
    return {}


# ---- RPC: the tutorial's client and server; the patterns' RPC --------------------------------------


def start_rpc_server(spec: Spec) -> subprocess.Popen[str]:
    """The server side in its own process (same interpreter, same implementation); returns once ready."""
    server_spec = json.dumps(spec.__dict__)
    process = subprocess.Popen(
        [sys.executable, __file__, "--rpc-server", server_spec],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        raise RuntimeError(f"the RPC server did not start (it said {line!r})")
    return process


def stop_rpc_server(process: subprocess.Popen[str]) -> None:
    # SIGTERM, handled by the server: SIGINT may be ignored in processes started in the background.
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def rpc_server(spec: Spec) -> None:
    """The tutorial's rpc_server (echo instead of fibonacci), or a patterns.RPC echo."""
    import asyncio

    import aio_pika

    connection = await aio_pika.connect(spec.url)
    channel = await connection.channel()
    if spec.scenario == "rpc_patterns":
        from aio_pika.patterns import RPC

        async def echo(*, body: bytes) -> bytes:
            return body

        rpc = await RPC.create(channel)
        await rpc.register(f"{spec.queue}-echo", echo, auto_delete=True)
    else:
        exchange = channel.default_exchange
        queue = await channel.declare_queue(spec.queue, passive=True)

        async def on_request(message: Any) -> None:
            async with message.process():
                await exchange.publish(
                    aio_pika.Message(body=message.body, correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                )

        await queue.consume(on_request)
    stop: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print("READY", flush=True)
    try:
        await stop
    finally:
        await connection.close()


async def api_rpc(spec: Spec, rt: Any, clock: Clock) -> dict[str, Any]:
    import asyncio

    import aio_pika

    body = body_of(spec.size)
    server = start_rpc_server(spec)
    try:
        async with api_connection(spec, rt) as connection:
            channel = await connection.channel()
            if spec.scenario == "rpc_patterns":
                from aio_pika.patterns import RPC

                rpc = await RPC.create(channel)
                clock.start()
                for _ in range(spec.count):
                    reply = await rpc.call(f"{spec.queue}-echo", kwargs={"body": body})
                    assert reply == body
                clock.stop()
                await rpc.close()
                return {}
            # The tutorial's FibonacciRpcClient, calling an echo.
            loop = asyncio.get_running_loop()
            futures: dict[str, asyncio.Future[bytes]] = {}
            callback_queue = await channel.declare_queue(exclusive=True)

            async def on_response(message: Any) -> None:
                future = futures.pop(message.correlation_id, None)
                if future is not None:
                    future.set_result(message.body)

            await callback_queue.consume(on_response, no_ack=True)

            async def call() -> bytes:
                correlation_id = str(uuid.uuid4())
                future = loop.create_future()
                futures[correlation_id] = future
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type="application/octet-stream",
                        correlation_id=correlation_id,
                        reply_to=callback_queue.name,
                    ),
                    routing_key=spec.queue,
                )
                return await future

            clock.start()
            for _ in range(spec.count):
                reply = await call()
                assert reply == body
            clock.stop()
    finally:
        stop_rpc_server(server)
    return {}


# ---- memory ------------------------------------------------------------------------------------------


async def api_memory_consume(spec: Spec, rt: Any, clock: Clock) -> dict[str, Any]:
    """Consume ``count`` messages in rounds refilled by the raw client; RSS sampled after each round."""
    from rawamqp import RawConnection

    body = body_of(spec.size)
    rounds = 20
    per_round = max(1, spec.count // rounds)
    samples: list[tuple[int, int]] = []
    with RawConnection(spec.url) as raw:
        async with api_connection(spec, rt) as connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=prefetch_for(spec.size))
            queue = await channel.declare_queue(spec.queue, passive=True)
            consumed = 0
            target = 0
            reached = rt.event()

            async def on_message(message: Any) -> None:
                nonlocal consumed
                await message.ack()
                consumed += 1
                if consumed == target:
                    reached.set()

            await queue.consume(on_message)
            gc.collect()
            samples.append((0, rss_bytes()))
            clock.start()
            for _ in range(rounds):
                target += per_round
                raw.fill(spec.queue, body, per_round)  # blocks this loop; the broker buffers meanwhile
                await reached.wait()
                reached = rt.event()
                samples.append((consumed, rss_bytes()))
            clock.stop()
    warm = samples[max(1, rounds // 10)]
    return {
        "samples": samples,
        "rss_start": samples[0][1],
        "rss_warm": warm[1],
        "rss_end": samples[-1][1],
        "rss_max": max(rss for _n, rss in samples),
        "growth_after_warmup": samples[-1][1] - warm[1],
        "warmup_messages": warm[0],
    }


async def api_memory_idle(spec: Spec, rt: Any, clock: Clock) -> dict[str, Any]:
    """Memory per idle connection (``count`` of them) and per channel (``count`` * 5 on one connection).

    Two measures: the RSS delta (what the OS sees; coarse, the allocator may reuse freed pages) and the
    Python heap delta from tracemalloc, started after a first connection and channel paid for imports.
    """
    import tracemalloc

    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(api_connection(spec, rt))
        await first.channel()
        gc.collect()
        tracemalloc.start()
        rss_before, heap_before = rss_bytes(), tracemalloc.get_traced_memory()[0]
        for _ in range(spec.count):
            await stack.enter_async_context(api_connection(spec, rt))
        gc.collect()
        rss_per_connection = (rss_bytes() - rss_before) / spec.count
        heap_per_connection = (tracemalloc.get_traced_memory()[0] - heap_before) / spec.count
        channels = []
        n_channels = spec.count * 5
        rss_before, heap_before = rss_bytes(), tracemalloc.get_traced_memory()[0]
        for _ in range(n_channels):
            channels.append(await first.channel())
        gc.collect()
        rss_per_channel = (rss_bytes() - rss_before) / n_channels
        heap_per_channel = (tracemalloc.get_traced_memory()[0] - heap_before) / n_channels
        tracemalloc.stop()
    return {
        "per_connection": rss_per_connection,
        "per_channel": rss_per_channel,
        "heap_per_connection": heap_per_connection,
        "heap_per_channel": heap_per_channel,
        "connections": spec.count,
        "channels": n_channels,
    }


API_SCENARIOS: dict[str, Callable[[Spec, Any, Clock], Awaitable[dict[str, Any]]]] = {
    "publish_confirm_seq": api_publish,
    "publish_confirm_500": api_publish,
    "publish_noconfirm": api_publish,
    "consume_callback": api_consume,
    "consume_iterator": api_consume,
    "get": api_get,
    "rpc": api_rpc,
    "rpc_patterns": api_rpc,
    "memory_consume": api_memory_consume,
    "memory_idle": api_memory_idle,
}


# ---- the raw client's version of each scenario -----------------------------------------------------


def raw_scenario(spec: Spec, clock: Clock) -> dict[str, Any]:
    from rawamqp import FAST_WRITE, RawConnection, ack_frame, publish_frames

    body = body_of(spec.size)
    n = spec.count
    scenario = RAW_EQUIVALENT[spec.scenario]
    if scenario in ("consume", "get"):
        # Filled on a connection of its own, closed before the measured one opens, as for the libraries.
        with RawConnection(spec.url) as filler:
            filler.fill(spec.queue, body, n)
    with RawConnection(spec.url) as raw:
        frames = publish_frames(spec.queue, body, frame_max=raw.frame_max)
        if scenario.startswith("publish"):
            if scenario != "publish_noconfirm":
                raw.confirm_select()
            clock.start()
            if scenario == "publish_confirm_seq":
                for seq in range(1, n + 1):
                    raw.send(frames)
                    raw.wait_confirms(seq)
            elif scenario == "publish_confirm_500":
                window = window_for(spec.size)
                for first in range(0, n, window):
                    batch = min(window, n - first)
                    raw.publish_many(frames, batch)
                    raw.wait_confirms(first + batch)
            else:
                # Without confirms, 256 KiB writes were the fastest here (see rawamqp.FAST_WRITE).
                raw.publish_many(frames, n, batch_bytes=FAST_WRITE, slice_bytes=FAST_WRITE)
                raw.wait_count(spec.queue, n)
            clock.stop()
            held = raw.queue_declare(spec.queue, passive=True)
            if held != n:
                raise AssertionError(f"the queue holds {held} messages after publishing {n}")
        elif scenario == "consume":
            raw.qos(prefetch_for(spec.size))
            clock.start()
            raw.consume(spec.queue, n)
            clock.stop()
        elif scenario == "get":
            clock.start()
            for _ in range(n):
                if raw.get(spec.queue) is None:
                    raise AssertionError("the queue ran empty")
            clock.stop()
        elif scenario == "rpc":
            # A client and a server connection in one thread: request -> server -> reply -> client. As
            # in the tutorial's code (aio-pika's channels confirm publishes by default), both publish
            # with confirms, the client's next call waits for its request's confirm, and the server
            # acks a request once its reply is confirmed. The confirms are read as they come in,
            # without waiting for them ahead of the reply.
            with RawConnection(spec.url) as client:
                reply_queue = f"{spec.queue}-reply"
                client.queue_declare(reply_queue, arguments=QUEUE_ARGUMENTS)
                reply = publish_frames(reply_queue, body, frame_max=raw.frame_max)
                raw.start_consume(spec.queue)
                client.start_consume(reply_queue, ack=False)
                client.confirm_select()
                raw.confirm_select()
                clock.start()
                for call in range(1, n + 1):
                    client.send(frames)
                    raw.read_deliveries(1, ack=False)
                    raw.send(reply)
                    client.read_deliveries(1, ack=False)
                    client.wait_confirms(call)
                    raw.wait_confirms(call)
                    raw.send(ack_frame(call))  # the server's delivery tags count from 1 too
                clock.stop()
                client.queue_delete(reply_queue)
        else:
            raise ValueError(f"no raw version of {spec.scenario}")
    return {}


def run_worker(spec: Spec) -> dict[str, Any]:
    clock = Clock()
    result: dict[str, Any] = {"impl": spec.impl, "scenario": spec.scenario, "size": spec.size}
    if spec.impl == "raw":
        extra = raw_scenario(spec, clock)
        result["library"] = "raw socket + pamqp"
    elif spec.impl == "floor":
        from asyncio_floor import floor_scenario

        extra = floor_scenario(spec, clock)
        result["library"] = "asyncio + pre-encoded frames"
    else:
        import aio_pika

        rt = TrioRuntime() if spec.loop == "trio" else AsyncioRuntime()
        extra = rt.run(lambda: API_SCENARIOS[spec.scenario](spec, rt, clock))
        version = getattr(aio_pika, "__version__", "?")
        result["library"] = f"aio_pika {version} ({Path(aio_pika.__file__).parent})"
    result.update(extra)
    result.update(ok=True, count=spec.count, wall=clock.wall, cpu=clock.cpu, rss=rss_bytes())
    return result


def worker_main(spec_json: str) -> None:
    spec = Spec(**json.loads(spec_json))
    try:
        result = run_worker(spec)
    except BaseException as error:  # reported to the orchestrator, which carries on
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
    print("RESULT " + json.dumps(result), flush=True)


def rpc_server_main(spec_json: str) -> None:
    import asyncio

    spec = Spec(**json.loads(spec_json))
    if spec.impl == "floor":
        from asyncio_floor import floor_rpc_server

        asyncio.run(floor_rpc_server(spec))
    else:
        asyncio.run(rpc_server(spec))


# =====================================================================================================
# The orchestrator.
# =====================================================================================================


@dataclass
class Impl:
    name: str
    python: str
    # The raw client's names (RAW_EQUIVALENT) of the scenarios it runs; None: every scenario.
    scenarios: tuple[str, ...] | None = None
    # The event loop and the backend ours runs on (None: its default, the native one on asyncio).
    loop: str = "asyncio"
    backend: str | None = None
    # What its cells are filed under; the name unless one implementation runs in several ways.
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name


def backend_impls(python: str) -> list[Impl]:
    """Our aio_pika on each of its backends, to be measured in one alternation."""
    return [
        Impl("ours", python, label="native"),
        Impl("ours", python, backend="anyio", label="anyio"),
        Impl("ours", python, loop="trio", label="trio"),
    ]


def run_one(impl: Impl, spec: Spec, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Run one scenario in a fresh process of ``impl``'s interpreter; clean its queues up afterwards."""
    from rawamqp import RawConnection, delete_queues

    with RawConnection(spec.url) as raw:
        raw.queue_delete(spec.queue)
        raw.queue_declare(spec.queue, arguments=QUEUE_ARGUMENTS)
    command = [impl.python, str(HERE / "api_bench.py"), "--worker", json.dumps(spec.__dict__)]
    started = time.monotonic()
    try:
        process = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, start_new_session=True, cwd=HERE
        )
        lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
        if lines:
            result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
        else:
            result = {"ok": False, "error": f"exit code {process.returncode}"}
        if not result.get("ok"):
            tail = process.stderr.strip().splitlines()[-12:]
            log("    " + "\n    ".join(tail))
    except subprocess.TimeoutExpired:
        result = {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    finally:
        with contextlib.suppress(Exception):
            delete_queues(spec.url, [spec.queue, f"{spec.queue}-reply", f"{spec.queue}-echo"])
    result["elapsed"] = time.monotonic() - started
    return result


def median_of(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get("ok")]
    return statistics.median(values) if values else None


@dataclass
class Cell:
    """The repetitions of one (scenario, size, implementation)."""

    runs: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return any(r.get("ok") for r in self.runs)

    @property
    def rate(self) -> float | None:
        rates = [r["count"] / r["wall"] for r in self.runs if r.get("ok") and r["wall"] > 0]
        return statistics.median(rates) if rates else None

    @property
    def cpu_us(self) -> float | None:
        cpus = [r["cpu"] / r["count"] * 1e6 for r in self.runs if r.get("ok")]
        return statistics.median(cpus) if cpus else None

    @property
    def error(self) -> str:
        errors = [r.get("error", "?") for r in self.runs if not r.get("ok")]
        return errors[0] if errors else ""


def scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def throughput(
    impls: list[Impl],
    plan: list[tuple[str, int, int]],
    repeat: int,
    url: str,
    timeout: float,
    log: Callable[[str], None],
) -> dict[tuple[str, int, str], Cell]:
    """Every (scenario, size, count) of the plan, ``repeat`` times, the implementations alternating;
    the cells are keyed by (scenario, size, label)."""
    cells: dict[tuple[str, int, str], Cell] = {}
    tag = uuid.uuid4().hex[:8]
    for scenario, size, count in plan:
        for rep in range(repeat):
            order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
            for impl in order:
                if impl.scenarios is not None and RAW_EQUIVALENT[scenario] not in impl.scenarios:
                    continue
                queue = f"bench-{tag}-{impl.label}-{scenario}-{size}-{rep}"
                spec = Spec(impl.name, scenario, size, count, url, queue, impl.loop, impl.backend)
                result = run_one(impl, spec, timeout, log)
                cells.setdefault((scenario, size, impl.label), Cell([])).runs.append(result)
                if result.get("ok"):
                    rate = result["count"] / result["wall"]
                    cpu = result["cpu"] / result["count"] * 1e6
                    log(
                        f"  {scenario:<20} {SIZE_NAMES.get(size, size):>7} {impl.label:<10} "
                        f"{rate:>10,.0f} msg/s {cpu:>8,.0f} µs CPU/msg  ({result['elapsed']:.1f} s)"
                    )
                else:
                    log(
                        f"  {scenario:<20} {SIZE_NAMES.get(size, size):>7} {impl.label:<10} "
                        f"FAILED: {result['error']}"
                    )
    return cells


# ---- the report ---------------------------------------------------------------------------------------


def fmt_rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None, target: float | None = None, lower_is_better: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{value:.2f}x"
    if target is not None:
        met = value <= target if lower_is_better else value >= target
        text += " ✓" if met else " ✗"
    return text


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= MIB:
        return f"{value / MIB:,.1f} MiB"
    return f"{value / KIB:,.1f} KiB"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def reachable_rate(target: float | None, ref_rate: float | None, limit: float | None) -> str:
    """Whether ``target`` times aio-pika's rate is within the broker limit measured in the same run."""
    if target is None or ref_rate is None or limit is None:
        return "—"
    needed = target * ref_rate
    return f"{'yes' if needed <= limit else 'no'} (needs {needed:,.0f}, limit {limit:,.0f})"


def reachable_cpu(target: float | None, ref_cpu: float | None, floor: float | None) -> str:
    """Whether ``target`` times aio-pika's CPU per message is above the raw client's (the floor)."""
    if target is None or ref_cpu is None or floor is None:
        return "—"
    allowed = target * ref_cpu
    return f"{'yes' if allowed >= floor else 'no'} (≤ {allowed:,.0f}, floor {floor:,.0f})"


def raw_cell(cells: dict[tuple[str, int, str], Cell], scenario: str, size: int) -> Cell | None:
    """The raw client's run of ``scenario``, or of the scenario it stands for (``RAW_EQUIVALENT``)."""
    cell = cells.get((scenario, size, "raw"))
    if cell is None:
        equivalent = RAW_EQUIVALENT[scenario]
        for (other, other_size, impl), candidate in cells.items():
            if impl == "raw" and other_size == size and RAW_EQUIVALENT[other] == equivalent:
                return candidate
    return cell


def throughput_table(cells: dict[tuple[str, int, str], Cell], plan: list[tuple[str, int, int]]) -> list[str]:
    lines = [
        "| scenario | body | msgs | ours msg/s | aio-pika msg/s | ours / aio-pika (target) | broker limit "
        "msg/s | ours % of limit | aio-pika % of limit | target reachable? | ours CPU µs/msg | "
        "aio-pika CPU µs/msg | raw CPU µs/msg | CPU ours / aio-pika (target ≤ 0.2) | CPU target reachable? |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|---|",
    ]
    for scenario, size, count in plan:
        ours = cells.get((scenario, size, "ours"))
        ref = cells.get((scenario, size, "reference"))
        raw = raw_cell(cells, scenario, size)
        ours_rate = ours.rate if ours else None
        ref_rate = ref.rate if ref else None
        raw_rate = raw.rate if raw else None
        ours_cpu = ours.cpu_us if ours else None
        ref_cpu = ref.cpu_us if ref else None
        raw_cpu = raw.cpu_us if raw else None
        target = TARGETS.get(scenario)
        cpu_target = CPU_TARGET if scenario in CPU_TARGET_SCENARIOS else None
        ours_text = fmt_rate(ours_rate) if ours is None or ours.ok else f"failed: {ours.error[:60]}"
        ref_text = fmt_rate(ref_rate) if ref is None or ref.ok else f"failed: {ref.error[:60]}"
        lines.append(
            f"| {scenario} | {SIZE_NAMES.get(size, size)} | {count:,} | {ours_text} | {ref_text} | "
            f"{fmt_ratio(ratio(ours_rate, ref_rate), target)} | {fmt_rate(raw_rate)} | "
            f"{fmt_pct(ratio(ours_rate, raw_rate))} | {fmt_pct(ratio(ref_rate, raw_rate))} | "
            f"{reachable_rate(target, ref_rate, raw_rate)} | "
            f"{fmt_rate(ours_cpu)} | {fmt_rate(ref_cpu)} | {fmt_rate(raw_cpu)} | "
            f"{fmt_ratio(ratio(ours_cpu, ref_cpu), cpu_target, lower_is_better=True)} | "
            f"{reachable_cpu(cpu_target, ref_cpu, raw_cpu)} |"
        )
    return lines


def floor_table(cells: dict[tuple[str, int, str], Cell], plan: list[tuple[str, int, int]]) -> list[str]:
    """The scenarios against bare asyncio (``asyncio_floor.py``), where it ran."""
    rows = [(s, z) for s, z, _c in plan if (s, z, "floor") in cells]
    if not rows:
        return []
    lines = [
        "| scenario | body | asyncio floor msg/s | floor % of broker limit | ours % of floor | target needs "
        "msg/s | reachable on asyncio? | floor CPU µs/msg | CPU target ≤ µs/msg | CPU target reachable on "
        "asyncio? |",
        "|---|---|--:|--:|--:|--:|---|--:|--:|---|",
    ]
    for scenario, size in rows:
        floor = cells[(scenario, size, "floor")]
        ours, ref, raw = (cells.get((scenario, size, name)) for name in ("ours", "reference", "raw"))
        floor_rate, floor_cpu = floor.rate, floor.cpu_us
        ref_rate, ref_cpu = (ref.rate, ref.cpu_us) if ref else (None, None)
        target = TARGETS.get(scenario)
        cpu_target = CPU_TARGET if scenario in CPU_TARGET_SCENARIOS else None
        needed = target * ref_rate if target and ref_rate else None
        allowed = cpu_target * ref_cpu if cpu_target and ref_cpu else None
        floor_text = fmt_rate(floor_rate) if floor.ok else f"failed: {floor.error[:60]}"
        lines.append(
            f"| {scenario} | {SIZE_NAMES.get(size, size)} | {floor_text} | "
            f"{fmt_pct(ratio(floor_rate, raw.rate if raw else None))} | "
            f"{fmt_pct(ratio(ours.rate if ours else None, floor_rate))} | {fmt_rate(needed)} | "
            f"{reachable_rate(target, ref_rate, floor_rate)} | {fmt_rate(floor_cpu)} | {fmt_rate(allowed)} | "
            f"{reachable_cpu(cpu_target, ref_cpu, floor_cpu)} |"
        )
    return lines


def targets_summary(cells: dict[tuple[str, int, str], Cell], plan: list[tuple[str, int, int]]) -> list[str]:
    """Each of issue 5's targets in this run: met, missed with room for it under the limits this run
    measured (the raw client's and, where it ran, the asyncio floor's), or out of reach (a limit is
    below what the target asks)."""
    met: list[str] = []
    missed: list[str] = []
    out_of_reach: list[str] = []

    def rate(cell: Cell) -> float | None:
        return cell.rate

    def cpu(cell: Cell) -> float | None:
        return cell.cpu_us

    for scenario, size, _count in plan:
        ours, ref, floor = (cells.get((scenario, size, name)) for name in ("ours", "reference", "floor"))
        if ours is None or ref is None:
            continue
        raw = raw_cell(cells, scenario, size)
        name = f"{scenario} {SIZE_NAMES.get(size, size)}"
        cpu_target = CPU_TARGET if scenario in CPU_TARGET_SCENARIOS else None
        # (what, target, the figure, whether higher is better, what the target does to a limit, unit,
        # the limits' names for the raw client and the floor)
        checks = (
            (name, TARGETS.get(scenario), rate, True, "needs", "msg/s", ("broker limit", "floor")),
            (f"CPU of {name}", cpu_target, cpu, False, "allows", "µs/msg", ("raw", "floor")),
        )
        for what, target, figure, higher_is_better, verb, unit, limit_names in checks:
            mine, theirs = figure(ours), figure(ref)
            if target is None or mine is None or not theirs:
                continue
            achieved = mine / theirs
            if achieved >= target if higher_is_better else achieved <= target:
                met.append(f"{what} {achieved:.2f}x")
                continue
            asked = target * theirs
            limits = [
                (limit_name, value)
                for limit_name, cell in zip(limit_names, (raw, floor), strict=True)
                if cell is not None and (value := figure(cell)) is not None
            ]
            room = all(asked <= value if higher_is_better else asked >= value for _name, value in limits)
            shown = (
                ", ".join(f"{limit_name} {value:,.0f}" for limit_name, value in limits) or "no limit measured"
            )
            detail = f"{what} {achieved:.2f}x: {verb} {asked:,.0f} {unit} (ours {mine:,.0f}; {shown})"
            (missed if room else out_of_reach).append(detail)
    return [
        f"- **Met ({len(met)}):** {'; '.join(met) or 'none'}.",
        f"- **Missed with room under the limits ({len(missed)}){':' if missed else ': none.'}**",
        *(f"  - {detail}" for detail in missed),
        f"- **Out of reach in this run ({len(out_of_reach)}){':' if out_of_reach else ': none.'}**",
        *(f"  - {detail}" for detail in out_of_reach),
    ]


def machine_description(url: str) -> list[str]:
    from rawamqp import RawConnection

    cpu_model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    try:
        with RawConnection(url) as raw:
            props = raw.server_properties
            broker = f"{props.get('product', '?')} {props.get('version', '?')}"
    except OSError as error:
        broker = f"unreachable ({error})"
    return [
        f"- CPU: {cpu_model}, {os.cpu_count()} cores; memory {memory}",
        f"- OS: {platform.system()} {platform.release()}",
        f"- Broker: {broker} at {url.split('@')[-1]} (same machine)",
    ]


def python_version(python: str) -> str:
    try:
        out = subprocess.run(
            [python, "-P", "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "missing"


def library_version(python: str, module: str) -> str:
    code = f"import {module} as m; print(getattr(m, '__version__', '') or '?')"
    try:
        # -P and cwd: the checkout's own aio_pika must not shadow the reference's.
        out = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, timeout=60, cwd=HERE)
        return out.stdout.strip() or ("unavailable" if out.returncode else "?")
    except OSError:
        return "missing"


def git_revision(report: str | None) -> str:
    """HEAD, and whether the work tree differs from it, leaving out the report being written (an
    earlier run's report would otherwise mark every later run of the same code as changed)."""
    exclude: list[str] = []
    root = ROOT.resolve()
    if report and (path := Path(report).resolve()).is_relative_to(root):
        exclude = [f":(exclude){path.relative_to(root)}"]
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude],
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- main ---------------------------------------------------------------------------------------------


def build_plan(scenarios: Iterable[str], sizes: Iterable[int], scale: float) -> list[tuple[str, int, int]]:
    plan = []
    for scenario in scenarios:
        for size in sizes:
            if size in COUNTS[scenario]:
                plan.append((scenario, size, scaled(COUNTS[scenario][size], scale)))
    return plan


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rpc-server", help=argparse.SUPPRESS)
    parser.add_argument("--ours", default=str(ROOT / ".venv/bin/python"), help="our interpreter")
    parser.add_argument(
        "--reference",
        default=str(HERE / ".venv-reference/bin/python"),
        help="the interpreter with aio-pika 10.2.1",
    )
    parser.add_argument(
        "--only", choices=("ours", "reference"), help="run one implementation (+ raw and floor)"
    )
    parser.add_argument("--no-raw", action="store_true", help="skip the broker-limit and asyncio-floor runs")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per figure (default 5)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run: counts / 10, 1 repeat")
    parser.add_argument(
        "--full", action="store_true", help="memory over 1,000,000 consumed messages (default 20,000)"
    )
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="bodies: 100 65536 1048576")
    parser.add_argument("--memory-messages", type=int, help="messages for the RSS-growth run")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory section")
    parser.add_argument("--no-backends", action="store_true", help="skip anyio / trio")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario run")
    parser.add_argument("--core", help="a core_bench --json result file to include in the report")
    parser.add_argument("--output", help="write the markdown report here (bench/run: docs/performance.md)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and counts, then exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    if args.rpc_server:
        rpc_server_main(args.rpc_server)
        return 0
    scale, repeat = args.scale, args.repeat
    if args.quick:
        scale, repeat = scale / 10, 1
    plan = build_plan(args.scenarios, args.sizes, scale)
    if args.list:
        for scenario, size, count in plan:
            print(f"{scenario:<22} {SIZE_NAMES.get(size, size):>7} {count:>8,}")
        return 0

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # Absolute, but not resolved: a virtualenv's python is a symlink that must stay one.
    args.ours, args.reference = os.path.abspath(args.ours), os.path.abspath(args.reference)
    impls = []
    if args.only != "reference":
        impls.append(Impl("ours", args.ours))
    if args.only != "ours":
        impls.append(Impl("reference", args.reference))
    for impl in impls:
        if not Path(impl.python).exists():
            log(f"no interpreter for {impl.name}: {impl.python}")
            return 2
    ours_usable = False
    if any(i.name == "ours" for i in impls):
        probe = library_version(args.ours, "aio_pika")
        ours_usable = probe != "unavailable"
        if not ours_usable:
            log("our aio_pika cannot be imported yet: running the reference only")
            impls = [i for i in impls if i.name != "ours"]
    baselines = []
    if not args.no_raw:
        baselines = [Impl("raw", sys.executable), Impl("floor", sys.executable, FLOOR_SCENARIOS)]
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    log(f"throughput: {len(plan)} scenario/size pairs x {repeat} x {[i.name for i in impls + baselines]}")

    # The raw client (every scenario) and the asyncio floor (its scenarios) run alongside the libraries,
    # in the same alternation, so the limits are measured under the same conditions as the figures they
    # are compared with.
    cells = throughput(impls + baselines, plan, repeat, args.url, args.timeout, log)

    memory: dict[str, dict[str, Any]] = {}
    if not args.no_memory:
        n = args.memory_messages or (1_000_000 if args.full else scaled(20_000, scale))
        idle_n = 10 if args.quick else 50
        for impl in impls:
            log(f"memory: {impl.name}: consuming {n:,} messages")
            tag = uuid.uuid4().hex[:8]
            spec = Spec(impl.name, "memory_consume", 100, n, args.url, f"bench-{tag}-memory")
            memory.setdefault(impl.name, {})["consume"] = run_one(impl, spec, max(args.timeout, n / 200), log)
            spec = Spec(impl.name, "memory_idle", 100, idle_n, args.url, f"bench-{tag}-idle")
            memory[impl.name]["idle"] = run_one(impl, spec, args.timeout, log)

    backends: dict[tuple[str, int, str], Cell] = {}
    backend_plan = [(s, z, c) for s, z, c in plan if s in BACKEND_SCENARIOS and z == 100]
    if not args.no_backends and ours_usable and backend_plan:
        # Measured again side by side rather than taken from the table above, whose runs were made
        # minutes earlier: the machine's speed drifts more than the backends differ.
        log("backends: ours on native asyncio, anyio on asyncio and trio, alternating")
        backends = throughput(backend_impls(args.ours), backend_plan, repeat, args.url, args.timeout, log)

    core = None
    if args.core and Path(args.core).exists():
        core = json.loads(Path(args.core).read_text())
    finished = datetime.datetime.now().astimezone()
    report = render(
        args, plan, repeat, cells, memory, backends, backend_plan, core, impls, started, finished, load_before
    )
    print(report)
    if args.output:
        Path(args.output).write_text(report)
        log(f"wrote {args.output}")
    return 0


def render(
    args: argparse.Namespace,
    plan: list[tuple[str, int, int]],
    repeat: int,
    cells: dict[tuple[str, int, str], Cell],
    memory: dict[str, dict[str, Any]],
    backends: dict[tuple[str, int, str], Cell],
    backend_plan: list[tuple[str, int, int]],
    core: dict[str, Any] | None,
    impls: list[Impl],
    started: datetime.datetime,
    finished: datetime.datetime,
    load_before: str,
) -> str:
    names = [i.name for i in impls]
    command = os.environ.get("BENCH_COMMAND") or f"bench/api_bench.py {shlex.join(sys.argv[1:])}"
    lines = [
        "# Performance",
        "",
        "Generated by `bench/run` — do not edit by hand; run it again instead. How the benchmark works and",
        "how to read it: `bench/api_bench.py` (docstring) and the notes at the end of this page.",
        "",
        "## The machine and the run",
        "",
        *machine_description(args.url),
        f"- Python: ours {python_version(args.ours) if 'ours' in names else '(not run)'}, "
        f"reference {python_version(args.reference) if 'reference' in names else '(not run)'}",
        f"- Ours: aio-pika-sansio at git {git_revision(args.output)}"
        + ("" if "ours" in names else " — **not run** (our aio_pika was not usable, or `--only reference`)"),
        f"- Reference: aio-pika {library_version(args.reference, 'aio_pika')}"
        + ("" if "reference" in names else " — **not run**"),
        f"- Date: {started:%Y-%m-%d %H:%M %Z}, {int((finished - started).total_seconds())} s; "
        f"load average before {load_before}, after {load_average()} "
        "(other work on the machine skews the figures)",
        f"- Command: `{command}`; {repeat} repetition(s) per figure, medians shown",
        "",
        "## Throughput (native asyncio backend)",
        "",
        "msg/s is wall-clock messages per second of the measured part; CPU µs/msg is the client process's",
        "user + system CPU time over the same part, per message. Ratios ✓/✗ against issue 5's targets.",
        "The broker limit and raw CPU are the raw client's (no library); “target reachable?” says whether a",
        "target can be met at all in this run: the target times aio-pika's rate against the limit, and the",
        "target times aio-pika's CPU against the raw client's CPU (the floor). See the notes at the end.",
        "",
        *throughput_table(cells, plan),
        "",
    ]
    floor_lines = floor_table(cells, plan)
    if floor_lines:
        lines += [
            "### Against bare asyncio",
            "",
            "The asyncio floor (`bench/asyncio_floor.py`, in the same alternation) runs the publishers, the",
            "round trips (`publish_confirm_seq`, RPC) and the consumers on an `asyncio.Protocol` with",
            "pre-encoded frames and no client library: the event loop's own cost per round trip; for the",
            "batch publishers, writes of about 1 MiB of messages with the transport's flow control; for",
            "consumers, the transport's reads plus one copy of each body into its `bytes`. A target that",
            "needs more than the floor (or less CPU) cannot be met by a client written on asyncio in this",
            "run. For RPC the floor's server answers inside `data_received`, without any task.",
            "",
            *floor_lines,
            "",
        ]
    lines += [
        "### The targets in this run",
        "",
        "Each target above (a throughput ratio, and the CPU ratio where issue 5 sets one) is met, missed",
        "with room for it under every limit this run measured (the broker limit, and the asyncio floor",
        "where it ran), or out of reach: a limit is below what the target asks (more msg/s than the",
        "limit made, or less CPU per message than the raw client or the floor spent).",
        "",
        *targets_summary(cells, plan),
        "",
    ]
    if memory:
        lines += [
            "## Memory",
            "",
            "| implementation | messages consumed | RSS after warm-up | RSS at the end "
            "| growth after warm-up | per idle connection: RSS / Python heap "
            "| per channel: RSS / Python heap |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for name, parts in memory.items():
            consume, idle = parts.get("consume", {}), parts.get("idle", {})
            if consume.get("ok"):
                consumed = f"{consume['count']:,} (warm-up {consume['warmup_messages']:,})"
                warm, end = fmt_bytes(consume["rss_warm"]), fmt_bytes(consume["rss_end"])
                growth = fmt_bytes(consume["growth_after_warmup"])
            else:
                consumed, warm, end, growth = f"failed: {consume.get('error', '?')[:60]}", "—", "—", "—"
            if idle.get("ok"):
                per_conn = f"{fmt_bytes(idle['per_connection'])} / {fmt_bytes(idle['heap_per_connection'])}"
                per_chan = f"{fmt_bytes(idle['per_channel'])} / {fmt_bytes(idle['heap_per_channel'])}"
            else:
                per_conn = per_chan = f"failed: {idle.get('error', '?')[:40]}"
            label = "aio-pika 10.2.1" if name == "reference" else name
            lines.append(f"| {label} | {consumed} | {warm} | {end} | {growth} | {per_conn} | {per_chan} |")
        lines.append("")
    lines += ["## Our backends (our aio_pika only)", ""]
    if backends:
        lines += [
            "Measured after the tables above, the three backends alternating as the implementations do",
            "there: the native figures are this alternation's, not the first table's.",
            "",
            "| scenario | body | native asyncio msg/s | anyio on asyncio msg/s | trio msg/s | trio / native "
            f"(target ≥ {TRIO_TARGET}) | CPU µs/msg native / anyio / trio | trio / native by CPU |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        for scenario, size, _count in backend_plan:
            got = {label: backends.get((scenario, size, label)) for label in ("native", "anyio", "trio")}

            def rate_text(cell: Cell | None) -> str:
                if cell is None:
                    return "—"
                return fmt_rate(cell.rate) if cell.ok else f"failed: {cell.error[:50]}"

            rates = {k: (v.rate if v else None) for k, v in got.items()}
            cpu = {k: (v.cpu_us if v else None) for k, v in got.items()}
            cpus = " / ".join(fmt_rate(value) for value in cpu.values())
            # CPU per message, inverted: how trio's throughput would compare on an otherwise idle core.
            cpu_ratio = ratio(cpu["native"], cpu["trio"])
            lines.append(
                f"| {scenario} | {SIZE_NAMES[size]} | {rate_text(got['native'])} | "
                f"{rate_text(got['anyio'])} | "
                f"{rate_text(got['trio'])} | {fmt_ratio(ratio(rates['trio'], rates['native']), TRIO_TARGET)} "
                f"| {cpus} | {fmt_ratio(cpu_ratio)} |"
            )
    else:
        lines.append(
            "Not measured in this run (our aio_pika not usable yet, `--only reference` or `--no-backends`)."
        )
    lines.append("")
    lines += ["## The core against pamqp (`bench/core_bench.py`)", ""]
    if core:
        lines += core_section(core)
    else:
        lines.append("Not run this time (`bench/run` runs it; `--no-core` skips it).")
    findings = HERE / "findings.md"
    if findings.exists():
        lines += ["", findings.read_text().rstrip()]
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


def core_section(core: dict[str, Any]) -> list[str]:
    from core_bench import COMPARISONS, LABELS

    lines = [
        f"{core['messages']:,} messages of {core['body_size']} B "
        f"({core['bytes_per_message']} B on the wire), "
        f"best of {core['repeat']} interleaved runs (median ratio in brackets). Target ≥ {core['target']:g}x "
        "for decode and encode.",
        "",
        "| what | amqp_core msg/s | pamqp msg/s | ratio (median) |",
        "|---|--:|--:|--:|",
    ]
    for name, ours, base, target in COMPARISONS:
        best, median = core["ratios"][name]["best"], core["ratios"][name]["median"]
        verdict = (" ✓" if best >= core["target"] else " ✗") if target else ""
        lines.append(
            f"| {LABELS[name]} | {core['rates'][ours]['best']:,.0f} | {core['rates'][base]['best']:,.0f} | "
            f"{best:.2f}x{verdict} ({median:.2f}x) |"
        )
    return lines


NOTES = [
    "## Notes",
    "",
    "- Each figure is the median of the repetitions; the implementations and the raw client alternate",
    "  within each scenario, so slow periods of the machine hit all three. Every run is a fresh process;",
    "  setup (connecting, declaring, filling the queue) is outside the measured part.",
    "- The broker limit is the raw client (`bench/rawamqp.py`): pre-encoded frames on a blocking socket, no",
    "  library. It reads with `recv_into` a fixed buffer and parses the frames where they lie (bodies are",
    "  only copied by the kernel); when consuming it acks each read's messages with one `multiple` ack",
    "  before the next read (our core merges consecutive acks the same way). It is still a Python process,",
    "  so for small messages it is a lower bound",
    "  of the broker's capacity; a “% of limit” above 100 % is noise between runs (or a client that",
    "  pipelines better than the raw loop, which should not happen).",
    "- raw CPU µs/msg: the raw client's CPU (`getrusage`, as for the libraries) per message: the floor a",
    "  client pays on this machine, mostly system time (the kernel's copies of the bodies) for large ones.",
    "  For `rpc` it counts both ends (the raw client and the raw server share one process), so there it is",
    "  above a client's floor. Over loopback the sender is also charged for part of the receiving side's",
    "  kernel work, depending on its write size: the raw `publish_noconfirm` writes 256 KiB slices (the",
    "  fastest here, like ours) and pays ~100 µs more per 1 MiB message than one write per message (the",
    "  raw `publish_confirm_500`), so its 1 MiB floor is high by about that much.",
    "- target reachable?: *yes/no (needs N, limit M)* compares the target times aio-pika's msg/s (N) with",
    "  the broker limit of the same run (M): “no” means no client could meet the target on this machine",
    "  in this run. The CPU column's *yes/no (≤ N, floor M)* compares 0.2 times aio-pika's CPU per message",
    "  (N) with the raw client's (M): “no” means even a client doing nothing but the socket calls would",
    "  miss the CPU target. Both come from medians of the same run, so near-ties can flip between runs.",
    "- RPC: the client's CPU only; the server is another process of the same implementation. Like the",
    "  tutorial's code (aio-pika's channels confirm publishes by default), the raw RPC publishes request",
    "  and reply with publisher confirms, and its server acks a request once its reply is confirmed.",
    "- `publish_confirm_500` keeps 500 publishes in flight for 100 B and 64 KiB bodies and 64 for 1 MiB",
    "  (at most 64 MiB in flight); consumers use prefetch 1000 (100 B), 128 (64 KiB), 8 (1 MiB).",
    "- Memory: RSS from /proc/self/statm. The consume run refills the queue in 20 rounds and samples the",
    "  RSS after each; growth is measured from the end of the first 10 %. Idle costs are deltas over 50",
    "  connections and 250 channels (10 and 50 with --quick), after a first connection and channel paid",
    "  for the imports: the RSS (coarse: the allocator reuses pages) and the Python heap (tracemalloc).",
]


if __name__ == "__main__":
    sys.exit(main())
