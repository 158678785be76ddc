"""aio-pika's patterns: Master/Worker task distribution and RPC, over the public aio_pika API.

Both run on every backend (native asyncio, anyio on asyncio, anyio on trio). Incoming messages go through
the queue's consumer callback machinery (a small pool of worker tasks per consumer): no task per message.
See ``docs/patterns.md``.
"""

from .base import Base, Method, Proxy
from .master import (
    CompressedJsonMaster,
    JsonMaster,
    Master,
    MessageProcessingError,
    NackMessage,
    RejectMessage,
    Worker,
)
from .rpc import RPC, JsonRPC, JsonRPCError, RPCException, RPCMessageType, RPCMessageTypes

__all__ = (
    "RPC",
    "Base",
    "CompressedJsonMaster",
    "JsonMaster",
    "JsonRPC",
    "JsonRPCError",
    "Master",
    "MessageProcessingError",
    "Method",
    "NackMessage",
    "Proxy",
    "RPCException",
    "RPCMessageType",
    "RPCMessageTypes",
    "RejectMessage",
    "Worker",
)
