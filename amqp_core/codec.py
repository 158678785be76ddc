"""The hot-path codec: hand-written encoders and decoders for the frames a busy client sees most.

Publishing, consuming and settling messages move three or four frames per message, so these run
millions of times: ``Basic.Publish`` + content header + body out, ``Basic.Deliver`` + content header
+ body in, and the acks and nacks in both directions. pamqp's generic codec dispatches on a type
name per field and copies the buffer at every step; here each of those frames is a few precompiled
:class:`struct.Struct` calls reading straight out of the receive buffer.

Everything else (the handshake, declares, binds, closes) goes through :func:`decode_method` and
:func:`encode_method`, which cover every method in :mod:`pamqp.commands`.

pamqp stays the reference: every function here gives the same bytes, and the same Python values,
as pamqp does for the same frame. The tests check that byte for byte.

Decoders take the receive buffer (``bytes`` or ``bytearray``), an ``offset`` into it and ``end``,
the end of the frame payload (exclusive, ``end <= len(buf)``). They never read at or past ``end``,
reject payloads with bytes left over, and raise :class:`DecodeError` — and only that — for
anything malformed.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import logging
import struct
from collections.abc import Mapping
from typing import Any

from pamqp import base, commands
from pamqp import frame as pamqp_frame

__all__ = [
    "DEFAULT_MAX_TABLE_DEPTH",
    "FRAME_END",
    "HEARTBEAT_FRAME",
    "DecodeError",
    "decode_ack",
    "decode_content_header",
    "decode_deliver",
    "decode_get_ok",
    "decode_method",
    "decode_nack",
    "decode_properties",
    "decode_return",
    "decode_table",
    "encode_ack",
    "encode_method",
    "encode_nack",
    "encode_properties",
    "encode_property_values",
    "encode_publish",
    "encode_reject",
    "encode_table",
]

_log = logging.getLogger(__name__)


class DecodeError(ValueError):
    """Malformed bytes from the peer (the caller turns it into a 502 syntax error)."""


FRAME_END = 0xCE
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
# Deep enough for any real header or server-properties table, shallow enough that a hostile peer
# cannot make the recursive decoder hit Python's recursion limit.
DEFAULT_MAX_TABLE_DEPTH = 32

Buffer = bytes | bytearray

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_BASIC = 60
_PUBLISH = 40
_ACK = 80
_REJECT = 90
_NACK = 120

_OCTET = struct.Struct("B")
_USHORT = struct.Struct(">H")
_UINT = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# ---- decoding -------------------------------------------------------------------------------------

# pamqp decodes every ``longlong`` (delivery tags included) as signed; so do we, to give equal values.
_TAG_BITS = struct.Struct(">qB")  # delivery-tag, bit octet
_TAG_BITS_LEN = struct.Struct(">qBB")  # delivery-tag, bit octet, length of the next shortstr
_CONTENT_HEADER = struct.Struct(">HHQH")  # class-id, weight, body-size, first property-flags word
_DECIMAL = struct.Struct(">Bi")  # scale, signed mantissa

_Properties = commands.Basic.Properties

# Field-table values of fixed size, by type octet. The letters are RabbitMQ's (its errata to the
# 0-9-1 spec), decoded as pamqp decodes them — including ``L``, which pamqp reads as signed.
_FIXED_VALUES: dict[int, struct.Struct] = {
    ord("b"): struct.Struct(">b"),
    ord("B"): struct.Struct(">B"),
    ord("s"): struct.Struct(">h"),
    ord("u"): struct.Struct(">H"),
    ord("I"): struct.Struct(">i"),
    ord("i"): struct.Struct(">I"),
    ord("l"): struct.Struct(">q"),
    ord("L"): struct.Struct(">q"),
    ord("f"): struct.Struct(">f"),
    ord("d"): struct.Struct(">d"),
}


def _truncated(what: str) -> DecodeError:
    return DecodeError(f"truncated {what}")


def _end_error(what: str, pos: int, end: int) -> DecodeError:
    """The error for a payload whose ``what`` ends at ``pos`` rather than at ``end``."""
    return _truncated(what) if pos > end else DecodeError(f"{end - pos} extra bytes after the {what}")


def _shortstr(buf: Buffer, pos: int, end: int) -> tuple[str, int]:
    if pos >= end:
        raise _truncated("shortstr")
    start = pos + 1
    stop = start + buf[pos]
    if stop > end:
        raise _truncated("shortstr")
    # Strict UTF-8, as pamqp: a shortstr that is not UTF-8 makes the frame undecodable.
    return buf[start:stop].decode(), stop


def _longstr(buf: Buffer, pos: int, end: int) -> tuple[str | bytes, int]:
    if pos + 4 > end:
        raise _truncated("longstr")
    start = pos + 4
    stop = start + _UINT.unpack_from(buf, pos)[0]
    if stop > end:
        raise _truncated("longstr")
    raw = buf[start:stop]
    try:
        return raw.decode(), stop
    except UnicodeDecodeError:
        # pamqp hands back the raw bytes of a longstr that is not UTF-8 (it may carry binary data).
        return bytes(raw), stop


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# Making a datetime costs more than the rest of a content header; consecutive messages mostly carry
# the same second, and datetimes are immutable, so recent ones are shared.
@functools.lru_cache(maxsize=64)
def _utc_datetime(seconds: int) -> datetime.datetime:
    # Equal to pamqp's datetime.fromtimestamp(seconds, tz=UTC), and faster.
    return _EPOCH + datetime.timedelta(0, seconds)


def _timestamp(seconds: int) -> datetime.datetime:
    if seconds <= 0xFFFFFFFF:
        return _utc_datetime(seconds)
    # pamqp reads values past the year 2106 as milliseconds.
    try:
        return datetime.datetime.fromtimestamp(seconds / 1000.0, tz=datetime.UTC)
    except (ValueError, OverflowError, OSError) as error:
        raise DecodeError(f"timestamp {seconds} is out of range") from error


def _table(buf: Buffer, pos: int, end: int, depth: int, max_depth: int) -> tuple[dict[str, Any], int]:
    """Decode the field table at ``pos``, nested ``depth`` levels deep (the outermost is 1)."""
    if depth > max_depth:
        raise DecodeError(f"field table nested deeper than {max_depth} levels")
    if pos + 4 > end:
        raise _truncated("field table")
    pos += 4
    table_end = pos + _UINT.unpack_from(buf, pos - 4)[0]
    if table_end > end:
        raise _truncated("field table")
    table: dict[str, Any] = {}
    while pos < table_end:
        # The key's shortstr, inlined: tables are decoded for every message that has headers.
        start = pos + 1
        pos = start + buf[pos]
        if pos > table_end:
            raise _truncated("field table key")
        key = buf[start:pos].decode()
        table[key], pos = _value(buf, pos, table_end, depth, max_depth)
    return table, table_end


def _array(buf: Buffer, pos: int, end: int, depth: int, max_depth: int) -> tuple[list[Any], int]:
    if depth > max_depth:
        raise DecodeError(f"field table nested deeper than {max_depth} levels")
    if pos + 4 > end:
        raise _truncated("field array")
    pos += 4
    array_end = pos + _UINT.unpack_from(buf, pos - 4)[0]
    if array_end > end:
        raise _truncated("field array")
    array: list[Any] = []
    while pos < array_end:
        value, pos = _value(buf, pos, array_end, depth, max_depth)
        array.append(value)
    return array, array_end


def _value(buf: Buffer, pos: int, end: int, depth: int, max_depth: int) -> tuple[Any, int]:
    """Decode the type octet at ``pos`` and the value after it, inside a container ``depth`` deep."""
    if pos >= end:
        raise _truncated("field value")
    kind = buf[pos]
    pos += 1
    if kind == 0x53:  # S
        return _longstr(buf, pos, end)
    fixed = _FIXED_VALUES.get(kind)
    if fixed is not None:
        if pos + fixed.size > end:
            raise _truncated("field value")
        return fixed.unpack_from(buf, pos)[0], pos + fixed.size
    if kind == 0x74:  # t
        if pos >= end:
            raise _truncated("field value")
        return buf[pos] != 0, pos + 1
    if kind == 0x46:  # F
        return _table(buf, pos, end, depth + 1, max_depth)
    if kind == 0x41:  # A
        return _array(buf, pos, end, depth + 1, max_depth)
    if kind == 0x54:  # T
        if pos + 8 > end:
            raise _truncated("field value")
        return _timestamp(_U64.unpack_from(buf, pos)[0]), pos + 8
    if kind == 0x56 or kind == 0:  # V, and the NUL pamqp has seen in the wild: void
        return None, pos
    if kind == 0x44:  # D
        if pos + 5 > end:
            raise _truncated("field value")
        scale, mantissa = _DECIMAL.unpack_from(buf, pos)
        # The same arithmetic as pamqp, so the Decimal has the same exponent, not just the same value.
        return decimal.Decimal(mantissa) * (decimal.Decimal(10) ** -scale), pos + 5
    if kind == 0x78:  # x
        if pos + 4 > end:
            raise _truncated("field value")
        stop = pos + 4 + _UINT.unpack_from(buf, pos)[0]
        if stop > end:
            raise _truncated("field value")
        return bytearray(buf[pos + 4 : stop]), stop
    raise DecodeError(f"unknown field type {chr(kind)!r}")


# Errors the slicing and unpacking can still raise once every length has been checked against
# ``end``: invalid UTF-8, a caller passing ``end`` past the buffer, a huge ``max_depth``.
_LOW_LEVEL_ERRORS = (UnicodeDecodeError, IndexError, struct.error, RecursionError)
# What the method decoders catch to name the method in the message.
_METHOD_ERRORS = (DecodeError, *_LOW_LEVEL_ERRORS)


def decode_table(
    buf: Buffer, offset: int, end: int, max_depth: int = DEFAULT_MAX_TABLE_DEPTH
) -> tuple[dict[str, Any], int]:
    """Decode the field table at ``offset`` (its 4-byte length); return it and the offset after it.

    Nested tables and arrays count as levels; more than ``max_depth`` levels is a :class:`DecodeError`.
    """
    try:
        return _table(buf, offset, end, 1, max_depth)
    except _LOW_LEVEL_ERRORS as error:
        raise DecodeError(f"field table: {error}") from error


def decode_deliver(buf: Buffer, offset: int, end: int) -> tuple[str, int, bool, str, str]:
    """Decode ``Basic.Deliver`` arguments, ``offset`` just after the class and method ids.

    Returns ``(consumer_tag, delivery_tag, redelivered, exchange, routing_key)``.
    """
    try:
        if offset >= end:
            raise _truncated("arguments")
        start = offset + 1
        stop = start + buf[offset]
        if stop + 10 > end:
            raise _truncated("arguments")
        consumer_tag = buf[start:stop].decode()
        delivery_tag, bits, size = _TAG_BITS_LEN.unpack_from(buf, stop)
        start = stop + 10
        stop = start + size
        if stop >= end:
            raise _truncated("arguments")
        exchange = buf[start:stop].decode()
        start = stop + 1
        stop = start + buf[stop]
        if stop != end:
            raise _end_error("arguments", stop, end)
        routing_key = buf[start:stop].decode()
    except _METHOD_ERRORS as error:
        raise DecodeError(f"Basic.Deliver: {error}") from error
    return consumer_tag, delivery_tag, bits & 1 == 1, exchange, routing_key


def decode_get_ok(buf: Buffer, offset: int, end: int) -> tuple[int, bool, str, str, int]:
    """Decode ``Basic.GetOk`` arguments, ``offset`` just after the class and method ids.

    Returns ``(delivery_tag, redelivered, exchange, routing_key, message_count)``.
    """
    try:
        if offset + 9 > end:
            raise _truncated("arguments")
        delivery_tag, bits = _TAG_BITS.unpack_from(buf, offset)
        exchange, pos = _shortstr(buf, offset + 9, end)
        routing_key, pos = _shortstr(buf, pos, end)
        if pos + 4 != end:
            raise _end_error("arguments", pos + 4, end)
        message_count = _UINT.unpack_from(buf, pos)[0]
    except _METHOD_ERRORS as error:
        raise DecodeError(f"Basic.GetOk: {error}") from error
    return delivery_tag, bits & 1 == 1, exchange, routing_key, message_count


def decode_return(buf: Buffer, offset: int, end: int) -> tuple[int, str, str, str]:
    """Decode ``Basic.Return`` arguments, ``offset`` just after the class and method ids.

    Returns ``(reply_code, reply_text, exchange, routing_key)``.
    """
    try:
        if offset + 2 > end:
            raise _truncated("arguments")
        reply_code = _USHORT.unpack_from(buf, offset)[0]
        reply_text, pos = _shortstr(buf, offset + 2, end)
        exchange, pos = _shortstr(buf, pos, end)
        routing_key, pos = _shortstr(buf, pos, end)
        if pos != end:
            raise _end_error("arguments", pos, end)
    except _METHOD_ERRORS as error:
        raise DecodeError(f"Basic.Return: {error}") from error
    return reply_code, reply_text, exchange, routing_key


def decode_ack(buf: Buffer, offset: int, end: int) -> tuple[int, bool]:
    """Decode ``Basic.Ack`` arguments: ``(delivery_tag, multiple)``."""
    try:
        if offset + 9 != end:
            raise _end_error("arguments", offset + 9, end)
        delivery_tag, bits = _TAG_BITS.unpack_from(buf, offset)
    except _METHOD_ERRORS as error:
        raise DecodeError(f"Basic.Ack: {error}") from error
    return delivery_tag, bits & 1 == 1


def decode_nack(buf: Buffer, offset: int, end: int) -> tuple[int, bool, bool]:
    """Decode ``Basic.Nack`` arguments: ``(delivery_tag, multiple, requeue)``."""
    try:
        if offset + 9 != end:
            raise _end_error("arguments", offset + 9, end)
        delivery_tag, bits = _TAG_BITS.unpack_from(buf, offset)
    except _METHOD_ERRORS as error:
        raise DecodeError(f"Basic.Nack: {error}") from error
    return delivery_tag, bits & 1 == 1, bits & 2 == 2


def decode_content_header(
    buf: Buffer, offset: int, end: int, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH
) -> tuple[int, int, commands.Basic.Properties]:
    """Decode a content-header payload starting at ``offset``: ``(class_id, body_size, properties)``.

    The properties object equals pamqp's: every slot is set, absent properties are ``None`` and an
    absent ``cluster_id`` is ``''``.
    """
    try:
        if offset + 14 > end:
            raise _truncated("content header")
        class_id, _weight, body_size, flags = _CONTENT_HEADER.unpack_from(buf, offset)
        pos = offset + 14
        word = flags
        while word & 1:
            # A set low bit announces another flags word. The 14 Basic properties fit in the first,
            # so a further word may only be empty (pamqp reads them the same way).
            if pos + 2 > end:
                raise _truncated("property flags")
            word = _USHORT.unpack_from(buf, pos)[0]
            pos += 2
            if word & 0xFFFE:
                raise DecodeError("property flags set past the 14 Basic properties")
    except _LOW_LEVEL_ERRORS as error:
        raise DecodeError(str(error)) from error
    return class_id, body_size, decode_properties(buf, pos, end, flags, max_table_depth)


def decode_properties(
    buf: Buffer, pos: int, end: int, flags: int, max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH
) -> commands.Basic.Properties:
    """Decode the property list of a content header, from ``pos`` (after every property-flags word)
    to ``end``, as the first flags word ``flags`` announces it."""
    try:
        if flags & 0x0002:
            raise DecodeError("property flag 0x0002 set, which no property uses")
        # Skip Properties.__init__ and its validation: the peer's values are taken as they come, as
        # pamqp's unmarshal does, and every slot is written below. The strings most messages carry
        # (content_type, correlation_id, reply_to, message_id) are read inline rather than by
        # _shortstr: for a message with two of them, the two calls were 4 % of its decoding.
        props = object.__new__(_Properties)
        if flags & 0x8000:
            start = pos + 1
            if start > end:
                raise _truncated("content_type")
            pos = start + buf[pos]
            if pos > end:
                raise _truncated("content_type")
            props.content_type = buf[start:pos].decode()
        else:
            props.content_type = None
        if flags & 0x4000:
            props.content_encoding, pos = _shortstr(buf, pos, end)
        else:
            props.content_encoding = None
        if flags & 0x2000:
            if buf[pos : pos + 4] == _EMPTY_TABLE and pos + 4 <= end and max_table_depth > 0:
                # What aio-pika's messages carry when no header is set: no call to _table for it
                # (which refuses even an empty table when no table at all is allowed).
                props.headers = {}
                pos += 4
            else:
                props.headers, pos = _table(buf, pos, end, 1, max_table_depth)
        else:
            props.headers = None
        if flags & 0x1000:
            if pos >= end:
                raise _truncated("delivery_mode")
            props.delivery_mode = buf[pos]
            pos += 1
        else:
            props.delivery_mode = None
        if flags & 0x0800:
            if pos >= end:
                raise _truncated("priority")
            props.priority = buf[pos]
            pos += 1
        else:
            props.priority = None
        if flags & 0x0400:
            start = pos + 1
            if start > end:
                raise _truncated("correlation_id")
            pos = start + buf[pos]
            if pos > end:
                raise _truncated("correlation_id")
            props.correlation_id = buf[start:pos].decode()
        else:
            props.correlation_id = None
        if flags & 0x0200:
            start = pos + 1
            if start > end:
                raise _truncated("reply_to")
            pos = start + buf[pos]
            if pos > end:
                raise _truncated("reply_to")
            props.reply_to = buf[start:pos].decode()
        else:
            props.reply_to = None
        if flags & 0x0100:
            props.expiration, pos = _shortstr(buf, pos, end)
        else:
            props.expiration = None
        if flags & 0x0080:
            start = pos + 1
            if start > end:
                raise _truncated("message_id")
            pos = start + buf[pos]
            if pos > end:
                raise _truncated("message_id")
            props.message_id = buf[start:pos].decode()
        else:
            props.message_id = None
        if flags & 0x0040:
            if pos + 8 > end:
                raise _truncated("timestamp")
            props.timestamp = _timestamp(_U64.unpack_from(buf, pos)[0])
            pos += 8
        else:
            props.timestamp = None
        if flags & 0x0020:
            props.message_type, pos = _shortstr(buf, pos, end)
        else:
            props.message_type = None
        if flags & 0x0010:
            props.user_id, pos = _shortstr(buf, pos, end)
        else:
            props.user_id = None
        if flags & 0x0008:
            props.app_id, pos = _shortstr(buf, pos, end)
        else:
            props.app_id = None
        if flags & 0x0004:
            props.cluster_id, pos = _shortstr(buf, pos, end)
        else:
            props.cluster_id = ""
        if pos != end:
            raise _end_error("properties", pos, end)
    except _LOW_LEVEL_ERRORS as error:
        raise DecodeError(str(error)) from error
    return props


_INTEGER_FIELDS: dict[str, struct.Struct] = {
    "octet": _OCTET,
    "short": _USHORT,
    "long": _UINT,
    "longlong": struct.Struct(">q"),
}


def _method_layouts() -> dict[int, tuple[type[base.Frame], tuple[tuple[str, str], ...]]]:
    layouts: dict[int, tuple[type[base.Frame], tuple[tuple[str, str], ...]]] = {}
    for index, cls in commands.INDEX_MAPPING.items():
        if not issubclass(cls, base.Frame):
            raise AssertionError(f"pamqp maps method {index:#010x} to {cls!r}, not a Frame")
        fields = tuple((name, cls.amqp_type(name)) for name in cls.__slots__)
        for _name, kind in fields:
            if kind not in _INTEGER_FIELDS and kind not in ("bit", "shortstr", "longstr", "table"):
                raise AssertionError(f"{cls.name} has a field of unsupported type {kind!r}")
        layouts[index] = (cls, fields)
    return layouts


# class-id << 16 | method-id -> (pamqp class, ((attribute, AMQP type), ...) in wire order)
_METHOD_LAYOUTS = _method_layouts()


def decode_method(buf: Buffer, offset: int, end: int) -> base.Frame:
    """Decode any method frame payload (``offset`` at its class id) into a pamqp command object."""
    if offset + 4 > end:
        raise DecodeError("method frame shorter than its class and method ids")
    index = _UINT.unpack_from(buf, offset)[0]
    layout = _METHOD_LAYOUTS.get(index)
    if layout is None:
        raise DecodeError(f"unknown method: class {index >> 16}, method {index & 0xFFFF}")
    cls, fields = layout
    # Skip __init__: it validates and warns about what we send, not about what the broker sends.
    # pamqp's unmarshal sets every slot, and so does this loop.
    method = object.__new__(cls)
    pos = offset + 4
    bits = bit = 0
    try:
        for name, kind in fields:
            value: Any
            if kind == "bit":
                # Consecutive bits share octets, eight to an octet, lowest bit first.
                if bit == 0:
                    if pos >= end:
                        raise _truncated(name)
                    bits = buf[pos]
                    pos += 1
                value = bits >> bit & 1 == 1
                bit = (bit + 1) % 8
                setattr(method, name, value)
                continue
            bit = 0
            if kind == "shortstr":
                value, pos = _shortstr(buf, pos, end)
            elif kind == "longstr":
                value, pos = _longstr(buf, pos, end)
            elif kind == "table":
                value, pos = _table(buf, pos, end, 1, DEFAULT_MAX_TABLE_DEPTH)
            else:
                integer = _INTEGER_FIELDS[kind]
                if pos + integer.size > end:
                    raise _truncated(name)
                value = integer.unpack_from(buf, pos)[0]
                pos += integer.size
            setattr(method, name, value)
        if pos != end:
            raise _end_error("arguments", pos, end)
    except _METHOD_ERRORS as error:
        raise DecodeError(f"{cls.name}: {error}") from error
    return method


# ---- encoding -------------------------------------------------------------------------------------

# Frames are packed back to back, so one struct often ends a frame and starts the next one.
_FRAME_HEAD = struct.Struct(">BHIHH")  # type, channel, payload size, class-id, method-id
_SETTLE_FRAME = struct.Struct(">BHIHHqBB")  # method frame head, delivery-tag, bits, frame-end
_PUBLISH_HEAD = struct.Struct(">BHIHHH")  # Basic.Publish: method frame head, ticket
_PUBLISH_TAIL = struct.Struct(">BB")  # Basic.Publish: bits, frame-end
# A content-header frame up to its property flags: type, channel, payload size, class-id, weight,
# body size.
_HEADER_HEAD = struct.Struct(">BHIHHQ")
_END_BODY_HEAD = struct.Struct(">BBHI")  # frame-end of the previous frame, then a body frame's head
_FRAME_END_BYTES = bytes((FRAME_END,))
_EMPTY_TABLE = b"\x00\x00\x00\x00"

_TYPED_INT8 = struct.Struct(">Bb")
_TYPED_INT16 = struct.Struct(">Bh")
_TYPED_UINT16 = struct.Struct(">BH")
_TYPED_INT32 = struct.Struct(">Bi")
_TYPED_UINT32 = struct.Struct(">BI")
_TYPED_INT64 = struct.Struct(">Bq")
_TYPED_UINT64 = struct.Struct(">BQ")
_TYPED_FLOAT = struct.Struct(">Bf")
_TYPED_DECIMAL = struct.Struct(">BBi")


def _encode_shortstr(value: str, field: str) -> bytes:
    """``value`` as a shortstr: a length octet then UTF-8."""
    try:
        raw = value.encode()
    except AttributeError:
        raise TypeError(f"{field} must be a str, not {type(value).__name__}") from None
    if len(raw) > 255:
        raise ValueError(f"{field} is {len(raw)} bytes in UTF-8; a shortstr holds at most 255")
    return _OCTET.pack(len(raw)) + raw


def _timestamp_seconds(value: datetime.datetime) -> int:
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=datetime.UTC)  # pamqp takes naive datetimes as UTC
    return int(value.timestamp())


def _encode_table(table: Mapping[str, Any]) -> bytes:
    if not table:
        return _EMPTY_TABLE
    parts: list[bytes] = []
    # Sorted by key, as pamqp does, so equal tables give equal bytes.
    for key in sorted(table):
        if not isinstance(key, str):
            raise TypeError(f"field table keys must be str, not {type(key).__name__}")
        raw = key.encode()
        if len(raw) > 128:
            # The spec caps field names at 128 bytes; pamqp truncates longer ones (at a character
            # boundary) with a warning, and so do we, so headers go out as they do with pamqp.
            _log.warning("Truncating field table key %s to 128 bytes", key)
            raw = raw[:128].decode(errors="ignore").encode()
        parts.append(_OCTET.pack(len(raw)))
        parts.append(raw)
        _encode_value(table[key], parts)
    payload = b"".join(parts)
    return _UINT.pack(len(payload)) + payload


def _encode_array(array: list[Any]) -> bytes:
    parts: list[bytes] = []
    for item in array:
        _encode_value(item, parts)
    payload = b"".join(parts)
    return _UINT.pack(len(payload)) + payload


def _encode_value(value: Any, parts: list[bytes]) -> None:
    """Append ``value``'s type octet and encoding to ``parts``, choosing types as pamqp does."""
    if isinstance(value, str):
        raw = value.encode()
        parts.append(_TYPED_UINT32.pack(0x53, len(raw)))  # S
        parts.append(raw)
    elif isinstance(value, bool):
        parts.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        parts.append(_encode_int(value))
    elif value is None:
        parts.append(b"V")
    elif isinstance(value, dict):
        parts.append(b"F")
        parts.append(_encode_table(value))
    elif isinstance(value, list):
        parts.append(b"A")
        parts.append(_encode_array(value))
    elif isinstance(value, float):
        # pamqp sends Python floats as 32-bit 'f', losing precision; kept for identical bytes.
        parts.append(_TYPED_FLOAT.pack(0x66, value))
    elif isinstance(value, datetime.datetime):
        parts.append(_TYPED_UINT64.pack(0x54, _timestamp_seconds(value)))  # T
    elif isinstance(value, decimal.Decimal):
        parts.append(_encode_decimal(value))
    elif isinstance(value, bytearray):
        parts.append(_TYPED_UINT32.pack(0x78, len(value)))  # x
        parts.append(bytes(value))
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in a field table: {value!r}")


