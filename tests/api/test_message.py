"""Messages: every property through the broker and back, info(), locking, conversions, 1.x correlation ids."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from pamqp import commands

import aio_pika
from aio_pika import DeliveryMode
from amqp_core import codec

from .conftest import Names, expiring

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_every_property_round_trips(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    timestamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    sent = aio_pika.Message(
        b"body",
        headers={
            "str": "text",
            "int": 42,
            "float": 1.5,
            "bool": True,
            "list": [1, "a"],
            "nested": {"k": "v"},
        },
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=5,
        correlation_id="corr-1",
        reply_to="reply-queue",
        expiration=60,
        message_id="msg-1",
        timestamp=timestamp,
        type="kind",
        user_id="guest",  # RabbitMQ checks it against the login
        app_id="tests",
    )
    await channel.default_exchange.publish(sent, routing_key=queue.name)
    received = await queue.get(timeout=5)
    assert received is not None
    assert received.body == b"body" and received.body_size == 4
    assert received.headers["str"] in ("text", b"text")
    assert (
        received.headers["int"] == 42
        and received.headers["float"] == 1.5
        and received.headers["bool"] is True
    )
    assert received.headers["nested"] == {"k": "v"}
    assert received.content_type == "application/json"
    assert received.content_encoding == "utf-8"
    assert received.delivery_mode is DeliveryMode.PERSISTENT
    assert received.priority == 5
    assert received.correlation_id == "corr-1"
    assert received.reply_to == "reply-queue"
    assert received.expiration == 60.0  # seconds, sent as "60000" milliseconds
    assert received.message_id == "msg-1"
    assert received.timestamp == timestamp
    assert received.type == "kind"
    assert received.user_id == "guest"
    assert received.app_id == "tests"
    assert received.routing_key == queue.name and received.exchange == ""
    assert received.delivery_tag == 1 and received.redelivered is False

    info = received.info()
    assert info["routing_key"] == queue.name
    assert info["delivery_tag"] == 1
    assert info["message_id"] == "msg-1"
    assert info["type"] == "kind"
    assert info["delivery_mode"] is DeliveryMode.PERSISTENT
    assert "IncomingMessage" in repr(received)
    assert isinstance(received, aio_pika.abc.AbstractIncomingMessage)
    assert received.channel is channel
    await received.ack()


async def test_what_is_sent_is_what_the_properties_say(channel: aio_pika.Channel, names: Names) -> None:
    """A publish encodes the message's attributes without building ``message.properties``: the broker
    must get exactly what ``properties`` describes, for new messages and for received ones sent on."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    every = aio_pika.Message(
        b"every", headers={"n": 1, "list": [1, 2]}, content_type="text/plain", content_encoding="gzip",
        delivery_mode=2, priority=9, correlation_id="c", reply_to="r", expiration=timedelta(seconds=1.5),
        message_id="m", timestamp=1_700_000_000, type="t", user_id="guest", app_id="a",
    )  # fmt: skip
    for message in (aio_pika.Message(b""), aio_pika.Message(b"x", expiration=30), every):
        await channel.default_exchange.publish(message, routing_key=queue.name)
        received = await queue.get(timeout=5, no_ack=True)
        assert received is not None
        assert codec.encode_properties(received.properties) == codec.encode_properties(message.properties)
        if message is every:
            # A received message published again carries the same properties.
            await channel.default_exchange.publish(received, routing_key=queue.name)
            again = await queue.get(timeout=5, no_ack=True)
            assert again is not None
            assert codec.encode_properties(again.properties) == codec.encode_properties(every.properties)


async def test_a_subclass_that_says_its_own_properties(channel: aio_pika.Channel, names: Names) -> None:
    """A ``Message`` subclass overriding ``properties`` is published with what it returns."""

    class Stamped(aio_pika.Message):
        @property
        def properties(self) -> commands.Basic.Properties:
            properties = super().properties
            properties.app_id = "stamped"
            return properties

    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    await channel.default_exchange.publish(Stamped(b"x", message_id="m"), routing_key=queue.name)
    received = await queue.get(timeout=5, no_ack=True)
    assert received is not None
    assert (received.app_id, received.message_id) == ("stamped", "m")


