"""Connections: URL and parameters, the transport, event dispatch, heartbeats and closing.

Data flows one way. The backend hands received bytes to :class:`_Protocol`, which feeds the sans-IO core and
dispatches the events it returns to channels, waiters and consumers, synchronously. User calls issue core
commands and call ``stream.wake_writer()``; the backend later pulls everything queued in one write.
"""

from __future__ import annotations

import base64
import ssl
import sys
import warnings
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from pamqp import commands
from yarl import URL

import amqp_core
import backends
from amqp_core import (
    AuthenticationRefused,
    BrokerClosedDuringHandshake,
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionLost,
    ConnectionOpened,
    ConnectionUnblocked,
    ConsumerCancelled,
    Delivery,
    GetOk,
    HandshakeError,
    HeartbeatTimeout,
    MechanismNotOffered,
    MethodReply,
    PublishConfirmed,
    RemoteProtocolError,
    Returned,
    SecretUpdated,
    WrongProtocol,
)

from .abc import AbstractConnection, SSLOptions, TimeoutType
from .channel import Channel
from .exceptions import (
    AMQPConnectionError,
    AMQPError,
    AuthenticationError,
    ChannelInvalidStateError,
    IncompatibleProtocolError,
    ProbableAuthenticationError,
    connection_closed_error,
)
from .exceptions import ConnectionClosed as ConnectionClosedError
from .log import get_logger
from .tools import CallbackCollection, CallbackResult, Completed, Deferred

log = get_logger(__name__)

__all__ = ("Connection", "ConnectionParameter", "connect", "make_url")

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
DEFAULT_CONNECT_TIMEOUT = 60.0
DEFAULT_HEARTBEAT = 60
CLOSE_TIMEOUT = 10.0  # how long close() waits for the broker's CloseOk before dropping the socket

# Connection states.
_NEW = "new"
_CONNECTING = "connecting"
_OPEN = "open"
_CLOSING = "closing"
_CLOSED = "closed"


# ---- parameters -----------------------------------------------------------------------------------------


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "enable", "on", "enabled", "1"):
        return True
    if text in ("false", "no", "n", "disable", "off", "disabled", "0", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"not an integer: {value!r}")
    if isinstance(value, int):
        return value
    return int(str(value).strip())


