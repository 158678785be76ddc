"""aio-pika compatible AMQP 0-9-1 client on a sans-IO core, for asyncio (native backend) and trio (anyio).

Both API generations work: aio-pika 1.x (``loop=``, ``with message.process()``, ``message.ack()`` without
``await``, ``add_close_callback``, ``closing``) and aio-pika 9.x/10.x (``async with``, awaitable
``ack()``, ``aio_pika.abc``, callback collections, ``get_queue``, transactions, …). See ``docs/api.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import abc, exceptions
from .abc import DeliveryMode, ExchangeType, TransactionState
from .channel import Channel
from .connection import Connection, connect, make_url
from .exceptions import AMQPException, MessageProcessError
from .exchange import Exchange
from .log import logger
from .message import IncomingMessage, Message, ReturnedMessage
from .queue import Queue, QueueIterator

__version__ = "0.1.0"

# The robust classes and the patterns live in their own modules; they are imported when first used.
_LAZY = {
    "RobustChannel": "aio_pika.robust_channel",
    "RobustConnection": "aio_pika.robust_connection",
    "RobustExchange": "aio_pika.robust_exchange",
    "RobustQueue": "aio_pika.robust_queue",
    "connect_robust": "aio_pika.robust_connection",
    "patterns": "aio_pika.patterns",
    "pool": "aio_pika.pool",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'aio_pika' has no attribute {name!r}")
    module = import_module(module_name)
    value = module if module_name.endswith(name) else getattr(module, name)
    globals()[name] = value
    return value


__all__ = (
    "AMQPException",
    "Channel",
    "Connection",
    "DeliveryMode",
    "Exchange",
    "ExchangeType",
    "IncomingMessage",
    "Message",
    "MessageProcessError",
    "Queue",
    "QueueIterator",
    "ReturnedMessage",
    "RobustChannel",
    "RobustConnection",
    "RobustExchange",
    "RobustQueue",
    "TransactionState",
    "__version__",
    "abc",
    "connect",
    "connect_robust",
    "exceptions",
    "logger",
    "make_url",
    "patterns",
    "pool",
)
