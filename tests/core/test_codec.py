"""amqp_core.codec against its oracle, pamqp: the same bytes out, the same values in.

pamqp only decodes ``bytes``, so it always gets bytes; our decoders get the lead's ``bytearray``
receive buffer, usually with unrelated bytes on both sides of the payload to prove they stay
inside ``offset`` and ``end``.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import math
import struct
import warnings
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import (
    base,
    body,
    commands,
    constants,
    decode,
    encode,
    exceptions,
    frame,
    header,
    heartbeat,
)

from amqp_core import codec
from amqp_core.codec import DecodeError

# Modest example counts keep the whole file within seconds; no deadline, CI machines are noisy.
fast = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- helpers ---------------------------------------------------------------------------------------

PAD = b"\xa5\x5a\xff"  # bytes around a payload that no decoder may touch


def payload_of(wire: bytes) -> bytes:
    """The payload of one complete frame (7-byte header, payload, frame-end)."""
    assert wire[-1] == constants.FRAME_END
    return wire[7:-1]


def embed(payload: bytes) -> tuple[bytearray, int, int]:
    """``payload`` inside a bigger receive buffer: (buffer, offset, end)."""
    return bytearray(PAD + payload + PAD), len(PAD), len(PAD) + len(payload)


def unmarshal(wire: bytes) -> Any:
    consumed, _channel, value = frame.unmarshal(bytes(wire))
    assert consumed == len(wire)
    return value


def split_frames(wire: bytes) -> list[bytes]:
    frames, pos = [], 0
    while pos < len(wire):
        size = struct.unpack_from(">I", wire, pos + 3)[0]
        frames.append(wire[pos : pos + 8 + size])
        pos += 8 + size
    return frames


def assert_same(ours: Any, theirs: Any) -> None:
    """Equal values of the same types all the way down (``==`` alone says True == 1 == 1.0)."""
    assert type(ours) is type(theirs), (ours, theirs)
    if isinstance(ours, dict):
        assert list(ours) == list(theirs)
        for key in ours:
            assert_same(ours[key], theirs[key])
    elif isinstance(ours, list):
        assert len(ours) == len(theirs)
        for mine, other in zip(ours, theirs, strict=True):
            assert_same(mine, other)
    elif isinstance(ours, float) and math.isnan(ours):
        assert math.isnan(theirs)
    elif isinstance(ours, decimal.Decimal):
        assert ours.as_tuple() == theirs.as_tuple()
    elif isinstance(ours, datetime.datetime):
        assert (ours, ours.tzinfo) == (theirs, theirs.tzinfo)
    else:
        assert ours == theirs


def assert_same_properties(ours: commands.Basic.Properties, theirs: commands.Basic.Properties) -> None:
    assert type(ours) is commands.Basic.Properties
    assert ours == theirs
    for name in commands.Basic.Properties.__slots__:
        assert_same(getattr(ours, name), getattr(theirs, name))


def assert_decode_error_on_every_cut(decoder: Callable[..., Any], payload: bytes, start: int = 0) -> None:
    """Every truncated payload, and one with a byte too many, raises DecodeError.

    The rest of the payload stays in the buffer past ``end``: a decoder that read past ``end``
    would find it there and succeed, failing the test.
    """
    buf, offset, end = embed(payload)
    for cut in range(offset + start, end):
        with pytest.raises(DecodeError):
            decoder(buf, offset + start, cut)
    with pytest.raises(DecodeError):
        decoder(buf, offset + start, end + 1)


# ---- strategies ------------------------------------------------------------------------------------

# Names pamqp's validators accept (the wire allows any shortstr; pamqp, our oracle, does not).
names = st.text(alphabet="abcXYZ019-_.:@#,/+ ", max_size=127)
# Any text that fits a shortstr; characters of 1 to 4 UTF-8 bytes.
shortstrs = st.text(max_size=63) | st.text(alphabet="aé€😀", max_size=63)
delivery_tags = st.integers(0, 2**63 - 1)
channels = st.integers(0, 65535)
utc_datetimes = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1),
    max_value=datetime.datetime(2106, 2, 7),
    timezones=st.just(datetime.UTC),
).map(lambda value: value.replace(microsecond=0))
amqp_decimals = st.builds(
    lambda mantissa, exponent: decimal.Decimal(mantissa).scaleb(exponent),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-30, 0),
) | st.sampled_from([decimal.Decimal("1E+3"), decimal.Decimal("-25E+2"), decimal.Decimal("-0")])
table_keys = st.text(max_size=16)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.sampled_from([-129, 128, -32769, 32768, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32])
    | st.floats(width=32, allow_nan=False)
    | st.text(max_size=20)
    | utc_datetimes
    | amqp_decimals
    | st.binary(max_size=8).map(bytearray)
)
field_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(table_keys, children, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(table_keys, field_values, max_size=6)


@st.composite
def raw_field_values(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A type octet and value as bytes, over every type letter pamqp decodes — including those it
    never encodes (B i L d x V and NUL) and longstrs that are not UTF-8."""
    letters = "tbBsuIilLfdDSTVx\x00" + ("AF" if depth < 3 else "")
    letter = draw(st.sampled_from(letters))
    fixed = {"t": "B", "b": "b", "B": "B", "s": "h", "u": "H", "I": "i", "i": "I", "l": "q"}
    fixed |= {"L": "q", "f": "f", "d": "d", "D": "Bi", "T": "Q", "V": "", "\x00": ""}
    if letter in fixed:
        value = draw(st.binary(min_size=struct.calcsize(">" + fixed[letter]), max_size=8))
        value = value[: struct.calcsize(">" + fixed[letter])]
        if letter == "T":
            value = struct.pack(">Q", draw(st.integers(0, 2**32 - 1) | st.integers(0, 2**45)))
    elif letter in "Sx":
        value = draw(st.binary(max_size=12) | st.text(max_size=6).map(str.encode))
        value = struct.pack(">I", len(value)) + value
    elif letter == "A":
        items = b"".join(draw(st.lists(raw_field_values(depth + 1), max_size=3)))
        value = struct.pack(">I", len(items)) + items
    else:
        value = draw(raw_tables(depth + 1))
    return letter.encode() + value


