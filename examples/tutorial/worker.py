import asyncio
import os

from aio_pika import IncomingMessage, connect

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1/")

loop = asyncio.get_event_loop()


def on_message(message: IncomingMessage):
    with message.process():
        print(f" [x] Received message {message!r}")
        print(f" Message body is: {message.body!r}")


async def main():
    # Perform connection
    connection = await connect(AMQP_URL, loop=loop)

    # Creating a channel
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1)

    # Declaring queue
    queue = await channel.declare_queue("task_queue", durable=True)

    # Start listening the queue with name 'task_queue'
    await queue.consume(on_message)


if __name__ == "__main__":
    loop = asyncio.get_event_loop()
    loop.create_task(main())  # noqa: RUF006

    # we enter a never-ending loop that waits for data and runs
    # callbacks whenever necessary.
    print(" [*] Waiting for messages. To exit press CTRL+C")
    loop.run_forever()