def parse_timeout(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a number of seconds: {value!r}")
    result = value if isinstance(value, int | float) else float(str(value).strip())
    if result < 0 or result != result:
        raise ValueError(f"not a number of seconds: {value!r}")
    return int(result) if float(result).is_integer() else result


@dataclass(frozen=True)
class ConnectionParameter:
    """A connection option read from the URL query (or a keyword argument), as in aio-pika."""

    name: str
    parser: Callable[[Any], Any]
    default: str | None = None
    is_kwarg: bool = False

    def parse(self, value: Any) -> Any:
        if value is None:
            value = self.default
            if value is None:
                return None
        try:
            return self.parser(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: invalid value {value!r}") from None


def _ranged_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        result = parse_int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}") from None
    if not low <= result <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return result


class _Settings:
    """Everything needed to open the connection, parsed and checked. The password never shows in repr."""

    __slots__ = (
        "auth",
        "cadata",
        "cafile",
        "capath",
        "certfile",
        "channel_max",
        "connect_timeout",
        "connection_name",
        "frame_max",
        "heartbeat",
        "host",
        "keyfile",
        "login",
        "password",
        "port",
        "ssl",
        "verify",
        "vhost",
    )

    auth: str
    cadata: bytes | None
    cafile: str | None
    capath: str | None
    certfile: str | None
    channel_max: int
    connect_timeout: float | None
    connection_name: str | None
    frame_max: int
    heartbeat: int
    host: str
    keyfile: str | None
    login: str
    password: str
    port: int
    ssl: bool
    verify: bool
    vhost: str

    def __repr__(self) -> str:
        return f"<_Settings {self.login}@{self.host}:{self.port} vhost={self.vhost!r}>"


_AUTH_MECHANISMS = {"plain": "PLAIN", "amqplain": "AMQPLAIN", "external": "EXTERNAL"}


def _parse_settings(url: URL, connect_timeout: TimeoutType) -> _Settings:
    settings = _Settings()
    scheme = (url.scheme or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"url: the scheme must be 'amqp' or 'amqps', not {scheme!r}")
    settings.ssl = scheme == "amqps"
    settings.host = url.host or "localhost"
    try:
        port = url.explicit_port
    except ValueError as error:
        raise ValueError(f"port: {error}") from None
    settings.port = port if port is not None else DEFAULT_PORTS[scheme]
    if not 0 < settings.port < 65536:
        raise ValueError(f"port must be from 1 to 65535, not {settings.port}")
    settings.login = url.user if url.user is not None else "guest"
    settings.password = url.password if url.password is not None else "guest"
    settings.vhost = unquote(url.raw_path[1:]) or "/"
    query = url.query
    settings.heartbeat = _ranged_int("heartbeat", query.get("heartbeat", DEFAULT_HEARTBEAT), 0, 65535)
    settings.frame_max = _ranged_int("frame_max", query.get("frame_max", 131072), 0, 2**32 - 1)
    if 0 < settings.frame_max < 4096:
        raise ValueError(f"frame_max must be 0 or at least 4096, not {settings.frame_max}")
    settings.channel_max = _ranged_int("channel_max", query.get("channel_max", 2047), 0, 65535)
    if connect_timeout is None:
        raw = query.get("connection_timeout", query.get("timeout"))
        try:
            connect_timeout = parse_timeout(raw) if raw is not None else DEFAULT_CONNECT_TIMEOUT
        except ValueError:
            raise ValueError(f"timeout must be a positive number of seconds, not {raw!r}") from None
    elif isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {type(connect_timeout).__name__}")
    if connect_timeout is not None and connect_timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {connect_timeout!r}")
    settings.connect_timeout = connect_timeout or None
    auth = query.get("auth", "plain").lower()
    if auth not in _AUTH_MECHANISMS:
        raise ValueError(f"auth must be one of plain, amqplain, external, not {auth!r}")
    settings.auth = _AUTH_MECHANISMS[auth]
    settings.connection_name = query.get("name")
    settings.cafile = query.get("cafile") or query.get("ca_certs")
    settings.capath = query.get("capath")
    cadata = query.get("cadata")
    try:
        settings.cadata = base64.b64decode(cadata) if cadata else None
    except ValueError:
        raise ValueError("cadata must be base64-encoded") from None
    settings.keyfile = query.get("keyfile")
    settings.certfile = query.get("certfile")
    try:
        no_verify = parse_bool(query.get("no_verify_ssl", "0"))
    except ValueError:
        raise ValueError(f"no_verify_ssl must be 0 or 1, not {query.get('no_verify_ssl')!r}") from None
    settings.verify = not no_verify and query.get("cert_reqs") not in ("0", str(int(ssl.CERT_NONE)))
    return settings


def make_url(
    url: str | URL | None = None,
    *,
    host: str = "localhost",
    port: int = 5672,
    login: str = "guest",
    password: str = "guest",
    virtualhost: str = "/",
    ssl: bool = False,
    ssl_options: SSLOptions | dict[str, Any] | None = None,
    client_properties: dict[str, Any] | None = None,
    **kwargs: Any,
) -> URL:
    """The broker URL from a URL (keyword arguments become query parameters) or from host, port, ….

    Raises ValueError/TypeError naming the parameter for invalid values.
    """
    if ssl_options is not None and not isinstance(ssl_options, Mapping):
        raise TypeError(f"ssl_options must be a dict, not {type(ssl_options).__name__}")
    if not isinstance(ssl, bool | int):
        raise TypeError(f"ssl must be a bool, not {type(ssl).__name__}")
    query: dict[str, Any] = {**kwargs, **(ssl_options or {})}
    query = {
        key: (int(value) if isinstance(value, bool) else value)
        for key, value in query.items()
        if value is not None
    }
    for key, value in list(query.items()):
        if not isinstance(value, str | int | float):
            raise TypeError(f"{key} must be a str or a number, not {type(value).__name__}")
    if url is not None:
        if not isinstance(url, str | URL):
            raise TypeError(f"url must be a str or a yarl.URL, not {type(url).__name__}")
        try:
            parsed = URL(url)
        except ValueError as error:
            what = "port" if "port" in str(error).lower() else "url"
            raise ValueError(f"{what}: {error} (in the url)") from None
        if not parsed.is_absolute():
            raise ValueError("url must be absolute, like amqp://user:password@host:5672/vhost")
        return parsed.update_query(query) if query else parsed
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty str, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, not {port}")
    for name, value in (("login", login), ("password", password), ("virtualhost", virtualhost)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return URL.build(
        scheme="amqps" if ssl else "amqp",
        host=host,
        port=port,
        user=login,
        password=password,
        path="/" + virtualhost,
        query=query,
    )


def _masked(url: URL) -> URL:
    return url.with_password("******") if url.password is not None else url


# ---- the protocol the backend drives --------------------------------------------------------------------


class _Protocol:
    """The StreamProtocol handed to the backend for one transport: bytes in, events out, bytes to send."""

    __slots__ = ("connection", "core", "stream", "time")

    def __init__(self, connection: Connection, core: amqp_core.Connection, time: Callable[[], float]) -> None:
        self.connection = connection
        self.core = core
        self.time = time
        self.stream: backends.Stream | None = None

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection._protocol is not self:
            return
        try:
            events = self.core.receive_data(data, self.time())
        except HandshakeError as error:
            connection._on_handshake_error(error)
            return
        except RemoteProtocolError as error:
            connection._on_protocol_error(error)
            return
        except Exception as error:  # a bug: never let it escape into the backend's reader
            log.exception("Failed to process data from the broker")
            connection._on_protocol_error(error)
            return
        if events:
            connection._dispatch(events)
        if self.core.has_data_to_send:
            stream = self.stream
            if stream is not None:
                stream.wake_writer()  # replies the core queued while receiving (handshake, CloseOk, FlowOk…)

    def data_to_send(self) -> list[bytes | memoryview]:
        data = self.core.data_to_send_pieces(self.time())
        connection = self.connection
        if connection._unflushed:
            connection._unflushed = 0
            waiter, connection._flushed = connection._flushed, None
            if waiter is not None:
                waiter.set_result(None)  # publishers held back by the write buffer may go on
        return data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connection._on_transport_lost(self, exc)


# ---- the connection -------------------------------------------------------------------------------------


class _ClosedFuture:
    """What aio-pika 1.x passed to ``add_close_callback`` callbacks: a finished future."""

    __slots__ = ("_exc",)

    def __init__(self, exc: BaseException | None) -> None:
        self._exc = exc

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def result(self) -> str:
        if self._exc is not None:
            raise self._exc
        return "Normal shutdown"

    def exception(self) -> BaseException | None:
        return self._exc

    def __repr__(self) -> str:
        if self._exc is not None:
            return f"<Future finished exception={self._exc!r}>"
        return "<Future finished result='Normal shutdown'>"


class Connection(AbstractConnection):
    """A connection to the broker. Use :func:`connect`; channels come from :meth:`channel`."""

    CHANNEL_CLASS: type[Channel] = Channel
    #: Publishers wait for the backend to take the queued data once this many body bytes are unwritten
    #: (the backend stops taking data while the socket is not writable: that is the back-pressure).
    WRITE_BUFFER_LIMIT = 4 * 1024 * 1024
    PARAMETERS: tuple[ConnectionParameter, ...] = (
        ConnectionParameter(name="interleave", parser=parse_int, is_kwarg=True),
        ConnectionParameter(name="happy_eyeballs_delay", parser=float, is_kwarg=True),
    )

    def __init__(
        self,
        url: str | URL | None = None,
        loop: Any = None,
        ssl_context: ssl.SSLContext | None = None,
        client_properties: dict[str, Any] | None = None,
        *,
        backend: str | backends.Backend | None = None,
        timeout: TimeoutType = None,
        **kwargs: Any,
    ) -> None:
        if loop is not None:
            warnings.warn(
                "the loop argument is deprecated and ignored: the running event loop is used",
                DeprecationWarning,
                stacklevel=2,
            )
        if url is None or kwargs.keys() & {
            "host",
            "port",
            "login",
            "password",
            "virtualhost",
            "virtual_host",
        }:
            # aio-pika 1.x: Connection(host=..., port=..., login=..., password=..., virtual_host=...)
            if "virtual_host" in kwargs:
                kwargs["virtualhost"] = kwargs.pop("virtual_host")
            url = make_url(url, **kwargs)
            kwargs = {}
        else:
            url = make_url(url)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}")
        if client_properties is not None and not isinstance(client_properties, dict):
            raise TypeError(f"client_properties must be a dict, not {type(client_properties).__name__}")
        if backend is not None and not isinstance(backend, str | backends.Backend):
            raise TypeError(
                f"backend must be None, 'asyncio', 'anyio' or a Backend, not {type(backend).__name__}"
            )
        if isinstance(backend, str) and backend not in ("asyncio", "anyio"):
            raise ValueError(f"backend must be None, 'asyncio' or 'anyio', not {backend!r}")

        self._settings = _parse_settings(url, timeout)
        self.url = _masked(url)  # never the password: see _settings
        self.kwargs: dict[str, Any] = self._parse_parameters(
            {**dict(url.query), **{key: value for key, value in kwargs.items() if value is not None}}
        )
        self.ssl_context = ssl_context
        self._client_properties = dict(client_properties or {})
        self._backend_choice = backend
        self._backend: backends.Backend = backend if isinstance(backend, backends.Backend) else None  # type: ignore[assignment]
        self._backend_started = isinstance(backend, backends.Backend)
        self._backend_detached = False  # we started it with start_detached: close() closes it

        self._state = _NEW
        self._core: amqp_core.Connection = None  # type: ignore[assignment]
        self._protocol: _Protocol | None = None
        self._stream: backends.Stream | None = None
        self._wake: Callable[[], None] = _nothing
        self._wake_batched: Callable[[], None] = _nothing
        self._channels: dict[int, Channel] = {}
        self._opened: backends.Waiter[Any] | None = None
        self._closed_event: backends.Event | None = None
        self._heartbeat_waiter: backends.Waiter[Any] | None = None
        self._secret_waiters: deque[Any] = deque()
        self._close_called = False
        self._close_exc: BaseException | None = None  # why it closed (None: closed by the user)
        self._closing_callbacks: list[backends.Waiter[Any]] | None = None
        self.close_callbacks = CallbackCollection(self)
        self.server_properties: dict[str, Any] = {}
        self.heartbeat = 0
        self.blocked: str | None = None  # the reason while the broker blocks our publishers
        # Back-pressure for publishers: bytes published since the backend last pulled data_to_send(), and
        # the waiter publishers share once that passes WRITE_BUFFER_LIMIT (set by the next pull).
        self._unflushed = 0
        self._flushed: backends.Waiter[Any] | None = None

    @classmethod
    def _parse_parameters(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        result = {}
        for parameter in cls.PARAMETERS:
            value = kwargs.get(parameter.name, parameter.default)
            if parameter.is_kwarg and value is None:
                continue
            result[parameter.name] = parameter.parse(value)
        return result

    def __str__(self) -> str:
        return str(self.url)

    def __repr__(self) -> str:
        return f'<{self.__class__.__name__}: "{self}">'

    # ---- state --------------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the connection is closed (by the user, the broker, or a lost transport)."""
        return self._state is _CLOSED

    @property
    def is_opened(self) -> bool:
        return self._state is _OPEN

    @property
    def close_called(self) -> bool:
        return self._close_called

    @property
    def transport(self) -> backends.Stream | None:
        """The backend stream while connected, else None."""
        return self._stream if self._state is _OPEN else None

    @property
    def backend(self) -> backends.Backend | None:
        return self._backend

    def _flush_waiter(self) -> backends.Waiter[Any]:
        """The waiter set when the backend next takes the queued data (shared by every publisher)."""
        waiter = self._flushed
        if waiter is None:
            waiter = self._flushed = self._backend.create_waiter()
        return waiter

    def _require_core(self) -> amqp_core.Connection:
        if self._state is not _OPEN:
            if self._state is _NEW or self._state is _CONNECTING:
                raise ChannelInvalidStateError("The connection is not open yet")
            reason = self._close_exc
            raise ChannelInvalidStateError(
                f"The connection is closed: {reason}" if reason is not None else "The connection is closed"
            )
        return self._core

    # ---- connecting ---------------------------------------------------------------------------------

    def _ensure_backend(self) -> backends.Backend:
        if self._backend is None:
            choice = self._backend_choice
            self._backend = backends.create_backend(choice if isinstance(choice, str) else None)
        return self._backend

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Open the connection (called by :func:`connect`). Without ``async with`` this starts the backend
        detached, which only the asyncio backend supports."""
        if self._state is _OPEN:
            return
        backend = self._ensure_backend()
        if not self._backend_started:
            backend.start_detached()
            self._backend_started = True
            self._backend_detached = True
        await self._connect(timeout)
        await self._on_connected()

    async def _on_connected(self) -> None:
        """Called once the connection is open; a hook for subclasses."""

    def _ssl_context(self) -> ssl.SSLContext | None:
        settings = self._settings
        if not settings.ssl:
            return None
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=settings.cafile, capath=settings.capath, cadata=settings.cadata
        )
        if settings.certfile:
            context.load_cert_chain(settings.certfile, settings.keyfile)
        if not settings.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _connect(self, timeout: TimeoutType = None) -> None:
        settings = self._settings
        backend = self._backend
        properties = dict(self._client_properties)
        if settings.connection_name and "connection_name" not in properties:
            properties["connection_name"] = settings.connection_name
        core = amqp_core.Connection(
            username=settings.login,
            password=settings.password,
            virtual_host=settings.vhost,
            auth_mechanism=settings.auth,
            client_properties=properties,
            heartbeat=settings.heartbeat,
            frame_max=settings.frame_max,
            channel_max=settings.channel_max,
        )
        protocol = _Protocol(self, core, backend.time)
        self._core = core
        self._protocol = protocol
        self._state = _CONNECTING
        self._close_exc = None
        self._close_called = False
        self._channels = {}
        self._opened = opened = backend.create_waiter()
        self._closed_event = backend.create_event()
        if timeout is None:
            timeout = settings.connect_timeout
        address = f"{settings.host}:{settings.port}"
        log.debug("Connecting to %s", self)
        try:
            context = self._ssl_context()
            with backend.timeout(timeout):
                stream = await backend.connect_tcp(
                    settings.host,
                    settings.port,
                    protocol,
                    ssl_context=context,
                    server_hostname=settings.host if context is not None else None,
                )
                protocol.stream = self._stream = stream
                self._wake = stream.wake_writer
                self._wake_batched = stream.wake_writer_batched
                core.initiate(backend.time())
                stream.wake_writer()
                await opened.wait()
        except BaseException as error:
            if self._state is _OPEN:  # opened just as the wait was cancelled or timed out
                self._state = _CONNECTING
            self._abort_connect()
            if isinstance(error, AMQPError):
                raise
            if isinstance(error, TimeoutError):
                raise TimeoutError(f"connecting to {address} timed out after {timeout} s") from None
            if isinstance(error, ssl.SSLError):
                raise AMQPConnectionError(f"TLS handshake with {address} failed: {error}") from error
            if isinstance(error, ConnectionRefusedError):
                raise AMQPConnectionError(
                    f"connection refused by {address}: nothing listens there"
                ) from error
            if isinstance(error, OSError) and error.__class__.__name__ == "gaierror":
                raise AMQPConnectionError(
                    f"cannot resolve host {settings.host!r}: {error.strerror}"
                ) from error
            if isinstance(error, OSError):
                raise AMQPConnectionError(
                    f"cannot connect to {address}: {error.strerror or error}"
                ) from error
            raise
        self._state = _OPEN
        log.debug("Connected to %s", self)

    def _abort_connect(self) -> None:
        if self._opened is not None:
            self._opened.set_exception(AMQPConnectionError("the connection was closed while it was opening"))
        stream, self._stream = self._stream, None
        self._protocol = None
        self._wake = self._wake_batched = _nothing
        if self._state is _CONNECTING:
            self._state = _CLOSED
            if self._closed_event is not None:
                self._closed_event.set()
        if stream is not None:
            stream.abort()

    def _on_handshake_error(self, error: HandshakeError) -> None:
        if isinstance(error, AuthenticationRefused):
            if isinstance(error, MechanismNotOffered):
                exc: AMQPError = AuthenticationError(error.reason)
            else:
                exc = ProbableAuthenticationError(error.reason)
        elif isinstance(error, WrongProtocol):
            exc = IncompatibleProtocolError(str(error))
        elif isinstance(error, BrokerClosedDuringHandshake):
            exc = connection_closed_error(error.reply_code, error.reason)
        else:
            exc = AMQPConnectionError(str(error))
        if self._opened is not None:
            self._opened.set_exception(exc)
        stream = self._stream
        if stream is not None:
            stream.abort()

    # ---- events -------------------------------------------------------------------------------------

    def _dispatch(self, events: list[Any]) -> None:
        """Route the core's events to channels, waiters and consumers (synchronously, in order)."""
        channels = self._channels
        for event in events:
            kind = type(event)
            try:
                if kind is Delivery:
                    channels[event.channel]._on_delivery(event)
                elif kind is PublishConfirmed:
                    channels[event.channel]._on_confirm(event)
                elif kind is MethodReply:
                    channels[event.channel]._on_reply(event.method)
                elif kind is GetOk:
                    channels[event.channel]._on_reply(event)
                elif kind is Returned:
                    channels[event.channel]._on_return(event)
                else:
                    self._on_rare_event(event)
            except KeyError:
                log.warning("Failed to route %r (unknown channel?)", event, exc_info=True)
            except Exception:
                log.exception("Failed to handle %r", event)

    def _on_rare_event(self, event: Any) -> None:
        kind = type(event)
        channels = self._channels
        if kind is ChannelOpened:
            channels[event.channel]._on_opened()
        elif kind is ChannelClosed:
            channel = channels.get(event.channel)
            if channel is not None:
                channel._on_closed(event.reply_code, event.reply_text, event.by_peer)
        elif kind is ConsumerCancelled:
            channels[event.channel]._on_consumer_cancelled(event.consumer_tag)
        elif kind is ChannelFlow:
            channels[event.channel]._on_flow(event.active)
        elif kind is ConnectionOpened:
            self.server_properties = dict(event.server_properties)
            self.heartbeat = event.heartbeat
            self._state = _OPEN
            if self._opened is not None:
                self._opened.set_result(event)
            if event.heartbeat:
                self._backend.spawn(self._heartbeat_loop, self._core, name="aio_pika heartbeat")
        elif kind is ConnectionClosed:
            if event.by_peer:
                error: AMQPConnectionError = connection_closed_error(event.reply_code, event.reply_text)
                log.warning("The broker closed the connection %s: %s", self, error)
                self._finalize(error, error)
            else:
                self._finalize(ConnectionClosedError(event.reply_code, event.reply_text), None)
            stream = self._stream
            if stream is not None:
                stream.close()
        elif kind is ConnectionLost:
            self._finalize_lost(None)
        elif kind is HeartbeatTimeout:
            error = AMQPConnectionError(
                f"no data from the broker for {event.silence:.1f} s (heartbeat timeout): connection dead"
            )
            log.warning("Connection %s: %s", self, error)
            self._finalize(error, error)
            stream = self._stream
            if stream is not None:
                stream.abort()
        elif kind is ConnectionBlocked:
            self.blocked = event.reason or "blocked"
            log.warning("The broker blocked connection %s: %s", self, event.reason)
        elif kind is ConnectionUnblocked:
            self.blocked = None
            log.info("The broker unblocked connection %s", self)
        elif kind is SecretUpdated:
            if self._secret_waiters:
                self._secret_waiters.popleft().set_result(commands.Connection.UpdateSecretOk())
        else:
            log.debug("Unhandled event %r", event)

    def _on_protocol_error(self, error: Exception) -> None:
        code = getattr(error, "reply_code", 541)
        exc = connection_closed_error(code, str(error))
        log.error("Protocol error on connection %s: %s", self, error)
        if self._state is _CONNECTING and self._opened is not None:
            self._opened.set_exception(exc)
        self._finalize(exc, exc)
        stream = self._stream
        if stream is not None:
            stream.close()  # flushes the Connection.Close the core queued

    def _on_transport_lost(self, protocol: _Protocol, exc: BaseException | None) -> None:
        if protocol is not self._protocol:
            return
        self._stream = None
        self._wake = self._wake_batched = _nothing
        core = protocol.core
        try:
            events = core.receive_eof()
        except HandshakeError as error:
            self._on_handshake_error(error)
            return
        if self._state is _CONNECTING and self._opened is not None:
            self._opened.set_exception(
                AMQPConnectionError("the broker closed the connection during the handshake")
            )
            return
        if events:
            self._dispatch(events)
        self._finalize_lost(exc)

    def _finalize_lost(self, exc: BaseException | None) -> None:
        if self._state is _CLOSED:
            return
        settings = self._settings
        detail = f": {exc}" if exc is not None else ""
        error = AMQPConnectionError(f"the connection to {settings.host}:{settings.port} was lost{detail}")
        if self._state is _CLOSING and self._close_called:
            # We were closing anyway: the broker dropped the socket instead of sending CloseOk.
            self._finalize(ConnectionClosedError(200, "Normal shutdown"), None)
            return
        log.warning("Connection %s: %s", self, error)
        self._finalize(error, error)

    def _finalize(self, exc: BaseException, reason: BaseException | None) -> None:
        """The connection is over: fail every waiter, close every channel, run the close callbacks.

        ``exc`` is what pending operations raise; ``reason`` is None when the user closed the connection.
        """
        if self._state is _CLOSED:
            return
        self._state = _CLOSED
        self._close_exc = reason
        self._wake = self._wake_batched = _nothing
        if self._opened is not None:
            self._opened.set_exception(exc)
        waiter, self._heartbeat_waiter = self._heartbeat_waiter, None
        if waiter is not None:
            waiter.set_result(None)
        secrets, self._secret_waiters = self._secret_waiters, deque()
        flushed, self._flushed = self._flushed, None
        if flushed is not None:
            secrets.append(flushed)
        for waiter in secrets:
            waiter.set_exception(exc)
        channels, self._channels = self._channels, {}
        for channel in list(channels.values()):
            channel._on_connection_closed(exc, reason)
        if self._closed_event is not None:
            self._closed_event.set()
        self._run_in_background(self.close_callbacks(reason))
        self._on_connection_close(reason)

    def _on_connection_close(self, exc: BaseException | None) -> None:
        """Called once the connection closed (``exc`` is None when the user closed it); a subclass hook."""

    def _run_in_background(self, result: CallbackResult | Completed | Any) -> backends.Waiter[Any] | None:
        """Run the coroutines some callbacks returned, in a task; the waiter is set when they are done.

        While the user closes the connection, ``close()`` waits for them too.
        """
        if not isinstance(result, CallbackResult) or not result.awaitables:
            return None
        waiter = self._backend.create_waiter()
        if self._closing_callbacks is not None:
            self._closing_callbacks.append(waiter)
        try:
            self._backend.spawn(_await, result, waiter, name="aio_pika callbacks")
        except RuntimeError:
            log.warning("Callbacks not run, the connection's backend is closed: %r", result.awaitables)
            result.close()
            waiter.set_result(None)
        return waiter

    async def _heartbeat_loop(self, core: amqp_core.Connection) -> None:
        backend = self._backend
        while self._core is core and self._state in (_OPEN, _CLOSING):
            deadline = core.next_timer()
            if deadline is None:
                return
            delay = deadline - backend.time()
            if delay > 0:
                waiter = self._heartbeat_waiter = backend.create_waiter()
                try:
                    with backend.timeout(delay):
                        await waiter.wait()
                except TimeoutError:
                    pass
                if self._core is not core or self._state not in (_OPEN, _CLOSING):
                    return
            events = core.handle_timer(backend.time())
            self._wake()
            if events:
                self._dispatch(events)

    # ---- commands -----------------------------------------------------------------------------------

    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> Channel:
        """A new channel: ``await`` it (or ``async with`` it) to open it."""
        if self._state is not _OPEN:
            self._require_core()
        log.debug("Creating AMQP channel for connection: %r", self)
        return self.CHANNEL_CLASS(
            connection=self,
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )

    async def ready(self) -> None:
        """Return once the connection is open."""
        if self._state is _OPEN:
            return
        if self._opened is None:
            raise ChannelInvalidStateError("The connection was never opened: call connect()")
        await self._opened.wait()

    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> commands.Connection.UpdateSecretOk:
        """Replace the password/token of the open connection (``Connection.UpdateSecret``)."""
        if not isinstance(new_secret, str):
            raise TypeError(f"new_secret must be a str, not {type(new_secret).__name__}")
        core = self._require_core()
        core.update_secret(new_secret, reason)
        waiter = self._backend.create_waiter()
        self._secret_waiters.append(waiter)
        self._wake()
        with self._backend.timeout(timeout):
            result: commands.Connection.UpdateSecretOk = await waiter.wait()
        self._settings.password = new_secret
        return result

    def close(self, exc: Any = ConnectionClosedError) -> Deferred:
        """Close the connection and its channels.

        The closing handshake starts at once, so a call without ``await`` (aio-pika 1.x style) closes the
        connection too; awaiting the result waits for the broker's ``CloseOk`` and the close callbacks.
        """
        self._close_called = True
        if self._state is _OPEN:
            self._state = _CLOSING
            self._closing_callbacks = []
            try:
                self._core.close()
            except amqp_core.AMQPCoreError:
                self._finalize(ConnectionClosedError(200, "Normal shutdown"), None)
            self._wake()
        elif self._state in (_NEW, _CONNECTING):
            self._closing_callbacks = []
            self._abort_connect()
            self._state = _CLOSED
        return Deferred(self._complete_close)

    async def _complete_close(self) -> None:
        pending = self._closing_callbacks
        try:
            if self._state is _CLOSING and self._closed_event is not None:
                try:
                    with self._backend.timeout(CLOSE_TIMEOUT):
                        await self._closed_event.wait()
                except TimeoutError:
                    log.warning("The broker did not confirm closing %s in %s s", self, CLOSE_TIMEOUT)
                    stream = self._stream
                    self._finalize(ConnectionClosedError(200, "Normal shutdown"), None)
                    if stream is not None:
                        stream.abort()
            while pending:
                await pending.pop(0).wait()
        finally:
            if self._closing_callbacks is pending:
                self._closing_callbacks = None
            if self._backend_detached and self._backend is not None:
                self._backend_detached = False
                self._backend_started = False
                await self._backend.aclose()

    def closed(self) -> Any:
        """An awaitable that completes once the connection is closed."""
        return self._wait_closed()

    async def _wait_closed(self) -> Literal[True]:
        event = self._closed_event
        if event is not None and not event.is_set():
            await event.wait()
        return True

    @property
    def closing(self) -> Any:
        """aio-pika 1.x: an awaitable that completes once the connection is closed."""
        return self._wait_closed()

    def add_close_callback(self, callback: Callable[[Any], Any]) -> None:
        """aio-pika 1.x: ``callback(future)`` once the connection is closed (a finished future-like object:
        ``result()`` is ``'Normal shutdown'``, or raises the error that closed it)."""
        self.close_callbacks.add(_OldStyleCloseCallback(callback))

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        await self.close()


class _OldStyleCloseCallback:
    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[Any], Any]) -> None:
        self.callback = callback

    def __call__(self, sender: Any, exc: BaseException | None) -> Any:
        return self.callback(_ClosedFuture(exc))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OldStyleCloseCallback) and other.callback == self.callback

    def __hash__(self) -> int:
        return hash(self.callback)