def _encode_int(value: int) -> bytes:
    # The smallest type that holds the value, in pamqp's order of preference.
    if -0x80 <= value <= 0x7F:
        return _TYPED_INT8.pack(0x62, value)  # b
    if -0x8000 <= value <= 0x7FFF:
        return _TYPED_INT16.pack(0x73, value)  # s
    if 0 <= value <= 0xFFFF:
        return _TYPED_UINT16.pack(0x75, value)  # u
    if -0x8000_0000 <= value <= 0x7FFF_FFFF:
        return _TYPED_INT32.pack(0x49, value)  # I
    if 0 <= value <= 0xFFFF_FFFF:
        return _TYPED_UINT32.pack(0x69, value)  # i
    if -0x8000_0000_0000_0000 <= value <= 0x7FFF_FFFF_FFFF_FFFF:
        return _TYPED_INT64.pack(0x6C, value)  # l
    raise ValueError(f"integer {value} does not fit a signed 64-bit field-table value")


def _encode_decimal(value: decimal.Decimal) -> bytes:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # NaN, sNaN, Infinity
        raise ValueError(f"cannot encode {value} as an AMQP decimal")
    if exponent > 0:
        scale, mantissa = 0, int(value)
    else:
        scale, mantissa = -exponent, int(value.scaleb(-exponent))
    if scale > 255 or not -0x8000_0000 <= mantissa <= 0x7FFF_FFFF:
        raise ValueError(f"{value} does not fit an AMQP decimal (scale 0-255, 32-bit mantissa)")
    return _TYPED_DECIMAL.pack(0x44, scale, mantissa)  # D


