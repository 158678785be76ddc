"""create_backend() and current_backend_name(); the layering rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from backends import AnyioBackend, AsyncioBackend, create_backend, current_backend_name

pytestmark = pytest.mark.anyio


async def test_current_backend_name(anyio_backend: str) -> None:
    assert current_backend_name() == anyio_backend


async def test_default_choice(anyio_backend: str) -> None:
    backend = create_backend()
    expected = AsyncioBackend if anyio_backend == "asyncio" else AnyioBackend
    assert type(backend) is expected
    assert backend.name == ("asyncio" if anyio_backend == "asyncio" else "anyio")


async def test_explicit_choice(anyio_backend: str) -> None:
    assert type(create_backend("anyio")) is AnyioBackend
    if anyio_backend == "asyncio":
        assert type(create_backend("asyncio")) is AsyncioBackend
    else:
        with pytest.raises(RuntimeError, match="asyncio event loop"):
            create_backend("asyncio")


async def test_unknown_choice(anyio_backend: str) -> None:
    with pytest.raises(ValueError, match="preferred"):
        create_backend("curio")


def test_outside_an_event_loop() -> None:
    with pytest.raises(RuntimeError):
        create_backend()


def test_backends_know_nothing_of_amqp() -> None:
    for path in (Path(__file__).parents[2] / "backends").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"amqp_core", "aio_pika", "pamqp"}, (path, name)
