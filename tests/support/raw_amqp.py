"""A tiny blocking driver for :class:`amqp_core.Connection`: enough to poke a broker from a test.

No backend, no event loop: one (optionally TLS) socket, and :meth:`BlockingAMQP.wait_for`, which sends what
the connection queued and reads until an event matches. Every event received is also kept in
:attr:`BlockingAMQP.events`, so a test can look for notifications (``ConnectionBlocked``, …) afterwards::

    with BlockingAMQP(node.host, node.amqp_port) as amqp:
        channel = amqp.open_channel()
        amqp.connection.queue_declare(channel, "q", durable=True)
        amqp.wait_for(reply(commands.Queue.DeclareOk))

(``tests/core/capture_recordings.py`` has a similar driver, tied to the shared broker and to recording.)
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar

from amqp_core import (
    ChannelOpened,
    Connection,
    ConnectionClosed,
    ConnectionOpened,
    ConnectionState,
    Event,
    MethodReply,
)

__all__ = ["BlockingAMQP", "reply"]

E = TypeVar("E")


def reply(method: type) -> Callable[[Event], bool]:
    """A predicate for :meth:`BlockingAMQP.wait_for`: a MethodReply carrying ``method`` (e.g. DeclareOk)."""
    return lambda event: isinstance(event, MethodReply) and isinstance(event.method, method)


class BlockingAMQP:
    """One AMQP connection over a blocking socket (TLS when ``ssl_context`` is given).

    :param host: address to connect to.
    :param port: AMQP (or AMQPS) port.
    :param ssl_context: wrap the socket in TLS with this context; the handshake happens in the constructor,
        so certificate verification errors (:class:`ssl.SSLCertVerificationError`) are raised from it.
    :param server_hostname: name to verify the server certificate against (default: ``host``).
    :param timeout: seconds any single wait may take.
    :param connection_options: passed to :class:`amqp_core.Connection` (``auth_mechanism``, ``username``,
        ``client_properties``, …).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        **connection_options: Any,
    ) -> None:
        self.timeout = timeout
        self.connection = Connection(**connection_options)
        self.events: list[Event] = []  # everything received, in order
        self.opened: ConnectionOpened | None = None  # set by open()
        self._backlog: list[Event] = []  # received but not yet returned by wait_for
        sock = socket.create_connection((host, port), timeout=timeout)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.eof = False

    # ---- driving ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Send whatever the connection has queued."""
        data = self.connection.data_to_send(time.monotonic())
        if data:
            self.sock.sendall(data)

    def wait_for(self, predicate: type[E] | Callable[[Event], bool], timeout: float | None = None) -> Any:
        """Flush, then read until an event matches ``predicate`` (an event class or a callable); return it.

        Events before it are dropped from the backlog (they stay in :attr:`events`).

        :raises TimeoutError: nothing matched in time.
        :raises ConnectionError: the socket closed first.
        """
        match = (lambda event: isinstance(event, predicate)) if isinstance(predicate, type) else predicate
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for index, event in enumerate(self._backlog):
                if match(event):
                    del self._backlog[: index + 1]
                    return event
            self.flush()
            if self.eof:
                raise ConnectionError(f"the socket is closed; events: {self.events}")
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no matching event in time; events: {self.events}")
            wake = deadline
            timer = self.connection.next_timer()
            if timer is not None:
                wake = min(wake, timer)
            self.sock.settimeout(max(0.01, wake - now))
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                self._received(self.connection.handle_timer(time.monotonic()))
                continue
            except (ConnectionResetError, ssl.SSLEOFError):
                data = b""
            if not data:
                self.eof = True
                self._received(self.connection.receive_eof())
            else:
                self._received(self.connection.receive_data(data, time.monotonic()))

    def _received(self, events: list[Event]) -> None:
        self.events += events
        self._backlog += events

    # ---- conveniences -----------------------------------------------------------------------------

    def open(self) -> ConnectionOpened:
        """Run the handshake; returns the ConnectionOpened event."""
        self.connection.initiate(time.monotonic())
        opened: ConnectionOpened = self.wait_for(ConnectionOpened)
        self.opened = opened
        return opened

    def open_channel(self) -> int:
        """Open the connection if needed, then a channel; returns its number."""
        if self.connection.state is ConnectionState.IDLE:
            self.open()
        channel = self.connection.open_channel()
        self.wait_for(lambda e: isinstance(e, ChannelOpened) and e.channel == channel)
        return channel

    def close(self) -> None:
        """Close the connection politely if it is open, then the socket."""
        try:
            if not self.eof and self.connection.state is ConnectionState.OPEN:
                self.connection.close()
                self.wait_for(ConnectionClosed, timeout=5)
        except (OSError, TimeoutError):
            pass
        finally:
            self.sock.close()

    def __enter__(self) -> BlockingAMQP:
        try:
            if self.connection.state is ConnectionState.IDLE:
                self.open()
        except BaseException:
            self.sock.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
