"""Connection negotiation pieces: credentials, client properties, and tuning.

Pure functions; :class:`~amqp_core.connection.Connection` drives the handshake's state table.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .codec import encode_table

__all__ = [
    "PROTOCOL_HEADER",
    "Credentials",
    "build_client_properties",
    "negotiate",
]

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

PRODUCT = "aio-pika-sansio"
VERSION = "0.1.0"

# What this client implements; the broker enables each extension only when the client announces it.
CAPABILITIES: dict[str, bool] = {
    "publisher_confirms": True,
    "consumer_cancel_notify": True,
    "basic.nack": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "exchange_exchange_bindings": True,
    "per_consumer_qos": True,
}

MECHANISMS = ("PLAIN", "AMQPLAIN", "EXTERNAL")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A login for one of the SASL mechanisms the client supports. The password never shows in repr."""

    username: str
    password: str = field(repr=False)
    mechanism: str = "PLAIN"

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"auth_mechanism must be one of {', '.join(MECHANISMS)}, not {self.mechanism!r}")

    def response(self) -> str:
        """The StartOk/SecureOk response for this mechanism (pamqp sends longstr values as UTF-8)."""
        if self.mechanism == "PLAIN":
            return f"\0{self.username}\0{self.password}"
        if self.mechanism == "AMQPLAIN":
            # RabbitMQ's AMQPLAIN: a field table *without* its 4-byte length prefix.
            table = encode_table({"LOGIN": self.username, "PASSWORD": self.password})[4:]
            try:
                return table.decode()
            except UnicodeDecodeError:
                raise ValueError("AMQPLAIN credentials must be shorter than 128 bytes each") from None
        return ""  # EXTERNAL: the identity comes from the TLS client certificate


def build_client_properties(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Client properties announced in StartOk: defaults, capabilities, then the caller's values."""
    properties: dict[str, Any] = {
        "product": PRODUCT,
        "version": VERSION,
        "platform": f"Python {platform.python_version()}",
        "information": "sans-IO AMQP 0-9-1 client",
        "capabilities": dict(CAPABILITIES),
    }
    for key, value in (overrides or {}).items():
        if key == "capabilities" and isinstance(value, Mapping):
            properties["capabilities"].update(value)
        else:
            properties[key] = value
    return properties


def negotiate(client: int, server: int) -> int:
    """Tune negotiation (channel_max, frame_max, heartbeat): 0 means "no limit", else the smaller wins."""
    if client == 0 or server == 0:
        return max(client, server)
    return min(client, server)
