"""Abstract base classes and the public types, as in aio-pika's ``aio_pika.abc``.

Type hints and ``isinstance`` checks written against aio-pika's ABCs keep working: every concrete class of
this package derives from the matching ABC here.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from enum import Enum, IntEnum, unique
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Union

if TYPE_CHECKING:
    from pamqp import commands

    from .tools import CallbackCollection

from .tools import CallbackSetType, CallbackType

__all__ = (
    "MILLISECONDS",
    "AbstractChannel",
    "AbstractConnection",
    "AbstractExchange",
    "AbstractIncomingMessage",
    "AbstractMessage",
    "AbstractProcessContext",
    "AbstractQueue",
    "AbstractQueueIterator",
    "AbstractRobustChannel",
    "AbstractRobustConnection",
    "AbstractRobustExchange",
    "AbstractRobustQueue",
    "AbstractTransaction",
    "CallbackSetType",
    "CallbackType",
    "ChannelCloseCallback",
    "ConnectionCloseCallback",
    "ConnectionParameter",
    "ConnectionType",
    "ConsumerTag",
    "DateType",
    "DeclarationResult",
    "DeliveryMode",
    "ExchangeParamType",
    "ExchangeType",
    "FieldValue",
    "HeadersType",
    "MessageInfo",
    "PublishResultType",
    "SSLOptions",
    "TimeoutType",
    "TransactionState",
    "get_exchange_name",
)

TimeoutType = int | float | None
NoneType = type(None)
DateType = int | datetime | float | timedelta | None
ExchangeParamType = Union["AbstractExchange", str]
ConsumerTag = str
FieldValue = Any
HeadersType = dict[str, Any]
Arguments = dict[str, Any] | None

MILLISECONDS = 1000


class SSLOptions(TypedDict, total=False):
    cafile: str
    capath: str
    cadata: str
    keyfile: str
    certfile: str
    no_verify_ssl: int


@unique
class ExchangeType(str, Enum):  # noqa: UP042 - str() as in aio-pika
    FANOUT = "fanout"
    DIRECT = "direct"
    TOPIC = "topic"
    HEADERS = "headers"
    X_DELAYED_MESSAGE = "x-delayed-message"
    X_CONSISTENT_HASH = "x-consistent-hash"
    X_MODULUS_HASH = "x-modulus-hash"


@unique
class DeliveryMode(IntEnum):
    NOT_PERSISTENT = 1
    PERSISTENT = 2


@unique
class TransactionState(str, Enum):  # noqa: UP042 - str() as in aio-pika
    CREATED = "created"
    COMMITED = "commited"
    ROLLED_BACK = "rolled back"
    STARTED = "started"


@dataclasses.dataclass(frozen=True)
class ConnectionParameter:
    """A URL query parameter of the connection, as aio-pika describes them (``parse`` a raw value)."""

    name: str
    parser: Callable[[str], Any]
    default: str | None = None
    is_kwarg: bool = False

    def parse(self, value: str | None) -> Any:
        if value is None:
            return self.default
        try:
            return self.parser(value)
        except ValueError:
            return self.default


@dataclasses.dataclass(frozen=True)
class DeclarationResult:
    message_count: int
    consumer_count: int


class MessageInfo(TypedDict, total=False):
    app_id: str | None
    body_size: int
    cluster_id: str | None
    consumer_tag: str | None
    content_encoding: str | None
    content_type: str | None
    correlation_id: str | None
    delivery_mode: DeliveryMode
    delivery_tag: int | None
    exchange: str | None
    expiration: DateType
    headers: HeadersType
    message_id: str | None
    priority: int | None
    redelivered: bool | None
    routing_key: str | None
    reply_to: str | None
    timestamp: datetime | None
    type: str
    user_id: str | None


def get_exchange_name(value: ExchangeParamType) -> str:
    """The name of an exchange given as an object or a string."""
    if isinstance(value, AbstractExchange):
        return value.name
    if isinstance(value, str):
        return value
    raise TypeError(f"exchange must be an Exchange or a str, not {type(value).__name__}")


class AbstractTransaction(ABC):
    state: TransactionState

    @abstractmethod
    async def select(self, timeout: TimeoutType = None) -> commands.Tx.SelectOk: ...

    @abstractmethod
    async def rollback(self, timeout: TimeoutType = None) -> commands.Tx.RollbackOk: ...

    @abstractmethod
    async def commit(self, timeout: TimeoutType = None) -> commands.Tx.CommitOk: ...

    @abstractmethod
    async def __aenter__(self) -> AbstractTransaction: ...

    @abstractmethod
    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None: ...


class AbstractMessage(ABC):
    __slots__ = ()

    body: bytes
    body_size: int
    headers: HeadersType
    content_type: str | None
    content_encoding: str | None
    delivery_mode: DeliveryMode
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: DateType
    message_id: str | None
    timestamp: datetime | None
    type: str | None
    user_id: str | None
    app_id: str | None

    @abstractmethod
    def info(self) -> MessageInfo: ...

    @property
    @abstractmethod
    def locked(self) -> bool: ...

    @property
    @abstractmethod
    def properties(self) -> commands.Basic.Properties: ...

    @abstractmethod
    def __iter__(self) -> Iterator[int]: ...

    @abstractmethod
    def lock(self) -> None: ...


class AbstractIncomingMessage(AbstractMessage, ABC):
    __slots__ = ()

    cluster_id: str | None
    consumer_tag: ConsumerTag | None
    delivery_tag: int | None
    redelivered: bool | None
    message_count: int | None
    routing_key: str | None
    exchange: str | None

    @property
    @abstractmethod
    def channel(self) -> AbstractChannel: ...

    @abstractmethod
    def process(
        self, requeue: bool = False, reject_on_redelivered: bool = False, ignore_processed: bool = False
    ) -> AbstractProcessContext: ...

    @abstractmethod
    def ack(self, multiple: bool = False) -> Awaitable[None]: ...

    @abstractmethod
    def reject(self, requeue: bool = False) -> Awaitable[None]: ...

    @abstractmethod
    def nack(self, multiple: bool = False, requeue: bool = True) -> Awaitable[None]: ...

    @property
    @abstractmethod
    def processed(self) -> bool: ...


class AbstractProcessContext(ABC):
    @abstractmethod
    async def __aenter__(self) -> AbstractIncomingMessage: ...

    @abstractmethod
    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None: ...


class AbstractQueue(ABC):
    __slots__ = ()

    channel: AbstractChannel
    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: Arguments
    passive: bool
    declaration_result: commands.Queue.DeclareOk
    close_callbacks: CallbackCollection

    @abstractmethod
    async def declare(self, timeout: TimeoutType = None) -> commands.Queue.DeclareOk: ...

    @abstractmethod
    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Queue.BindOk: ...

    @abstractmethod
    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Queue.UnbindOk: ...

    @abstractmethod
    async def consume(
        self,
        callback: Callable[[AbstractIncomingMessage], Any],
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
    ) -> ConsumerTag: ...

    @abstractmethod
    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> commands.Basic.CancelOk | None: ...

    @abstractmethod
    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: TimeoutType = 5
    ) -> AbstractIncomingMessage | None: ...

    @abstractmethod
    async def purge(
        self, no_wait: bool = False, timeout: TimeoutType = None
    ) -> commands.Queue.PurgeOk | None: ...

    @abstractmethod
    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> commands.Queue.DeleteOk: ...

    @abstractmethod
    def iterator(self, **kwargs: Any) -> AbstractQueueIterator: ...


class AbstractQueueIterator(AsyncIterable[AbstractIncomingMessage], ABC):
    @abstractmethod
    def close(self) -> Awaitable[Any]: ...

    @abstractmethod
    async def consume(self) -> None: ...

    @abstractmethod
    def __aiter__(self) -> AbstractQueueIterator: ...

    @abstractmethod
    async def __aenter__(self) -> AbstractQueueIterator: ...

    @abstractmethod
    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None: ...

    @abstractmethod
    async def __anext__(self) -> AbstractIncomingMessage: ...


class AbstractExchange(ABC):
    name: str

    @abstractmethod
    async def declare(self, timeout: TimeoutType = None) -> commands.Exchange.DeclareOk: ...

    @abstractmethod
    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Exchange.BindOk: ...

    @abstractmethod
    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Exchange.UnbindOk: ...

    @abstractmethod
    def publish(
        self,
        message: AbstractMessage,
        routing_key: str,
        *,
        mandatory: bool = True,
        immediate: bool = False,
        timeout: TimeoutType = None,
    ) -> Awaitable[Any]: ...

    @abstractmethod
    async def delete(
        self, if_unused: bool = False, timeout: TimeoutType = None
    ) -> commands.Exchange.DeleteOk: ...


class AbstractChannel(ABC):
    QUEUE_CLASS: type[AbstractQueue]
    EXCHANGE_CLASS: type[AbstractExchange]

    close_callbacks: CallbackCollection
    return_callbacks: CallbackCollection
    default_exchange: AbstractExchange
    publisher_confirms: bool
    on_return_raises: bool

    @property
    @abstractmethod
    def is_initialized(self) -> bool: ...

    @property
    @abstractmethod
    def is_closed(self) -> bool: ...

    @abstractmethod
    def close(self, exc: BaseException | None = None) -> Awaitable[None]: ...

    @abstractmethod
    def closed(self) -> Awaitable[Literal[True]]: ...

    @property
    @abstractmethod
    def number(self) -> int | None: ...

    @abstractmethod
    async def initialize(self, timeout: TimeoutType = None) -> None: ...

    @abstractmethod
    async def reopen(self) -> None: ...

    @abstractmethod
    async def declare_exchange(
        self,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> AbstractExchange: ...

    @abstractmethod
    async def get_exchange(self, name: str, *, ensure: bool = True) -> AbstractExchange: ...

    @abstractmethod
    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> AbstractQueue: ...

    @abstractmethod
    async def get_queue(self, name: str, *, ensure: bool = True) -> AbstractQueue: ...

    @abstractmethod
    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> commands.Basic.QosOk: ...

    @abstractmethod
    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> commands.Queue.DeleteOk | None: ...

    @abstractmethod
    async def exchange_delete(
        self, exchange_name: str, timeout: TimeoutType = None, if_unused: bool = False, nowait: bool = False
    ) -> commands.Exchange.DeleteOk | None: ...

    @abstractmethod
    def transaction(self) -> AbstractTransaction: ...

    @abstractmethod
    async def flow(self, active: bool = True) -> commands.Channel.FlowOk: ...


class AbstractConnection(ABC):
    close_callbacks: CallbackCollection
    kwargs: dict[str, Any]

    @property
    @abstractmethod
    def is_closed(self) -> bool: ...

    @abstractmethod
    def close(self, exc: BaseException | type[BaseException] | None = None) -> Awaitable[None]: ...

    @abstractmethod
    def closed(self) -> Awaitable[Literal[True]]: ...

    @abstractmethod
    async def connect(self, timeout: TimeoutType = None) -> None: ...

    @abstractmethod
    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> AbstractChannel: ...

    @abstractmethod
    async def ready(self) -> None: ...

    @abstractmethod
    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> commands.Connection.UpdateSecretOk: ...


class AbstractRobustQueue(AbstractQueue):
    __slots__ = ()


class AbstractRobustExchange(AbstractExchange):
    pass


class AbstractRobustChannel(AbstractChannel):
    reopen_callbacks: CallbackCollection


class AbstractRobustConnection(AbstractConnection):
    reconnect_callbacks: CallbackCollection


# What a confirmed publish returns: the broker's Basic.Ack (or the ReturnedMessage of an unroutable one).
PublishResultType = Any
ChannelCloseCallback = Callable[[AbstractChannel | None, BaseException | None], Any]
ConnectionCloseCallback = Callable[[AbstractConnection | None, BaseException | None], Any]
ConnectionType = TypeVar("ConnectionType", bound=AbstractConnection)
