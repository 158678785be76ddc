"""The interface between the AMQP connection and its I/O driver.

A backend adapts one kind of event loop to a small, fixed surface: a TCP (or TLS) byte stream
driven by callbacks, a few synchronisation primitives, a clock, and ownership of the connection's
background tasks. It knows nothing about AMQP; the upper layer owns a sans-IO protocol engine and
uses the backend only to move bytes and to wait.

Writing is pull-based so that it coalesces: the upper layer queues any number of commands in its
engine and calls :meth:`Stream.wake_writer`; the backend later calls
:meth:`StreamProtocol.data_to_send` once and writes everything in one go. See ``docs/backends.md``.
"""

from __future__ import annotations

import abc
import asyncio
import ssl
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

T = TypeVar("T")


class StreamProtocol(Protocol):
    """Implemented by the upper layer and handed to :meth:`Backend.connect_tcp`.

    The backend calls these from the event loop (never from another thread). If ``connect_tcp``
    raises, none of them is called.
    """

    def data_received(self, data: bytes) -> None:
        """Called with each chunk of bytes received, in order."""

    def data_to_send(self) -> bytes | list[bytes | memoryview]:
        """Called when the backend is ready to write; returns everything pending, or ``b""``.

        Either one ``bytes``, or a list of bytes-like pieces to write in order (``[]``: nothing), so
        that large payloads can reach the socket without first being copied into one buffer. A
        piece stays valid until it is written; the backend may write it by reference.
        """

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called exactly once, after the stream has ended for whatever reason.

        ``exc`` is ``None`` after a clean end (the peer closed, or we called ``close``/``abort``)
        and otherwise the error that ended the stream, usually an :class:`OSError`.
        """


class Stream(abc.ABC):
    """A connected byte stream, as returned by :meth:`Backend.connect_tcp`."""

    @abc.abstractmethod
    def wake_writer(self) -> None:
        """Tell the backend there is data to send.

        The backend then calls ``protocol.data_to_send()`` soon and writes the result: however often
        this is called, one pull per event-loop iteration, plus (on the asyncio backend) an
        immediate pull and write for the first wake of an iteration that does not come from
        ``data_received``. While writing is paused by back-pressure (the peer is not reading),
        nothing is pulled; the write happens when the transport resumes.
        """

    def wake_writer_batched(self) -> None:
        """Like :meth:`wake_writer`, for data nobody waits on an answer to (acknowledgements).

        It never makes a write of its own at once: it goes out with the event-loop iteration's
        coalesced write, or with an eager write that :meth:`wake_writer` makes later in the same
        iteration. (The default suits backends that do not write eagerly.)
        """
        self.wake_writer()

    @abc.abstractmethod
    def close(self) -> None:
        """Pull ``data_to_send()`` one last time, write it, then close. Idempotent."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close now, discarding anything not yet written. Idempotent."""

    @property
    @abc.abstractmethod
    def is_closing(self) -> bool:
        """True once the stream is closing or closed, whoever started it."""

    @abc.abstractmethod
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Transport details: ``peername``, ``sockname``, ``socket``, ``ssl_object``, ``peercert``.

        Returns ``default`` for names that do not apply (``ssl_object`` on plain TCP).
        """


class Waiter(abc.ABC, Generic[T]):
    """A one-shot result slot (a future) that any number of tasks may await."""

    @abc.abstractmethod
    def set_result(self, value: T) -> None:
        """Fill the slot with ``value``; does nothing if it is already filled."""

    @abc.abstractmethod
    def set_exception(self, exc: BaseException) -> None:
        """Fill the slot with ``exc``; does nothing if it is already filled.

        An exception nobody awaits is not reported: the slot is the only place it is delivered.
        """

    @abc.abstractmethod
    def done(self) -> bool:
        """True once the slot is filled."""

    @abc.abstractmethod
    async def wait(self) -> T:
        """Return the result, or raise the exception, once the slot is filled.

        Cancelling a waiting task leaves the slot untouched for everyone else.
        """


class Future(Protocol[T]):
    """A one-shot result slot awaited directly (``await future``) by at most one task.

    Lighter than a :class:`Waiter` where a single task waits, as for a publisher confirm: on asyncio it
    is asyncio's C future, with nothing of ours around it but the coroutine methods. Cancelling the
    waiting task cancels the future: it is then done, and must not be filled (fill it only while
    ``done()`` is false).

    It is a coroutine as well (``send``, ``throw``, ``close``), so that ``asyncio.create_task`` and task
    groups' ``start_soon`` take a method that returns one, as they take an ``async def`` method.
    """

    def set_result(self, result: T, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def done(self) -> bool: ...

    def __await__(self) -> Generator[Any, None, T]: ...

    def send(self, value: None, /) -> Any: ...

    def throw(self, exception: BaseException, /) -> Any: ...

    def close(self) -> None: ...


class Event(abc.ABC):
    """A flag tasks can wait for, like :class:`asyncio.Event`."""

    @abc.abstractmethod
    def set(self) -> None:
        """Set the flag and wake every waiting task."""

    @abc.abstractmethod
    def is_set(self) -> bool:
        """True while the flag is set."""

    @abc.abstractmethod
    async def wait(self) -> None:
        """Return once the flag is set (at once if it already is)."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Reset the flag, so that ``wait`` blocks again."""


