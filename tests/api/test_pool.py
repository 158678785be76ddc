"""``aio_pika.pool.Pool``: pools of channels (every backend) and of connections."""

from __future__ import annotations

import anyio
import pytest

import aio_pika
from aio_pika.pool import Pool, PoolInvalidStateError

from .conftest import AMQP_URL, Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_channel_pool(connection: aio_pika.Connection, names: Names) -> None:
    created = 0

    async def get_channel() -> aio_pika.Channel:
        nonlocal created
        created += 1
        return await connection.channel()

    queue_name = names.queue()
    setup = await connection.channel()
    queue = await setup.declare_queue(queue_name, arguments=expiring())

    async with Pool(get_channel, max_size=3) as pool:
        in_use = 0
        highest = 0

        async def publish(index: int) -> None:
            nonlocal in_use, highest
            async with pool.acquire() as channel:
                in_use += 1
                highest = max(highest, in_use)
                await channel.default_exchange.publish(aio_pika.Message(str(index).encode()), queue_name)
                in_use -= 1

        async with anyio.create_task_group() as group:
            for index in range(30):
                group.start_soon(publish, index)
        assert created <= 3 and highest <= 3
        channels = []
        async with pool.acquire() as channel:
            channels.append(channel)
    assert pool.is_closed
    assert channels[0].is_closed  # closing the pool closed what it made
    with pytest.raises(PoolInvalidStateError):
        pool.acquire()
    assert (await queue.declare()).message_count == 30


async def test_waiters_get_an_error_when_the_pool_closes(connection: aio_pika.Connection) -> None:
    pool: Pool[aio_pika.Channel] = Pool(connection.channel, max_size=1)
    errors: list[BaseException] = []

    async def wait_for_one() -> None:
        try:
            async with pool.acquire():
                pass  # pragma: no cover
        except PoolInvalidStateError as error:
            errors.append(error)

    async with pool.acquire(), anyio.create_task_group() as group:
        group.start_soon(wait_for_one)
        await anyio.sleep(0.01)
        await pool.close()
    assert len(errors) == 1


async def test_connection_pool(backend_name: str, names: Names) -> None:
    """aio-pika's README example: a pool of connections and a pool of channels on top of it."""
    import backends

    async with backends.create_backend(backend_name) as backend:  # lets `await connect()` run on trio too

        async def get_connection() -> aio_pika.Connection:
            return await aio_pika.connect(AMQP_URL, backend=backend)

        connection_pool: Pool[aio_pika.Connection] = Pool(get_connection, max_size=2)

        async def get_channel() -> aio_pika.Channel:
            async with connection_pool.acquire() as connection:
                return await connection.channel()

        channel_pool: Pool[aio_pika.Channel] = Pool(get_channel, max_size=4)
        queue_name = names.queue()
        async with connection_pool, channel_pool:
            async with channel_pool.acquire() as channel:
                await channel.declare_queue(queue_name, arguments=expiring())

            async def publish() -> None:
                async with channel_pool.acquire() as channel:
                    await channel.default_exchange.publish(aio_pika.Message(b"pooled"), queue_name)

            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(publish)
            async with channel_pool.acquire() as channel:
                assert (await channel.get_queue(queue_name)).declaration_result.message_count == 20
                await channel.queue_delete(queue_name)
