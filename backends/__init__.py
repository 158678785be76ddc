"""I/O drivers for the AMQP connection: one small interface, one module per event-loop flavour.

``create_backend()`` picks the native asyncio backend on asyncio and the anyio backend on trio.
Nothing here knows about AMQP; see ``backends.base`` for the interface and ``docs/backends.md``.
"""

from __future__ import annotations

from .anyio_backend import AnyioBackend
from .asyncio_backend import AsyncioBackend
from .base import Backend, Event, Future, Stream, StreamProtocol, Waiter, current_backend_name

__all__ = [
    "AnyioBackend",
    "AsyncioBackend",
    "Backend",
    "Event",
    "Future",
    "Stream",
    "StreamProtocol",
    "Waiter",
    "create_backend",
    "current_backend_name",
]


def create_backend(preferred: str | None = None) -> Backend:
    """Create the backend for the running event loop (call it from inside that loop).

    ``preferred`` is ``None`` (the native asyncio backend on asyncio, the anyio backend on trio),
    ``"asyncio"`` or ``"anyio"``. Raises :class:`ValueError` for other values and
    :class:`RuntimeError` when the choice cannot run here (``"asyncio"`` under trio).
    """
    if preferred not in (None, "asyncio", "anyio"):
        raise ValueError(f"preferred must be None, 'asyncio' or 'anyio', not {preferred!r}")
    running = current_backend_name()
    if preferred is None:
        preferred = "asyncio" if running == "asyncio" else "anyio"
    if preferred == "anyio":
        return AnyioBackend()
    if running != "asyncio":
        raise RuntimeError(
            f"the asyncio backend needs an asyncio event loop, but {running} is running: "
            "use preferred='anyio' (or None)"
        )
    return AsyncioBackend()
