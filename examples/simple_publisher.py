import asyncio
import os

import aio_pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1/")


async def main(loop):
    connection = await aio_pika.connect_robust(AMQP_URL, loop=loop)

    async with connection:
        routing_key = "test_queue"

        channel = await connection.channel()  # type: aio_pika.Channel

        await channel.default_exchange.publish(
            aio_pika.Message(body=f"Hello {routing_key}".encode()),
            routing_key=routing_key,
        )


if __name__ == "__main__":
    loop = asyncio.get_event_loop()
    loop.run_until_complete(main(loop))
    loop.close()
