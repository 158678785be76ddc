"""Small pieces shared by the backend implementations."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

logger = logging.getLogger("backends")


async def run_logged(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str | None) -> None:
    """Await ``fn(*args)``, logging an exception instead of letting it take other tasks down.

    Cancellation and other BaseExceptions pass through: they are not failures of the task.
    """
    try:
        await fn(*args)
    except Exception:
        logger.exception("background task %s failed", name or fn)


def check_timeout(seconds: Any) -> None:
    """Raise TypeError naming ``timeout`` unless ``seconds`` is a number (callers handle ``None`` first)."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(seconds).__name__}")


def call_logged(fn: Callable[[], None]) -> None:
    """Call ``fn()``, logging an exception (for loops that would otherwise crash on it)."""
    try:
        fn()
    except Exception:
        logger.exception("callback %r failed", fn)


def connect_error(errors: Sequence[OSError]) -> OSError:
    """The one error to raise when every address of a host failed to connect.

    When all attempts failed the same way (typically: refused) that error is raised as it is, so
    callers can catch :class:`ConnectionRefusedError`; otherwise an :class:`OSError` names them
    all and carries them as an exception group in ``__cause__``.
    """
    first = errors[0]
    if all(type(error) is type(first) for error in errors):
        return first
    combined = OSError("all connection attempts failed: " + "; ".join(map(str, errors)))
    combined.__cause__ = ExceptionGroup("connection attempts", list(errors))
    return combined
