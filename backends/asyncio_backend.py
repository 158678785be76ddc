"""The native asyncio backend: an :class:`asyncio.Protocol` on the loop's own transports.

Received bytes go from the transport straight to the upper protocol, and writes are one
``transport.write`` per event-loop iteration, so nothing sits between the socket and the protocol
engine: no StreamReader buffer, no task and no lock per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable
from itertools import accumulate
from time import monotonic
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar, cast

from ._util import check_timeout, connect_error, run_logged
from .base import Backend, Event, Future, Stream, StreamProtocol, Waiter

T = TypeVar("T")

# Batches larger than this are written in slices of this size, each once the transport has room.
_WRITE_SLICE = 256 * 1024
# At most this many pieces per writev() (the kernel's limit, IOV_MAX, is 1024 on Linux), and about
# this many bytes, so that a message of 1 MiB goes out in one system call: over loopback the sender
# also pays for much of the receiving side's work, per call, and a 1 MiB publish written in 256 KiB
# calls cost 11-30 % more CPU. (Batches of 4 MiB made streams of 1 MiB messages slower.)
_WRITEV_PIECES = 256
_WRITEV_BYTES = 2 * 1024 * 1024
# A batch of at most this many pieces (a 1 MiB message is 19, a 64 KiB one 3) is first offered whole
# to one writev(): where each piece ends is counted only if the socket takes part of it.
_FEW_PIECES = 32
# Read sizes. asyncio's socket transports recv() into a new bytes object of `max_size` (256 KiB by
# default) and shrink it to what arrived. glibc serves an allocation that large with mmap unless the
# top of its heap has room, so on a quiet connection every read of a few hundred bytes can cost mmap,
# mremap, munmap and page faults (up to a fifth of an RPC client's CPU, docs/backends.md). Reads
# stay below the allocator's mmap threshold (128 KiB) until one fills its buffer; then more is
# waiting, and fewer, larger reads (one per loop iteration) serve a stream of large messages better:
# 512 KiB reads took 14-31 % less CPU per 64 KiB message than 256 KiB (as long as the protocol does
# not keep reads alive across reads: with 1 MiB messages assembled from views of the reads, glibc then
# gave the heap back and faulted it in again, and they were up to twice as slow).
_SMALL_READ = 64 * 1024
_LARGE_READ = 512 * 1024


class _AsyncioStream(Stream, asyncio.Protocol):
    """Both the Stream handed to the upper layer and the asyncio protocol of its transport."""

    _transport: asyncio.Transport  # set by connection_made, before the stream is handed out
    _fd: int  # likewise

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: StreamProtocol) -> None:
        self._loop = loop
        self._protocol = protocol
        self._flush_scheduled = False
        # wake_writer wrote at once in this loop iteration: reset by the next read or scheduled flush
        self._eager_spent = False
        self._wanted = False  # wake_writer was called and data_to_send has not been pulled since
        self._paused = False
        self._read_size = 0  # the transport's max_size; 0 where it has none (TLS, other loops)
        self._receiving = False  # inside data_received: replies and acks wait for the coalesced flush
        # The rest of a large batch, written a slice at a time as the transport drains: its pieces,
        # where each ends (counted from the start of the batch) and how much of it has been written.
        # The ends are counted once per batch, so finding what a writev() took is a bisect, not a
        # Python step per piece (a stream of 1 MiB messages is 19 pieces each).
        self._pending: list[bytes | memoryview] = []
        self._ends: list[int] = []
        self._written = 0
        self.lost: asyncio.Future[None] = loop.create_future()  # done after connection_lost

    # Stream

    def wake_writer(self) -> None:
        if self._eager_spent or self._receiving:
            if not self._flush_scheduled:  # (checked here too: a batch publisher comes here per message)
                self.wake_writer_batched()
            return
        # A task issued a command (not a reaction to received data): the first such write of this
        # loop iteration goes out at once, so a caller that awaits the broker's reply saves an
        # iteration. What is queued later in the iteration is coalesced by the scheduled flush;
        # none is scheduled for the eager write itself, which pulled everything queued so far (or,
        # paused, leaves it wanted for resume_writing).
        self._eager_spent = True
        self._wanted = True
        self._write()

    def wake_writer_batched(self) -> None:
        # Acks: an eager write of their own would be one more send() (and one more frame for the
        # broker) per loop iteration, for nobody waiting; they go with the iteration's batch.
        if self._flush_scheduled:
            return
        self._wanted = True
        if self._paused or self._transport.is_closing():
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._eager_spent = False  # a new loop iteration
        self._write()

    def _write(self) -> None:
        # Checked here, on every path: close() may have run since a flush was scheduled, and a TLS
        # transport can pause on its own (while handling received records), not only inside our writes.
        if self._paused or self._transport.is_closing():
            return
        pending = self._pending
        full = False  # a writev() here found the socket full: the transport takes the next piece
        if not pending:
            self._wanted = False
            data = self._protocol.data_to_send()
            if isinstance(data, bytes):
                if len(data) <= _WRITE_SLICE:
                    if data:
                        self._transport.write(data)
                    return
                data = [data]
            elif len(data) == 1 and len(data[0]) <= _WRITE_SLICE:
                self._transport.write(data[0])
                return
            elif not data:
                return
            sent = 0
            if len(data) <= _FEW_PIECES and self._fd >= 0 and not self._transport.get_write_buffer_size():
                # A message or two with large bodies, which the socket most often takes whole: one
                # writev(), without the batch's bookkeeping below unless it took only part.
                sent = _writev(self._fd, data)
                if sent == sum(map(len, data)):
                    return
                full = True
            pending += data
            self._ends = list(accumulate(map(len, data)))
            self._written = 0
            if sent:
                self._advance(sent, len(data))
        # A large batch goes out a slice at a time, the next one only while the transport is not
        # paused: before Python 3.12 the transport keeps unsent bytes in one bytearray and moves the
        # whole rest of it after every send(), which is quadratic in the size of the backlog. Pieces
        # (large message bodies, by reference) are handed over as they are: when the transport has
        # nothing buffered, it sends them straight from the caller's memory.
        ends = self._ends
        transport = self._transport
        while pending and not self._paused and not transport.is_closing():
            written = self._written  # where pending[0] starts
            if not full and self._fd >= 0 and not transport.get_write_buffer_size():
                # Nothing is buffered in the transport, so the socket is ours to write to: up to
                # _WRITEV_BYTES of pieces in one writev() (the transport takes one buffer per
                # system call, so a large message would cost two: its frames' heads, then its body).
                count = min(bisect_left(ends, written + _WRITEV_BYTES) + 1, len(ends), _WRITEV_PIECES)
                sent = _writev(self._fd, pending if count == len(pending) else pending[:count])
                if self._advance(sent, count):
                    continue
                written = self._written
            full = False
            # The socket is full (or this is TLS): the transport buffers the next piece and tells
            # us to pause; resume_writing goes on once its buffer is empty.
            piece = pending[0]
            if len(piece) > _WRITE_SLICE:
                view = piece if type(piece) is memoryview else memoryview(piece)
                transport.write(view[:_WRITE_SLICE])
                pending[0] = view[_WRITE_SLICE:]
                self._written = written + _WRITE_SLICE
            else:
                transport.write(piece)
                del pending[0], ends[0]
                self._written = written + len(piece)
        if pending:
            return  # resume_writing goes on with it
        if self._wanted:
            self.wake_writer()  # more was queued while the batch went out

    def _advance(self, sent: int, count: int) -> bool:
        """Drop what a writev() of the first ``count`` pending pieces sent; True if it sent them all."""
        pending, ends = self._pending, self._ends
        self._written = written = self._written + sent
        whole = bisect_right(ends, written, 0, count)  # the pieces it took in full
        piece_start = ends[whole - 1] if whole else written - sent  # of the next one
        del pending[:whole], ends[:whole]
        if whole == count:
            return True
        if written > piece_start:  # it stopped inside pending[0]
            piece = pending[0]
            pending[0] = (piece if type(piece) is memoryview else memoryview(piece))[written - piece_start :]
        return False

    def close(self) -> None:
        if self._transport.is_closing():
            return
        # The last pull ignores back-pressure: the transport flushes its buffer before closing.
        pending = self._pending
        data = self._protocol.data_to_send()
        if isinstance(data, bytes):
            pending.append(data)
        else:
            pending.extend(data)
        for piece in pending:
            if piece:
                self._transport.write(piece)
        pending.clear()
        self._ends.clear()
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    @property
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        # Resume (and write the next slice or piece) only once the transport's buffer is empty: the
        # write then goes straight to send() from our memory instead of being copied behind a backlog.
        self._transport.set_write_buffer_limits(high=_WRITE_SLICE // 4, low=0)
        if isinstance(getattr(transport, "max_size", None), int):
            self._set_read_size(_SMALL_READ)
        # The socket's descriptor, for writev() of pieces; -1 over TLS, where bytes go through the
        # transport's SSL object, and where there is no writev() (Windows).
        sock = transport.get_extra_info("socket")
        tls = transport.get_extra_info("sslcontext") is not None
        self._fd = sock.fileno() if sock is not None and not tls and hasattr(os, "writev") else -1

    def _set_read_size(self, size: int) -> None:
        self._read_size = size
        self._transport.max_size = size  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        size = len(data)
        if size == self._read_size and size < _LARGE_READ:
            self._set_read_size(_LARGE_READ)
        elif size < _SMALL_READ and self._read_size == _LARGE_READ:
            self._set_read_size(_SMALL_READ)
        self._receiving = True
        self._eager_spent = False  # a new loop iteration (reads come after its tasks have run)
        try:
            self._protocol.data_received(data)
        finally:
            self._receiving = False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._wanted or self._pending:
            self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self.lost.set_result(None)


def _writev(fd: int, pieces: list[bytes | memoryview]) -> int:
    """What one writev() of ``pieces`` sent: 0 when the socket is full, or broken (the transport's
    write, which the caller falls back on, then buffers the data or reports the error)."""
    try:
        return os.writev(fd, pieces)
    except OSError:
        return 0


def _wake(futures: list[asyncio.Future[None]]) -> None:
    """Wake the tasks waiting on these futures (a cancelled one is done already)."""
    for future in futures:
        if not future.done():
            future.set_result(None)


class _AsyncioWaiter(Waiter[T]):
    """Each waiting task awaits a future of its own, filled directly by set_result.

    (``asyncio.shield`` around one shared future would also keep a cancelled waiter from cancelling
    the slot, but it passes the result on through a callback: one more event-loop iteration before
    the waiting task runs, on every publisher confirm and every reply.)
    """

    __slots__ = ("_exc", "_filled", "_futures", "_loop", "_value")

    _value: T

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._filled = False
        self._exc: BaseException | None = None
        self._futures: list[asyncio.Future[None]] = []

    def set_result(self, value: T) -> None:
        if not self._filled:
            self._value = value
            self._fill()

    def set_exception(self, exc: BaseException) -> None:
        if not self._filled:
            self._exc = exc
            self._fill()

    def _fill(self) -> None:
        # The waiting tasks' futures only wake them: each reads the outcome from the waiter.
        self._filled = True
        futures, self._futures = self._futures, []
        _wake(futures)

    def done(self) -> bool:
        return self._filled

    async def wait(self) -> T:
        if not self._filled:
            future: asyncio.Future[None] = self._loop.create_future()
            self._futures.append(future)
            try:
                await future
            finally:
                if not self._filled:
                    self._futures.remove(future)  # this task was cancelled; the slot stays as it is
        if self._exc is not None:
            raise self._exc
        return self._value


class AsyncioFuture(asyncio.Future[T]):
    """The loop's future (its C implementation), which is also a coroutine.

    Awaiting it is awaiting the future; ``send``, ``throw`` and ``close`` make it a coroutine as well,
    so ``asyncio.create_task`` takes it, as it takes the coroutine aio-pika's ``publish()`` returns,
    while ``gather`` and ``ensure_future`` still take it as the future it is (no task of their own).
    The iterator behind ``await`` keeps no state beyond the future, so each step makes a fresh one.
    """

    __slots__ = ()

    def send(self, value: None) -> Any:
        return self.__await__().send(value)

    def throw(self, exception: BaseException) -> Any:
        return self.__await__().throw(exception)

    def close(self) -> None:
        pass  # nothing runs "inside" a future


class _AsyncioEvent(Event):
    """:class:`asyncio.Event` on the backend's loop.

    ``asyncio.Event`` looks its loop up on every wait, which on Python 3.11 is a ``getpid()`` system
    call (the running loop must belong to this process).
    """

    __slots__ = ("_futures", "_is_set", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._is_set = False
        self._futures: list[asyncio.Future[None]] = []

    def set(self) -> None:
        if not self._is_set:
            self._is_set = True
            futures, self._futures = self._futures, []
            _wake(futures)

    def is_set(self) -> bool:
        return self._is_set

    async def wait(self) -> None:
        if self._is_set:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._futures.append(future)
        try:
            await future
        finally:
            if future in self._futures:  # cancelled before set(): this task stops waiting
                self._futures.remove(future)

    def clear(self) -> None:
        self._is_set = False


class _Timeout:
    """``asyncio.timeout`` as a plain ``with`` block (its own is ``async with`` only).

    Same mechanism: cancel the task at the deadline, and turn that cancellation (and only that
    one, as counted by ``Task.cancelling``) into TimeoutError on the way out.
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_loop", "_seconds", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._expired = False

    def __enter__(self) -> None:
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("backend.timeout() must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = self._loop.call_later(self._seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


class AsyncioBackend(Backend):
    """Backend on the running asyncio event loop, using its transports directly."""

    name: ClassVar[str] = "asyncio"

    def __init__(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        # The connection reads the clock on every read and every write. The stdlib loops' time() is
        # time.monotonic() behind a Python call, so where that is all the loop's clock is, time is the
        # C function itself; a loop with a clock of its own (uvloop, a test loop with virtual time)
        # keeps it.
        if type(loop).time is asyncio.BaseEventLoop.time:
            self.time = monotonic  # type: ignore[method-assign]
        # Every publish awaiting its confirm takes a future: made without a call of ours around it.
        self.create_future = functools.partial(AsyncioFuture, loop=loop)  # type: ignore[method-assign]
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[_AsyncioStream] = set()  # connected and not lost yet
        self._started = False
        self._closed = False

    async def __aenter__(self) -> Self:
        self.start_detached()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start_detached(self) -> None:
        # Plain asyncio tasks need no enclosing task group, so both modes are the same here.
        if self._started:
            raise RuntimeError("the backend is already started")
        self._started = True

    async def aclose(self) -> None:
        self._closed = True
        current = asyncio.current_task()
        pending: list[asyncio.Future[None]] = []
        for task in self._tasks:
            if task is not current:
                task.cancel()
                pending.append(task)
        # Streams are transport callbacks, not tasks: abort them so that they end here too, as
        # the anyio backend's do when their tasks are cancelled.
        for stream in self._streams:
            stream.abort()
            pending.append(stream.lost)
        if pending:
            await asyncio.wait(pending)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        if not self._started or self._closed:
            raise RuntimeError("the backend is not running (not started yet, or closed)")
        task = self._loop.create_task(run_logged(fn, args, name), name=name)
        # The loop keeps only weak references to tasks: this set keeps them alive.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        stream = _AsyncioStream(self._loop, protocol)
        async with asyncio.timeout(timeout):
            sock = await self._connect_socket(host, port)
            try:
                await self._loop.create_connection(
                    lambda: stream,
                    sock=sock,
                    ssl=ssl_context,
                    server_hostname=(server_hostname or host) if ssl_context else None,
                )
            except BaseException:
                sock.close()
                raise
        self._streams.add(stream)
        stream.lost.add_done_callback(lambda _: self._streams.discard(stream))
        return stream

    async def _connect_socket(self, host: str, port: int) -> socket.socket:
        # Done by hand rather than by create_connection so that a refused connection stays a
        # ConnectionRefusedError when the host has several addresses (create_connection then
        # raises a bare OSError on Python < 3.12).
        infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        errors: list[OSError] = []
        for family, type_, proto, _, address in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                errors.append(exc)
            except BaseException:
                sock.close()
                raise
            else:
                return sock
        raise connect_error(errors)

    def time(self) -> float:
        return self._loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def create_event(self) -> Event:
        return _AsyncioEvent(self._loop)

    def create_waiter(self) -> Waiter[Any]:
        return _AsyncioWaiter(self._loop)

    def create_future(self) -> Future[Any]:
        return AsyncioFuture(loop=self._loop)

    def timeout(self, seconds: float | None) -> contextlib.AbstractContextManager[Any]:
        if seconds is None:
            return contextlib.nullcontext()
        check_timeout(seconds)
        return _Timeout(self._loop, seconds)

    def call_soon(self, fn: Callable[[], None]) -> None:
        # An exception escaping fn reaches the loop's exception handler, which logs it.
        self._loop.call_soon(fn)