def _nothing() -> None:
    return None


async def _await(result: CallbackResult, waiter: backends.Waiter[Any]) -> None:
    try:
        await result
    finally:
        waiter.set_result(None)


# ---- connect() ------------------------------------------------------------------------------------------


class ConnectContext:
    """What :func:`connect` returns: ``await`` it, or use it as ``async with connect(...) as connection:``.

    ``await`` starts the backend detached (the asyncio backend only); ``async with`` runs the backend's task
    group around the block (any backend, including trio) and closes the connection on exit.
    """

    __slots__ = ("_backend_entered", "_connection", "_coroutine", "_factory", "_timeout")

    def __init__(self, factory: Callable[[], Connection], timeout: TimeoutType) -> None:
        self._factory = factory
        self._timeout = timeout
        self._coroutine: Coroutine[Any, Any, Connection] | None = None
        self._connection: Connection | None = None
        self._backend_entered = False

    async def _connect(self) -> Connection:
        connection = self._factory()
        await connection.connect(timeout=self._timeout)
        return connection

    # Awaitable (and a Coroutine, so that asyncio.create_task(connect(...)) works).
    def __await__(self) -> Generator[Any, None, Connection]:
        if self._coroutine is None:
            self._coroutine = self._connect()
        return self._coroutine.__await__()

    def send(self, value: Any) -> Any:
        if self._coroutine is None:
            self._coroutine = self._connect()
        return self._coroutine.send(value)

    def throw(self, *args: Any) -> Any:
        if self._coroutine is None:
            self._coroutine = self._connect()
        return self._coroutine.throw(*args)

    def close(self) -> None:
        if self._coroutine is not None:
            self._coroutine.close()

    async def __aenter__(self) -> Connection:
        connection = self._connection = self._factory()
        backend = connection._ensure_backend()
        if not connection._backend_started:
            await backend.__aenter__()
            connection._backend_started = True
            self._backend_entered = True
        try:
            await connection.connect(timeout=self._timeout)
        except BaseException:
            if self._backend_entered:
                self._backend_entered = False
                connection._backend_started = False
                await backend.__aexit__(*sys.exc_info())
            raise
        return connection

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool | None:
        connection = self._connection
        assert connection is not None
        entered, self._backend_entered = self._backend_entered, False
        try:
            await connection.close()
        except BaseException:
            if entered:
                connection._backend_started = False
                await connection._backend.__aexit__(*sys.exc_info())
            raise
        if entered:
            connection._backend_started = False
            return await connection._backend.__aexit__(exc_type, exc_val, exc_tb)
        return None


