"""Messages: :class:`Message` to publish, :class:`IncomingMessage` as delivered, and ``process()``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pprint import pformat
from typing import TYPE_CHECKING, Any, ClassVar

from pamqp import commands

from amqp_core import LocalProtocolError, UnknownDeliveryTag
from amqp_core.codec import encode_properties, encode_property_values

from .abc import (
    MILLISECONDS,
    AbstractIncomingMessage,
    AbstractMessage,
    AbstractProcessContext,
    DateType,
    DeliveryMode,
    HeadersType,
    MessageInfo,
)
from .exceptions import ChannelInvalidStateError, MessageProcessError
from .log import get_logger
from .tools import DONE, Completed

if TYPE_CHECKING:
    from .channel import Channel

log = get_logger(__name__)

__all__ = ("IncomingMessage", "Message", "ProcessContext", "ReturnedMessage")

_Properties = commands.Basic.Properties
_set = object.__setattr__
_DELIVERY_MODES: dict[int | None, DeliveryMode] = {1: DeliveryMode.NOT_PERSISTENT, 2: DeliveryMode.PERSISTENT}
# For every message without a delivery mode: a global, five times quicker to read on Python 3.11
# than the member through its enum class.
_NOT_PERSISTENT = DeliveryMode.NOT_PERSISTENT


def encode_expiration(value: Any) -> str | None:
    """A message's ``expiration`` (seconds, datetime or timedelta) as the AMQP milliseconds string."""
    if value is None:
        return None
    if isinstance(value, datetime):
        now = datetime.now(tz=value.tzinfo)
        return str(int((value - now).total_seconds() * MILLISECONDS))
    if isinstance(value, timedelta):
        return str(int(value.total_seconds() * MILLISECONDS))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value * MILLISECONDS))
    if isinstance(value, str):  # already in milliseconds, as received
        return value
    raise ValueError(f"expiration must be a number of seconds, a datetime or a timedelta, not {value!r}")


def decode_expiration(value: str | None) -> float | None:
    """The AMQP milliseconds string as seconds."""
    if value is None:
        return None
    try:
        return float(value) / MILLISECONDS
    except ValueError:
        return None


def encode_timestamp(value: Any) -> datetime | None:
    """A timestamp (datetime, seconds since the epoch, or a timedelta from now) as a datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, timedelta):
        return datetime.now(tz=UTC) + value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    raise ValueError(f"timestamp must be a datetime, a number or a timedelta, not {value!r}")


# aio-pika 1.x kept correlation ids as bytes, and its RPC tutorial keys its futures by the bytes it
# published. The wire carries text, so an id published as bytes is remembered here and handed back as bytes
# when it comes back; ids published as str stay str. Bounded, oldest forgotten first.
_BYTES_CORRELATION_IDS: dict[str, None] = {}
_BYTES_CORRELATION_IDS_MAX = 65536


def _correlation_id(value: Any) -> str:
    """A correlation id (not empty) as the text sent."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "surrogateescape")
        ids = _BYTES_CORRELATION_IDS
        if text not in ids:
            if len(ids) >= _BYTES_CORRELATION_IDS_MAX:
                del ids[next(iter(ids))]
            ids[text] = None
        return text
    return str(value)


def _optional_str(value: Any) -> str | None:
    return str(value) if value else None


