import asyncio
import os

from aio_pika import Message, connect

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1/")


async def main(loop):
    # Perform connection
    connection = await connect(AMQP_URL, loop=loop)

    # Creating a channel
    channel = await connection.channel()

    # Declaring queue
    await channel.declare_queue("hello")

    # Sending the message
    await channel.default_exchange.publish(
        Message(b"Hello World!"),
        routing_key="hello",
    )

    print(" [x] Sent 'Hello World!'")

    await connection.close()


if __name__ == "__main__":
    loop = asyncio.get_event_loop()
    loop.run_until_complete(main(loop))
