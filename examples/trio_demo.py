"""The publish/consume demo of ``demo.py`` on trio.

Under trio, aio_pika selects its anyio backend automatically; the API is the same as on asyncio.

The broker URL is the first argument, else ``$AMQP_URL``, else ``amqp://guest:guest@127.0.0.1/``.
"""

import os
import sys

import trio
from pamqp.commands import Basic

import aio_pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1/")
COUNT = 5
TIMEOUT = 10


async def main(url: str) -> int:
    async with aio_pika.connect(url) as connection:
        print(f"connected to {connection} (trio)")

        # Publisher confirms are on by default: each publish returns the broker's Basic.Ack.
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        print(f"declared temporary queue {queue.name}")

        bodies = [f"message {number}".encode() for number in range(1, COUNT + 1)]
        confirmations: list[object] = []

        async def publish(number: int, body: bytes) -> None:
            confirmations.append(
                await channel.default_exchange.publish(
                    aio_pika.Message(body, content_type="text/plain", message_id=str(number)),
                    routing_key=queue.name,
                )
            )

        async with trio.open_nursery() as nursery:
            for number, body in enumerate(bodies, 1):
                nursery.start_soon(publish, number, body)
        acked = sum(isinstance(confirmation, Basic.Ack) for confirmation in confirmations)
        print(f"published {len(bodies)} messages, the broker confirmed {acked}")

        received: list[bytes] = []
        with trio.fail_after(TIMEOUT):
            async with queue.iterator() as queue_iter:
                async for message in queue_iter:
                    async with message.process():
                        print(f"received {message.body.decode()!r} (message_id={message.message_id})")
                        received.append(message.body)
                    if len(received) == len(bodies):
                        break

    # Concurrent publishes may reach the broker in any order.
    if acked != len(bodies) or sorted(received) != sorted(bodies):
        print("trio demo FAILED: not every message was confirmed and received", file=sys.stderr)
        return 1
    print(f"done: {len(received)} messages published, confirmed and consumed; connection closed")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, sys.argv[1] if len(sys.argv) > 1 else AMQP_URL))
