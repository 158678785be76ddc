"""What the patterns share: attribute-style proxies and the (overridable) serializer."""

from __future__ import annotations

import asyncio
import inspect
import pickle
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ("Base", "CallbackType", "Method", "Proxy", "call_maybe_async", "running_loop")

T = TypeVar("T")
CallbackType = Callable[..., Awaitable[T]] | Callable[..., T]


class Method:
    """``proxy.name`` — call it with keyword arguments; ``proxy.a.b`` names the method ``"a.b"``."""

    __slots__ = ("func", "name")

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.func = func

    def __getattr__(self, item: str) -> Method:
        if item.startswith("__"):
            raise AttributeError(item)
        return Method(f"{self.name}.{item}", self.func)

    def __call__(self, **kwargs: Any) -> Any:
        return self.func(self.name, kwargs=kwargs)

    def __repr__(self) -> str:
        return f"<Method {self.name!r}>"


class Proxy:
    """``master.proxy.task_name(**kwargs)`` / ``rpc.proxy.method_name(**kwargs)``."""

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __getattr__(self, item: str) -> Method:
        if item.startswith("__"):  # copy, pickle, … must not think every dunder exists
            raise AttributeError(item)
        return Method(item, self.func)


class Base:
    """The serializer of a pattern: :mod:`pickle` unless a subclass says otherwise."""

    SERIALIZER: Any = pickle
    CONTENT_TYPE = "application/python-pickle"

    def serialize(self, data: Any) -> bytes:
        """Serialize ``data`` to bytes (pickle by default; override to change the format)."""
        result: bytes = self.SERIALIZER.dumps(data)
        return result

    def deserialize(self, data: bytes) -> Any:
        """Deserialize bytes made by :meth:`serialize` (pickle by default)."""
        return self.SERIALIZER.loads(data)


async def call_maybe_async(func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``func(**kwargs)``, awaiting the result when it is awaitable (plain and coroutine functions)."""
    result = func(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio event loop (aio-pika's patterns keep it as ``.loop``, which subclasses use, e.g.
    ``self.loop.run_in_executor``), or None where there is none (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