def encode_table(table: Mapping[str, Any]) -> bytes:
    """Encode a field table (its 4-byte length and items), byte for byte as pamqp does.

    Raises :class:`TypeError` for values of types a field table cannot carry and
    :class:`ValueError` for values out of range.
    """
    try:
        return _encode_table(table)
    except (struct.error, OverflowError) as error:
        raise ValueError(f"cannot encode field table: {error}") from None


def encode_properties(properties: commands.Basic.Properties | None) -> bytes:
    """Encode the property-flags word and property values of a content header.

    Like pamqp, a property is sent when it is neither ``None`` nor ``''``. No validation beyond what
    encoding needs: the broker is the judge of values such as ``delivery_mode``.
    """
    if properties is None:
        return b"\x00\x00"
    return encode_property_values(
        properties.content_type, properties.content_encoding, properties.headers, properties.delivery_mode,
        properties.priority, properties.correlation_id, properties.reply_to, properties.expiration,
        properties.message_id, properties.timestamp, properties.message_type, properties.user_id,
        properties.app_id, properties.cluster_id,
    )  # fmt: skip


def encode_property_values(
    content_type: Any, content_encoding: Any, headers: Any, delivery_mode: Any, priority: Any,
    correlation_id: Any, reply_to: Any, expiration: Any, message_id: Any, timestamp: Any,
    message_type: Any, user_id: Any, app_id: Any, cluster_id: Any,
) -> bytes:  # fmt: skip
    """:func:`encode_properties` from the fourteen values, in the order of their property flags.

    For a caller that keeps the values elsewhere: it spares building a ``Basic.Properties`` and
    reading it back, which costs about as much as the encoding itself.
    """
    flags = 0
    parts = [b""]  # the flags word, once known
    try:
        if content_type is not None and content_type != "":
            flags |= 0x8000
            parts.append(_encode_shortstr(content_type, "content_type"))
        if content_encoding is not None and content_encoding != "":
            flags |= 0x4000
            parts.append(_encode_shortstr(content_encoding, "content_encoding"))
        if headers is not None and headers != "":
            flags |= 0x2000
            parts.append(_encode_table(headers) if headers else _EMPTY_TABLE)
        if delivery_mode is not None and delivery_mode != "":
            flags |= 0x1000
            parts.append(_OCTET.pack(delivery_mode))
        if priority is not None and priority != "":
            flags |= 0x0800
            parts.append(_OCTET.pack(priority))
        if correlation_id is not None and correlation_id != "":
            flags |= 0x0400
            parts.append(_encode_shortstr(correlation_id, "correlation_id"))
        if reply_to is not None and reply_to != "":
            flags |= 0x0200
            parts.append(_encode_shortstr(reply_to, "reply_to"))
        if expiration is not None and expiration != "":
            flags |= 0x0100
            parts.append(_encode_shortstr(expiration, "expiration"))
        if message_id is not None and message_id != "":
            flags |= 0x0080
            parts.append(_encode_shortstr(message_id, "message_id"))
        if timestamp is not None and timestamp != "":
            flags |= 0x0040
            parts.append(_U64.pack(_timestamp_seconds(timestamp)))
        if message_type is not None and message_type != "":
            flags |= 0x0020
            parts.append(_encode_shortstr(message_type, "message_type"))
        if user_id is not None and user_id != "":
            flags |= 0x0010
            parts.append(_encode_shortstr(user_id, "user_id"))
        if app_id is not None and app_id != "":
            flags |= 0x0008
            parts.append(_encode_shortstr(app_id, "app_id"))
        if cluster_id is not None and cluster_id != "":
            flags |= 0x0004
            parts.append(_encode_shortstr(cluster_id, "cluster_id"))
    except (struct.error, OverflowError) as error:
        raise ValueError(f"cannot encode message properties: {error}") from None
    parts[0] = _USHORT.pack(flags)
    return b"".join(parts)