class Message(AbstractMessage):
    """An AMQP message to publish: a body and the 14 basic properties."""

    __slots__ = (
        "app_id",
        "body",
        "body_size",
        "content_encoding",
        "content_type",
        "correlation_id",
        "delivery_mode",
        "expiration",
        "headers",
        "message_id",
        "priority",
        "reply_to",
        "timestamp",
        "type",
        "user_id",
    )

    _locked_class: ClassVar[type[Message]]  # see _add_locked_twin

    def __init__(
        self,
        body: bytes,
        *,
        headers: HeadersType | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        delivery_mode: DeliveryMode | int | None = None,
        priority: int | None = None,
        correlation_id: str | bytes | None = None,
        reply_to: str | None = None,
        expiration: DateType = None,
        message_id: str | None = None,
        timestamp: DateType = None,
        type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            if isinstance(body, str):
                raise TypeError("body must be bytes, not str: encode it first (e.g. body.encode())")
            body = bytes(body)
        self.body = body
        self.body_size = len(body)
        self.headers = headers or {}
        self.content_type = content_type
        self.content_encoding = content_encoding
        try:
            # The dict spares the enum's Python-level constructor for the two valid modes.
            self.delivery_mode = (
                (_DELIVERY_MODES.get(int(delivery_mode)) or DeliveryMode(int(delivery_mode)))
                if delivery_mode
                else _NOT_PERSISTENT
            )
        except (TypeError, ValueError):
            raise ValueError(
                f"delivery_mode must be 1 or 2 (a DeliveryMode), not {delivery_mode!r}"
            ) from None
        try:
            self.priority = int(priority) if priority else 0
        except (TypeError, ValueError):
            raise ValueError(f"priority must be an int from 0 to 255, not {priority!r}") from None
        self.correlation_id = _correlation_id(correlation_id) if correlation_id else None
        self.reply_to = str(reply_to) if reply_to else None
        self.expiration = expiration
        self.message_id = str(message_id) if message_id else None
        self.timestamp = None if timestamp is None else encode_timestamp(timestamp)
        self.type = str(type) if type else None
        self.user_id = str(user_id) if user_id else None
        self.app_id = str(app_id) if app_id else None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.properties is not Message.properties and "_encoded_properties" not in cls.__dict__:
            # A subclass that says its properties itself is published as it says them.
            cls._encoded_properties = _encode_own_properties  # type: ignore[assignment]
        if not issubclass(cls, _Locked):
            _add_locked_twin(cls)

    @property
    def headers_raw(self) -> HeadersType:
        return self.headers

    def info(self) -> MessageInfo:
        """The message's attributes as a dict."""
        return MessageInfo(
            app_id=self.app_id,
            body_size=self.body_size,
            cluster_id=None,
            consumer_tag=None,
            content_encoding=self.content_encoding,
            content_type=self.content_type,
            correlation_id=self.correlation_id,
            delivery_mode=self.delivery_mode,
            delivery_tag=None,
            exchange=None,
            expiration=self.expiration,
            headers=self.headers,
            message_id=self.message_id,
            priority=self.priority,
            redelivered=None,
            reply_to=self.reply_to,
            routing_key=None,
            timestamp=self.timestamp,
            type=str(self.type),
            user_id=self.user_id,
        )

    @property
    def locked(self) -> bool:
        """Whether the message is locked (processed, or by lock()): its attributes can no longer change."""
        return False  # the locked twin of the class says True

    def lock(self) -> None:
        """Lock the message: setting an attribute raises :class:`ValueError` from now on."""
        _set(self, "__class__", self._locked_class)

    @property
    def properties(self) -> commands.Basic.Properties:
        """The message's properties as a ``pamqp`` ``Basic.Properties``."""
        # Built without Properties.__init__ and its validation (the broker validates): this is per publish.
        props = object.__new__(_Properties)
        props.content_type = self.content_type
        props.content_encoding = self.content_encoding
        props.headers = self.headers
        props.delivery_mode = self.delivery_mode
        props.priority = self.priority
        props.correlation_id = self.correlation_id
        props.reply_to = self.reply_to
        expiration = self.expiration
        props.expiration = None if expiration is None else encode_expiration(expiration)
        props.message_id = self.message_id
        props.timestamp = self.timestamp
        props.message_type = self.type
        props.user_id = self.user_id
        props.app_id = self.app_id
        props.cluster_id = ""
        return props

    def _encoded_properties(self) -> bytes:
        """What :attr:`properties` encodes to, without building it: the publish path's way."""
        expiration = self.expiration
        return encode_property_values(
            self.content_type, self.content_encoding, self.headers, self.delivery_mode, self.priority,
            self.correlation_id, self.reply_to, None if expiration is None else encode_expiration(expiration),
            self.message_id, self.timestamp, self.type, self.user_id, self.app_id, None,
        )  # fmt: skip

    def __iter__(self) -> Iterator[int]:
        return iter(self.body)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}:{pformat(self.info())}"

    def __copy__(self) -> Message:
        return Message(
            body=self.body,
            headers=self.headers,
            content_encoding=self.content_encoding,
            content_type=self.content_type,
            delivery_mode=self.delivery_mode,
            priority=self.priority,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            expiration=self.expiration,
            message_id=self.message_id,
            timestamp=self.timestamp,
            type=self.type,
            user_id=self.user_id,
            app_id=self.app_id,
        )


class _Locked:
    """What the locked twin of a message class adds to it (see :func:`_add_locked_twin`)."""

    __slots__ = ()

    @property
    def locked(self) -> bool:
        return True

    def __setattr__(self, key: str, value: Any) -> None:
        if key[0] != "_":
            raise ValueError("Message is locked")
        _set(self, key, value)

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        # Unpickling restores the attributes past __setattr__.
        for key, value in state[1].items():
            _set(self, key, value)


