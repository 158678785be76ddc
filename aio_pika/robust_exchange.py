"""An exchange that is declared and bound again after its channel comes back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands

from .abc import (
    AbstractMessage,
    AbstractRobustExchange,
    Arguments,
    ExchangeParamType,
    ExchangeType,
    TimeoutType,
    get_exchange_name,
)
from .exchange import Exchange
from .log import get_logger

if TYPE_CHECKING:
    from .robust_channel import RobustChannel

log = get_logger(__name__)

__all__ = ("RobustExchange",)


def binding_key(source: str, routing_key: str, arguments: Arguments) -> tuple[str, str, str]:
    """How a binding is remembered: source, routing key and (a canonical form of) the arguments."""
    return source, routing_key, repr(sorted((arguments or {}).items()))


def binding_description(kind: str, name: str, source: str, routing_key: str, arguments: Arguments) -> str:
    """A restore step's name for a binding (unique per binding: a refused one is skipped by its name)."""
    extra = f", {dict(arguments)!r}" if arguments else ""
    return f"binding of {kind} {name!r} to {source!r} ({routing_key!r}{extra})"


class RobustExchange(Exchange, AbstractRobustExchange):
    """An :class:`Exchange` of a :class:`~aio_pika.RobustChannel`.

    It remembers its exchange-to-exchange bindings; after a reconnection (or a reopening of its channel)
    the channel declares it again and restores them. Every method waits while the channel is being
    restored; :meth:`publish` too, except on the fast path (channel open).
    """

    channel: RobustChannel

    def __init__(
        self,
        channel: RobustChannel,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        auto_delete: bool = False,
        durable: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
    ) -> None:
        super().__init__(
            channel, name, type, auto_delete=auto_delete, durable=durable, internal=internal,
            passive=passive, arguments=arguments,
        )  # fmt: skip
        # binding_key(...) -> (source exchange name, routing key, arguments)
        self._bindings: dict[tuple[str, str, str], tuple[str, str, Arguments]] = {}

    async def declare(self, timeout: TimeoutType = None) -> commands.Exchange.DeclareOk:
        await self.channel.ready(timeout)
        return await super().declare(timeout)

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> commands.Exchange.BindOk:
        """Bind this exchange to ``exchange``; with ``robust`` (the default) the binding is restored."""
        await self.channel.ready(timeout)
        result = await super().bind(exchange, routing_key, arguments=arguments, timeout=timeout)
        if robust:
            source = get_exchange_name(exchange)
            self._bindings[binding_key(source, routing_key, arguments)] = (source, routing_key, arguments)
            self.channel._remember_exchange(self)
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> commands.Exchange.UnbindOk:
        await self.channel.ready(timeout)
        result = await super().unbind(exchange, routing_key, arguments, timeout)
        self._bindings.pop(binding_key(get_exchange_name(exchange), routing_key, arguments), None)
        return result

    async def delete(
        self, if_unused: bool = False, timeout: TimeoutType = None
    ) -> commands.Exchange.DeleteOk:
        await self.channel.ready(timeout)
        result = await super().delete(if_unused, timeout)
        self._bindings.clear()  # gone with the exchange on the broker
        self.channel._forget_exchange(self.name)
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
        """Publish; while the channel is being restored, wait for it first (``timeout`` covers the wait).

        A publish waiting for its confirm when the connection is lost fails with the connection's error
        (an :class:`~aio_pika.exceptions.AMQPConnectionError`): the broker may or may not have the message,
        so publish it again once reconnected (the call waits for that).
        """
        channel = self.channel
        if channel._restored and not self.internal:
            # The fast path, as Exchange.publish (the channel's _publish checks that it is open).
            return channel._publish(self.name, routing_key, message, mandatory, immediate, timeout)
        if self.internal:
            raise ValueError(f"Can not publish to internal exchange: {self.name!r}!")
        return self._when_ready(
            lambda: Exchange.publish(
                self, message, routing_key, mandatory=mandatory, immediate=immediate, timeout=None
            ),
            timeout,
        )

    def _publish_settled(
        self,
        message: AbstractMessage,
        routing_key: str,
        mandatory: bool,
        on_settled: Callable[[BaseException | None], None],
    ) -> Any:
        """As :meth:`Exchange._publish_settled`; while the channel is being restored, wait for it first."""
        if self.channel._restored:
            return Exchange._publish_settled(self, message, routing_key, mandatory, on_settled)
        return self._when_ready(
            lambda: Exchange._publish_settled(self, message, routing_key, mandatory, on_settled), None
        )

    async def _when_ready(self, publish: Callable[[], Any], timeout: TimeoutType) -> Any:
        """Wait for the channel to be restored (``timeout`` covers the wait too), then publish."""
        channel = self.channel
        backend = channel.connection.backend
        assert backend is not None
        with backend.timeout(timeout):
            await channel.ready()
            return await publish()

    # ---- restoring (called by the channel; bypasses the readiness wait) --------------------------------

    async def _restore_declaration(self) -> None:
        if self.name:  # the default exchange always exists
            await Exchange.declare(self)

    def _restore_steps(self) -> list[tuple[str, Any]]:
        return [
            (
                binding_description("exchange", self.name, source, routing_key, arguments),
                lambda source=source, routing_key=routing_key, arguments=arguments: Exchange.bind(
                    self, source, routing_key, arguments=arguments
                ),
            )
            for source, routing_key, arguments in list(self._bindings.values())
        ]
