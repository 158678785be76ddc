"""The benchmark scripts stay runnable: they import, and a quick core_bench run completes.

Nothing here looks at the figures: timings on a shared machine are not a test. The broker-backed checks
only drive the raw client the API benchmark uses for its fixtures and its broker-limit runs, and the
asyncio floor of the round-trip scenarios.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"


@pytest.fixture(autouse=True)
def bench_on_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("module", ["core_bench", "api_bench", "rawamqp", "asyncio_floor", "cache_pollution"])
def test_bench_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_core_bench_quick_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "core_bench.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures["ratios"]) >= {"decode", "encode"}
    assert all(rate["best"] > 0 for rate in figures["rates"].values())


def test_cache_pollution_runs_every_configuration() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "cache_pollution.py"), "--count", "50", "--blocks", "1",
         "--bodies", "100", "70000", "--copies", "0", "65536"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [(body, copy) for body, copy, _ in rows] == [
        ("100", "0"), ("100", "65,536"), ("70,000", "0"), ("70,000", "65,536")
    ]  # fmt: skip
    assert all(float(figure) > 0 for _, _, figure in rows)


def test_api_bench_lists_its_scenarios() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "api_bench.py"), "--list", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for scenario in ("publish_confirm_500", "consume_iterator", "rpc"):
        assert scenario in result.stdout


def test_api_bench_renders_a_report_without_results() -> None:
    api_bench = importlib.import_module("api_bench")
    args = api_bench.parse_args(["--only", "reference", "--url", "amqp://guest:guest@127.0.0.1:1/"])
    plan = api_bench.build_plan(["consume_callback"], [100], 0.1)
    now = api_bench.datetime.datetime.now().astimezone()
    report = api_bench.render(args, plan, 1, {}, {}, {}, [], None, [], now, now, "0 0 0")
    assert "| consume_callback | 100 B |" in report


def test_report_names_the_revision_and_ignores_its_own_earlier_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api_bench = importlib.import_module("api_bench")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    report = tmp_path / "docs" / "performance.md"
    report.write_text("an earlier run\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD")
    monkeypatch.setattr(api_bench, "ROOT", tmp_path)

    report.write_text("the run before this one\n")
    assert api_bench.git_revision(str(report)) == head
    assert api_bench.git_revision(None) == f"{head} + uncommitted changes"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert api_bench.git_revision(str(report)) == f"{head} + uncommitted changes"


def test_backends_are_measured_in_one_alternation(monkeypatch: pytest.MonkeyPatch) -> None:
    """trio / native compares runs made side by side, each backend on its own loop, not figures
    taken minutes apart."""
    api_bench = importlib.import_module("api_bench")
    calls: list[tuple[str, str, str, str | None]] = []

    def run_one(impl: Any, spec: Any, timeout: float, log: Any) -> dict[str, Any]:
        calls.append((impl.label, spec.impl, spec.loop, spec.backend))
        return {"ok": True, "count": 10, "wall": 1.0, "cpu": 0.001, "elapsed": 1.0}

    monkeypatch.setattr(api_bench, "run_one", run_one)
    plan = [("consume_callback", 100, 10), ("publish_noconfirm", 100, 10)]
    cells = api_bench.throughput(
        api_bench.backend_impls(sys.executable), plan, 3, "amqp://x/", 1.0, lambda _: None
    )

    ways = {
        "native": ("ours", "asyncio", None),
        "anyio": ("ours", "asyncio", "anyio"),
        "trio": ("ours", "trio", None),
    }
    assert all((impl, loop, backend) == ways[label] for label, impl, loop, backend in calls)
    # Each repetition runs all three before the next repetition starts, in a rotating order.
    labels = [label for label, *_ in calls]
    assert len(labels) == 2 * 3 * 3
    for start in range(0, len(labels), 3):
        assert sorted(labels[start : start + 3]) == ["anyio", "native", "trio"]
    assert labels[0] != labels[3]
    assert set(cells) == {(s, 100, label) for s, _, _ in plan for label in ways}
    assert all(len(cell.runs) == 3 for cell in cells.values())


@pytest.mark.broker
def test_raw_client_fills_and_drains_a_queue() -> None:
    rawamqp = importlib.import_module("rawamqp")
    queue = f"bench-smoke-{uuid.uuid4().hex[:8]}"
    with rawamqp.RawConnection() as raw:
        raw.queue_declare(queue, arguments={"x-expires": 60_000})
        try:
            raw.fill(queue, b"x" * 100, 50)
            assert raw.queue_declare(queue, passive=True) == 50
            raw.consume(queue, 50)
            raw.fill(queue, b"y" * 10, 1)
            assert raw.get(queue) == b"y" * 10
            assert raw.get(queue) is None
        finally:
            raw.queue_delete(queue)


@pytest.mark.broker
@pytest.mark.parametrize(
    "scenario", ["publish_confirm_seq", "publish_confirm_500", "publish_noconfirm", "rpc", "consume_callback"]
)
def test_asyncio_floor_runs_its_scenarios(scenario: str) -> None:
    api_bench = importlib.import_module("api_bench")
    rawamqp = importlib.import_module("rawamqp")
    queue = f"bench-smoke-floor-{uuid.uuid4().hex[:8]}"
    with rawamqp.RawConnection() as raw:
        raw.queue_declare(queue, arguments={"x-expires": 60_000})
    try:
        spec = api_bench.Spec("floor", scenario, 100, 20, api_bench.DEFAULT_URL, queue)
        result = api_bench.run_worker(spec)
        assert result["ok"] and result["wall"] > 0
        with rawamqp.RawConnection() as raw:
            held = raw.queue_declare(queue, passive=True)
        # Publishes stay in the queue; the RPC server and the consumer acked what they got.
        assert held == (20 if scenario.startswith("publish") else 0)
    finally:
        rawamqp.delete_queues(api_bench.DEFAULT_URL, [queue, f"{queue}-reply"])


def test_api_bench_report_compares_round_trips_with_the_floor() -> None:
    api_bench = importlib.import_module("api_bench")
    args = api_bench.parse_args(["--url", "amqp://guest:guest@127.0.0.1:1/"])
    plan = api_bench.build_plan(["publish_confirm_seq", "consume_callback"], [100], 0.1)

    def cell(count: int, wall: float, cpu: float) -> object:
        return api_bench.Cell([{"ok": True, "count": count, "wall": wall, "cpu": cpu}])

    cells = {
        ("publish_confirm_seq", 100, "ours"): cell(300, 0.05, 0.015),  # 6,000 msg/s
        ("publish_confirm_seq", 100, "reference"): cell(300, 0.1, 0.045),  # 3,000 msg/s
        ("publish_confirm_seq", 100, "raw"): cell(300, 0.03, 0.006),  # 10,000 msg/s
        ("publish_confirm_seq", 100, "floor"): cell(300, 0.0375, 0.009),  # 8,000 msg/s, 30 µs
    }
    now = api_bench.datetime.datetime.now().astimezone()
    report = api_bench.render(args, plan, 1, cells, {}, {}, [], None, [], now, now, "0 0 0")
    # 2x of aio-pika needs 6,000 msg/s, within the floor's 8,000; 0.2x of its 150 µs is 30 µs.
    row = "| publish_confirm_seq | 100 B | 8,000 | 80% | 75% | 6,000 | yes (needs 6,000, limit 8,000) |"
    assert row in report
    assert "| 30 | 30 | yes (≤ 30, floor 30) |" in report
    assert "| consume_callback | 100 B | 8," not in report.split("### Against bare asyncio")[1]


def test_api_bench_report_sorts_the_targets_by_what_the_limits_allow() -> None:
    api_bench = importlib.import_module("api_bench")
    args = api_bench.parse_args(["--url", "amqp://guest:guest@127.0.0.1:1/"])
    plan = api_bench.build_plan(["publish_confirm_500", "consume_callback", "rpc"], [100], 0.1)

    def cell(rate: float, cpu_us: float) -> object:
        return api_bench.Cell([{"ok": True, "count": 1000, "wall": 1000 / rate, "cpu": cpu_us * 1000 / 1e6}])

    cells = {
        # 6x aio-pika, at a tenth of its CPU: both met.
        ("publish_confirm_500", 100, "ours"): cell(60_000, 10),
        ("publish_confirm_500", 100, "reference"): cell(10_000, 100),
        ("publish_confirm_500", 100, "raw"): cell(90_000, 2),
        ("publish_confirm_500", 100, "floor"): cell(80_000, 3),
        # 3x where 4x needs 40,000, under both limits; CPU 0.3x where 0.2x allows 20 µs, above both floors.
        ("consume_callback", 100, "ours"): cell(30_000, 30),
        ("consume_callback", 100, "reference"): cell(10_000, 100),
        ("consume_callback", 100, "raw"): cell(50_000, 4),
        ("consume_callback", 100, "floor"): cell(45_000, 6),
        # 2x where 3x needs 3,000, more than the floor's 2,500 (the broker limit would allow it).
        ("rpc", 100, "ours"): cell(2_000, 150),
        ("rpc", 100, "reference"): cell(1_000, 450),
        ("rpc", 100, "raw"): cell(3_500, 70),
        ("rpc", 100, "floor"): cell(2_500, 80),
    }
    now = api_bench.datetime.datetime.now().astimezone()
    report = api_bench.render(args, plan, 1, cells, {}, {}, [], None, [], now, now, "0 0 0")
    summary = report.split("### The targets in this run")[1].split("\n## ")[0]
    assert "- **Met (2):** publish_confirm_500 100 B 6.00x; CPU of publish_confirm_500 100 B 0.10x." in (
        summary
    )
    assert (
        "- **Missed with room under the limits (2):**\n"
        "  - consume_callback 100 B 3.00x: needs 40,000 msg/s "
        "(ours 30,000; broker limit 50,000, floor 45,000)\n"
        "  - CPU of consume_callback 100 B 0.30x: allows 20 µs/msg (ours 30; raw 4, floor 6)\n"
    ) in summary
    assert (
        "- **Out of reach in this run (1):**\n"
        "  - rpc 100 B 2.00x: needs 3,000 msg/s (ours 2,000; broker limit 3,500, floor 2,500)\n"
    ) in summary


@pytest.mark.parametrize("chunk", [1, 7, 8, 100, 4096, 65543, 1 << 20])
def test_asyncio_floor_consumer_reads_frames_cut_anywhere(chunk: int) -> None:
    """The floor's consumer parses a stream cut at any point: every message counted, every read acked."""
    import asyncio

    from pamqp import body, commands, frame, header

    asyncio_floor = importlib.import_module("asyncio_floor")
    rawamqp = importlib.import_module("rawamqp")
    sizes = [100, 0, 70_000, 300_000, 5]  # one frame, none, two (frame_max 131072), three, one
    stream = bytearray()
    for tag, size in enumerate(sizes, 1):
        stream += frame.marshal(commands.Basic.Deliver("ctag", tag, False, "", "q"), 1)
        stream += frame.marshal(header.ContentHeader(0, size, commands.Basic.Properties()), 1)
        for start in range(0, size, 131064):
            stream += frame.marshal(body.ContentBody(b"b" * min(131064, size - start)), 1)

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    async def feed() -> tuple[object, Transport]:
        copier = asyncio_floor.BodyCopier(len(sizes))
        transport = Transport()
        copier.connection_made(transport)
        for start in range(0, len(stream), chunk):
            copier.data_received(bytes(stream[start : start + chunk]))
        return copier, transport

    copier, transport = asyncio.run(feed())
    assert copier.done.done() and copier.body_bytes == sum(sizes)
    assert transport.written[-1] == rawamqp.ack_frame(len(sizes), multiple=True)


def test_asyncio_floor_counts_multiple_confirms_and_reads_declare_ok() -> None:
    """The floor's batch publishers wait on these: a `multiple` ack confirms up to its tag."""
    import asyncio

    from pamqp import commands, frame

    asyncio_floor = importlib.import_module("asyncio_floor")

    async def feed() -> tuple[list[int], int]:
        confirms: list[int] = []
        counter = asyncio_floor.FrameCounter(confirms.append, lambda _count: None)
        declared = counter.declare_ok = asyncio.get_running_loop().create_future()
        stream = b"".join(
            [
                frame.marshal(commands.Basic.Ack(1, False), 1),
                frame.marshal(commands.Basic.Ack(5, True), 1),
                frame.marshal(commands.Basic.Ack(6, False), 1),
                frame.marshal(commands.Queue.DeclareOk("some-queue", 1234, 0), 1),
            ]
        )
        for start in range(0, len(stream), 5):  # frames cut across reads
            counter.data_received(stream[start : start + 5])
        return confirms, await declared

    assert asyncio.run(feed()) == ([1, 5, 6], 1234)