def encode_publish(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    immediate: bool,
    properties: commands.Basic.Properties | bytes | None,
    body: bytes,
    frame_max: int,
) -> bytes:
    """Encode a whole message: ``Basic.Publish``, content header and body frames.

    ``properties`` is a pamqp ``Basic.Properties``, ``None`` (no property), or the properties already
    encoded (what :func:`encode_property_values` returns), which is quicker than building a
    ``Basic.Properties`` for every message.

    The body is cut into frames of at most ``frame_max - 8`` bytes (``frame_max == 0``: no limit);
    an empty body has no body frame. Raises :class:`ValueError` when a shortstr is too long or the
    content header alone would not fit in ``frame_max``. Names are not validated: the broker does.
    """
    return b"".join(
        _publish_parts(channel, exchange, routing_key, mandatory, immediate, properties, body, frame_max)
    )


# Bodies from this size on are queued by reference (see encode_publish_parts) rather than copied.
LARGE_BODY = 16 * 1024


def encode_publish_parts(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    immediate: bool,
    properties: commands.Basic.Properties | bytes | None,
    body: bytes,
    frame_max: int,
) -> list[bytes | memoryview]:
    """:func:`encode_publish` without the final join, for large bodies.

    Returns the wire bytes as pieces to be written in order: the frames before the body (one
    ``bytes``), then the body's frames as ``memoryview`` slices of ``body`` itself, separated by the
    8 bytes that end one body frame and start the next, then the final frame-end octet. No byte of
    the body is copied, so ``body`` must not change until the pieces are written: only an immutable
    ``bytes`` body of :data:`LARGE_BODY` bytes or more gets here pieces; anything else comes back as
    one joined ``bytes`` (a one-item list).
    """
    parts = _publish_parts(channel, exchange, routing_key, mandatory, immediate, properties, body, frame_max)
    if type(body) is not bytes or len(body) < LARGE_BODY:
        return [b"".join(parts)]
    # parts: the method frame and the header frame's two pieces, then (body-frame head, body slice)
    # pairs, then the final frame-end. Join what precedes the first slice, and keep the slices.
    pieces: list[bytes | memoryview] = [b"".join(parts[:4])]
    pieces += parts[4:]
    return pieces