def _encode_own_properties(message: Message) -> bytes:
    return encode_properties(message.properties)


def _add_locked_twin(cls: Any) -> None:
    """Give ``cls`` a locked twin: the same name and layout, with :class:`_Locked` first.

    Locking swaps a message's class for its twin rather than checking a flag in ``__setattr__``: an
    override of ``__setattr__`` makes every attribute set at construction a Python call, which was most
    of the cost of ``Message()`` and of each delivered ``IncomingMessage``. The twin is reachable as
    ``cls._locked_class`` (its qualified name), so locked messages pickle.
    """
    twin = type(cls)(cls.__name__, (_Locked, cls), {"__slots__": (), "__module__": cls.__module__})
    twin.__qualname__ = f"{cls.__qualname__}._locked_class"
    cls._locked_class = twin


_add_locked_twin(Message)


class IncomingMessage(Message, AbstractIncomingMessage):
    """A delivered message (from a consumer, ``Queue.get`` or the iterator), which can be acknowledged.

    ``ack()``, ``nack()`` and ``reject()`` send their frame at once and return an awaitable that is already
    complete, so both ``message.ack()`` (aio-pika 1.x) and ``await message.ack()`` work. ``process()`` is a
    context manager for both ``with`` and ``async with``.
    """

    __slots__ = (
        "_channel",
        "_incarnation",
        "_no_ack",
        "_processed",
        "cluster_id",
        "consumer_tag",
        "delivery_tag",
        "exchange",
        "message_count",
        "redelivered",
        "routing_key",
    )

    def __init__(
        self,
        channel: Channel,
        properties: commands.Basic.Properties,
        body: bytes,
        *,
        consumer_tag: str | None = None,
        delivery_tag: int | None = None,
        redelivered: bool | None = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        message_count: int | None = None,
        no_ack: bool = False,
        incarnation: int | None = None,
    ) -> None:
        self._fill(
            channel, properties, body, consumer_tag, delivery_tag, redelivered, exchange, routing_key,
            message_count, no_ack, incarnation,
        )  # fmt: skip

    @classmethod
    def _create(
        cls,
        channel: Channel,
        properties: commands.Basic.Properties,
        body: bytes,
        consumer_tag: str | None,
        delivery_tag: int | None,
        redelivered: bool | None,
        exchange: str | None,
        routing_key: str | None,
        message_count: int | None,
        no_ack: bool,
        incarnation: int | None,
    ) -> IncomingMessage:
        """The fast constructor the channel uses for every delivery."""
        self = cls.__new__(cls)
        self._fill(
            channel, properties, body, consumer_tag, delivery_tag, redelivered, exchange, routing_key,
            message_count, no_ack, incarnation,
        )  # fmt: skip
        return self

    def _fill(
        self,
        channel: Channel,
        props: commands.Basic.Properties,
        body: bytes,
        consumer_tag: str | None,
        delivery_tag: int | None,
        redelivered: bool | None,
        exchange: str | None,
        routing_key: str | None,
        message_count: int | None,
        no_ack: bool,
        incarnation: int | None,
    ) -> None:
        processed = no_ack or not delivery_tag
        self._channel = channel
        self._incarnation = incarnation
        self._no_ack = no_ack
        self._processed = processed
        self.body = body
        self.body_size = len(body)
        self.headers = props.headers or {}
        self.content_type = props.content_type
        self.content_encoding = props.content_encoding
        mode = props.delivery_mode
        # A mode other than 1 and 2 stays the int the broker sent.
        self.delivery_mode = _DELIVERY_MODES.get(mode, mode or _NOT_PERSISTENT)  # type: ignore[arg-type]
        self.priority = props.priority
        correlation_id = props.correlation_id
        if correlation_id is not None and _BYTES_CORRELATION_IDS and correlation_id in _BYTES_CORRELATION_IDS:
            # Published as bytes: handed back as bytes (see _BYTES_CORRELATION_IDS).
            correlation_id = correlation_id.encode("utf-8", "surrogateescape")  # type: ignore[assignment]
        self.correlation_id = correlation_id
        self.reply_to = props.reply_to
        expiration = props.expiration
        self.expiration = None if expiration is None else decode_expiration(expiration)
        self.message_id = props.message_id
        self.timestamp = props.timestamp
        self.type = props.message_type
        self.user_id = props.user_id
        self.app_id = props.app_id
        self.cluster_id = props.cluster_id or None
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.exchange = exchange
        self.routing_key = routing_key
        self.redelivered = redelivered
        self.message_count = message_count
        if processed:
            self.lock()

    @property
    def channel(self) -> Channel:
        """The channel the message came from; raises ChannelInvalidStateError once that channel is closed."""
        channel = self._channel
        if channel.is_closed or (self._incarnation is not None and channel._incarnation != self._incarnation):
            raise ChannelInvalidStateError("the channel this message was delivered on is closed")
        return channel

    @property
    def processed(self) -> bool:
        """Whether the message was acknowledged, rejected or nacked (or needs no acknowledgement)."""
        return self._processed

    def process(
        self, requeue: bool = False, reject_on_redelivered: bool = False, ignore_processed: bool = False
    ) -> ProcessContext:
        """A context manager (``with`` and ``async with``): acks on success, rejects on an exception.

        :param requeue: requeue the message when rejecting it.
        :param reject_on_redelivered: reject without requeueing when the message was already redelivered.
        :param ignore_processed: do nothing when the block already acked/rejected the message itself.
        """
        return ProcessContext(
            self,
            requeue=requeue,
            reject_on_redelivered=reject_on_redelivered,
            ignore_processed=ignore_processed,
        )

    def _check_settle(self, what: str) -> None:
        if self._no_ack:
            raise TypeError(f'Can\'t {what} message with "no_ack" flag')
        if self._processed:
            raise MessageProcessError("Message already processed", self)

    def _settled(self) -> Completed:
        self._processed = True
        self.lock()
        return DONE

    def ack(self, multiple: bool = False) -> Completed:
        """Acknowledge the message (``Basic.Ack``); takes effect without ``await``, and may be awaited."""
        if self._no_ack or self._processed:
            self._check_settle("ack")
        self._channel._settle(self, 0, multiple, False)
        return self._settled()

    def reject(self, requeue: bool = False) -> Completed:
        """Reject the message (``Basic.Reject``), returning it to the queue when ``requeue``."""
        self._check_settle("reject")
        self._channel._settle(self, 1, False, requeue)
        return self._settled()

    def nack(self, multiple: bool = False, requeue: bool = True) -> Completed:
        """Negatively acknowledge the message (``Basic.Nack``), requeueing it by default."""
        self._check_settle("nack")
        self._channel._settle(self, 2, multiple, requeue)
        return self._settled()

    def info(self) -> MessageInfo:
        info = super().info()
        info["cluster_id"] = self.cluster_id
        info["consumer_tag"] = self.consumer_tag
        info["delivery_tag"] = self.delivery_tag
        info["exchange"] = self.exchange
        info["redelivered"] = self.redelivered
        info["routing_key"] = self.routing_key
        return info


