"""The anyio backend: runs on asyncio and on trio.

Each stream has a reader task feeding the protocol and a writer task that sleeps on an event set
by ``wake_writer``; ``await stream.send()`` applies back-pressure by itself. All tasks live in the
task group opened by ``async with backend``, each in its own cancel scope so that ``aclose`` can
stop them without cancelling the code running inside the ``async with`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.tls import TLSAttribute

from ._util import call_logged, check_timeout, connect_error, run_logged
from .asyncio_backend import AsyncioFuture
from .base import Backend, Event, Future, Stream, StreamProtocol, Waiter, current_backend_name

T = TypeVar("T")

_RECEIVE_SIZE = 65536

_EXTRA_INFO: dict[str, Any] = {
    "peername": anyio.abc.SocketAttribute.remote_address,
    "sockname": anyio.abc.SocketAttribute.local_address,
    "ssl_object": TLSAttribute.ssl_object,
    "peercert": TLSAttribute.peer_certificate,
    "socket": anyio.abc.SocketAttribute.raw_socket,
}

# The cancel scope of the spawned task that is running, so aclose() can leave it alone.
_task_scope: ContextVar[anyio.CancelScope | None] = ContextVar("_task_scope", default=None)


class _AnyioStream(Stream):
    """The stream plus its two tasks; the reader is the one that tears everything down."""

    def __init__(self, stream: anyio.abc.ByteStream, protocol: StreamProtocol) -> None:
        self._stream = stream
        self._protocol = protocol
        self._wake = anyio.Event()
        self._woken = False  # _wake is set: what publishes check, cheaper than asking the event
        self._closing = False
        self._error: BaseException | None = None  # the first error, for connection_lost
        self._reader_scope = anyio.CancelScope()
        self._writer_scope = anyio.CancelScope()

    def wake_writer(self) -> None:
        if not self._woken:
            self._woken = True
            self._wake.set()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._wake.set()  # the writer flushes, then ends the reader

    def abort(self) -> None:
        self._closing = True
        self._writer_scope.cancel()
        self._reader_scope.cancel()

    @property
    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        attribute = _EXTRA_INFO.get(name)
        if attribute is None:
            return default
        return self._stream.extra(attribute, default)

    async def run_reader(self) -> None:
        try:
            with self._reader_scope:
                while True:
                    self._protocol.data_received(await self._stream.receive(_RECEIVE_SIZE))
        except anyio.EndOfStream:
            pass
        except (anyio.BrokenResourceError, OSError) as exc:  # OSError: ssl.SSLError from TLS
            self._fail(exc)
        except Exception as exc:  # from data_received: it ends the stream, and gets logged
            self._fail(exc)
            raise
        finally:
            self._closing = True
            self._writer_scope.cancel()
            try:
                await anyio.aclose_forcefully(self._stream)
            finally:
                self._protocol.connection_lost(self._error)

    async def run_writer(self) -> None:
        try:
            with self._writer_scope:
                while True:
                    await self._wake.wait()
                    # Woken and cancelled in the same iteration (abort): do not pull any more.
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    self._wake = anyio.Event()
                    self._woken = False
                    # Read before pulling, so that the pull after close() is the last one.
                    closing = self._closing
                    data = self._protocol.data_to_send()
                    if isinstance(data, list):
                        # Large pieces by reference, not joined into a copy (anyio's streams take
                        # any bytes-like object, though typed as bytes).
                        for piece in data:
                            await self._stream.send(cast(bytes, piece))
                    elif data:
                        await self._stream.send(data)
                    if closing:
                        break
        except anyio.ClosedResourceError as exc:
            # Only the reader closes the byte stream, when it ends (end of stream, an error, abort):
            # a send it cut off is no failure of the writer's, and the reader reports the end. anyio
            # on trio reports any send that ends once the socket is closed as this, a cancelled one
            # too; when it failed with the socket's own error (a reset its system call consumed, so
            # that the reader saw a plain end of stream), that error is the context, and the cause.
            if isinstance(exc.__context__, OSError) and self._error is None:
                self._error = exc.__context__
        except (anyio.BrokenResourceError, OSError) as exc:  # OSError: ssl.SSLError from TLS
            self._fail(exc)
        except Exception as exc:  # from data_to_send: it ends the stream, and gets logged
            self._fail(exc)
            raise
        finally:
            # However the writer stopped, the stream is done: the reader closes it.
            self._reader_scope.cancel()

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            # anyio wraps socket errors; report the OSError itself, as asyncio does.
            cause = exc.__cause__
            broken = isinstance(exc, anyio.BrokenResourceError) and cause is not None
            self._error = cause if broken else exc


class _AnyioWaiter(Waiter[T]):
    __slots__ = ("_event", "_exc", "_traceback", "_value")

    _value: T
    _traceback: TracebackType | None

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._exc: BaseException | None = None

    def set_result(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def set_exception(self, exc: BaseException) -> None:
        if not self._event.is_set():
            self._exc = exc
            self._traceback = exc.__traceback__
            self._event.set()

    def done(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> T:
        await self._event.wait()
        if self._exc is not None:
            # Every waiter raises the same object: start each from the original traceback
            # rather than from the previous waiter's.
            raise self._exc.with_traceback(self._traceback)
        return self._value


class _AnyioEvent(Event):
    """anyio.Event cannot be cleared: clearing swaps in a fresh one."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = anyio.Event()