@st.composite
def raw_tables(draw: st.DrawFn, depth: int = 0) -> bytes:
    items = draw(st.lists(st.tuples(table_keys, raw_field_values(depth)), max_size=4))
    encoded = b"".join(encode.short_string(key) + value for key, value in items)
    return struct.pack(">I", len(encoded)) + encoded


def build_properties(values: dict[str, Any]) -> commands.Basic.Properties:
    # Not through the constructor: it validates (delivery_mode 1 or 2, empty cluster_id), which
    # marshalling does not; the peer can send any value.
    properties = commands.Basic.Properties()
    for name, value in values.items():
        setattr(properties, name, value)
    return properties


SHORTSTR_PROPERTIES = [
    name
    for name in commands.Basic.Properties.__slots__
    if commands.Basic.Properties.amqp_type(name) == "shortstr"
]
properties_strategy = st.fixed_dictionaries(
    {},
    optional={
        **{name: st.none() | shortstrs for name in SHORTSTR_PROPERTIES},
        "headers": st.none() | tables,
        "delivery_mode": st.none() | st.integers(0, 255),
        "priority": st.none() | st.integers(0, 255),
        "timestamp": st.none() | utc_datetimes,
    },
).map(build_properties)

ALL_PROPERTIES = build_properties(
    {
        "content_type": "application/json",
        "content_encoding": "gzip",
        "headers": {
            "x-retries": 3,
            "naïve ünïcödé 😀": "ça va",
            "nested": {"list": [1, "two", 3.5, None, True, {"deep": [[], {}]}], "empty": {}},
            "when": datetime.datetime(2024, 2, 29, 12, 0, tzinfo=datetime.UTC),
            "price": decimal.Decimal("12.34"),
            "raw": bytearray(b"\x00\xff"),
            "big": 2**62,
            "negative": -(2**40),
        },
        "delivery_mode": 2,
        "priority": 9,
        "correlation_id": "corr-1",
        "reply_to": "amq.rabbitmq.reply-to",
        "expiration": "60000",
        "message_id": "id-€",
        "timestamp": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        "message_type": "order.created",
        "user_id": "guest",
        "app_id": "app",
        "cluster_id": "cluster",
    }
)


# pamqp's validators, by attribute name: deprecated fields with one allowed value, name syntax.
DEPRECATED_FIELDS = {
    "ticket": 0,
    "capabilities": "",
    "known_hosts": "",
    "insist": False,
    "out_of_band": "0",
    "channel_id": "0",
    "cluster_id": "",
}
NAME_FIELDS = ("exchange", "destination", "source", "queue")
METHOD_FIELD_OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    **{name: st.just(value) for name, value in DEPRECATED_FIELDS.items()},
    **dict.fromkeys(NAME_FIELDS, names),
}
METHOD_FIELD_TYPES: dict[str, st.SearchStrategy[Any]] = {
    "bit": st.booleans(),
    "octet": st.integers(0, 255),
    "short": st.integers(0, 65535),
    "long": st.integers(0, 2**32 - 1),
    "longlong": delivery_tags,
    "shortstr": shortstrs,
    "longstr": st.text(max_size=40),
    "table": tables,
}


ALL_METHOD_CLASSES = sorted(commands.INDEX_MAPPING.values(), key=lambda cls: cls.index)


def method_arguments(cls: type[base.Frame]) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments for ``cls``, by each attribute's AMQP type (``cls.amqp_type``)."""
    return st.fixed_dictionaries(
        {
            name: METHOD_FIELD_OVERRIDES.get(name, METHOD_FIELD_TYPES[cls.amqp_type(name)])
            for name in cls.__slots__
        }
    )


@st.composite
def methods(draw: st.DrawFn) -> base.Frame:
    cls = draw(st.sampled_from(ALL_METHOD_CLASSES))
    return cls(**draw(method_arguments(cls)))


