"""Micro-benchmark of the sans-IO core against pamqp's plain codec (issue 2, "Speed").

Two measurements, each against pamqp doing the same job with its generic marshal/unmarshal:

decode
    A stream of deliveries as RabbitMQ sends them to a consumer (``Basic.Deliver`` + content header with
    a few typical properties + a 100-byte body, one message after the other) is fed in 64 KiB chunks to
    :meth:`amqp_core.Connection.receive_data` on a connection brought to the right state by a scripted
    broker (Start, Tune, OpenOk, Channel.OpenOk, ConsumeOk — all marshalled by pamqp). The core turns it
    into :class:`~amqp_core.Delivery` events. The baseline is the loop a pamqp-based client runs
    (aiormq's): cut one frame out of the same byte stream and ``pamqp.frame.unmarshal`` it. The baseline
    is given the whole stream at once and does no message assembly, so it is the generous side.

encode
    ``Connection.basic_publish`` on an open channel followed by ``data_to_send`` (the path the API
    takes for every publish), and ``amqp_core.codec.encode_publish`` alone, against pamqp marshalling
    ``Basic.Publish`` + ``ContentHeader`` + ``ContentBody`` (objects built per message, as a pamqp
    client does; the same properties object is reused on both sides).

The figures are messages per CPU second of the process (best and median of interleaved repetitions);
the ratio is core / pamqp and the target is >= 3x for both. ``--profile decode|encode`` prints a
cProfile of the core's side.

Run: ``.venv/bin/python bench/core_bench.py`` (``--quick`` for a short smoke run, ``--json`` for
machine-readable output).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Runs as a script from anywhere in the checkout: make the project importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pamqp import body as pamqp_body
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

import amqp_core
from amqp_core import codec

CHUNK = 64 * 1024
BODY_SIZE = 100
CHANNEL = 1
QUEUE = "bench.core.queue"
# What RabbitMQ generates: "amq.ctag-" and 22 characters of URL-safe base64.
CONSUMER_TAG = "amq.ctag-Zk3nQ0mB8y1sVqW2xHc4Rg"
TARGET = 3.0

# "A few typical properties": what a JSON-speaking publisher sets on a persistent message.
PROPERTIES = commands.Basic.Properties(
    content_type="application/json",
    delivery_mode=2,
    message_id="2b9c5a4e6f1d4c0a9e8b7f6a5d4c3b2a",
    timestamp=datetime.datetime(2025, 1, 1, 12, 0, 0, tzinfo=datetime.UTC),
)
BODY = b'{"id": 1, "payload": "' + b"x" * (BODY_SIZE - 25) + b'"}\n'
assert len(BODY) == BODY_SIZE

_FRAME_HEAD = struct.Struct(">BHI")


# ---- a connection in the consuming state ---------------------------------------------------------


def _server(method: Any, channel: int = 0) -> bytes:
    return pamqp_frame.marshal(method, channel)


def open_connection(consume: bool) -> amqp_core.Connection:
    """An ``amqp_core.Connection`` after a scripted handshake, with channel 1 open (and consuming)."""
    conn = amqp_core.Connection()
    conn.initiate(0.0)
    conn.data_to_send(0.0)
    start = commands.Connection.Start(
        version_major=0,
        version_minor=9,
        server_properties={
            "product": "RabbitMQ",
            "version": "3.10.0",
            "capabilities": {
                "publisher_confirms": True,
                "basic.nack": True,
                "consumer_cancel_notify": True,
                "connection.blocked": True,
            },
        },
        mechanisms="PLAIN AMQPLAIN",
        locales="en_US",
    )
    script = [
        _server(start),
        _server(commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=0)),
        _server(commands.Connection.OpenOk()),
    ]
    for data in script:
        conn.receive_data(data, 0.0)
        conn.data_to_send(0.0)
    if conn.state is not amqp_core.ConnectionState.OPEN:
        raise RuntimeError(f"scripted handshake left the connection {conn.state}")
    channel = conn.open_channel()
    assert channel == CHANNEL
    events = conn.receive_data(_server(commands.Channel.OpenOk(), CHANNEL), 0.0)
    assert any(isinstance(e, amqp_core.ChannelOpened) for e in events), events
    if consume:
        conn.basic_consume(CHANNEL, QUEUE)
        events = conn.receive_data(_server(commands.Basic.ConsumeOk(CONSUMER_TAG), CHANNEL), 0.0)
        assert any(isinstance(e, amqp_core.MethodReply) for e in events), events
    conn.data_to_send(0.0)
    return conn


# ---- the stream of deliveries ---------------------------------------------------------------------


def message_properties(n: int) -> commands.Basic.Properties:
    """The properties of the ``n``-th message: its own message id, a clock ticking once per 500 messages."""
    return commands.Basic.Properties(
        content_type=PROPERTIES.content_type,
        delivery_mode=PROPERTIES.delivery_mode,
        message_id=f"{n:032x}",
        timestamp=PROPERTIES.timestamp + datetime.timedelta(seconds=n // 500),
    )


def delivery_stream(count: int) -> bytes:
    """``count`` messages as the broker sends them to the consumer, pamqp-marshalled, back to back."""
    body = _server(pamqp_body.ContentBody(BODY), CHANNEL)
    parts = []
    for tag in range(1, count + 1):
        deliver = commands.Basic.Deliver(CONSUMER_TAG, tag, False, "", QUEUE)
        parts.append(_server(deliver, CHANNEL))
        parts.append(_server(pamqp_header.ContentHeader(0, BODY_SIZE, message_properties(tag)), CHANNEL))
        parts.append(body)
    return b"".join(parts)


def chunks_of(stream: bytes, size: int = CHUNK) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def decode_core(chunks: list[bytes], count: int) -> Callable[[], int]:
    """A run of the core over the chunks: returns how many deliveries came out."""

    def run() -> int:
        conn = open_connection(consume=True)
        receive = conn.receive_data
        delivered = 0
        for chunk in chunks:
            delivered += len(receive(chunk, 0.0))
        if delivered != count:
            raise AssertionError(f"core produced {delivered} events for {count} messages")
        return delivered

    return run


def decode_pamqp(stream: bytes, count: int) -> Callable[[], int]:
    """The pamqp client's loop: one frame cut from the stream at a time, then ``frame.unmarshal``."""

    def run() -> int:
        unmarshal = pamqp_frame.unmarshal
        unpack = _FRAME_HEAD.unpack_from
        pos, end = 0, len(stream)
        frames = 0
        while pos < end:
            size = unpack(stream, pos)[2] + 8
            consumed, _channel, _frame = unmarshal(stream[pos : pos + size])
            pos += consumed
            frames += 1
        if frames != 3 * count:
            raise AssertionError(f"pamqp decoded {frames} frames for {count} messages")
        return count

    return run