class ReturnedMessage(IncomingMessage):
    """A mandatory message the broker could not route and returned (``Basic.Return``)."""

    __slots__ = ("reply_code", "reply_text")


class ProcessContext(AbstractProcessContext):
    """What ``message.process()`` returns: usable with ``with`` (aio-pika 1.x) and ``async with``."""

    __slots__ = ("ignore_processed", "message", "reject_on_redelivered", "requeue")

    def __init__(
        self, message: IncomingMessage, *, requeue: bool, reject_on_redelivered: bool, ignore_processed: bool
    ) -> None:
        self.message = message
        self.requeue = requeue
        self.reject_on_redelivered = reject_on_redelivered
        self.ignore_processed = ignore_processed

    def __enter__(self) -> IncomingMessage:
        return self.message

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._finish(exc_type)

    async def __aenter__(self) -> IncomingMessage:
        return self.message

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self._finish(exc_type)

    def _finish(self, exc_type: type[BaseException] | None) -> None:
        message = self.message
        if self.ignore_processed and message.processed:
            return
        if exc_type is None:
            message.ack()
            return
        try:
            if self.reject_on_redelivered and message.redelivered:
                log.info("Message %r was redelivered and will be rejected", message.delivery_tag)
                message.reject(requeue=False)
            else:
                message.reject(requeue=self.requeue)
        except ChannelInvalidStateError:
            log.warning("Reject is not sent since channel is closed")


def settle_error(error: LocalProtocolError) -> Exception:
    """The exception for an ack/nack/reject the core refused."""
    if isinstance(error, UnknownDeliveryTag):
        return MessageProcessError(str(error), None)
    return ChannelInvalidStateError(str(error))