def method_fields(method: base.Frame) -> dict[str, Any]:
    return dict(iter(method))


# ---- constants -------------------------------------------------------------------------------------


def test_constants_match_pamqp() -> None:
    assert codec.FRAME_END == constants.FRAME_END == 0xCE
    assert heartbeat.Heartbeat().marshal() == codec.HEARTBEAT_FRAME
    assert frame.unmarshal(codec.HEARTBEAT_FRAME)[0] == 8
    assert codec.DEFAULT_MAX_TABLE_DEPTH >= 8


# ---- settle frames ---------------------------------------------------------------------------------


@fast
@given(channels, delivery_tags, st.booleans(), st.booleans())
def test_settle_frames_match_pamqp(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> None:
    ack = commands.Basic.Ack(delivery_tag, multiple)
    nack = commands.Basic.Nack(delivery_tag, multiple, requeue)
    reject = commands.Basic.Reject(delivery_tag, requeue)
    assert codec.encode_ack(channel, delivery_tag, multiple) == frame.marshal(ack, channel)
    assert codec.encode_nack(channel, delivery_tag, multiple, requeue) == frame.marshal(nack, channel)
    assert codec.encode_reject(channel, delivery_tag, requeue) == frame.marshal(reject, channel)

    buf, offset, end = embed(payload_of(frame.marshal(ack, channel)))
    assert codec.decode_ack(buf, offset + 4, end) == (delivery_tag, multiple)
    buf, offset, end = embed(payload_of(frame.marshal(nack, channel)))
    assert codec.decode_nack(buf, offset + 4, end) == (delivery_tag, multiple, requeue)

    # And back: pamqp reads what we write.
    theirs = unmarshal(codec.encode_nack(channel, delivery_tag, multiple, requeue))
    assert method_fields(theirs) == method_fields(nack)


def test_settle_frames_reject_values_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"Basic\.Ack"):
        codec.encode_ack(1, 2**64, False)
    with pytest.raises(ValueError, match=r"Basic\.Nack"):
        codec.encode_nack(65536, 1, False, True)
    with pytest.raises(ValueError, match=r"Basic\.Reject"):
        codec.encode_reject(-1, 1, True)


def test_ack_and_nack_decoders_reject_truncation_and_extra_bytes() -> None:
    ack = payload_of(frame.marshal(commands.Basic.Ack(7, True), 1))
    nack = payload_of(frame.marshal(commands.Basic.Nack(7, True, False), 1))
    assert_decode_error_on_every_cut(codec.decode_ack, ack, start=4)
    assert_decode_error_on_every_cut(codec.decode_nack, nack, start=4)


# ---- content: Basic.Publish, content header, body --------------------------------------------------


def pamqp_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    immediate: bool,
    properties: commands.Basic.Properties | None,
    content: bytes,
    frame_max: int,
) -> bytes:
    publish = commands.Basic.Publish(
        exchange=exchange, routing_key=routing_key, mandatory=mandatory, immediate=immediate
    )
    wire = frame.marshal(publish, channel)
    wire += frame.marshal(header.ContentHeader(0, len(content), properties), channel)
    chunk = frame_max - 8 if frame_max else max(len(content), 1)
    for start in range(0, len(content), chunk):
        wire += frame.marshal(body.ContentBody(content[start : start + chunk]), channel)
    return wire


