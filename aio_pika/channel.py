"""Channels: the synchronous-RPC FIFO, publisher confirms, consumers and their worker pools.

Everything that arrives for a channel comes from :meth:`Connection._dispatch`, synchronously, in the order
the core reported it:

* replies to synchronous commands (declare, bind, get, qos, …) pop the head of ``_rpc``, a FIFO of slots
  mirroring the core's outstanding-reply FIFO. A caller that gave up (cancelled or timed out) marks its slot
  abandoned but leaves it in place, so the late reply is still consumed and dropped: the FIFO never
  desynchronises;
* publisher confirms settle the futures in ``_confirms`` (sequence number → future) they cover, or call
  the :class:`_SettledCallback` that stands in for a future where the publisher asked for a callback;
* deliveries go to their consumer: a plain callback is called inline, a coroutine callback is queued for the
  consumer's small pool of worker tasks (no task per message).
"""

from __future__ import annotations

import uuid
import warnings
from asyncio import CancelledError
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Literal

from pamqp import commands

from amqp_core import (
    ChannelStateError,
    ConnectionStateError,
    Delivery,
    FrameTooLarge,
    GetOk,
    LocalProtocolError,
    PublishConfirmed,
    Returned,
)
from amqp_core import Connection as CoreConnection
from backends._util import check_timeout

from .abc import AbstractChannel, Arguments, ExchangeType, TimeoutType
from .exceptions import (
    ChannelClosed,
    ChannelInvalidStateError,
    DeliveryError,
    DuplicateConsumerTag,
    PublishError,
    channel_closed_error,
)
from .exchange import Exchange
from .log import get_logger
from .message import IncomingMessage, ReturnedMessage, settle_error
from .queue import Queue
from .tools import DONE, CallbackCollection, Completed, Deferred, is_coroutine_callable, is_stray_cancellation
from .transaction import Transaction

if TYPE_CHECKING:
    from backends import Event, Future, Waiter

    from .connection import Connection

log = get_logger(__name__)

__all__ = ("Channel",)

_Ack = commands.Basic.Ack
_new = object.__new__

# Channel states.
_NEW = "new"
_OPENING = "opening"
_OPEN = "open"
_CLOSING = "closing"
_CLOSED = "closed"


class _Slot:
    """One synchronous command waiting for its reply."""

    __slots__ = ("abandoned", "on_late", "replied", "reply", "waiter")

    def __init__(self, waiter: Waiter[Any], on_late: Callable[[Any], None] | None = None) -> None:
        self.waiter = waiter
        self.on_late = on_late
        self.abandoned = False
        self.replied = False
        self.reply: Any = None

    def abandon(self) -> None:
        """The caller stopped waiting. A reply that already arrived is handed to ``on_late``."""
        if self.abandoned:
            return
        self.abandoned = True
        if self.replied and self.on_late is not None:
            on_late, self.on_late = self.on_late, None
            on_late(self.reply)


class _SettledCallback:
    """Stands in for a publisher's future in ``Channel._confirms``: what settles the publish (its confirm,
    a nack, a return with ``on_return_raises``, the channel closing) calls ``callback`` with ``None`` or
    the error, at once, where a future would wake its task one loop iteration later."""

    __slots__ = ("_callback", "_settled")

    def __init__(self, callback: Callable[[BaseException | None], None]) -> None:
        self._callback = callback
        self._settled = False

    def done(self) -> bool:
        return self._settled

    def set_result(self, _result: Any) -> None:
        self._call(None)

    def set_exception(self, error: BaseException) -> None:
        self._call(error)

    def _call(self, error: BaseException | None) -> None:
        self._settled = True
        try:
            self._callback(error)
        except Exception:  # it runs inside the received data's processing, which must go on
            log.exception("Publish callback %r failed", self._callback)


