"""Fixtures for the aio_pika API tests, against the real broker on 127.0.0.1:5672.

Every test runs three ways: the native asyncio backend on asyncio, the anyio backend on asyncio, and the
anyio backend on trio (the anyio pytest plugin runs the event loop). trio is imported unguarded: without it
the run fails instead of skipping a third of the tests.

Every test names its queues and exchanges with a unique suffix (:class:`Names`), declares its queues with an
``x-expires`` safety net, and deletes what it created at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio  # noqa: F401 - unguarded on purpose: a missing trio must fail the run

import aio_pika

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
QUEUE_EXPIRES_MS = 120_000  # queues a crashed test leaves behind disappear on their own


@pytest.fixture(
    params=[
        pytest.param(("asyncio", "asyncio"), id="asyncio-native"),
        pytest.param(("asyncio", "anyio"), id="anyio-on-asyncio"),
        pytest.param(("trio", "anyio"), id="anyio-on-trio"),
    ]
)
def variant(request: pytest.FixtureRequest) -> tuple[str, str]:
    param: tuple[str, str] = request.param
    return param


@pytest.fixture
def anyio_backend(variant: tuple[str, str]) -> str:
    """The event loop the anyio pytest plugin runs the test on: "asyncio" or "trio"."""
    return variant[0]


@pytest.fixture
def backend_name(variant: tuple[str, str]) -> str:
    """The value of ``connect(..., backend=)``: "asyncio" (native) or "anyio"."""
    return variant[1]


class Names:
    """Unique queue and exchange names for one test; remembers them for the clean-up."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, label: str = "q") -> str:
        name = f"{self.prefix}.{label}.{uuid.uuid4().hex[:12]}"
        self.queues.append(name)
        return name

    def exchange(self, label: str = "x") -> str:
        name = f"{self.prefix}.{label}.{uuid.uuid4().hex[:12]}"
        self.exchanges.append(name)
        return name


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    return Names("test-api." + request.node.originalname)


def expiring(arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Queue arguments with the x-expires safety net."""
    return {"x-expires": QUEUE_EXPIRES_MS, **(arguments or {})}


@pytest.fixture
async def connection(backend_name: str, names: Names) -> AsyncIterator[aio_pika.Connection]:
    """An open connection (``async with connect(...)``); afterwards the test's queues and exchanges go."""
    async with aio_pika.connect(AMQP_URL, backend=backend_name) as conn:
        yield conn
    if names.queues or names.exchanges:
        async with aio_pika.connect(AMQP_URL, backend=backend_name) as conn:
            channel = await conn.channel()
            for queue in names.queues:
                await channel.queue_delete(queue)
            for exchange in names.exchanges:
                await channel.exchange_delete(exchange)


@pytest.fixture
async def channel(connection: aio_pika.Connection) -> aio_pika.Channel:
    return await connection.channel()
