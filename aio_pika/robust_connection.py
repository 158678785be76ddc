"""A connection that reconnects, and restores its channels, when it is lost.

``connect_robust()`` makes a :class:`RobustConnection`. When the connection is lost — the broker closed it
(e.g. 320 CONNECTION_FORCED), it restarted, the network failed, heartbeats stopped — it reconnects every
``reconnect_interval`` seconds until it succeeds, then reopens every channel with the same number and
restores what was declared on it (QoS, publisher confirms, exchanges, queues, bindings, consumers with the
same callbacks and consumer tags), and then runs the ``reconnect_callbacks``. Closing it explicitly stops
all of that.

The reconnecting runs in one background task of the connection's backend (its task group under ``async
with``), so it works on every backend. See ``docs/robust.md``.
"""

from __future__ import annotations

import ssl
import warnings
from typing import Any, Literal

from yarl import URL

import backends

from .abc import AbstractRobustConnection, SSLOptions, TimeoutType
from .connection import (
    ConnectContext,
    Connection,
    ConnectionParameter,
    connect,
    parse_bool,
    parse_timeout,
)
from .exceptions import CONNECTION_EXCEPTIONS, ChannelInvalidStateError
from .exceptions import ConnectionClosed as ConnectionClosedError
from .log import get_logger
from .robust_channel import RobustChannel
from .tools import CallbackCollection, Deferred

log = get_logger(__name__)

__all__ = ("RobustConnection", "connect_robust")


