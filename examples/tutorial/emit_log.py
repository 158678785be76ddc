import asyncio
import os
import sys

from aio_pika import DeliveryMode, ExchangeType, Message, connect

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1/")


async def main(loop):
    # Perform connection
    connection = await connect(AMQP_URL, loop=loop)

    # Creating a channel
    channel = await connection.channel()

    logs_exchange = await channel.declare_exchange("logs", ExchangeType.FANOUT)

    message_body = b" ".join(arg.encode() for arg in sys.argv[1:]) or b"Hello World!"

    message = Message(message_body, delivery_mode=DeliveryMode.PERSISTENT)

    # Sending the message
    await logs_exchange.publish(message, routing_key="info")

    print(f" [x] Sent {message!r}")

    await connection.close()


if __name__ == "__main__":
    loop = asyncio.get_event_loop()
    loop.run_until_complete(main(loop))
