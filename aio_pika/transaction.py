"""AMQP transactions: ``async with channel.transaction():`` commits, or rolls back on an exception."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp import commands

from .abc import AbstractTransaction, TimeoutType, TransactionState

if TYPE_CHECKING:
    from .channel import Channel

__all__ = ("Transaction",)


class Transaction(AbstractTransaction):
    """A transaction on a channel opened with ``publisher_confirms=False``."""

    def __init__(self, channel: Channel) -> None:
        self.__channel = channel
        self.state: TransactionState = TransactionState.CREATED

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.state.value}>"

    def __str__(self) -> str:
        return self.state.value

    @property
    def channel(self) -> Channel:
        if self.__channel.is_closed:
            raise RuntimeError("Closed channel")
        return self.__channel

    async def select(self, timeout: TimeoutType = None) -> commands.Tx.SelectOk:
        result: commands.Tx.SelectOk = await self.channel._call(
            lambda core, number: core.tx_select(number), timeout
        )
        self.state = TransactionState.STARTED
        return result

    async def rollback(self, timeout: TimeoutType = None) -> commands.Tx.RollbackOk:
        result: commands.Tx.RollbackOk = await self.channel._call(
            lambda core, number: core.tx_rollback(number), timeout
        )
        self.state = TransactionState.ROLLED_BACK
        return result

    async def commit(self, timeout: TimeoutType = None) -> commands.Tx.CommitOk:
        result: commands.Tx.CommitOk = await self.channel._call(
            lambda core, number: core.tx_commit(number), timeout
        )
        self.state = TransactionState.COMMITED
        return result

    async def __aenter__(self) -> Transaction:
        await self.select()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc_val: Any, exc_tb: Any) -> None:
        if exc_type:
            await self.rollback()
        else:
            await self.commit()
