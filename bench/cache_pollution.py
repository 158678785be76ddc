"""How much a large memory copy between round trips slows the core's Python code down.

In the running benchmark, our process spends several times longer in the interpreter per message at
64 KiB and 1 MiB than at 100 B, although it runs the same Python code (``bench/findings.md``). The
reading there: the kernel copies each body through the CPU's caches between two round trips, and the
interpreter's code and data must then come back from further away. This experiment isolates that
effect without any I/O: the core's part of a sequential confirmed publish (``basic_publish``, the
pieces to send, the broker's ``Basic.Ack`` received) is timed alone, while an untimed copy of
``--copy`` bytes between two round trips stands in for the kernel's copy of a body.

Run: ``.venv/bin/python bench/cache_pollution.py`` (figures are µs per round trip, median of the
blocks; the configurations are interleaved so that machine noise spreads over all of them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core_bench import CHANNEL, QUEUE, _server, open_connection
from pamqp import commands

KIB, MIB = 1024, 1024 * 1024


def round_trips(body_size: int, copy_size: int, count: int) -> float:
    """µs per round trip of ``count`` confirmed publishes, with ``copy_size`` bytes copied between them."""
    conn = open_connection(consume=False)
    conn.confirm_select(CHANNEL)
    conn.receive_data(_server(commands.Confirm.SelectOk(), CHANNEL), 0.0)
    conn.data_to_send(0.0)
    body = bytes(body_size)
    properties = commands.Basic.Properties()
    acks = [_server(commands.Basic.Ack(delivery_tag=tag), CHANNEL) for tag in range(1, count + 1)]
    source, target = bytes(copy_size), bytearray(copy_size)
    publish, pieces, receive, clock = (
        conn.basic_publish,
        conn.data_to_send_pieces,
        conn.receive_data,
        time.perf_counter_ns,
    )
    spent = 0
    for ack in acks:
        if copy_size:
            target[:] = source  # not timed: it only moves other data through the caches
        started = clock()
        publish(CHANNEL, body, "", QUEUE, properties)
        pieces(0.0)
        receive(ack, 0.0)
        spent += clock() - started
    return spent / count / 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bodies", type=int, nargs="+", default=[100, MIB], help="body sizes (bytes)")
    parser.add_argument(
        "--copies",
        type=int,
        nargs="+",
        default=[0, 64 * KIB, MIB, 4 * MIB],
        help="bytes copied between round trips",
    )
    parser.add_argument("--count", type=int, default=2000, help="round trips per block")
    parser.add_argument("--blocks", type=int, default=9, help="blocks per configuration")
    args = parser.parse_args()
    configurations = [(body, copy) for body in args.bodies for copy in args.copies]
    figures: dict[tuple[int, int], list[float]] = {c: [] for c in configurations}
    for _ in range(args.blocks):
        for body, copy in configurations:
            figures[(body, copy)].append(round_trips(body, copy, args.count))
    print(f"{'body':>9} {'copied between':>15} {'µs per round trip':>18}")
    for (body, copy), runs in figures.items():
        print(f"{body:>9,} {copy:>15,} {statistics.median(runs):>18.2f}")


if __name__ == "__main__":
    main()