# ---- publishing -----------------------------------------------------------------------------------


def encode_core_connection(count: int, batch: int) -> Callable[[], int]:
    """``basic_publish`` per message, ``data_to_send`` every ``batch`` messages."""

    def run() -> int:
        conn = open_connection(consume=False)
        publish, drain = conn.basic_publish, conn.data_to_send
        total = 0
        for i in range(count):
            publish(CHANNEL, BODY, "", QUEUE, PROPERTIES)
            if i % batch == batch - 1:
                total += len(drain(0.0))
        total += len(drain(0.0))
        return total

    return run


def encode_core_codec(count: int) -> Callable[[], int]:
    def run() -> int:
        encode = codec.encode_publish
        total = 0
        for _ in range(count):
            total += len(encode(CHANNEL, "", QUEUE, False, False, PROPERTIES, BODY, 131072))
        return total

    return run


def encode_pamqp(count: int) -> Callable[[], int]:
    """What a pamqp client does per publish: build the three frame objects and marshal each."""

    def run() -> int:
        marshal = pamqp_frame.marshal
        publish, content_header, content_body = (
            commands.Basic.Publish,
            pamqp_header.ContentHeader,
            pamqp_body.ContentBody,
        )
        total = 0
        for _ in range(count):
            data = b"".join(
                (
                    marshal(publish(exchange="", routing_key=QUEUE), CHANNEL),
                    marshal(content_header(0, len(BODY), PROPERTIES), CHANNEL),
                    marshal(content_body(BODY), CHANNEL),
                )
            )
            total += len(data)
        return total

    return run


# ---- settling (informational: no target) ----------------------------------------------------------


def ack_core(count: int, stream: bytes) -> Callable[[], int]:
    """``basic_ack`` for each of ``count`` deliveries (fed during the untimed setup), one drain at the end."""
    conn = open_connection(consume=True)
    for chunk in chunks_of(stream):
        conn.receive_data(chunk, 0.0)

    def run() -> int:
        ack = conn.basic_ack
        for tag in range(1, count + 1):
            ack(CHANNEL, tag)
        return len(conn.data_to_send(0.0))

    return run


def ack_pamqp(count: int) -> Callable[[], int]:
    def run() -> int:
        marshal, ack = pamqp_frame.marshal, commands.Basic.Ack
        total = 0
        for tag in range(1, count + 1):
            total += len(marshal(ack(tag), CHANNEL))
        return total

    return run


# ---- timing ---------------------------------------------------------------------------------------

