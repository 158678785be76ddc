"""A channel that comes back: after a reconnection, or after the broker closed it for an error.

A :class:`RobustChannel` remembers what was done on it — QoS, the exchanges and queues it declared, their
bindings, the consumers — and restores all of it when it is opened again (with the same channel number and
the same confirm mode). While it is being restored, its methods (and those of its exchanges and queues)
wait for it instead of failing; closing it (or the connection) ends that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from .abc import AbstractRobustChannel, Arguments, ExchangeType, TimeoutType
from .channel import Channel
from .exceptions import ChannelClosed, ChannelInvalidStateError, ChannelLockedResource
from .log import get_logger
from .robust_exchange import RobustExchange
from .robust_queue import RobustQueue
from .tools import CallbackCollection

if TYPE_CHECKING:
    from backends import Event, Waiter

    from .connection import Connection

log = get_logger(__name__)

__all__ = ("RobustChannel",)


def _forget_bindings_from(bindings: dict[Any, tuple[str, str, Arguments]], source: str) -> None:
    """Drop the remembered bindings whose source is the exchange ``source``."""
    for key in [key for key, (name, _, _) in bindings.items() if name == source]:
        del bindings[key]


class _RestoreAgain(Exception):
    """A refused restore step closed the channel, which was reopened: its restore starts over."""


class RobustChannel(Channel, AbstractRobustChannel):
    """A channel restored after a reconnection (see :func:`aio_pika.connect_robust`).

    ``reopen_callbacks`` run (as ``callback(channel)``) each time it was reopened and restored. The broker
    closing it for an error (404, 406, …) makes it reopen and restore itself at once: the failing call
    raises, later calls wait for the reopening.
    """

    QUEUE_CLASS: type[RobustQueue] = RobustQueue
    EXCHANGE_CLASS: type[RobustExchange] = RobustExchange

    default_exchange: RobustExchange

    def __init__(
        self,
        connection: Connection,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> None:
        super().__init__(
            connection=connection,
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )
        self.reopen_callbacks = CallbackCollection(self)
        self._exchanges: dict[str, list[RobustExchange]] = {}
        self._queues: dict[str, list[RobustQueue]] = {}
        self._close_called = False  # the user closed it: never restored
        self._restored = False  # open, and restored after the last reopening: user calls go ahead
        self._restoring = False  # a restore runs: a channel error does not start another
        self._reopening: Waiter[Any] | None = None  # the restore in progress, for others to wait on
        self._restore_refused: set[str] = set()  # the steps the broker refused in the restore in progress
        self._ready_event: Event | None = None
        register = getattr(connection, "_register_channel", None)
        if register is not None:
            register(self)

    # ---- state --------------------------------------------------------------------------------------

    @property
    def _usable(self) -> bool:
        return self._restored and not self.is_closed

    def _will_restore(self) -> bool:
        """Whether a lost channel will come back: neither it nor the connection was closed by the user."""
        return not self._close_called and not getattr(self._connection, "_closing_for_good", True)

    def _event(self) -> Event:
        if self._ready_event is None:
            self._ready_event = self._connection._ensure_backend().create_event()
        return self._ready_event

    def _set_restored(self, restored: bool) -> None:
        self._restored = restored
        event = self._ready_event
        if event is not None:
            if restored:
                event.set()
            else:
                event.clear()

    def _wake_waiters(self) -> None:
        """Wake whoever waits in :meth:`ready` so that they look again (after a final close)."""
        if self._ready_event is not None:
            self._ready_event.set()

    async def ready(self, timeout: TimeoutType = None) -> None:
        """Return once the channel is open and restored; raise if it (or the connection) was closed."""
        if self._restored and not self.is_closed:
            return
        backend = self._connection._ensure_backend()
        with backend.timeout(timeout):
            while True:
                if self._close_called:
                    raise ChannelInvalidStateError("The channel is closed")
                if getattr(self._connection, "_closing_for_good", False):
                    raise ChannelInvalidStateError("The connection is closed")
                if not self.is_initialized:
                    raise ChannelInvalidStateError(
                        "The channel is not opened yet: await connection.channel() first"
                    )
                if self._restored and not self.is_closed:
                    return
                if not self._will_restore() and self.is_closed:
                    raise self._invalid_state()
                await self._event().wait()

    # ---- opening, closing, reopening ----------------------------------------------------------------

    async def initialize(self, timeout: TimeoutType = None) -> None:
        if self.is_initialized:
            raise RuntimeError("Already initialized")
        connection_ready = getattr(self._connection, "ready", None)
        if getattr(self._connection, "_ready_event", None) is None:
            connection_ready = None  # not a robust connection, or not connected yet
        backend = self._connection._ensure_backend()
        try:
            with backend.timeout(timeout):
                if connection_ready is not None:
                    await connection_ready()
                await super().initialize()
        except BaseException:
            # The caller got no channel: a reconnection must not open it behind their back (a channel
            # leaked on the broker at every reconnection), nor anything wait for it to be restored.
            self._forget()
            raise
        self._set_restored(True)

    async def _open(self, timeout: TimeoutType = None) -> None:
        if self._channel_number is not None:
            await super()._open(timeout)
            return
        self._channel_number = self._unreserved_number()
        try:
            await super()._open(timeout)
        except BaseException:
            if not self.is_initialized:
                self._channel_number = None  # never opened: it keeps no number
            raise

    def _unreserved_number(self) -> int | None:
        """The lowest channel number neither open nor kept by another robust channel of the connection.

        A robust channel closed by a channel error keeps its number while it is reopened, and after a
        reconnection every robust channel reopens with its number: a new channel taking it in between
        would make that reopening, and then every reconnection, fail with "channel N is already in use".
        None: the core's own choice will do (no robust channel keeps a number)."""
        channels = getattr(self._connection, "_robust_channels", ())
        kept = {
            channel._channel_number
            for channel in channels
            if channel is not self and channel._channel_number is not None
        }
        if not kept:
            return None
        connection = self._connection
        in_use = kept | connection._channels.keys()
        channel_max = connection._require_core().channel_max
        return next((n for n in range(1, channel_max + 1) if n not in in_use), None)

    async def _on_open(self) -> None:
        await super()._on_open()
        if self._channel_number is None:
            self._channel_number = self._number  # reopened with the same number from now on

    def close(self, exc: BaseException | None = None) -> Any:
        """Close the channel for good: it is not restored any more."""
        self._forget()
        result = super().close(exc)
        self._on_final_close()
        return result

    def _forget(self) -> None:
        """The channel is not restored any more (until an explicit :meth:`reopen`)."""
        self._close_called = True
        self._set_restored(False)
        unregister = getattr(self._connection, "_unregister_channel", None)
        if unregister is not None:
            unregister(self)

    def _on_final_close(self) -> None:
        """Neither the channel nor the connection comes back: stop what waits for a restore."""
        self._wake_waiters()
        error = ChannelInvalidStateError("The channel is closed")
        for queues in list(self._queues.values()):
            for queue in queues:
                for spec in list(queue._consumers.values()):
                    on_stop = spec.get("on_stop")
                    if on_stop is not None:
                        try:
                            on_stop(error)
                        except Exception:
                            log.exception("Consumer stop hook failed")

    def _on_connection_closed(self, exc: BaseException, reason: BaseException | None) -> None:
        self._set_restored(False)
        super()._on_connection_closed(exc, reason)

    def _on_closed(self, reply_code: int, reply_text: str, by_peer: bool) -> None:
        self._set_restored(False)
        super()._on_closed(reply_code, reply_text, by_peer)
        if by_peer and not self._restoring and self._will_restore() and self._connection.is_opened:
            log.info(
                "Channel %s was closed by the broker (%s %s): reopening it", self, reply_code, reply_text
            )
            try:
                self._connection._backend.spawn(
                    self._reopen_after_error, name=f"aio_pika reopen channel {self}"
                )
            except RuntimeError:
                log.debug("Cannot reopen channel %s: the connection is closing", self)

    async def _reopen_after_error(self) -> None:
        try:
            await self._reopen(None, explicit=False)
        except Exception as error:
            if self._will_restore() and self._connection.is_opened:
                log.warning("Could not reopen channel %s: %s", self, error)
            else:
                log.debug("Channel %s not reopened: %s", self, error)

    async def reopen(self, timeout: TimeoutType = None) -> None:
        """Open the channel again (also after :meth:`close`) and restore everything declared on it."""
        await self._reopen(timeout, explicit=True)

    async def _reopen(self, timeout: TimeoutType, explicit: bool) -> None:
        """:meth:`reopen`; without ``explicit`` (the reopening after a channel error) a channel the user
        closed meanwhile stays closed: only the user's own ``reopen()`` undoes a ``close()``."""
        backend = self._connection._ensure_backend()
        with backend.timeout(timeout):
            connection_ready = getattr(self._connection, "ready", None)
            if connection_ready is not None and getattr(self._connection, "_ready_event", None) is not None:
                await connection_ready()
            pending = self._reopening
            if pending is not None:
                await pending.wait()
                return
            if self._usable and not self._close_called:
                return
            if self._close_called and not explicit:
                return
            self._close_called = False
            register = getattr(self._connection, "_register_channel", None)
            if register is not None:
                register(self)
            waiter = self._begin_restore()
            try:
                await self._restore_open(retry_locked=False)
                await self._restore_links(retry_locked=False)
            except BaseException as error:
                self._end_restore(waiter, error)
                raise
            self._end_restore(waiter, None)
        await self.reopen_callbacks()

    # ---- restoring ------------------------------------------------------------------------------------

    def _should_restore(self) -> bool:
        return self.is_initialized and not self._close_called

    def _begin_restore(self) -> Waiter[Any]:
        """A restore starts; the waiter it returns identifies it (and lets others wait for it)."""
        self._restoring = True
        self._restore_refused = set()
        self._set_restored(False)
        waiter = self._reopening = self._connection._ensure_backend().create_waiter()
        return waiter

    def _end_restore(self, waiter: Waiter[Any], error: BaseException | None) -> None:
        """The restore ``waiter`` identifies ended (a stale one, superseded by a newer one, is ignored)."""
        if self._reopening is not waiter:
            waiter.set_exception(ChannelInvalidStateError("superseded by a newer reopening"))
            return
        self._restoring = False
        self._reopening = None
        if error is None and not self.is_closed:
            self._set_restored(True)
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(
                error if isinstance(error, Exception) else ChannelInvalidStateError("reopening cancelled")
            )

    async def _attempt(self, what: str, step: Callable[[], Awaitable[Any]], retry_locked: bool) -> None:
        """Run one restore step. When the broker refuses it (a channel error), log it and skip it from now
        on — except for a locked resource (an exclusive queue the lost connection still holds) with
        ``retry_locked``: the whole reconnection is tried again later.

        The refusal closed the channel, and with it the QoS and the consumers restored so far: the channel
        is reopened and :class:`_RestoreAgain` makes the restore start over (without the refused steps)."""
        if what in self._restore_refused:
            return
        try:
            await step()
        except ChannelClosed as error:
            if self._close_called:
                raise  # the user closed the channel meanwhile: it is not reopened
            if retry_locked and isinstance(error, ChannelLockedResource):
                raise
            log.error("Could not restore the %s on channel %s: %s", what, self, error)
            self._restore_refused.add(what)
            if self.is_closed:
                await Channel.reopen(self)
                raise _RestoreAgain() from None

    async def _restore_open(self, retry_locked: bool) -> None:
        """Reopen (same number, same confirm mode) and declare the exchanges and queues again (the first
        phase of a restore); when a refused step closed the channel, start again."""
        while True:
            try:
                await self._restore_declarations(retry_locked)
                return
            except _RestoreAgain:
                continue

    async def _restore_links(self, retry_locked: bool) -> None:
        """Bind the exchanges and queues again and restart the consumers (the second phase); when a refused
        step closed the channel, restore it again from the QoS on (consumers are per channel)."""
        while True:
            try:
                await self._restore_bindings_and_consumers(retry_locked)
                return
            except _RestoreAgain:
                await self._restore_open(retry_locked)

    async def _restore_declarations(self, retry_locked: bool) -> None:
        if self.is_closed:
            if self._close_called:
                raise ChannelInvalidStateError("The channel is closed")
            await Channel.reopen(self)
        if self._prefetch_count or self._prefetch_size or self._global_qos:
            count, size, global_ = self._prefetch_count, self._prefetch_size, self._global_qos
            await self._attempt("QoS", lambda: Channel.set_qos(self, count, size, global_), retry_locked)
        for exchanges in list(self._exchanges.values()):
            for exchange in exchanges:
                await self._attempt(
                    f"exchange {exchange.name!r}", exchange._restore_declaration, retry_locked
                )
        for queues in list(self._queues.values()):
            for queue in queues:
                await self._attempt(f"queue {queue.name!r}", queue._restore_declaration, retry_locked)

    async def _restore_bindings_and_consumers(self, retry_locked: bool) -> None:
        for exchanges in list(self._exchanges.values()):
            for exchange in exchanges:
                for what, step in exchange._restore_steps():
                    await self._attempt(what, step, retry_locked)
        for queues in list(self._queues.values()):
            for queue in queues:
                for what, step in queue._restore_steps():
                    await self._attempt(what, step, retry_locked)

    def _remember_exchange(self, exchange: RobustExchange) -> None:
        if exchange.name == "" and exchange is self.default_exchange:
            return
        known = self._exchanges.setdefault(exchange.name, [])
        if not any(item is exchange for item in known):
            known.append(exchange)

    def _forget_exchange(self, name: str) -> None:
        for exchange in self._exchanges.pop(name, ()):
            exchange._bindings.clear()  # as for a queue: declared again, it has none of its old bindings
        # The broker deleted the exchange's bindings with it, to and from it: an exchange of that name
        # declared again has none, and a reconnection must not bring them back.
        channels = getattr(self._connection, "_robust_channels", None) or [self]
        for channel in channels:
            for exchanges in channel._exchanges.values():
                for exchange in exchanges:
                    if exchange.name == name:
                        exchange._bindings.clear()
                    else:
                        _forget_bindings_from(exchange._bindings, name)
            for queues in channel._queues.values():
                for queue in queues:
                    _forget_bindings_from(queue._bindings, name)

    def _remember_queue(self, queue: RobustQueue) -> None:
        known = self._queues.setdefault(queue.name, [])
        if not any(item is queue for item in known):
            known.append(queue)

    def _forget_queue(self, name: str) -> None:
        for queue in self._queues.pop(name, ()):
            # The queue object may be declared again (and remembered again): without the old bindings,
            # which the broker deleted with the queue.
            queue._consumers.clear()
            queue._bindings.clear()

    # ---- the public methods wait while the channel is restored ---------------------------------------

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
        robust: bool = True,
    ) -> RobustExchange:
        """Declare an exchange; with ``robust`` (the default) it is declared again after a reconnection."""
        await self.ready(timeout)
        if passive and self._exchanges.get(name):
            return self._exchanges[name][0]
        exchange = await super().declare_exchange(
            name, type, durable=durable, auto_delete=auto_delete, internal=internal, passive=passive,
            arguments=arguments, timeout=timeout,
        )  # fmt: skip
        if robust:
            self._remember_exchange(exchange)  # type: ignore[arg-type]
        return exchange  # type: ignore[return-value]

    async def get_exchange(self, name: str, *, ensure: bool = True) -> RobustExchange:
        await self.ready()
        return await super().get_exchange(name, ensure=ensure)  # type: ignore[return-value]

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
        robust: bool = True,
    ) -> RobustQueue:
        """Declare a queue; with ``robust`` (the default) it is declared again after a reconnection, with
        its bindings and consumers. Without a name it gets one of the form ``amq_<hex>`` (as in aio-pika),
        kept across reconnections."""
        await self.ready(timeout)
        if passive and name and self._queues.get(name):
            return self._queues[name][0]
        queue = await super().declare_queue(
            name, durable=durable, exclusive=exclusive, passive=passive, auto_delete=auto_delete,
            arguments=arguments, timeout=timeout,
        )  # fmt: skip
        if robust:
            self._remember_queue(queue)  # type: ignore[arg-type]
        return queue  # type: ignore[return-value]

    async def get_queue(self, name: str, *, ensure: bool = True) -> RobustQueue:
        await self.ready()
        return await super().get_queue(name, ensure=ensure)  # type: ignore[return-value]

    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> commands.Basic.QosOk:
        """``Basic.Qos``; restored after a reconnection."""
        await self.ready(timeout)
        return await super().set_qos(prefetch_count, prefetch_size, global_, timeout, all_channels)

    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> commands.Queue.DeleteOk | None:
        await self.ready(timeout)
        result = await super().queue_delete(queue_name, timeout, if_unused, if_empty, nowait)
        self._forget_queue(queue_name)
        return result

    async def exchange_delete(
        self, exchange_name: str, timeout: TimeoutType = None, if_unused: bool = False, nowait: bool = False
    ) -> commands.Exchange.DeleteOk | None:
        await self.ready(timeout)
        result = await super().exchange_delete(exchange_name, timeout, if_unused, nowait)
        self._forget_exchange(exchange_name)
        return result

    async def flow(self, active: bool = True, timeout: TimeoutType = None) -> commands.Channel.FlowOk:
        await self.ready(timeout)
        return await super().flow(active, timeout)