class AnyioBackend(Backend):
    """Backend on anyio, for asyncio and trio; needs ``async with`` (no detached mode)."""

    name: ClassVar[str] = "anyio"

    def __init__(self) -> None:
        library = current_backend_name()
        self._schedule: Callable[[Callable[[], None]], object]
        if library == "trio":
            import trio  # importable whenever trio is running

            token = trio.lowlevel.current_trio_token()

            def schedule(fn: Callable[[], None]) -> None:
                # An exception escaping a run_sync_soon callback would crash the whole trio run.
                token.run_sync_soon(call_logged, fn)

            self._schedule = schedule
            # Every publish awaiting its confirm takes a future: trio's or asyncio's own, not one
            # built on anyio's primitives (several times the calls).
            from ._trio_future import TrioFuture

            self._new_future: Callable[[], Future[Any]] = TrioFuture
        elif library == "asyncio":
            loop = asyncio.get_running_loop()
            self._schedule = loop.call_soon
            self._new_future = functools.partial(AsyncioFuture, loop=loop)
        else:
            raise RuntimeError(f"the anyio backend runs on asyncio or trio, not {library}")
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = False
        self._scopes: set[anyio.CancelScope] = set()  # one per spawned task still running
        self._task_ended = anyio.Event()

    async def __aenter__(self) -> Self:
        if self._task_group is not None or self._closed:
            raise RuntimeError("the backend is already started")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._task_group is None:
            raise RuntimeError("__aexit__ without __aenter__")
        self._closed = True
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # Spawned tasks log their own exceptions, so a group made of the body's exception
            # alone is the task group wrapping it: let it propagate unwrapped.
            if exc is not None and group.exceptions == (exc,):
                return False
            raise

    def start_detached(self) -> None:
        raise RuntimeError(
            "the anyio backend runs its tasks in a task group and cannot be started detached: "
            "use `async with aio_pika.connect(...)` instead of `await aio_pika.connect(...)`"
        )

    async def aclose(self) -> None:
        self._closed = True
        own = _task_scope.get()
        for scope in self._scopes:
            if scope is not own:
                scope.cancel()
        while any(scope is not own for scope in self._scopes):
            self._task_ended = anyio.Event()
            await self._task_ended.wait()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        if self._task_group is None or self._closed:
            raise RuntimeError("the backend is not running (not entered yet, or closed)")
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        self._task_group.start_soon(self._run, scope, fn, args, name, name=name)

    async def _run(
        self,
        scope: anyio.CancelScope,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        name: str | None,
    ) -> None:
        _task_scope.set(scope)  # each task has its own context: this is per task
        try:
            with scope:
                await run_logged(fn, args, name)
        finally:
            self._scopes.discard(scope)
            self._task_ended.set()

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
        if self._task_group is None or self._closed:
            raise RuntimeError("the backend is not running (not entered yet, or closed)")
        with anyio.fail_after(timeout):
            byte_stream = await _connect(host, port, ssl_context, server_hostname or host)
        raw_socket = byte_stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream = _AnyioStream(byte_stream, protocol)
        self.spawn(stream.run_reader, name=f"backends reader {host}:{port}")
        self.spawn(stream.run_writer, name=f"backends writer {host}:{port}")
        return stream

    def time(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    def create_event(self) -> Event:
        return _AnyioEvent()

    def create_waiter(self) -> Waiter[Any]:
        return _AnyioWaiter()

    def create_future(self) -> Future[Any]:
        return self._new_future()

    def timeout(self, seconds: float | None) -> contextlib.AbstractContextManager[Any]:
        if seconds is not None:
            check_timeout(seconds)
        return anyio.fail_after(seconds)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._schedule(fn)


async def _connect(
    host: str, port: int, ssl_context: ssl.SSLContext | None, server_hostname: str
) -> anyio.abc.ByteStream:
    """anyio.connect_tcp, with its errors translated to the ones connect_tcp promises."""
    try:
        if ssl_context is None:
            return await anyio.connect_tcp(host, port)
        return await anyio.connect_tcp(
            host,
            port,
            tls=True,
            ssl_context=ssl_context,
            tls_hostname=server_hostname,
            # AMQP has its own closing handshake, so TLS close_notify is not needed to detect
            # truncation; requiring it would make close() wait on the peer, racing the reader.
            tls_standard_compatible=False,
        )
    except OSError as exc:
        # anyio reports failed attempts as OSError("All connection attempts failed") caused
        # by the attempt's error or by a group of them.
        cause = exc.__cause__
        if type(exc) is not OSError:
            raise
        if isinstance(cause, ExceptionGroup):
            error = connect_error(cast("tuple[OSError, ...]", cause.exceptions))
        elif isinstance(cause, OSError):
            error = cause
        else:
            raise
        raise error from error.__cause__
    except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
        raise ConnectionResetError("the peer closed the connection during the TLS handshake") from exc