# (name, core figure, pamqp figure, has the 3x target)
COMPARISONS = (
    ("decode", "decode_core", "decode_pamqp", True),
    ("encode", "encode_core_connection", "encode_pamqp", True),
    ("encode_each", "encode_core_connection_each", "encode_pamqp", False),
    ("encode_codec", "encode_core_codec", "encode_pamqp", False),
    ("ack", "ack_core", "ack_pamqp", False),
)

LABELS = {
    "decode": "decode: receive_data(64 KiB) -> Delivery",
    "encode": "encode: basic_publish, data_to_send per 100",
    "encode_each": "encode: basic_publish + data_to_send each",
    "encode_codec": "encode: codec.encode_publish alone",
    "ack": "settle: basic_ack, one data_to_send",
}


def time_run(make: Callable[[], Callable[[], int]]) -> float:
    """CPU seconds one run takes; the runner is built (setup) before the clock starts.

    The process's CPU time rather than the wall clock: the work is single-threaded and CPU-bound, and
    CPU time does not count the moments other processes on a busy machine had the core.
    """
    run = make()
    gc.collect()
    start = time.process_time()
    run()
    return time.process_time() - start


def measure(
    makers: dict[str, Callable[[], Callable[[], int]]], count: int, repeat: int
) -> dict[str, dict[str, float]]:
    """Run every figure ``repeat`` times, interleaved so machine noise spreads over all of them.

    Keeps the best run (the least disturbed by other processes on a shared machine) and the median.
    """
    times: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeat):
        for name, make in makers.items():
            times[name].append(time_run(make))
    return {
        name: {"best": count / min(runs), "median": count / statistics.median(runs)}
        for name, runs in times.items()
    }


def profile(what: str, count: int) -> None:
    import cProfile
    import pstats

    if what == "decode":
        stream = delivery_stream(count)
        run = decode_core(chunks_of(stream), count)
    else:
        run = encode_core_connection(count, 100)
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def run_bench(count: int, repeat: int) -> dict[str, Any]:
    stream = delivery_stream(count)
    chunks = chunks_of(stream)
    makers: dict[str, Callable[[], Callable[[], int]]] = {
        "decode_core": lambda: decode_core(chunks, count),
        "decode_pamqp": lambda: decode_pamqp(stream, count),
        "encode_core_connection": lambda: encode_core_connection(count, 100),
        "encode_core_connection_each": lambda: encode_core_connection(count, 1),
        "encode_core_codec": lambda: encode_core_codec(count),
        "encode_pamqp": lambda: encode_pamqp(count),
        "ack_core": lambda: ack_core(count, stream),
        "ack_pamqp": lambda: ack_pamqp(count),
    }
    rates = measure(makers, count, repeat)
    ratios = {
        name: {
            "best": rates[core]["best"] / rates[base]["best"],
            "median": rates[core]["median"] / rates[base]["median"],
        }
        for name, core, base, _target in COMPARISONS
    }
    return {
        "messages": count,
        "repeat": repeat,
        "body_size": BODY_SIZE,
        "bytes_per_message": len(stream) // count,
        "python": sys.version.split()[0],
        "target": TARGET,
        "rates": rates,
        "ratios": ratios,
    }


def format_table(results: dict[str, Any]) -> str:
    """The results as a plain-text table (best run; median in brackets)."""
    rates, ratios = results["rates"], results["ratios"]
    lines = [
        f"core_bench: {results['messages']:,} messages of {results['body_size']} B "
        f"({results['bytes_per_message']} B on the wire), best of {results['repeat']} interleaved runs "
        f"(median in brackets), Python {results['python']}",
        f"{'msgs/s':<44} {'amqp_core':>10} {'pamqp':>10} {'ratio':>7} {'(median)':>9}",
    ]
    for name, core, base, target in COMPARISONS:
        verdict = ""
        if target:
            verdict = "ok" if ratios[name]["best"] >= TARGET else f"BELOW {TARGET:g}x"
        median = f"({ratios[name]['median']:.2f}x)"
        lines.append(
            f"{LABELS[name]:<44} {rates[core]['best']:>10,.0f} {rates[base]['best']:>10,.0f} "
            f"{ratios[name]['best']:>6.2f}x {median:>9}  {verdict}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run (default 50000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (5000 messages, 2 runs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--profile", choices=("decode", "encode"), help="cProfile the core's side and exit")
    args = parser.parse_args(argv)
    count, repeat = args.messages, args.repeat
    if args.quick:
        count, repeat = 5_000, 2
    if args.profile:
        profile(args.profile, count)
        return {}
    results = run_bench(count, repeat)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return results


if __name__ == "__main__":
    main()