class RobustConnection(Connection, AbstractRobustConnection):
    """A connection that reconnects and restores its state (see the module's documentation).

    :attr:`reconnect_interval` (URL parameter ``reconnect_interval``, default 5 s) is the pause before each
    reconnection attempt; with :attr:`fail_fast` (URL parameter ``fail_fast``, default true) the first
    connection attempt raises when it fails, otherwise ``connect`` retries until it succeeds.
    ``reconnect_callbacks`` run as ``callback(connection)`` after every successful reconnection.

    :attr:`is_closed` is true only once the connection was closed by the user (or the first attempt failed
    with ``fail_fast``), not while it is reconnecting: see :attr:`reconnecting` and :meth:`ready`.
    """

    CHANNEL_CLASS: type[RobustChannel] = RobustChannel
    PARAMETERS: tuple[ConnectionParameter, ...] = (
        *Connection.PARAMETERS,
        ConnectionParameter(name="reconnect_interval", parser=parse_timeout, default="5"),
        ConnectionParameter(name="fail_fast", parser=parse_bool, default="1"),
    )

    def __init__(
        self,
        url: str | URL | None = None,
        loop: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        client_properties: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, loop, ssl_context, client_properties, **kwargs)
        self.reconnect_interval: float = self.kwargs.pop("reconnect_interval") or 0
        self.fail_fast: bool = self.kwargs.pop("fail_fast")
        self.reconnect_callbacks = CallbackCollection(self)
        self.connection_attempt = 0  # successful connections so far
        self._robust_channels: list[RobustChannel] = []  # in creation order: restored in that order
        self._closing_for_good = False  # close() was called: never reconnect again
        self._ready_flag = False  # connected and restored
        self._ready_event: backends.Event | None = None  # set when ready (and on the final close)
        self._lost_event: backends.Event | None = None  # set when the connection is lost (and on close)
        self._final_event: backends.Event | None = None  # set once close() was called
        self._pause_waiter: backends.Waiter[Any] | None = None
        self._reconnecting = False
        self._supervising = False
        self._connect_timeout: TimeoutType = None

    def __repr__(self) -> str:
        return f'<{self.__class__.__name__}: "{self}" {len(self._robust_channels)} channels>'

    # ---- state --------------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once closed by the user (not while reconnecting)."""
        return self._closing_for_good and super().is_closed

    @property
    def reconnecting(self) -> bool:
        """True while the connection is lost and being re-established and restored."""
        return self._reconnecting

    async def ready(self) -> None:
        """Return once the connection is open and restored; raise if it was closed by the user."""
        while True:
            if self._closing_for_good:
                raise ChannelInvalidStateError("The connection is closed")
            if self._ready_flag and self.is_opened:
                return
            event = self._ready_event
            if event is None:
                raise ChannelInvalidStateError("The connection was never opened: call connect()")
            await event.wait()

    async def _wait_closed(self) -> Literal[True]:
        """What ``closed()`` and ``closing`` wait for: the final close, not a lost connection."""
        final = self._final_event
        if final is not None:
            await final.wait()
        return await super()._wait_closed()

    def _register_channel(self, channel: RobustChannel) -> None:
        if not any(item is channel for item in self._robust_channels):
            self._robust_channels.append(channel)

    def _unregister_channel(self, channel: RobustChannel) -> None:
        self._robust_channels = [item for item in self._robust_channels if item is not channel]

    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> RobustChannel:
        """A new channel (``await`` it). While reconnecting, opening it waits for the connection."""
        if self._closing_for_good:
            raise ChannelInvalidStateError("The connection is closed")
        if not self.connection_attempt:
            return super().channel(channel_number, publisher_confirms, on_return_raises)  # type: ignore[return-value]
        return self.CHANNEL_CLASS(
            connection=self,
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )

    # ---- connecting and reconnecting ----------------------------------------------------------------

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Connect (called by :func:`connect_robust`) and start watching the connection.

        With ``fail_fast`` (the default) a failed first attempt raises; without, it is retried every
        ``reconnect_interval`` seconds until it succeeds (or the connection is closed).
        """
        if self._closing_for_good:
            raise RuntimeError(f"{self!r} is closed")
        if self._supervising:
            await self.ready()
            return
        self._connect_timeout = timeout
        backend = self._ensure_backend()
        if not self._backend_started:
            backend.start_detached()  # the anyio backend refuses: use "async with connect_robust(...)"
            self._backend_started = True
            self._backend_detached = True
        if self._ready_event is None:
            self._ready_event = backend.create_event()
            self._lost_event = backend.create_event()
            self._final_event = backend.create_event()
        while True:
            try:
                await super().connect(timeout)
                break
            except CONNECTION_EXCEPTIONS as error:
                if self.fail_fast or self._closing_for_good:
                    await self.close()
                    raise
                log.warning(
                    'Connection attempt to "%s" failed: %s. Reconnecting after %r seconds.',
                    self, error, self.reconnect_interval,
                )  # fmt: skip
            except BaseException:
                await self.close()
                raise
            await self._pause()
            if self._closing_for_good:
                raise ChannelInvalidStateError("The connection was closed while connecting")
        self.connection_attempt += 1
        self._set_ready()
        self._supervising = True
        backend.spawn(self._supervise, name=f"aio_pika reconnector {self}")

    def _set_ready(self) -> None:
        self._ready_flag = True
        if self._ready_event is not None:
            self._ready_event.set()

    async def _pause(self) -> None:
        """Sleep ``reconnect_interval`` seconds; :meth:`close` wakes it."""
        backend = self._backend
        waiter = self._pause_waiter = backend.create_waiter()
        try:
            with backend.timeout(self.reconnect_interval):
                await waiter.wait()
        except TimeoutError:
            pass
        finally:
            self._pause_waiter = None

    async def _supervise(self) -> None:
        """The background task: wait for the connection to be lost, then reconnect and restore."""
        lost = self._lost_event
        assert lost is not None
        while not self._closing_for_good:
            await lost.wait()
            if self._closing_for_good:
                return
            self._reconnecting = True
            try:
                restored = await self._reconnect()
            finally:
                self._reconnecting = False
            if not restored:
                return
            self.connection_attempt += 1
            self._set_ready()
            log.info("Connection %s restored", self)
            await self.reconnect_callbacks()

    async def _reconnect(self) -> bool:
        """Reconnect and restore every channel, retrying until it works; False once closed by the user."""
        lost = self._lost_event
        assert lost is not None
        while True:
            await self._pause()
            if self._closing_for_good:
                return False
            lost.clear()
            try:
                await self._connect(self._connect_timeout)
                await self._restore_channels()
            except Exception as error:
                if self._closing_for_good:
                    return False
                log.warning(
                    'Reconnecting to "%s" failed: %s. Retrying after %r seconds.',
                    self, error or type(error).__name__, self.reconnect_interval,
                )  # fmt: skip
                self._drop(error)  # restoring failed on a live connection: start again from scratch
                continue
            if self.is_opened and not lost.is_set():
                return True

    async def _restore_channels(self) -> None:
        """Reopen every channel (same numbers) and restore it: first all the declarations, then all the
        bindings and consumers (a binding may need an exchange another channel declares)."""
        channels = [channel for channel in self._robust_channels if channel._should_restore()]
        restores = [(channel, channel._begin_restore()) for channel in channels]
        try:
            for phase in ("_restore_open", "_restore_links"):
                for channel in channels:
                    try:
                        await getattr(channel, phase)(retry_locked=True)
                    except Exception:
                        if channel._close_called:
                            continue  # the user closed it meanwhile: nothing to restore
                        raise
        except BaseException as error:
            for channel, waiter in restores:
                channel._end_restore(waiter, error)
            raise
        for channel, waiter in restores:
            channel._end_restore(waiter, None)
        for channel in channels:
            if not channel._close_called:
                await channel.reopen_callbacks()

    def _drop(self, reason: BaseException | None) -> None:
        """Give up the current connection now: its channels close and the reconnection starts."""
        stream = self._stream
        if self.is_opened:
            self._finalize_lost(reason)  # at once: a new attempt must not race the old stream's end
        if stream is not None:
            stream.abort()

    async def reconnect(self) -> None:
        """Drop the connection now and wait until it is re-established and restored."""
        if self._closing_for_good:
            raise ChannelInvalidStateError("The connection is closed")
        self._drop(None)
        await self.ready()

    def _on_connection_close(self, exc: BaseException | None) -> None:
        super()._on_connection_close(exc)
        self._ready_flag = False
        if self._ready_event is not None:
            self._ready_event.clear()
        if self._closing_for_good:
            self._final_close()
            return
        log.info("Connection to %s closed. Reconnecting after %r seconds.", self, self.reconnect_interval)
        if self._lost_event is not None:
            self._lost_event.set()

    # ---- closing --------------------------------------------------------------------------------------

    def close(self, exc: Any = ConnectionClosedError) -> Deferred:
        """Close the connection for good: no reconnection any more, the channels are not restored."""
        self._closing_for_good = True
        waiter = self._pause_waiter
        if waiter is not None:
            waiter.set_result(None)
        opened = self._opened
        if opened is not None and not opened.done() and not self.is_opened:
            opened.set_exception(ConnectionClosedError(200, "closed while reconnecting"))
        result = super().close(exc)
        self._final_close()
        return result

    def _final_close(self) -> None:
        self._ready_flag = False
        for event in (self._ready_event, self._lost_event, self._final_event):
            if event is not None:
                event.set()  # wake everyone: they see the connection is closed
        for channel in list(self._robust_channels):
            channel._on_final_close()


def connect_robust(
    url: str | URL | None = None,
    *,
    host: str = "localhost",
    port: int = 5672,
    login: str = "guest",
    password: str = "guest",
    virtualhost: str = "/",
    ssl: bool = False,
    loop: Any = None,
    ssl_options: SSLOptions | dict[str, Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: TimeoutType = None,
    client_properties: dict[str, Any] | None = None,
    connection_class: type[Connection] = RobustConnection,
    backend: str | backends.Backend | None = None,
    **kwargs: Any,
) -> ConnectContext:
    """Connect with automatic reconnection and state recovery: ``connection = await connect_robust(url)``,
    or ``async with connect_robust(url) as connection:`` (on every backend, trio included).

    Takes the arguments of :func:`aio_pika.connect`, plus (as keywords or URL query parameters)
    ``reconnect_interval`` (seconds, default 5) and ``fail_fast`` (default true: the first connection
    attempt raises when it fails; false: it is retried until it succeeds).
    """
    if loop is not None:
        warnings.warn(
            "the loop argument is deprecated and ignored: the running event loop is used",
            DeprecationWarning,
            stacklevel=2,
        )
    return connect(
        url, host=host, port=port, login=login, password=password, virtualhost=virtualhost, ssl=ssl,
        ssl_options=ssl_options, ssl_context=ssl_context, timeout=timeout,
        client_properties=client_properties, connection_class=connection_class, backend=backend, **kwargs,
    )  # fmt: skip