def _register_coroutine() -> None:
    from collections.abc import Coroutine

    Coroutine.register(ConnectContext)


_register_coroutine()


def connect(
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
    connection_class: type[Connection] = Connection,
    backend: str | backends.Backend | None = None,
    **kwargs: Any,
) -> ConnectContext:
    """Connect: ``connection = await connect(url)``, or ``async with connect(url) as connection:``.

    :param url: ``amqp://login:password@host:port/vhost?heartbeat=60&name=…`` (``amqps://`` for TLS).
        Without it, ``host``, ``port``, ``login``, ``password``, ``virtualhost`` and ``ssl`` are used.
    :param timeout: how long connecting (TCP, TLS and the AMQP handshake) may take, in seconds.
    :param loop: ignored (deprecated): the running event loop is used.
    :param connection_class: the class to instantiate (a :class:`Connection` subclass).
    :param backend: ``None`` (the native asyncio backend on asyncio, the anyio backend on trio),
        ``"asyncio"``, ``"anyio"``, or a started :class:`backends.Backend` the caller manages.
    :param kwargs: further URL query parameters (``heartbeat``, ``frame_max``, ``channel_max``, ``name``, …).
    """
    if loop is not None:
        warnings.warn(
            "the loop argument is deprecated and ignored: the running event loop is used",
            DeprecationWarning,
            stacklevel=2,
        )
    if client_properties is not None and not isinstance(client_properties, dict):
        raise TypeError(f"client_properties must be a dict, not {type(client_properties).__name__}")
    if ssl_options is not None and not isinstance(ssl_options, Mapping):
        raise TypeError(f"ssl_options must be a dict, not {type(ssl_options).__name__}")
    if ssl_options:
        ssl_options = _normalise_ssl_options(ssl_options)
    full_url = make_url(
        url, host=host, port=port, login=login, password=password, virtualhost=virtualhost, ssl=ssl,
        ssl_options=ssl_options, **kwargs,
    )  # fmt: skip
    if not (isinstance(connection_class, type) and issubclass(connection_class, Connection)):
        raise TypeError(f"connection_class must be a Connection subclass, not {connection_class!r}")

    def factory() -> Connection:
        return connection_class(
            full_url,
            ssl_context=ssl_context,
            client_properties=client_properties,
            backend=backend,
            timeout=timeout,
            **kwargs,
        )

    factory()  # validate every argument now, before anything is awaited
    return ConnectContext(factory, timeout)


def _normalise_ssl_options(options: SSLOptions | dict[str, Any]) -> dict[str, Any]:
    """pika-style TLS options (ca_certs, cert_reqs) in the names the URL uses."""
    result = dict(options)
    if "ca_certs" in result:
        result.setdefault("cafile", result.pop("ca_certs"))
    if "cert_reqs" in result and result.pop("cert_reqs") == ssl.CERT_NONE:
        result["no_verify_ssl"] = 1
    result.pop("ssl_version", None)
    return result
