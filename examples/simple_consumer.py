import asyncio
import os

import aio_pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1/")


async def main(loop):
    connection = await aio_pika.connect_robust(AMQP_URL, loop=loop)

    queue_name = "test_queue"

    async with connection:
        # Creating channel
        channel = await connection.channel()

        # Declaring queue
        queue = await channel.declare_queue(queue_name, auto_delete=True)

        async for message in queue:
            with message.process():
                print(message.body)

                if queue.name in message.body.decode():
                    break


if __name__ == "__main__":
    loop = asyncio.get_event_loop()
    loop.run_until_complete(main(loop))
    loop.close()