class Backend(abc.ABC):
    """The I/O driver of one AMQP connection; owns the connection's background tasks.

    Create it inside the event loop it is going to serve (see :func:`backends.create_backend`),
    then either use it as ``async with backend:`` (which opens the task group that owns spawned
    tasks and, on exit, cancels and awaits them) or call :meth:`start_detached` and later
    :meth:`aclose`.
    """

    #: Which implementation this is: ``"asyncio"`` or ``"anyio"``.
    name: ClassVar[str]

    @abc.abstractmethod
    async def __aenter__(self) -> Self:
        """Open the task group that owns spawned tasks."""

    @abc.abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Cancel every spawned task and abort every open stream; wait for all that to end."""

    @abc.abstractmethod
    def start_detached(self) -> None:
        """Start without ``async with``, for ``conn = await connect()``; end with :meth:`aclose`.

        Raises :class:`RuntimeError` where the backend can only run tasks in a task group.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Cancel every spawned task and abort every open stream; wait for all that to end.

        Idempotent. Each stream's ``connection_lost`` has been called when this returns.

        Called from one of the spawned tasks, it leaves that task alone (it is the one finishing).
        After this (and after ``__aexit__`` has begun) :meth:`spawn` raises :class:`RuntimeError`.
        """

    @abc.abstractmethod
    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Run ``fn(*args)`` in the background, owned by this backend.

        An exception escaping it is logged (logger ``"backends"``) and affects no other task.
        Raises :class:`RuntimeError` before the backend is started or once it is closing.
        """

    @abc.abstractmethod
    async def connect_tcp(
        self,
        host: str,
        port: int,
        protocol: StreamProtocol,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> Stream:
        """Open a TCP connection (TLS when ``ssl_context`` is given) with TCP_NODELAY on.

        ``server_hostname`` is the name the certificate is checked against (default ``host``).
        ``timeout`` bounds name resolution, connecting and the TLS handshake together.

        Raises :class:`TimeoutError` when the timeout is exceeded, :class:`ConnectionRefusedError`
        when nobody listens, :class:`socket.gaierror` when the name does not resolve,
        :class:`ssl.SSLError` when the TLS handshake fails, another :class:`OSError` otherwise.
        When the host has several addresses and they fail differently, the error is an
        :class:`OSError` whose ``__cause__`` groups the individual errors.
        """

    @abc.abstractmethod
    def time(self) -> float:
        """The event loop's monotonic clock, in seconds."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds``."""

    @abc.abstractmethod
    def create_event(self) -> Event:
        """A new, unset :class:`Event`."""

    @abc.abstractmethod
    def create_waiter(self) -> Waiter[Any]:
        """A new, empty :class:`Waiter`."""

    @abc.abstractmethod
    def create_future(self) -> Future[Any]:
        """A new, empty :class:`Future`."""

    @abc.abstractmethod
    def timeout(self, seconds: float | None) -> AbstractContextManager[Any]:
        """A ``with`` block that raises :class:`TimeoutError` after ``seconds`` (``None``: never).

        Use it inside a task: ``with backend.timeout(5): await waiter.wait()``.
        """

    @abc.abstractmethod
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the event loop soon, from the event loop's thread.

        An exception escaping ``fn`` is logged.
        """


def current_backend_name() -> str:
    """The async library running in this thread: ``"asyncio"`` or ``"trio"``.

    Raises :class:`RuntimeError` when none is running.
    """
    try:
        import sniffio
    except ImportError:
        # sniffio comes with trio (anyio no longer needs it): without it, only asyncio can be
        # running.
        asyncio.get_running_loop()
        return "asyncio"
    return sniffio.current_async_library()
