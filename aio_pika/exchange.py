"""Exchanges: declare, bind to other exchanges, publish, delete."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from .abc import (
    AbstractExchange,
    AbstractMessage,
    Arguments,
    ExchangeParamType,
    ExchangeType,
    TimeoutType,
    get_exchange_name,
)
from .log import get_logger
from .tools import arguments_dict

if TYPE_CHECKING:
    from .channel import Channel

log = get_logger(__name__)

__all__ = ("Exchange", "ExchangeParamType", "ExchangeType")


class Exchange(AbstractExchange):
    """An exchange on a channel. The declared arguments stay on the object, so it can be declared again."""

    def __init__(
        self,
        channel: Channel,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        auto_delete: bool = False,
        durable: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type_name(name)}")
        self._type = type.value if isinstance(type, ExchangeType) else str(type)
        self.channel = channel
        self.name = name
        self.auto_delete = bool(auto_delete)
        self.durable = bool(durable)
        self.internal = bool(internal)
        self.passive = bool(passive)
        self.arguments = arguments_dict(arguments)

    @property
    def type(self) -> str:
        return self._type

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (
            f"<{self.__class__.__name__}({self}): type={self._type!r}, auto_delete={self.auto_delete}, "
            f"durable={self.durable}, arguments={self.arguments!r}>"
        )

    async def declare(self, timeout: TimeoutType = None) -> commands.Exchange.DeclareOk:
        """Declare the exchange on the broker (``passive`` only checks that it exists)."""
        result: commands.Exchange.DeclareOk = await self.channel._call(
            lambda core, number: core.exchange_declare(
                number, self.name, self._type, passive=self.passive, durable=self.durable,
                auto_delete=self.auto_delete, internal=self.internal, arguments=self.arguments,
            ),
            timeout,
        )  # fmt: skip
        return result

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Exchange.BindOk:
        """Bind this exchange (the destination) to ``exchange`` (the source): it receives what matches."""
        source = get_exchange_name(exchange)
        log.debug("Binding exchange %r to exchange %r, routing_key=%r", self.name, source, routing_key)
        result: commands.Exchange.BindOk = await self.channel._call(
            lambda core, number: core.exchange_bind(
                number, self.name, source, routing_key, arguments=arguments
            ),
            timeout,
        )
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Exchange.UnbindOk:
        """Remove an exchange-to-exchange binding made with :meth:`bind`."""
        source = get_exchange_name(exchange)
        log.debug("Unbinding exchange %r from exchange %r, routing_key=%r", self.name, source, routing_key)
        result: commands.Exchange.UnbindOk = await self.channel._call(
            lambda core, number: core.exchange_unbind(
                number, self.name, source, routing_key, arguments=arguments
            ),
            timeout,
        )
        return result

    def publish(
        self,
        message: AbstractMessage,
        routing_key: str,
        *,
        mandatory: bool = True,
        immediate: bool = False,
        timeout: TimeoutType = None,
    ) -> Any:
        """Publish ``message``; await the result.

        * ``publisher_confirms=False``: the message is queued for the socket at once and the result is
          ``None`` (the awaitable is already complete).
        * ``publisher_confirms=True`` (default): the result is the broker's ``Basic.Ack`` frame; a
          ``Basic.Nack`` raises :class:`~aio_pika.exceptions.DeliveryError`.
        * an unroutable ``mandatory`` message raises :class:`~aio_pika.exceptions.PublishError` with
          ``on_return_raises=True``; otherwise the return callbacks run and the returned message is the
          result.
        """
        if self.internal:
            raise ValueError(f"Can not publish to internal exchange: {self.name!r}!")
        return self.channel._publish(self.name, routing_key, message, mandatory, immediate, timeout)

    def _publish_settled(
        self,
        message: AbstractMessage,
        routing_key: str,
        mandatory: bool,
        on_settled: Callable[[BaseException | None], None],
    ) -> Any:
        """Publish ``message`` and call ``on_settled(error)`` once it is settled, instead of returning a
        future: with ``None`` on the broker's confirm (at once without publisher confirms), with the error
        on a nack (:class:`~aio_pika.exceptions.DeliveryError`), on a return with ``on_return_raises``,
        or when the channel closes first. The callback runs while the received data is processed, so a
        caller that has something else to wait for (the RPC's result) is not woken for the confirm.

        Returns an awaitable: the wait for the write buffer without confirms, as :meth:`publish`.
        """
        if self.internal:
            raise ValueError(f"Can not publish to internal exchange: {self.name!r}!")
        return self.channel._publish(self.name, routing_key, message, mandatory, False, None, on_settled)

    async def delete(
        self, if_unused: bool = False, timeout: TimeoutType = None
    ) -> commands.Exchange.DeleteOk:
        """Delete the exchange (only when it has no bindings with ``if_unused``)."""
        log.info("Deleting %r", self)
        result: commands.Exchange.DeleteOk = await self.channel._call(
            lambda core, number: core.exchange_delete(number, self.name, if_unused=if_unused), timeout
        )
        return result


def type_name(value: Any) -> str:
    return type(value).__name__