class _Consumer:
    """One ``Basic.Consume`` on a channel: its callback and, for coroutine callbacks, its worker pool."""

    __slots__ = (
        "arguments",
        "callback",
        "channel",
        "exclusive",
        "idle",
        "is_async",
        "no_ack",
        "on_stop",
        "pending",
        "queue",
        "stopped",
        "tag",
        "waking",
        "workers",
    )

    def __init__(
        self,
        channel: Channel,
        queue: Queue,
        tag: str,
        callback: Callable[[IncomingMessage], Any],
        no_ack: bool,
        exclusive: bool,
        arguments: Arguments,
        on_stop: Callable[[BaseException | None], None] | None,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.callback = callback
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.arguments = arguments
        self.on_stop = on_stop
        self.is_async = is_coroutine_callable(callback)
        # For the workers: messages for an async callback, or what a plain callback returned to await.
        self.pending: deque[Any] = deque()
        # The futures of the workers waiting for work: one filled wakes its worker. Once popped from
        # here, a future is counted in `waking` until its worker runs (or ends, if it was cancelled).
        self.idle: list[Future[None]] = []
        self.workers = 0
        self.waking = 0  # workers signalled (spawned or woken) that have not started looking at `pending`
        self.stopped = False

    def deliver(self, message: IncomingMessage) -> None:
        if self.is_async:
            self.pending.append(message)
            self._kick()
            return
        try:
            result = self.callback(message)
        except Exception:
            log.exception("Consumer callback %r failed on message %r", self.callback, message.delivery_tag)
            return
        except CancelledError as error:
            # A plain function cannot be cancelled: it raised this itself (result() of a cancelled
            # future). Let out, it would abort the processing of the received data that called it.
            log.error("Consumer callback %r raised CancelledError", self.callback, exc_info=error)
            return
        if result is not None and not isinstance(result, Completed) and hasattr(result, "__await__"):
            # A plain function that returned an awaitable (a lambda around a coroutine, …).
            self.pending.append(result)
            self._kick()

    def _kick(self) -> None:
        """A message was queued for the workers: make sure one is coming for it."""
        if not self.waking:
            self._wake_one()

    def _wake_one(self) -> None:
        idle = self.idle
        while idle:
            wake_up = idle.pop()
            self.waking += 1
            if not wake_up.done():  # done: its worker was cancelled, and uncounts itself on the way out
                wake_up.set_result(None)
                return
        channel = self.channel
        limit = channel._prefetch_count or channel.DEFAULT_CONSUMER_CONCURRENCY
        if self.workers < limit:
            self.workers += 1
            self.waking += 1
            try:
                channel._connection._backend.spawn(self._work, name=f"aio_pika consumer {self.tag}")
            except RuntimeError:
                self.workers -= 1
                self.waking -= 1
                log.warning("Cannot start a worker for consumer %r: the connection is closing", self.tag)

    async def _work(self) -> None:
        """A worker: takes queued messages one at a time.

        Before running a callback it wakes one more worker if messages are still queued, so when callbacks
        block the work fans out (one more worker per loop iteration, up to the limit: messages are
        processed concurrently), while callbacks that complete without blocking are all run by the first
        worker, with no wake-up per message.
        """
        self.waking -= 1  # counted by _wake_one, which spawned this worker
        create_future = self.channel._connection._backend.create_future
        wake_up: Future[None] | None = None
        pending = self.pending
        callback = self.callback
        is_async = self.is_async
        woken = False
        try:
            while True:
                while pending:
                    item = pending.popleft()
                    if pending and not self.waking:
                        self._wake_one()
                    try:
                        if is_async:
                            await callback(item)
                        else:
                            await item
                    except Exception:
                        log.exception("Consumer callback %r failed", callback)
                    except BaseException as error:
                        if not is_stray_cancellation(error):
                            raise  # this worker is cancelled: the connection is closing
                        # The callback awaited something cancelled elsewhere: it failed, this worker goes on.
                        log.error("Consumer callback %r raised CancelledError", callback, exc_info=error)
                    # Not kept alive while this worker waits for the next message, which may be
                    # long: its body may be megabytes.
                    del item
                if self.stopped:
                    return
                wake_up = create_future()
                self.idle.append(wake_up)
                woken = True
                await wake_up
                woken = False
                self.waking -= 1
        finally:
            self.workers -= 1
            if woken:
                if wake_up in self.idle:
                    self.idle.remove(wake_up)
                else:
                    self.waking -= 1  # woken, but cancelled before it could run

    def stop(self, exc: BaseException | None, drop_pending: bool) -> None:
        """No more deliveries: let the workers finish (dropping unstarted messages with ``drop_pending``)."""
        if self.stopped:
            return
        self.stopped = True
        if drop_pending and not self.no_ack:
            # Unacknowledged and unstarted: the broker requeues them when the channel closes.
            if not self.is_async:  # what a plain callback returned, never to be awaited now
                for item in self.pending:
                    close = getattr(item, "close", None)
                    if close is not None:
                        close()
            self.pending.clear()
        idle, self.idle = self.idle, []
        for wake_up in idle:
            self.waking += 1
            if not wake_up.done():
                wake_up.set_result(None)
        if self.on_stop is not None:
            try:
                self.on_stop(exc)
            except Exception:
                log.exception("Consumer stop hook failed")


class Channel(AbstractChannel):
    """An AMQP channel. ``await connection.channel()`` opens it; ``async with`` closes it on exit."""

    QUEUE_CLASS: type[Queue] = Queue
    EXCHANGE_CLASS: type[Exchange] = Exchange

    #: How many messages a coroutine consumer callback processes concurrently when the channel has no
    #: ``prefetch_count`` (with one, that is the limit).
    DEFAULT_CONSUMER_CONCURRENCY = 256

    def __init__(
        self,
        connection: Connection,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> None:
        if not publisher_confirms and on_return_raises:
            raise RuntimeError('"on_return_raises" not applicable without "publisher_confirms"')
        if channel_number is not None and (
            not isinstance(channel_number, int) or isinstance(channel_number, bool) or channel_number < 1
        ):
            raise ValueError(f"channel_number must be a positive integer, not {channel_number!r}")
        self._connection = connection
        self._channel_number = channel_number
        self._number: int | None = None
        self._incarnation: int | None = None
        self._state = _NEW
        self.publisher_confirms = publisher_confirms
        self.on_return_raises = on_return_raises
        self.close_callbacks = CallbackCollection(self)
        self.return_callbacks = CallbackCollection(self)
        self._rpc: deque[_Slot] = deque()
        self._confirms: dict[int, Future[Any] | _SettledCallback] = {}
        self._consumers: dict[str, _Consumer] = {}
        self._open_slot: _Slot | None = None
        self._overtakable: tuple[_Slot, Event] | None = None
        self._closed_event: Event | None = None
        self._close_exc: BaseException | None = None  # why it closed (None: closed by the user)
        self._callbacks_done: Waiter[Any] | None = None
        self._prefetch_count = 0
        self._prefetch_size = 0
        self._global_qos = False
        self._flow_active = True
        self.default_exchange: Exchange = self.EXCHANGE_CLASS(
            self, "", ExchangeType.DIRECT, durable=False, auto_delete=False, internal=False, passive=False
        )

    # ---- state --------------------------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        return self._connection

    @property
    def is_initialized(self) -> bool:
        """True once the channel was opened (it may have closed since)."""
        return self._state is not _NEW

    @property
    def is_closed(self) -> bool:
        """True unless the channel is open."""
        return self._state is not _OPEN

    @property
    def number(self) -> int | None:
        return self._number if self._number is not None else self._channel_number

    def __str__(self) -> str:
        return str(self.number or "Not initialized channel")

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} #{self.number} {self._state} of {self._connection!r}>"

    def _invalid_state(self) -> ChannelInvalidStateError:
        if self._state is _NEW:
            return ChannelInvalidStateError("The channel is not opened yet: await connection.channel() first")
        if self._state is _OPENING:
            return ChannelInvalidStateError("The channel is still opening")
        reason = self._close_exc
        if reason is not None:
            return ChannelInvalidStateError(f"The channel is closed: {reason}")
        return ChannelInvalidStateError("The channel is closed")

    def _command_error(self, error: LocalProtocolError) -> Exception:
        if isinstance(error, ChannelStateError | ConnectionStateError):
            return ChannelInvalidStateError(str(error))
        if isinstance(error, FrameTooLarge):
            return ValueError(str(error))
        return ValueError(str(error))

    # ---- opening and closing ------------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Channel]:
        return self._await_open().__await__()

    async def _await_open(self) -> Channel:
        if self._state is _NEW:
            await self.initialize()
        return self

    async def __aenter__(self) -> Channel:
        if self._state is _NEW:
            await self.initialize()
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.close()

    async def initialize(self, timeout: TimeoutType = None) -> None:
        """Open the channel (what ``await connection.channel()`` does)."""
        if self._state is not _NEW:
            raise RuntimeError("Already initialized")
        await self._open(timeout)

    async def reopen(self, timeout: TimeoutType = None) -> None:
        """Open the channel again after it was closed (e.g. by a 404 from the broker)."""
        if self._state is _OPEN:
            return
        if self._state in (_OPENING, _CLOSING):
            raise ChannelInvalidStateError(f"The channel is {self._state}; wait for it before reopening")
        log.debug("Reopening channel %r", self)
        await self._open(timeout)

    async def _open(self, timeout: TimeoutType = None) -> None:
        connection = self._connection
        core = connection._require_core()
        backend = connection._backend
        try:
            number = core.open_channel(self._channel_number)
        except LocalProtocolError as error:
            raise ChannelInvalidStateError(str(error)) from None
        self._number = number
        self._incarnation = core.channel_incarnation(number)
        connection._channels[number] = self
        self._state = _OPENING
        self._close_exc = None
        self._closed_event = backend.create_event()
        slot = self._open_slot = _Slot(backend.create_waiter())
        connection._wake()
        await self._wait(slot, timeout)
        try:
            if self.publisher_confirms:
                await self._call(lambda core, number: core.confirm_select(number), timeout)
            await self._on_open()
        except BaseException:
            if self._state is _OPEN:
                self._begin_close(None)
            raise
        log.debug("Channel %r opened", self)

    async def _on_open(self) -> None:
        """Called once the channel is open (and in confirm mode when asked); a hook for subclasses."""

    def _on_opened(self) -> None:
        """``Channel.OpenOk`` arrived."""
        slot, self._open_slot = self._open_slot, None
        if slot is None or slot.abandoned:
            # Whoever opened it gave up: close it again.
            self._state = _OPEN
            self._begin_close(None)
            return
        self._state = _OPEN
        slot.replied = True
        slot.waiter.set_result(None)

    def _begin_close(self, exc: BaseException | None) -> bool:
        """Send ``Channel.Close``; False when the connection cannot carry it (the channel is then closed)."""
        if self._state in (_CLOSING, _CLOSED, _NEW):
            return self._state is _CLOSING
        self._state = _CLOSING
        try:
            self._connection._require_core().close_channel(self._number)  # type: ignore[arg-type]
        except (LocalProtocolError, ChannelInvalidStateError, ConnectionError):
            self._finish_close(ChannelInvalidStateError("The connection is closed"), None)
            return False
        self._connection._wake()
        return True

    def close(self, exc: BaseException | None = None) -> Any:
        """Close the channel: closing starts at once; await the result to wait for the broker's CloseOk."""
        if self._state is _NEW:
            log.warning("Channel not opened")
            return DONE
        if self._state is _CLOSED:
            return DONE
        self._begin_close(exc)
        return Deferred(self._wait_closed)

    async def _wait_closed(self) -> None:
        event = self._closed_event
        if event is not None and not event.is_set():
            await event.wait()
        done, self._callbacks_done = self._callbacks_done, None
        if done is not None:
            await done.wait()

    def closed(self) -> Any:
        """An awaitable that completes once the channel is closed."""
        return self._wait_closed_event()

    async def _wait_closed_event(self) -> Literal[True]:
        event = self._closed_event
        if event is not None and not event.is_set():
            await event.wait()
        return True

    @property
    def closing(self) -> Any:
        """aio-pika 1.x: an awaitable that completes once the channel is closed."""
        return self._wait_closed_event()

    def _on_closed(self, reply_code: int, reply_text: str, by_peer: bool) -> None:
        """``ChannelClosed`` arrived: closed by the broker (an error) or the end of our own close."""
        if by_peer:
            exc: BaseException = channel_closed_error(reply_code, reply_text)
            log.debug("Channel %r closed by the broker: %s", self, exc)
            self._finish_close(exc, exc)
        else:
            self._finish_close(ChannelClosed(reply_code, reply_text), None)

    def _on_connection_closed(self, exc: BaseException, reason: BaseException | None) -> None:
        """The connection closed (``reason`` is None when the user closed it)."""
        if self._state in (_CLOSED, _NEW):
            return
        self._finish_close(exc, reason if reason is not None else None)

    def _finish_close(self, exc: BaseException, reason: BaseException | None) -> None:
        """Fail everything waiting on the channel, stop the consumers, run the close callbacks."""
        if self._state is _CLOSED:
            return
        user_close = self._state is _CLOSING and reason is None
        self._state = _CLOSED
        self._close_exc = reason
        number, self._number = self._number, None
        connection = self._connection
        if number is not None and connection._channels.get(number) is self:
            del connection._channels[number]
        slot, self._open_slot = self._open_slot, None
        if slot is not None:
            slot.waiter.set_exception(exc)
        rpc, self._rpc = self._rpc, deque()
        self._release_overtakable()
        for slot in rpc:
            if not slot.abandoned:
                slot.waiter.set_exception(exc)
        confirms, self._confirms = self._confirms, {}
        for future in confirms.values():
            if not future.done():  # done: its publisher was cancelled
                future.set_exception(exc)
        consumers, self._consumers = self._consumers, {}
        for consumer in consumers.values():
            consumer.stop(exc, drop_pending=True)
        if self._closed_event is not None:
            self._closed_event.set()
        callbacks_done = connection._run_in_background(self.close_callbacks(reason))
        if user_close:
            self._callbacks_done = callbacks_done  # close() waits for them

    # ---- synchronous commands -----------------------------------------------------------------------

    def _send(self, command: Callable[[CoreConnection, int], None]) -> None:
        """Send a command that gets no reply (``nowait``)."""
        if self._state is not _OPEN:
            raise self._invalid_state()
        try:
            command(self._connection._core, self._number)  # type: ignore[arg-type]
        except LocalProtocolError as error:
            raise self._command_error(error) from None
        self._connection._wake()

    async def _call(
        self,
        command: Callable[[CoreConnection, int], None],
        timeout: TimeoutType = None,
        on_late: Callable[[Any], None] | None = None,
        *,
        overtakable: bool = False,
    ) -> Any:
        """Send a synchronous command and wait for its reply (in FIFO order with the others).

        ``overtakable``: RabbitMQ answers ``Basic.Consume``/``Basic.Cancel`` from the queue's process, so the
        reply to a command sent after them can arrive first. Nothing is sent behind such a command until its
        reply has come (aiormq never pipelines at all); the FIFO stays true.
        """
        if self._state is not _OPEN:
            raise self._invalid_state()
        if timeout is not None:
            check_timeout(timeout)  # a bad timeout fails before the command is sent
        connection = self._connection
        while self._overtakable is not None:
            await self._wait_event(self._overtakable[1], timeout)
            if self._state is not _OPEN:
                raise self._invalid_state()
        try:
            command(connection._core, self._number)  # type: ignore[arg-type]
        except LocalProtocolError as error:
            raise self._command_error(error) from None
        slot = _Slot(connection._backend.create_waiter(), on_late)
        self._rpc.append(slot)
        if overtakable:
            self._overtakable = (slot, connection._backend.create_event())
        connection._wake()
        return await self._wait(slot, timeout)

    async def _wait_event(self, event: Event, timeout: TimeoutType) -> None:
        if timeout is None:
            await event.wait()
        else:
            with self._connection._backend.timeout(timeout):
                await event.wait()

    def _release_overtakable(self) -> None:
        overtakable, self._overtakable = self._overtakable, None
        if overtakable is not None:
            overtakable[1].set()

    async def _wait(self, slot: _Slot, timeout: TimeoutType) -> Any:
        try:
            if timeout is None:
                return await slot.waiter.wait()
            with self._connection._backend.timeout(timeout):
                return await slot.waiter.wait()
        except BaseException:
            slot.abandon()
            raise

    def _on_reply(self, reply: Any) -> None:
        """A ``MethodReply`` (its method) or a ``GetOk`` event: the reply to the oldest command."""
        try:
            slot = self._rpc.popleft()
        except IndexError:
            log.warning("Channel %r got a reply nobody waits for: %r", self, reply)
            return
        if self._overtakable is not None and self._overtakable[0] is slot:
            self._release_overtakable()
        if slot.abandoned:
            if slot.on_late is not None:
                slot.on_late(reply)
            return
        slot.reply = reply
        slot.replied = True
        slot.waiter.set_result(reply)

    # ---- declarations -------------------------------------------------------------------------------

    async def declare_exchange(
        self,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        durable: bool | None = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> Exchange:
        """Declare an exchange and return it (``passive``: only check that it exists)."""
        exchange = self.EXCHANGE_CLASS(
            self, name, type, durable=bool(durable), auto_delete=auto_delete, internal=internal,
            passive=passive, arguments=arguments,
        )  # fmt: skip
        await exchange.declare(timeout=timeout)
        log.debug("Exchange declared %r", exchange)
        return exchange

    async def get_exchange(self, name: str, *, ensure: bool = True) -> Exchange:
        """The exchange ``name``; ``ensure`` checks it with a passive declare (404: ChannelNotFoundEntity)."""
        if ensure:
            return await self.declare_exchange(name, passive=True)
        return self.EXCHANGE_CLASS(self, name, durable=False, auto_delete=False, internal=False, passive=True)

    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool | None = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> Queue:
        """Declare a queue and return it (no name: the broker names it)."""
        queue = self.QUEUE_CLASS(
            channel=self, name=name, durable=durable, exclusive=exclusive, auto_delete=auto_delete,
            arguments=arguments, passive=passive,
        )  # fmt: skip
        await queue.declare(timeout=timeout)
        self.close_callbacks.add(queue.close_callbacks, weak=True)
        return queue

    async def get_queue(self, name: str, *, ensure: bool = True) -> Queue:
        """The queue ``name``; with ``ensure`` checked with a passive declare (404: ChannelNotFoundEntity)."""
        if ensure:
            return await self.declare_queue(name=name, passive=True)
        return self.QUEUE_CLASS(
            channel=self, name=name, durable=False, exclusive=False, auto_delete=False, arguments=None,
            passive=True,
        )  # fmt: skip

    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> commands.Basic.QosOk:
        """Limit unacknowledged deliveries (``Basic.Qos``)."""
        if all_channels is not None:
            warnings.warn('Use "global_" instead of "all_channels"', DeprecationWarning, stacklevel=2)
            global_ = all_channels
        for name, value, high in (
            ("prefetch_count", prefetch_count, 0xFFFF),
            ("prefetch_size", prefetch_size, 0xFFFFFFFF),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if not 0 <= value <= high:
                raise ValueError(f"{name} must be from 0 to {high}, not {value}")
        result: commands.Basic.QosOk = await self._call(
            lambda core, number: core.basic_qos(
                number, prefetch_size=prefetch_size, prefetch_count=prefetch_count, global_=global_
            ),
            timeout,
        )
        self._prefetch_count = prefetch_count
        self._prefetch_size = prefetch_size
        self._global_qos = global_
        return result

    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> commands.Queue.DeleteOk | None:
        """Delete a queue by name."""
        if nowait:
            self._send(
                lambda core, number: core.queue_delete(
                    number, queue_name, if_unused=if_unused, if_empty=if_empty, nowait=True
                )
            )
            return None
        result: commands.Queue.DeleteOk | None = await self._call(
            lambda core, number: core.queue_delete(
                number, queue_name, if_unused=if_unused, if_empty=if_empty
            ),
            timeout,
        )
        return result

    async def exchange_delete(
        self, exchange_name: str, timeout: TimeoutType = None, if_unused: bool = False, nowait: bool = False
    ) -> commands.Exchange.DeleteOk | None:
        """Delete an exchange by name."""
        if nowait:
            self._send(
                lambda core, number: core.exchange_delete(
                    number, exchange_name, if_unused=if_unused, nowait=True
                )
            )
            return None
        result: commands.Exchange.DeleteOk | None = await self._call(
            lambda core, number: core.exchange_delete(number, exchange_name, if_unused=if_unused), timeout
        )
        return result

    def transaction(self) -> Transaction:
        """A transaction (``async with channel.transaction():``); needs ``publisher_confirms=False``."""
        if self.publisher_confirms:
            raise RuntimeError("Cannot create transaction when publisher confirms are enabled")
        return Transaction(self)

    async def flow(self, active: bool = True, timeout: TimeoutType = None) -> commands.Channel.FlowOk:
        """Ask the broker to pause (``active=False``) or resume deliveries (``Channel.Flow``)."""
        result: commands.Channel.FlowOk = await self._call(
            lambda core, number: core.channel_flow(number, active), timeout
        )
        return result

    def _on_flow(self, active: bool) -> None:
        self._flow_active = active
        log.info("Channel %r: the broker %s publishing", self, "resumed" if active else "paused")

    # ---- publishing ---------------------------------------------------------------------------------

    def _publish(
        self,
        exchange: str,
        routing_key: str,
        message: Any,
        mandatory: bool,
        immediate: bool,
        timeout: TimeoutType,
        on_settled: Callable[[BaseException | None], None] | None = None,
    ) -> Any:
        # on_settled: see Exchange._publish_settled.
        if self._state is not _OPEN:
            raise self._invalid_state()
        if type(routing_key) is not str:
            raise TypeError(f"routing_key must be a str, not {type(routing_key).__name__}")
        if timeout is not None:
            check_timeout(timeout)
        try:
            body = message.body
            encode_properties = message._encoded_properties
        except AttributeError:
            # Not one of our messages: anything with a body and pamqp properties will do, as in aio-pika.
            try:
                body, properties = message.body, message.properties
            except AttributeError:
                raise TypeError(
                    f"message must be an aio_pika.Message, not {type(message).__name__}"
                ) from None
        else:
            try:
                properties = encode_properties()
            except (ValueError, TypeError) as error:
                raise ValueError(f"cannot publish: {error}") from None
        connection = self._connection
        try:
            seq = connection._core.basic_publish(
                self._number,  # type: ignore[arg-type]
                body, exchange, routing_key, properties, mandatory=mandatory, immediate=immediate,
            )  # fmt: skip
        except LocalProtocolError as error:
            raise self._command_error(error) from None
        connection._wake()
        connection._unflushed += len(body)
        if seq is None:
            if on_settled is not None:
                on_settled(None)
            if connection._unflushed <= connection.WRITE_BUFFER_LIMIT:
                return DONE
            flushed = connection._flush_waiter()
            return Deferred(lambda: self._wait_flushed(flushed, timeout))  # no warning if never awaited
        # A confirm comes only once the backend has taken the message, and everything queued before
        # it: awaiting it holds the publisher back as waiting for the write buffer to drain would.
        if on_settled is not None:
            self._confirms[seq] = _SettledCallback(on_settled)
            return DONE
        future = connection._backend.create_future()
        self._confirms[seq] = future
        if timeout is None:
            # The common case is the future itself: gather() takes it without a task of its own. A
            # publisher cancelled while awaiting it cancels the future, which its confirm finds done.
            return future
        return self._wait_confirm(seq, future, timeout)

    async def _wait_flushed(self, flushed: Waiter[Any], timeout: TimeoutType) -> None:
        with self._connection._backend.timeout(timeout):
            await flushed.wait()

    async def _wait_confirm(self, seq: int, future: Future[Any], timeout: TimeoutType) -> Any:
        try:
            with self._connection._backend.timeout(timeout):
                return await future
        except BaseException:
            if self._confirms.get(seq) is future:
                del self._confirms[seq]
            raise

    def _on_confirm(self, event: PublishConfirmed) -> None:
        confirms = self._confirms
        if not confirms:
            return
        first, last = event.first, event.last
        pop = confirms.pop
        # A future found done belongs to a publisher that was cancelled while it waited.
        if event.ack:
            # The Basic.Ack frame the publishers get, built without pamqp's validation (once per confirm).
            frame = _new(_Ack)
            frame.delivery_tag = last
            frame.multiple = first != last
            if first == last:
                future = pop(first, None)
                if future is not None and not future.done():
                    future.set_result(frame)
                return
            for seq in range(first, last + 1):
                future = pop(seq, None)
                if future is not None and not future.done():
                    future.set_result(frame)
            return
        for seq in range(first, last + 1):
            future = pop(seq, None)
            if future is not None and not future.done():
                future.set_exception(DeliveryError(None, commands.Basic.Nack(delivery_tag=seq)))

    def _on_return(self, event: Returned) -> None:
        message = ReturnedMessage._create(
            self, event.properties, event.body, None, None, None, event.exchange, event.routing_key, None,
            True, self._incarnation,
        )  # fmt: skip
        object.__setattr__(message, "reply_code", event.reply_code)
        object.__setattr__(message, "reply_text", event.reply_text)
        seq = event.publish_seq
        future = self._confirms.pop(seq, None) if seq is not None else None
        if future is not None and future.done():
            future = None  # its publisher was cancelled
        if future is not None and self.on_return_raises:
            frame = commands.Basic.Return(
                event.reply_code, event.reply_text, event.exchange, event.routing_key
            )
            future.set_exception(PublishError(message, frame))
            return
        self._connection._run_in_background(self.return_callbacks(message))
        if future is not None:
            future.set_result(message)

    # ---- consuming ----------------------------------------------------------------------------------

    async def _consume(
        self,
        queue: Queue,
        callback: Callable[[IncomingMessage], Any],
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: str | None = None,
        timeout: TimeoutType = None,
        on_stop: Callable[[BaseException | None], None] | None = None,
    ) -> str:
        if self._state is not _OPEN:
            raise self._invalid_state()
        tag = consumer_tag or f"ctag{self._number}.{uuid.uuid4().hex}"
        if tag in self._consumers:
            raise DuplicateConsumerTag(530, f"consumer tag {tag!r} is already used on this channel")
        consumer = _Consumer(self, queue, tag, callback, no_ack, exclusive, arguments, on_stop)
        self._consumers[tag] = consumer

        def on_late(reply: Any) -> None:
            # The caller gave up but the broker started the consumer: stop it again.
            if isinstance(reply, commands.Basic.ConsumeOk) and self._state is _OPEN:
                try:
                    self._connection._core.basic_cancel(self._number, tag, nowait=True)  # type: ignore[arg-type]
                except LocalProtocolError:
                    return
                self._connection._wake()

        try:
            await self._call(
                lambda core, number: core.basic_consume(
                    number, queue.name, tag, no_ack=no_ack, exclusive=exclusive, arguments=arguments
                ),
                timeout,
                on_late,
                overtakable=True,
            )
        except BaseException:
            if self._consumers.get(tag) is consumer:
                del self._consumers[tag]
            consumer.on_stop = None
            consumer.stop(None, drop_pending=True)
            raise
        log.debug("Consumer %r started on queue %r", tag, queue.name)
        return tag

    async def _cancel(
        self, consumer_tag: str, timeout: TimeoutType = None, nowait: bool = False
    ) -> commands.Basic.CancelOk | None:
        if nowait:
            self._cancel_nowait(consumer_tag)
            return None

        def on_late(reply: Any) -> None:
            consumer = self._consumers.pop(consumer_tag, None)
            if consumer is not None:
                consumer.stop(None, drop_pending=False)

        result: commands.Basic.CancelOk = await self._call(
            lambda core, number: core.basic_cancel(number, consumer_tag), timeout, on_late, overtakable=True
        )
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            consumer.stop(None, drop_pending=False)
        return result

    def _cancel_nowait(self, consumer_tag: str) -> None:
        """Send ``Basic.Cancel`` with ``nowait`` and forget the consumer at once: what arrives for it from now
        on goes back to the queue (see :meth:`_drop_delivery`). Needs no await, so it works in a task that
        is being cancelled; cancelling a consumer the broker no longer knows is harmless."""
        self._send(lambda core, number: core.basic_cancel(number, consumer_tag, nowait=True))
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            consumer.stop(None, drop_pending=False)

    def _on_delivery(self, event: Delivery) -> None:
        consumer = self._consumers.get(event.consumer_tag)
        if consumer is None or self._state is not _OPEN:
            self._drop_delivery(event.delivery_tag, event.incarnation)
            return
        consumer.deliver(
            IncomingMessage._create(
                self, event.properties, event.body, event.consumer_tag, event.delivery_tag, event.redelivered,
                event.exchange, event.routing_key, None, consumer.no_ack, event.incarnation,
            )
        )  # fmt: skip

    def _drop_delivery(self, delivery_tag: int, incarnation: int) -> None:
        """A delivery nobody consumes any more (a cancelled consumer's): give it back to the queue."""
        if self._state is not _OPEN:
            return  # the broker requeues unacknowledged messages of a closing channel by itself
        try:
            self._connection._core.basic_reject(
                self._number,  # type: ignore[arg-type]
                delivery_tag,
                requeue=True,
                incarnation=incarnation,
            )
        except LocalProtocolError:
            return  # a no_ack delivery: nothing to give back
        self._connection._wake()

    def _on_consumer_cancelled(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer (its queue was deleted, …)."""
        log.info("Consumer %r was cancelled by the broker", consumer_tag)
        consumer = self._consumers.pop(consumer_tag, None)
        if consumer is not None:
            consumer.stop(None, drop_pending=False)

    async def _get(self, queue: Queue, *, no_ack: bool, timeout: TimeoutType) -> IncomingMessage | None:
        def on_late(reply: Any) -> None:
            # The caller gave up but a message came: give it back to the queue.
            if type(reply) is GetOk and not no_ack:
                self._drop_delivery(reply.delivery_tag, reply.incarnation)

        reply = await self._call(
            lambda core, number: core.basic_get(number, queue.name, no_ack=no_ack), timeout, on_late
        )
        if type(reply) is not GetOk:
            return None  # Basic.GetEmpty
        return IncomingMessage._create(
            self, reply.properties, reply.body, None, reply.delivery_tag, reply.redelivered, reply.exchange,
            reply.routing_key, reply.message_count, no_ack, reply.incarnation,
        )  # fmt: skip

    def _settle(self, message: IncomingMessage, kind: int, multiple: bool, requeue: bool) -> None:
        """Send the ack (kind 0), reject (1) or nack (2) for a message delivered on this channel."""
        number = self._number
        if number is None or self._state is not _OPEN:
            raise self._invalid_state()
        core = self._connection._core
        try:
            if kind == 0:
                core.basic_ack(
                    number,
                    message.delivery_tag,  # type: ignore[arg-type]
                    multiple=multiple,
                    incarnation=message._incarnation,
                )
            elif kind == 1:
                core.basic_reject(
                    number,
                    message.delivery_tag,  # type: ignore[arg-type]
                    requeue=requeue,
                    incarnation=message._incarnation,
                )
            else:
                core.basic_nack(
                    number,
                    message.delivery_tag,  # type: ignore[arg-type]
                    multiple=multiple,
                    requeue=requeue,
                    incarnation=message._incarnation,
                )
        except LocalProtocolError as error:
            raise settle_error(error) from None
        self._connection._wake_batched()
