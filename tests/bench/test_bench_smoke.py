"""The benchmark scripts stay runnable: they import, and a quick core_bench run completes.

Nothing here looks at the figures: timings on a shared machine are not a test. The broker-backed check
only drives the raw client the API benchmark uses for its fixtures and its broker-limit runs.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"


@pytest.fixture(autouse=True)
def bench_on_path() -> Iterator[None]:
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("module", ["core_bench", "api_bench", "rawamqp"])
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