# The Basic.Publish method frames of the last destinations published to, by (channel, exchange,
# routing key, bits): a publisher mostly sends to a few, so most publishes encode no name.
_publish_methods: dict[tuple[int, str, str, int], bytes] = {}
_PUBLISH_METHODS_KEPT = 256


def _publish_method(channel: int, exchange: str, routing_key: str, bits: int) -> bytes:
    exchange_raw = _encode_shortstr(exchange, "exchange")
    routing_key_raw = _encode_shortstr(routing_key, "routing_key")
    try:
        head = _PUBLISH_HEAD.pack(
            _FRAME_METHOD, channel, 7 + len(exchange_raw) + len(routing_key_raw), _BASIC, _PUBLISH, 0
        )
    except struct.error as error:
        raise ValueError(f"cannot encode Basic.Publish: {error}") from None
    return head + exchange_raw + routing_key_raw + _PUBLISH_TAIL.pack(bits, FRAME_END)


def _publish_parts(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    immediate: bool,
    properties: commands.Basic.Properties | bytes | None,
    body: bytes,
    frame_max: int,
) -> list[bytes | memoryview]:
    bits = (1 if mandatory else 0) | (2 if immediate else 0)
    destination = (channel, exchange, routing_key, bits)
    try:
        method = _publish_methods.get(destination)
    except TypeError:  # unhashable: not a str, which _publish_method reports
        method = None
    if method is None:
        method = _publish_method(channel, exchange, routing_key, bits)
        if len(_publish_methods) >= _PUBLISH_METHODS_KEPT:
            _publish_methods.clear()
        _publish_methods[destination] = method
    props = properties if isinstance(properties, bytes) else encode_properties(properties)
    header_size = 12 + len(props)
    if frame_max and header_size + 8 > frame_max:
        raise ValueError(f"the content header is {header_size + 8} bytes, more than frame_max ({frame_max})")
    body_size = len(body)
    try:
        parts: list[bytes | memoryview] = [
            method,
            _HEADER_HEAD.pack(_FRAME_HEADER, channel, header_size, _BASIC, 0, body_size),
            props,
        ]
        chunk = frame_max - 8 if frame_max else body_size
        if body_size <= chunk:
            if body_size:
                parts.append(_END_BODY_HEAD.pack(FRAME_END, _FRAME_BODY, channel, body_size))
                parts.append(body)
        else:
            view = memoryview(body)
            head = _END_BODY_HEAD.pack(FRAME_END, _FRAME_BODY, channel, chunk)  # of every full frame
            last = body_size - (body_size % chunk or chunk)  # where the last frame starts
            for start in range(0, last, chunk):
                parts += (head, view[start : start + chunk])
            parts += (_END_BODY_HEAD.pack(FRAME_END, _FRAME_BODY, channel, body_size - last), view[last:])
    except struct.error as error:
        raise ValueError(f"cannot encode Basic.Publish: {error}") from None
    parts.append(_FRAME_END_BYTES)
    return parts


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """A ``Basic.Ack`` method frame."""
    try:
        return _SETTLE_FRAME.pack(
            _FRAME_METHOD, channel, 13, _BASIC, _ACK, delivery_tag, 1 if multiple else 0, FRAME_END
        )
    except struct.error as error:
        raise ValueError(f"cannot encode Basic.Ack: {error}") from None


def encode_nack(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> bytes:
    """A ``Basic.Nack`` method frame."""
    bits = (1 if multiple else 0) | (2 if requeue else 0)
    try:
        return _SETTLE_FRAME.pack(_FRAME_METHOD, channel, 13, _BASIC, _NACK, delivery_tag, bits, FRAME_END)
    except struct.error as error:
        raise ValueError(f"cannot encode Basic.Nack: {error}") from None


def encode_reject(channel: int, delivery_tag: int, requeue: bool) -> bytes:
    """A ``Basic.Reject`` method frame."""
    try:
        return _SETTLE_FRAME.pack(
            _FRAME_METHOD, channel, 13, _BASIC, _REJECT, delivery_tag, 1 if requeue else 0, FRAME_END
        )
    except struct.error as error:
        raise ValueError(f"cannot encode Basic.Reject: {error}") from None


def encode_method(channel: int, method: base.Frame) -> bytes:
    """Any method frame, through pamqp (which validates the arguments first)."""
    return pamqp_frame.marshal(method, channel)