@pytest.mark.parametrize(
    ("frame_max", "body_size"),
    [
        (0, 0),
        (0, 1),
        (0, 300_000),
        (4096, 0),
        (4096, 1),
        (4096, 4087),
        (4096, 4088),
        (4096, 4089),
        (4096, 3 * 4088 + 5),
        (4096, 2 * 4088),
        (131072, 131064),
        (131072, 131065),
        (512, 1000),
    ],
)
@pytest.mark.parametrize("properties", [None, ALL_PROPERTIES], ids=["no-properties", "all"])
def test_publish_matches_pamqp(
    frame_max: int, body_size: int, properties: commands.Basic.Properties | None
) -> None:
    content = bytes(range(256)) * (body_size // 256) + b"z" * (body_size % 256)
    ours = codec.encode_publish(1, "amq.topic", "orders.créées", True, False, properties, content, frame_max)
    expected = pamqp_publish(1, "amq.topic", "orders.créées", True, False, properties, content, frame_max)
    assert ours == expected
    frames = split_frames(ours)
    assert len(frames) == 2 + (-(-body_size // (frame_max - 8)) if frame_max else min(body_size, 1))
    if frame_max:
        assert all(len(wire) <= frame_max for wire in frames[2:])


@fast
@given(
    channels,
    names,
    shortstrs,
    st.booleans(),
    st.booleans(),
    st.none() | properties_strategy,
    st.binary(max_size=300),
    st.sampled_from([0, 64, 100, 4096]),
)
def test_publish_matches_pamqp_property(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    immediate: bool,
    properties: commands.Basic.Properties | None,
    content: bytes,
    frame_max: int,
) -> None:
    expected = pamqp_publish(
        channel, exchange, routing_key, mandatory, immediate, properties, content, frame_max
    )
    header_frame = split_frames(expected)[1]
    if frame_max and len(header_frame) > frame_max:
        with pytest.raises(ValueError, match="frame_max"):
            codec.encode_publish(
                channel, exchange, routing_key, mandatory, immediate, properties, content, frame_max
            )
        return
    ours = codec.encode_publish(
        channel, exchange, routing_key, mandatory, immediate, properties, content, frame_max
    )
    assert ours == expected


def test_publish_takes_any_exchange_name_and_bytes_like_bodies() -> None:
    # No name validation (the broker does it); bytearray and memoryview bodies work like bytes.
    wire = codec.encode_publish(1, "ex/€ ch@nge!", "", False, False, None, bytearray(b"abc"), 0)
    publish = unmarshal(split_frames(wire)[0])
    assert publish.exchange == "ex/€ ch@nge!"
    assert wire == codec.encode_publish(1, "ex/€ ch@nge!", "", False, False, None, b"abc", 0)
    content = bytes(range(50))
    ours = codec.encode_publish(1, "", "q", False, False, None, memoryview(content), 30)
    assert ours == pamqp_publish(1, "", "q", False, False, None, content, 30)


def test_publish_errors() -> None:
    with pytest.raises(ValueError, match="exchange"):
        codec.encode_publish(1, "é" * 128, "", False, False, None, b"", 0)
    with pytest.raises(ValueError, match="routing_key"):
        codec.encode_publish(1, "", "r" * 256, False, False, None, b"", 0)
    with pytest.raises(TypeError, match="routing_key"):
        codec.encode_publish(1, "", b"rk", False, False, None, b"", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exchange"):
        codec.encode_publish(1, ["ex"], "", False, False, None, b"", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame_max"):
        codec.encode_publish(1, "", "", False, False, None, b"body", 8)
    with pytest.raises(ValueError, match=r"Basic\.Publish"):
        codec.encode_publish(70000, "", "", False, False, None, b"", 0)
    # 255 bytes is the limit, not 255 characters.
    assert codec.encode_publish(1, "x" * 255, "é" * 127, False, False, None, b"", 0)


def test_publish_methods_kept_for_a_bounded_number_of_destinations() -> None:
    # Method frames are reused per destination; a publisher with a routing key per message (one per
    # user, per order…) must not make the codec keep them all.
    for n in range(3 * codec._PUBLISH_METHODS_KEPT):
        wire = codec.encode_publish(2, "amq.topic", f"orders.{n}", n % 2 == 0, False, None, b"x", 0)
        assert wire == pamqp_publish(2, "amq.topic", f"orders.{n}", n % 2 == 0, False, None, b"x", 0)
        assert len(codec._publish_methods) <= codec._PUBLISH_METHODS_KEPT
    # Evicted and encoded again: still the same bytes.
    assert codec.encode_publish(2, "amq.topic", "orders.0", True, False, None, b"x", 0) == pamqp_publish(
        2, "amq.topic", "orders.0", True, False, None, b"x", 0
    )


def test_encode_properties_none_and_empty_strings() -> None:
    assert codec.encode_properties(None) == commands.Basic.Properties().marshal() == b"\x00\x00"
    # pamqp leaves out empty strings but sends empty tables and zeros.
    properties = build_properties({"content_type": "", "headers": {}, "priority": 0})
    assert codec.encode_properties(properties) == properties.marshal() == b"\x28\x00\x00\x00\x00\x00\x00"


def test_encode_properties_errors() -> None:
    with pytest.raises(ValueError, match="message_id"):
        codec.encode_properties(build_properties({"message_id": "m" * 256}))
    with pytest.raises(TypeError, match="content_type"):
        codec.encode_properties(build_properties({"content_type": 5}))
    with pytest.raises(ValueError, match="properties"):
        codec.encode_properties(build_properties({"delivery_mode": 256}))
    with pytest.raises(ValueError, match="properties"):
        codec.encode_properties(
            build_properties({"timestamp": datetime.datetime(1969, 1, 1, tzinfo=datetime.UTC)})
        )


def header_payload(properties: commands.Basic.Properties | None, body_size: int = 5) -> bytes:
    return payload_of(frame.marshal(header.ContentHeader(0, body_size, properties), 1))


def test_all_properties_both_ways() -> None:
    assert codec.encode_properties(ALL_PROPERTIES) == ALL_PROPERTIES.marshal()
    payload = header_payload(ALL_PROPERTIES, 2**40)
    class_id, body_size, properties = codec.decode_content_header(*embed(payload))
    theirs = header.ContentHeader()
    theirs.unmarshal(payload)
    assert (class_id, body_size) == (theirs.class_id, theirs.body_size) == (60, 2**40)
    assert_same_properties(properties, theirs.properties)
    assert properties.cluster_id == "cluster"


def test_absent_properties_are_none_and_cluster_id_empty() -> None:
    _class_id, _size, properties = codec.decode_content_header(*embed(header_payload(None)))
    assert_same_properties(properties, commands.Basic.Properties())
    assert all(getattr(properties, name) is None for name in properties.__slots__[:-1])
    assert properties.cluster_id == ""


@fast
@given(properties_strategy, st.integers(0, 2**64 - 1))
def test_properties_round_trip_with_pamqp(properties: commands.Basic.Properties, body_size: int) -> None:
    encoded = codec.encode_properties(properties)
    assert encoded == properties.marshal()
    payload = header_payload(properties, body_size)
    assert payload == struct.pack(">HHQ", 60, 0, body_size) + encoded
    for buffer in (embed(payload), (payload, 0, len(payload))):
        class_id, size, ours = codec.decode_content_header(*buffer)
        theirs = header.ContentHeader()
        theirs.unmarshal(payload)
        assert (class_id, size) == (60, body_size)
        assert_same_properties(ours, theirs.properties)


def test_continuation_flags_word() -> None:
    # pamqp reads further flag words when the low bit is set; an empty one changes nothing.
    payload = struct.pack(">HHQHH", 60, 0, 3, 0x8001, 0x0000) + b"\x04text"
    ours = codec.decode_content_header(*embed(payload))[2]
    theirs = header.ContentHeader()
    theirs.unmarshal(payload)
    assert_same_properties(ours, theirs.properties)
    assert ours.content_type == "text"
    chained = struct.pack(">HHQHHH", 60, 0, 3, 0x0001, 0x0001, 0x0000)
    assert codec.decode_content_header(*embed(chained))[2] == commands.Basic.Properties()
    # Flags no Basic property uses cannot be decoded: their types are unknown.
    with pytest.raises(DecodeError, match="past the 14"):
        codec.decode_content_header(*embed(struct.pack(">HHQHH", 60, 0, 3, 0x0001, 0x8000)))
    with pytest.raises(DecodeError, match="0x0002"):
        codec.decode_content_header(*embed(struct.pack(">HHQH", 60, 0, 3, 0x0002)))


@fast
@given(st.integers(0, 2**64 - 1))
def test_timestamps_decode_as_pamqp_does(seconds: int) -> None:
    # Including pamqp's reading of values past 2106 as milliseconds, and values out of range.
    payload = struct.pack(">HHQHQ", 60, 0, 0, 0x0040, seconds)
    theirs = header.ContentHeader()
    try:
        theirs.unmarshal(payload)
    except (ValueError, OverflowError, OSError):
        with pytest.raises(DecodeError):
            codec.decode_content_header(*embed(payload))
    else:
        assert_same_properties(codec.decode_content_header(*embed(payload))[2], theirs.properties)


def test_invalid_utf8_shortstr_property_is_a_decode_error_as_in_pamqp() -> None:
    payload = struct.pack(">HHQH", 60, 0, 0, 0x8000) + b"\x02\xff\xfe"
    with pytest.raises(ValueError):
        header.ContentHeader().unmarshal(payload)
    with pytest.raises(DecodeError):
        codec.decode_content_header(*embed(payload))


def test_content_header_rejects_truncation_and_extra_bytes() -> None:
    assert_decode_error_on_every_cut(codec.decode_content_header, header_payload(ALL_PROPERTIES))
    assert_decode_error_on_every_cut(codec.decode_content_header, header_payload(None))
    # The empty headers table every aio-pika message carries is read without decoding a table.
    empty_headers = commands.Basic.Properties(headers={}, correlation_id="c")
    assert codec.decode_content_header(*embed(header_payload(empty_headers)))[2] == empty_headers
    assert_decode_error_on_every_cut(codec.decode_content_header, header_payload(empty_headers))
    with pytest.raises(DecodeError, match="nested deeper than 0 levels"):
        codec.decode_content_header(*embed(header_payload(empty_headers)), max_table_depth=0)


# ---- Basic.Deliver, Basic.GetOk, Basic.Return ------------------------------------------------------


@fast
@given(channels, shortstrs, delivery_tags, st.booleans(), names, shortstrs)
def test_decode_deliver_matches_pamqp(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
) -> None:
    method = commands.Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key)
    wire = frame.marshal(method, channel)
    theirs = unmarshal(wire)
    expected = (
        theirs.consumer_tag,
        theirs.delivery_tag,
        theirs.redelivered,
        theirs.exchange,
        theirs.routing_key,
    )
    buf, offset, end = embed(payload_of(wire))
    assert codec.decode_deliver(buf, offset + 4, end) == expected
    assert codec.decode_deliver(wire, 11, len(wire) - 1) == expected
    assert_same(method_fields(codec.decode_method(buf, offset, end)), method_fields(theirs))


@fast
@given(delivery_tags, st.booleans(), names, shortstrs, st.integers(0, 2**32 - 1))
def test_decode_get_ok_matches_pamqp(
    delivery_tag: int, redelivered: bool, exchange: str, routing_key: str, message_count: int
) -> None:
    method = commands.Basic.GetOk(delivery_tag, redelivered, exchange, routing_key, message_count)
    wire = frame.marshal(method, 1)
    theirs = unmarshal(wire)
    buf, offset, end = embed(payload_of(wire))
    assert codec.decode_get_ok(buf, offset + 4, end) == (
        theirs.delivery_tag,
        theirs.redelivered,
        theirs.exchange,
        theirs.routing_key,
        theirs.message_count,
    )


@fast
@given(st.integers(0, 65535), shortstrs, names, shortstrs)
def test_decode_return_matches_pamqp(
    reply_code: int, reply_text: str, exchange: str, routing_key: str
) -> None:
    method = commands.Basic.Return(reply_code, reply_text, exchange, routing_key)
    wire = frame.marshal(method, 1)
    theirs = unmarshal(wire)
    buf, offset, end = embed(payload_of(wire))
    assert codec.decode_return(buf, offset + 4, end) == (
        theirs.reply_code,
        theirs.reply_text,
        theirs.exchange,
        theirs.routing_key,
    )


def test_content_method_decoders_reject_truncation_and_extra_bytes() -> None:
    deliver = commands.Basic.Deliver("ctag-😀", 2**40, True, "amq.direct", "rk")
    get_ok = commands.Basic.GetOk(2**40, True, "amq.direct", "rk", 17)
    returned = commands.Basic.Return(312, "NO_ROUTE", "amq.direct", "rk")
    for decoder, method in [
        (codec.decode_deliver, deliver),
        (codec.decode_get_ok, get_ok),
        (codec.decode_return, returned),
    ]:
        assert_decode_error_on_every_cut(decoder, payload_of(frame.marshal(method, 1)), start=4)


def test_invalid_utf8_consumer_tag_is_a_decode_error_as_in_pamqp() -> None:
    payload = b"\x00\x3c\x00\x3c" + b"\x01\xff" + struct.pack(">qB", 1, 0) + b"\x00\x00"
    wire = struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce"
    with pytest.raises(exceptions.UnmarshalingException, match="utf-8"):
        frame.unmarshal(wire)
    buf, offset, end = embed(payload)
    with pytest.raises(DecodeError, match=r"Basic\.Deliver"):
        codec.decode_deliver(buf, offset + 4, end)
    with pytest.raises(DecodeError, match=r"Basic\.Deliver"):
        codec.decode_method(buf, offset, end)


# ---- field tables ----------------------------------------------------------------------------------


@fast
@given(tables)
def test_tables_match_pamqp_both_ways(table: dict[str, Any]) -> None:
    encoded = codec.encode_table(table)
    assert encoded == encode.field_table(table)
    _consumed, theirs = decode.field_table(encoded)
    ours, new_offset = codec.decode_table(*embed(encoded))
    assert new_offset == len(PAD) + len(encoded)
    assert_same(ours, theirs)


@fast
@given(raw_tables())
def test_decode_table_matches_pamqp_on_every_type_letter(encoded: bytes) -> None:
    try:
        consumed, theirs = decode.field_table(encoded)
    except (ValueError, OverflowError, OSError):
        with pytest.raises(DecodeError):
            codec.decode_table(*embed(encoded))
        return
    assert consumed == len(encoded)
    ours, _offset = codec.decode_table(*embed(encoded))
    assert_same(ours, theirs)


def test_decode_table_type_letters() -> None:
    items = {
        "t": b"t\x01",
        "b": b"b\xff",
        "B": b"B\xff",
        "s": b"s\xff\xfe",
        "u": b"u\xff\xfe",
        "I": b"I\xff\xff\xff\xfe",
        "i": b"i\xff\xff\xff\xfe",
        "l": b"l" + struct.pack(">q", -3),
        "L": b"L" + struct.pack(">q", -3),
        "f": b"f" + struct.pack(">f", 1.5),
        "d": b"d" + struct.pack(">d", 0.1),
        "D": b"D\x02" + struct.pack(">i", -1234),
        "S": b"S\x00\x00\x00\x02\xc3\xa9",
        "S-binary": b"S\x00\x00\x00\x02\xff\x00",
        "A": b"A\x00\x00\x00\x02b\x01",
        "T": b"T" + struct.pack(">Q", 1_700_000_000),
        "T-ms": b"T" + struct.pack(">Q", 1_700_000_000_123),
        "F": b"F\x00\x00\x00\x00",
        "V": b"V",
        "NUL": b"\x00",
        "x": b"x\x00\x00\x00\x02\x00\xff",
    }
    raw = b"".join(encode.short_string(key) + value for key, value in items.items())
    encoded = struct.pack(">I", len(raw)) + raw
    ours, _offset = codec.decode_table(*embed(encoded))
    assert_same(ours, decode.field_table(encoded)[1])
    assert ours["S-binary"] == b"\xff\x00"
    assert ours["D"] == decimal.Decimal("-12.34")
    assert ours["T-ms"] == datetime.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=datetime.UTC)
    with pytest.raises(DecodeError, match="unknown field type 'z'"):
        codec.decode_table(*embed(b"\x00\x00\x00\x03\x01kz"))
    with pytest.raises(DecodeError):  # a key that is not UTF-8
        codec.decode_table(*embed(b"\x00\x00\x00\x03\x01\xffV"))


def test_decode_table_rejects_truncation() -> None:
    encoded = encode.field_table(ALL_PROPERTIES.headers)
    buf, offset, end = embed(encoded)
    for cut in range(offset, end):
        with pytest.raises(DecodeError):
            codec.decode_table(buf, offset, cut)
    # A value running past its table's declared end is malformed, even if the frame goes on.
    with pytest.raises(DecodeError):
        codec.decode_table(*embed(b"\x00\x00\x00\x04\x01kS\x00" + b"\x00\x00\x01x"))


def test_encode_table_details() -> None:
    assert codec.encode_table({}) == encode.field_table({}) == b"\x00\x00\x00\x00"
    naive = {"when": datetime.datetime(2024, 1, 1, 12, 30)}  # naive datetimes are UTC
    assert codec.encode_table(naive) == encode.field_table(naive)
    eastern = datetime.timezone(datetime.timedelta(hours=-5))
    aware = {"when": datetime.datetime(2024, 1, 1, 12, 30, tzinfo=eastern)}
    assert codec.encode_table(aware) == encode.field_table(aware)
    decimals = {"a": decimal.Decimal("1E+3"), "b": decimal.Decimal("-0.000"), "c": decimal.Decimal(7)}
    assert codec.encode_table(decimals) == encode.field_table(decimals)
    # Any mapping will do at the top level.
    assert codec.encode_table(MappingProxyType({"b": 1, "a": "x"})) == encode.field_table({"a": "x", "b": 1})


def test_long_keys_are_truncated_like_pamqp(caplog: pytest.LogCaptureFixture) -> None:
    table = {"é" * 100: 1, "k" * 200: 2}
    assert codec.encode_table(table) == encode.field_table(table)
    assert "Truncating field table key" in caplog.text


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (b"bytes", TypeError),
        (object(), TypeError),
        ((1, 2), TypeError),
        ({1, 2}, TypeError),
        (2**63, ValueError),
        (-(2**63) - 1, ValueError),
        (decimal.Decimal("NaN"), ValueError),
        (decimal.Decimal("1E-300"), ValueError),
        (decimal.Decimal(2**40), ValueError),
        (1e300, ValueError),
        (datetime.datetime(1960, 1, 1, tzinfo=datetime.UTC), ValueError),
    ],
)
def test_encode_table_errors(value: Any, error: type[Exception]) -> None:
    # pamqp refuses the same values (with TypeError, or OverflowError/struct.error).
    with pytest.raises((TypeError, OverflowError, struct.error)):
        encode.field_table({"k": [value]})
    with pytest.raises(error):
        codec.encode_table({"k": [value]})


def test_encode_table_rejects_non_str_keys() -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        codec.encode_table({1: "x"})  # type: ignore[dict-item]


# ---- table depth -----------------------------------------------------------------------------------


def nested_table(levels: int, via_arrays: bool = False) -> dict[str, Any]:
    """A table ``levels`` deep, counting itself; with ``via_arrays`` every even level is an array."""

    def is_array(level: int) -> bool:
        return via_arrays and level % 2 == 0

    value: Any = [] if is_array(levels) else {}
    for level in range(levels - 1, 0, -1):
        value = [value] if is_array(level) else {"k": value}
    assert isinstance(value, dict)
    return value


@pytest.mark.parametrize("via_arrays", [False, True])
@pytest.mark.parametrize("max_depth", [1, 2, 5, codec.DEFAULT_MAX_TABLE_DEPTH])
def test_table_depth_limit(max_depth: int, via_arrays: bool) -> None:
    fits = encode.field_table(nested_table(max_depth, via_arrays))
    too_deep = encode.field_table(nested_table(max_depth + 1, via_arrays))
    assert codec.decode_table(*embed(fits), max_depth=max_depth)[0] == decode.field_table(fits)[1]
    with pytest.raises(DecodeError, match=f"nested deeper than {max_depth} levels"):
        codec.decode_table(*embed(too_deep), max_depth=max_depth)


def test_default_depth_limit_applies_to_headers_and_methods() -> None:
    limit = codec.DEFAULT_MAX_TABLE_DEPTH
    fits = build_properties({"headers": nested_table(limit)})
    too_deep = build_properties({"headers": nested_table(limit + 1)})
    assert codec.decode_content_header(*embed(header_payload(fits)))[2] == fits
    with pytest.raises(DecodeError, match="nested deeper"):
        codec.decode_content_header(*embed(header_payload(too_deep)))
    with pytest.raises(DecodeError, match="nested deeper than 3 levels"):
        codec.decode_content_header(*embed(header_payload(fits)), max_table_depth=3)

    start = commands.Connection.Start(server_properties=nested_table(limit + 1))
    with pytest.raises(DecodeError, match=r"Connection\.Start: field table nested deeper"):
        codec.decode_method(*embed(payload_of(frame.marshal(start, 0))))


def test_hostile_nesting_is_a_decode_error_not_a_recursion_error() -> None:
    encoded = b"\x00\x00\x00\x00"
    for _ in range(3000):
        entry = b"\x01kF" + encoded
        encoded = struct.pack(">I", len(entry)) + entry
    with pytest.raises(DecodeError, match="nested deeper than 32 levels"):
        codec.decode_table(*embed(encoded))
    with pytest.raises(DecodeError):
        codec.decode_table(*embed(encoded), max_depth=10**6)


# ---- every method ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")
@pytest.mark.parametrize("cls", ALL_METHOD_CLASSES, ids=lambda cls: cls.name)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_every_method_round_trips_through_pamqp(cls: type[base.Frame], data: st.DataObject) -> None:
    method = cls(**data.draw(method_arguments(cls)))
    channel = data.draw(channels)
    wire = frame.marshal(method, channel)
    assert codec.encode_method(channel, method) == wire
    theirs = unmarshal(wire)
    ours = codec.decode_method(*embed(payload_of(wire)))
    assert type(ours) is cls
    assert_same(method_fields(ours), method_fields(theirs))
    # A few truncations per example here; every one of them below, on a fixed example.
    buf, offset, end = embed(payload_of(wire))
    for cut in [*data.draw(st.lists(st.integers(offset, end - 1), max_size=3)), end + 1]:
        with pytest.raises(DecodeError):
            codec.decode_method(buf, offset, cut)


FIXED_ARGUMENTS = {
    "bit": True,
    "octet": 7,
    "short": 300,
    "long": 70_000,
    "longlong": 2**40,
    "shortstr": "sh€rt",
    "longstr": "l0ng",
    "table": {"k": [1, {"n": None}], "s": "x"},
}


@pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")
@pytest.mark.parametrize("cls", ALL_METHOD_CLASSES, ids=lambda cls: cls.name)
def test_every_method_rejects_every_truncation(cls: type[base.Frame]) -> None:
    fixed = DEPRECATED_FIELDS | dict.fromkeys(NAME_FIELDS, "amq.name")
    arguments = {name: fixed.get(name, FIXED_ARGUMENTS[cls.amqp_type(name)]) for name in cls.__slots__}
    wire = frame.marshal(cls(**arguments), 1)
    assert_decode_error_on_every_cut(codec.decode_method, payload_of(wire))


def test_decode_method_does_not_run_pamqp_constructors() -> None:
    # Basic.RecoverAsync's constructor warns; decoding what the broker sent must not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wire = frame.marshal(commands.Basic.RecoverAsync(True), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codec.decode_method(*embed(payload_of(wire))).requeue is True


def test_decode_method_errors() -> None:
    with pytest.raises(DecodeError, match="unknown method: class 60, method 99"):
        codec.decode_method(*embed(b"\x00\x3c\x00\x63"))
    with pytest.raises(DecodeError, match="shorter than its class and method ids"):
        codec.decode_method(*embed(b"\x00\x3c\x00"))
    with pytest.raises(DecodeError, match=r"Queue\.DeclareOk: 1 extra bytes after the arguments"):
        wire = frame.marshal(commands.Queue.DeclareOk("q", 1, 2), 1)
        codec.decode_method(*embed(payload_of(wire) + b"\x00"))


# ---- malformed input raises DecodeError and nothing else -------------------------------------------

DECODERS: list[Callable[..., Any]] = [
    codec.decode_deliver,
    codec.decode_get_ok,
    codec.decode_return,
    codec.decode_ack,
    codec.decode_nack,
    codec.decode_content_header,
    codec.decode_method,
    codec.decode_table,
]


def decode_or_decode_error(decoder: Callable[..., Any], buf: bytes, offset: int, end: int) -> None:
    with contextlib.suppress(DecodeError):
        decoder(bytearray(buf), offset, end)


@fast
@given(st.sampled_from(DECODERS), st.binary(max_size=80), st.data())
def test_random_bytes_raise_only_decode_errors(
    decoder: Callable[..., Any], buf: bytes, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(0, len(buf)))
    end = data.draw(st.integers(offset, len(buf)))
    decode_or_decode_error(decoder, buf, offset, end)


@st.composite
def valid_payloads(draw: st.DrawFn) -> tuple[Callable[..., Any], bytes]:
    kind = draw(st.sampled_from(["method", "header", "table"]))
    if kind == "method":
        return codec.decode_method, payload_of(frame.marshal(draw(methods()), 1))
    if kind == "header":
        return codec.decode_content_header, header_payload(draw(properties_strategy))
    return codec.decode_table, draw(raw_tables())


@pytest.mark.filterwarnings("ignore:This command is deprecated:DeprecationWarning")
@fast
@given(valid_payloads(), st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=4))
def test_corrupted_payloads_raise_only_decode_errors(
    decoder_payload: tuple[Callable[..., Any], bytes], corruptions: list[tuple[int, int]]
) -> None:
    decoder, payload = decoder_payload
    corrupted = bytearray(payload)
    for position, value in corruptions:
        if corrupted:
            corrupted[position % len(corrupted)] = value
    buf, offset, end = embed(bytes(corrupted))
    decode_or_decode_error(decoder, bytes(buf), offset, end)