async def test_expiration_and_timestamp_conversions(channel: aio_pika.Channel, names: Names) -> None:
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    for expiration, expected in ((timedelta(seconds=30), 30.0), (2.5, 2.5), (None, None)):
        message = aio_pika.Message(b"x", expiration=expiration, timestamp=1_700_000_000)
        await channel.default_exchange.publish(message, routing_key=queue.name)
        received = await queue.get(timeout=5, no_ack=True)
        assert received is not None
        assert received.expiration == expected
        assert received.timestamp == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    future = datetime.now(tz=UTC) + timedelta(seconds=30)
    assert 25_000 <= int(aio_pika.Message(b"", expiration=future).properties.expiration) <= 30_000  # type: ignore[arg-type]


async def test_correlation_id_as_bytes_like_aio_pika_1(channel: aio_pika.Channel, names: Names) -> None:
    """The seed's RPC client publishes bytes correlation ids and looks the replies up by those bytes."""
    queue = await channel.declare_queue(names.queue(), exclusive=True, arguments=expiring())
    futures = {b"id-from-1.x": "waiting"}
    await channel.default_exchange.publish(
        aio_pika.Message(b"request", correlation_id=b"id-from-1.x"), routing_key=queue.name
    )
    request = await queue.get(timeout=5, no_ack=True)
    assert request is not None
    # the server echoes whatever it received; the client finds its key
    await channel.default_exchange.publish(
        aio_pika.Message(b"reply", correlation_id=request.correlation_id), routing_key=queue.name
    )
    reply = await queue.get(timeout=5, no_ack=True)
    assert reply is not None
    assert futures.pop(reply.correlation_id) == "waiting"  # type: ignore[arg-type]


def test_message_defaults_info_lock_and_copy() -> None:
    message = aio_pika.Message(b"payload", headers={"a": 1}, message_id=7, type="t")  # type: ignore[arg-type]
    assert message.delivery_mode is DeliveryMode.NOT_PERSISTENT
    assert message.priority == 0
    assert message.message_id == "7"
    assert list(message) == list(b"payload")
    info = message.info()
    assert info["body_size"] == 7 and info["headers"] == {"a": 1} and info["type"] == "t"
    assert info["delivery_tag"] is None and info["routing_key"] is None
    properties = message.properties
    assert isinstance(properties, commands.Basic.Properties)
    assert properties.message_type == "t" and properties.delivery_mode == 1

    duplicate = copy.copy(message)
    assert duplicate is not message and duplicate.body == message.body and duplicate.headers == {"a": 1}

    assert not message.locked
    message.priority = 3
    message.lock()
    assert message.locked
    with pytest.raises(ValueError, match="locked"):
        message.priority = 4
    assert not duplicate.locked
    assert isinstance(message, aio_pika.Message) and repr(message).startswith("Message:")
    restored = pickle.loads(pickle.dumps(message))
    assert restored.locked and restored.priority == 3 and restored.headers == {"a": 1}
    assert not pickle.loads(pickle.dumps(duplicate)).locked

    with pytest.raises(TypeError, match="bytes"):
        aio_pika.Message("text")  # type: ignore[arg-type]
    assert aio_pika.Message(bytearray(b"ok")).body == b"ok"
    with pytest.raises(ValueError, match="expiration"):
        _ = aio_pika.Message(b"", expiration=[1]).properties  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timestamp"):
        aio_pika.Message(b"", timestamp="now")  # type: ignore[arg-type]


def test_enums() -> None:
    assert DeliveryMode.PERSISTENT == 2 and DeliveryMode.NOT_PERSISTENT == 1
    assert aio_pika.ExchangeType.TOPIC == "topic"
    assert aio_pika.ExchangeType("x-consistent-hash") is aio_pika.ExchangeType.X_CONSISTENT_HASH
