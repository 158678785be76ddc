"""Channels and connection-level control against a scripted broker: lifecycle, replies, server notices."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pamqp import commands

from amqp_core import (
    ChannelClosed,
    ChannelFlow,
    ChannelOpened,
    ChannelStateError,
    Connection,
    ConnectionBlocked,
    ConnectionClosed,
    ConnectionLost,
    ConnectionStateError,
    ConnectionUnblocked,
    ConsumerCancelled,
    FrameTooLarge,
    LocalProtocolError,
    MethodReply,
    RemoteProtocolError,
)
from amqp_core.connection import ConnectionState

from .peer import Peer, content, decode_all, deliver, method, opened


def close_code(peer: Peer) -> int:
    frames = decode_all(peer.connection.data_to_send(0.0))
    closes = [f for c, f in frames if c == 0 and isinstance(f, commands.Connection.Close)]
    assert len(closes) == 1, frames
    return closes[0].reply_code


def violation(peer: Peer, code: int, *frames: bytes, match: str | None = None) -> RemoteProtocolError:
    """Feed frames that break the protocol: the error's code and the queued Close's code must be ``code``."""
    with pytest.raises(RemoteProtocolError, match=match) as caught:
        peer.feed(*frames)
    assert caught.value.reply_code == code
    assert close_code(peer) == code
    assert peer.connection.closed
    return caught.value


# ---- opening and closing ------------------------------------------------------------------------------


def test_open_channel_lowest_free_number_and_incarnations() -> None:
    peer = opened()
    assert peer.connection.open_channel() == 1
    ((channel, open_),) = peer.sent()
    assert channel == 1 and isinstance(open_, commands.Channel.Open)
    (event,) = peer.feed(method(1, commands.Channel.OpenOk()))
    assert event == ChannelOpened(1, 1)
    assert peer.open_channel() == 2
    assert peer.open_channel(7) == 7
    assert peer.open_channel() == 3
    assert peer.connection.channel_incarnation(7) == 3

    peer.connection.close_channel(2)
    (close,) = peer.sent_methods()
    assert isinstance(close, commands.Channel.Close) and close.reply_code == 200
    assert peer.connection.open_channel() == 4  # 2 is reserved until CloseOk
    peer.sent()
    (closed,) = peer.feed(method(2, commands.Channel.CloseOk()))
    assert closed == ChannelClosed(2, 200, "Normal shutdown", by_peer=False)
    assert peer.connection.open_channel() == 2  # the lowest free number again
    peer.sent()
    (reopened,) = peer.feed(method(2, commands.Channel.OpenOk()))
    assert reopened == ChannelOpened(2, 6)  # a new incarnation


def test_channel_max_is_honoured() -> None:
    peer = Peer(channel_max=3)
    peer.handshake(channel_max=0)
    assert peer.connection.channel_max == 3
    assert [peer.connection.open_channel() for _ in range(3)] == [1, 2, 3]
    peer.sent()
    with pytest.raises(ChannelStateError, match="all 3 channels are in use"):
        peer.connection.open_channel()
    with pytest.raises(ChannelStateError, match="from 1 to 3"):
        peer.connection.open_channel(4)
    with pytest.raises(ChannelStateError, match="from 1 to 3"):
        peer.connection.open_channel(0)
    with pytest.raises(ChannelStateError, match="already in use"):
        peer.connection.open_channel(2)
    assert peer.connection.data_to_send(0.0) == b""


def test_server_channel_max_smaller_than_the_clients() -> None:
    peer = Peer(channel_max=100)
    peer.handshake(channel_max=2)
    assert peer.connection.channel_max == 2
    peer.connection.open_channel()
    peer.connection.open_channel()
    with pytest.raises(ChannelStateError):
        peer.connection.open_channel()


def test_server_closes_a_channel() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.queue_declare(1, "missing", passive=True)
    peer.sent()
    close = commands.Channel.Close(404, "NOT_FOUND - no queue 'missing'", 50, 10)
    (event,) = peer.feed(method(1, close))
    assert event == ChannelClosed(1, 404, "NOT_FOUND - no queue 'missing'", 50, 10, by_peer=True)
    assert [type(m) for m in peer.sent_methods()] == [commands.Channel.CloseOk]
    assert peer.connection.open_channel() == 1


def test_close_crossing_close_on_a_channel() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.close_channel(1)
    peer.sent()
    # The broker's Close crossed ours: answer it, but keep the number until our CloseOk arrives.
    assert peer.feed(method(1, commands.Channel.Close(406, "PRECONDITION_FAILED - x", 60, 80))) == []
    assert [type(m) for m in peer.sent_methods()] == [commands.Channel.CloseOk]
    assert peer.connection.open_channel() == 2
    peer.sent()
    (event,) = peer.feed(method(1, commands.Channel.CloseOk()))
    assert event == ChannelClosed(1, 406, "PRECONDITION_FAILED - x", 60, 80, by_peer=True)
    assert peer.connection.open_channel() == 1


def test_closing_channel_discards_everything_but_close_ok() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.basic_consume(1, "q", "ctag")
    peer.feed(method(1, commands.Basic.ConsumeOk("ctag")))
    peer.connection.queue_declare(1, "q")
    peer.connection.close_channel(1)
    peer.connection.close_channel(1)  # idempotent
    peer.sent()
    ignored = [
        method(1, commands.Queue.DeclareOk("q", 0, 0)),  # the reply to a command issued before Close
        deliver(1, 1, b"late"),
        method(1, commands.Basic.Deliver("ctag", 2, False, "", "rk")),
        content(1, b"x" * 10, chunk=3),
        method(1, commands.Channel.Flow(False)),
        method(1, commands.Basic.Ack(1, False)),
    ]
    assert peer.feed(*ignored) == []
    assert peer.connection.data_to_send(0.0) == b""  # not even a FlowOk
    (event,) = peer.feed(method(1, commands.Channel.CloseOk()))
    assert isinstance(event, ChannelClosed) and not event.by_peer


def test_closing_a_channel_in_the_middle_of_a_message() -> None:
    peer = opened()
    peer.open_channel()
    message = deliver(1, 1, b"abcdef", chunk=2)
    # The deliver, its header and one of three body frames arrive; then the client closes the channel.
    assert peer.feed(message[:-20]) == []
    peer.connection.close_channel(1)
    peer.sent()
    events = peer.feed(message[-20:], method(1, commands.Channel.CloseOk()))
    assert events == [ChannelClosed(1, 200, "Normal shutdown", by_peer=False)]


@pytest.mark.parametrize("chunk", [0, 40_000], ids=["one body frame", "several body frames"])
@pytest.mark.parametrize("rest", [30_000, 1], ids=["part of its payload", "its frame-end octet"])
def test_closing_a_channel_while_a_large_body_frame_spans_two_reads(chunk: int, rest: int) -> None:
    peer = opened()
    peer.open_channel()
    message = deliver(1, 1, b"x" * 100_000, chunk=chunk)
    cut = len(message) - rest  # the first read large: what it holds of the frame is held or copied
    assert peer.feed(message[:cut]) == []
    peer.connection.close_channel(1)
    peer.sent()
    events = peer.feed(message[cut:] + method(1, commands.Channel.CloseOk()))
    assert events == [ChannelClosed(1, 200, "Normal shutdown", by_peer=False)]


def test_closing_the_connection_while_a_large_body_frame_spans_two_reads() -> None:
    peer = opened()
    peer.open_channel()
    message = deliver(1, 1, b"x" * 100_000, chunk=40_000)  # its last body frame: 20,000 bytes
    assert peer.feed(message[:-10_000]) == []
    peer.connection.close()
    peer.sent()
    events = peer.feed(message[-10_000:], method(0, commands.Connection.CloseOk()))
    assert [type(event) for event in events] == [ConnectionClosed]


def test_closing_the_connection_in_the_middle_of_a_message() -> None:
    peer = opened()
    peer.open_channel()
    message = deliver(1, 1, b"abcdef", chunk=2)
    assert peer.feed(message[:-20]) == []  # the deliver, its header and the first of three body frames
    peer.connection.close()
    peer.sent()
    # The rest of the message arrives before the broker's CloseOk: nobody is handed a delivery.
    events = peer.feed(message[-20:], method(0, commands.Connection.CloseOk()))
    assert [type(event) for event in events] == [ConnectionClosed]


def test_closing_a_channel_before_open_ok() -> None:
    peer = opened()
    peer.connection.open_channel()
    peer.connection.close_channel(1)
    assert [type(m) for m in peer.sent_methods()] == [commands.Channel.Open, commands.Channel.Close]
    assert peer.feed(method(1, commands.Channel.OpenOk())) == []
    (event,) = peer.feed(method(1, commands.Channel.CloseOk()))
    assert isinstance(event, ChannelClosed)


def test_server_refuses_to_open_a_channel() -> None:
    peer = opened()
    peer.connection.open_channel()
    peer.sent()
    (event,) = peer.feed(method(1, commands.Channel.Close(530, "NOT_ALLOWED", 20, 10)))
    assert event == ChannelClosed(1, 530, "NOT_ALLOWED", 20, 10)


def test_commands_pipelined_behind_channel_open_are_answered_after_open_ok() -> None:
    peer = opened()
    peer.connection.open_channel()
    peer.connection.confirm_select(1)
    assert [type(m) for m in peer.sent_methods()] == [commands.Channel.Open, commands.Confirm.Select]
    opened_event, reply = peer.feed(
        method(1, commands.Channel.OpenOk()) + method(1, commands.Confirm.SelectOk())
    )
    assert isinstance(opened_event, ChannelOpened)
    assert reply == MethodReply(1, commands.Confirm.SelectOk())


def test_commands_on_a_channel_that_is_not_open() -> None:
    peer = opened()
    peer.connection.open_channel()
    peer.connection.close_channel(1)
    with pytest.raises(ChannelStateError, match="closing, not open"):
        peer.connection.queue_declare(1, "q")
    with pytest.raises(ChannelStateError, match="channel 5 is not open"):
        peer.connection.queue_declare(5, "q")
    with pytest.raises(ChannelStateError):
        peer.connection.basic_publish(5, b"x")
    with pytest.raises(ChannelStateError):
        peer.connection.basic_publish(1, b"x")
    with pytest.raises(ChannelStateError):
        peer.connection.close_channel(5)
    with pytest.raises(ChannelStateError):
        peer.connection.channel_incarnation(5)
    peer.sent()
    peer.feed(method(1, commands.Channel.OpenOk()))
    peer.connection.close_channel(1)
    peer.sent()
    with pytest.raises(ChannelStateError, match="closing, not open"):
        peer.connection.basic_publish(1, b"x")
    with pytest.raises(ChannelStateError):
        peer.connection.basic_ack(1, 1)
    assert peer.connection.data_to_send(0.0) == b""


def test_commands_need_an_open_connection() -> None:
    connection = Connection()
    for command in (
        lambda: connection.open_channel(),
        lambda: connection.queue_declare(1, "q"),
        lambda: connection.basic_publish(1, b"x"),
        lambda: connection.close_channel(1),
    ):
        with pytest.raises(ConnectionStateError, match="idle, not open"):
            command()
    peer = opened()
    peer.open_channel()
    peer.connection.close()
    peer.sent()
    with pytest.raises(ConnectionStateError, match="closing, not open"):
        peer.connection.basic_publish(1, b"x")
    with pytest.raises(ConnectionStateError):
        peer.connection.basic_consume(1, "q")
    assert peer.connection.data_to_send(0.0) == b""


# ---- synchronous replies ----------------------------------------------------------------------------


def test_replies_are_matched_in_order() -> None:
    peer = opened()
    peer.open_channel()
    peer.open_channel()
    peer.connection.exchange_declare(1, "x", "topic")
    peer.connection.queue_declare(1, "q")
    peer.connection.queue_declare(2, "q2")
    peer.connection.queue_bind(1, "q", "x", "a.#")
    peer.sent()
    events = peer.feed(
        method(2, commands.Queue.DeclareOk("q2", 0, 0)),
        method(1, commands.Exchange.DeclareOk()),
        method(1, commands.Queue.DeclareOk("q", 3, 1)),
        method(1, commands.Queue.BindOk()),
    )
    assert events == [
        MethodReply(2, commands.Queue.DeclareOk("q2", 0, 0)),
        MethodReply(1, commands.Exchange.DeclareOk()),
        MethodReply(1, commands.Queue.DeclareOk("q", 3, 1)),
        MethodReply(1, commands.Queue.BindOk()),
    ]


def test_unexpected_reply_is_command_invalid() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.queue_declare(1, "q")
    peer.sent()
    error = violation(
        peer, 503, method(1, commands.Queue.BindOk()), match=r"Queue\.BindOk .* Queue\.DeclareOk was expected"
    )
    assert "channel 1" in str(error)


def test_reply_nobody_asked_for_is_command_invalid() -> None:
    peer = opened()
    peer.open_channel()
    violation(peer, 503, method(1, commands.Basic.QosOk()), match="no reply was expected")


def test_reply_before_open_ok_is_command_invalid() -> None:
    peer = opened()
    peer.connection.open_channel()
    violation(peer, 503, method(1, commands.Queue.DeclareOk("q", 0, 0)), match="Channel.OpenOk was expected")


@pytest.mark.parametrize(
    "frame",
    [
        commands.Basic.Deliver("c", 1, False, "", "rk"),
        commands.Basic.Ack(1, False),
        commands.Basic.Return(312, "NO_ROUTE", "", "rk"),
    ],
)
def test_messages_before_open_ok_are_command_invalid(frame: Any) -> None:
    peer = opened()
    peer.connection.open_channel()
    violation(peer, 503, method(1, frame), match="before Channel.OpenOk")


@pytest.mark.parametrize(
    "frame",
    [
        commands.Basic.Publish(0, "", "rk"),
        commands.Queue.Declare(0, "q"),
        commands.Channel.CloseOk(),
        commands.Connection.Close(200, "x", 0, 0),
    ],
)
def test_methods_a_server_never_sends_are_command_invalid(frame: Any) -> None:
    peer = opened()
    peer.open_channel()
    error = violation(peer, 503, method(1, frame))
    assert frame.name in str(error)


def test_connection_close_carries_the_offending_class_and_method() -> None:
    peer = opened()
    peer.open_channel()
    with pytest.raises(RemoteProtocolError):
        peer.feed(method(1, commands.Basic.Publish(0, "", "rk")))
    ((_channel, close),) = decode_all(peer.connection.data_to_send(0.0))
    assert (close.reply_code, close.class_id, close.method_id) == (503, 60, 40)


@pytest.mark.parametrize(
    "frame",
    [commands.Basic.Deliver("c", 1, False, "", "rk"), commands.Connection.Blocked("x")],
)
def test_connection_methods_on_the_wrong_channel(frame: Any) -> None:
    peer = opened()
    peer.open_channel()
    channel = 0 if isinstance(frame, commands.Basic.Deliver) else 1
    violation(peer, 503, method(channel, frame))


def test_connection_method_out_of_place_after_open() -> None:
    peer = opened()
    error = violation(peer, 503, method(0, commands.Connection.Start(mechanisms="PLAIN")))
    assert "while the connection is open" in str(error)


def test_frames_for_an_unknown_channel_are_channel_errors() -> None:
    peer = opened()
    violation(peer, 504, method(9, commands.Basic.QosOk()), match="channel 9, which is not open")
    peer = opened()
    violation(peer, 504, content(9, b"x"), match="content header on channel 9")
    peer = opened()
    violation(peer, 504, b"\x03\x00\x09\x00\x00\x00\x01x\xce", match="content body on channel 9")


def test_content_without_a_method_is_unexpected_frame() -> None:
    peer = opened()
    peer.open_channel()
    violation(peer, 505, content(1, b"x"), match="without a method announcing it")
    peer = opened()
    peer.open_channel()
    violation(peer, 505, b"\x03\x00\x01\x00\x00\x00\x01x\xce", match="without a method announcing it")


def test_method_in_the_middle_of_content_is_unexpected_frame() -> None:
    peer = opened()
    peer.open_channel()
    start = method(1, commands.Basic.Deliver("c", 1, False, "", "rk"))
    violation(peer, 505, start, method(1, commands.Basic.Deliver("c", 2, False, "", "rk")))
    peer = opened()
    peer.open_channel()
    violation(peer, 505, start, method(1, commands.Channel.Close(200, "x", 0, 0)))


def test_second_header_and_oversized_body_are_unexpected_frames() -> None:
    peer = opened()
    peer.open_channel()
    start = method(1, commands.Basic.Deliver("c", 1, False, "", "rk"))
    header = content(1, b"abc")[: -len(content(1, b"abc")) + 22]  # the header frame alone
    violation(peer, 505, start, header, header, match="second content header")
    peer = opened()
    peer.open_channel()
    violation(
        peer, 505, start, header, b"\x03\x00\x01\x00\x00\x00\x04abcd\xce", match="larger than its header"
    )
    peer = opened()
    peer.open_channel()
    violation(peer, 505, start, b"\x03\x00\x01\x00\x00\x00\x01a\xce", match="before its content header")
    # A later frame of a body of several frames, overrunning what is left of it.
    peer = opened()
    peer.open_channel()
    frames = deliver(1, 1, b"abcdef", chunk=4)  # body frames of 4 and 2 bytes
    overrun = b"\x03\x00\x01\x00\x00\x00\x03cde\xce"
    violation(peer, 505, frames[:-10], overrun, match="larger than its header")


# ---- notices from the server ------------------------------------------------------------------------


def test_channel_flow_from_the_server() -> None:
    peer = opened()
    peer.open_channel()
    assert peer.feed(method(1, commands.Channel.Flow(False))) == [ChannelFlow(1, False)]
    (flow_ok,) = peer.sent_methods()
    assert isinstance(flow_ok, commands.Channel.FlowOk) and flow_ok.active is False
    assert peer.feed(method(1, commands.Channel.Flow(True))) == [ChannelFlow(1, True)]
    assert peer.sent_methods()[0].active is True


def test_channel_flow_from_the_client() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.channel_flow(1, False)
    (flow,) = peer.sent_methods()
    assert isinstance(flow, commands.Channel.Flow) and flow.active is False
    assert peer.feed(method(1, commands.Channel.FlowOk(False))) == [
        MethodReply(1, commands.Channel.FlowOk(False))
    ]


@pytest.mark.parametrize("nowait", [False, True])
def test_server_cancels_a_consumer(nowait: bool) -> None:
    peer = opened()
    peer.open_channel()
    (event,) = peer.feed(method(1, commands.Basic.Cancel("ctag", nowait)))
    assert event == ConsumerCancelled(1, "ctag")
    sent = peer.sent_methods()
    if nowait:
        assert sent == []
    else:
        (cancel_ok,) = sent
        assert isinstance(cancel_ok, commands.Basic.CancelOk) and cancel_ok.consumer_tag == "ctag"


def test_blocked_and_unblocked() -> None:
    peer = opened()
    assert peer.feed(method(0, commands.Connection.Blocked("low on memory"))) == [
        ConnectionBlocked("low on memory")
    ]
    assert peer.feed(method(0, commands.Connection.Unblocked())) == [ConnectionUnblocked()]
    assert peer.connection.data_to_send(0.0) == b""


@pytest.mark.parametrize(
    ("code", "text"),
    [(320, "CONNECTION_FORCED - broker forced connection closure"), (541, "INTERNAL_ERROR")],
)
def test_server_closes_the_connection(code: int, text: str) -> None:
    peer = opened()
    peer.open_channel()
    events = peer.feed(
        method(0, commands.Connection.Close(code, text, 0, 0)), method(1, commands.Basic.QosOk())
    )
    assert events == [ConnectionClosed(code, text, 0, 0, by_peer=True)]
    assert [type(m) for m in peer.sent_methods()] == [commands.Connection.CloseOk]
    assert peer.connection.closed
    assert peer.connection.receive_eof() == []
    assert peer.connection.receive_data(b"anything", 1.0) == []
    with pytest.raises(ConnectionStateError):
        peer.connection.open_channel()


def test_client_closes_the_connection() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.close(200, "bye")
    peer.connection.close()  # idempotent
    (close,) = peer.sent_methods()
    assert isinstance(close, commands.Connection.Close) and (close.reply_code, close.reply_text) == (
        200,
        "bye",
    )
    # Everything but Close/CloseOk is discarded while closing.
    assert (
        peer.feed(
            deliver(1, 1), method(1, commands.Basic.QosOk()), method(0, commands.Connection.Blocked(""))
        )
        == []
    )
    (event,) = peer.feed(method(0, commands.Connection.CloseOk()))
    assert event == ConnectionClosed(200, "bye", by_peer=False)
    assert peer.connection.state is ConnectionState.CLOSED


def test_close_crossing_close_on_the_connection() -> None:
    peer = opened()
    peer.connection.close()
    peer.sent()
    (event,) = peer.feed(method(0, commands.Connection.Close(320, "CONNECTION_FORCED", 0, 0)))
    assert event == ConnectionClosed(320, "CONNECTION_FORCED", by_peer=True)
    assert [type(m) for m in peer.sent_methods()] == [commands.Connection.CloseOk]
    assert peer.connection.closed


def test_eof_while_open_is_connection_lost() -> None:
    peer = opened()
    peer.open_channel()
    assert peer.connection.receive_eof() == [ConnectionLost()]
    assert peer.connection.closed


# ---- every command and its nowait form ------------------------------------------------------------

Command = Callable[[Connection], None]

# (command, the method it must send, the reply it waits for or None)
COMMANDS: list[tuple[str, Command, Any, Any]] = [
    (
        "exchange_declare",
        lambda c: c.exchange_declare(1, "x", "topic", durable=True, arguments={"alternate-exchange": "ae"}),
        commands.Exchange.Declare(
            0, "x", "topic", False, True, False, False, False, {"alternate-exchange": "ae"}
        ),
        commands.Exchange.DeclareOk(),
    ),
    (
        "exchange_declare nowait",
        lambda c: c.exchange_declare(1, "x", passive=True, auto_delete=True, internal=True, nowait=True),
        commands.Exchange.Declare(0, "x", "direct", True, False, True, True, True, {}),
        None,
    ),
    (
        "exchange_delete",
        lambda c: c.exchange_delete(1, "x", if_unused=True),
        commands.Exchange.Delete(0, "x", True, False),
        commands.Exchange.DeleteOk(),
    ),
    (
        "exchange_delete nowait",
        lambda c: c.exchange_delete(1, "x", nowait=True),
        commands.Exchange.Delete(0, "x", False, True),
        None,
    ),
    (
        "exchange_bind",
        lambda c: c.exchange_bind(1, "dst", "src", "rk", arguments={"a": 1}),
        commands.Exchange.Bind(0, "dst", "src", "rk", False, {"a": 1}),
        commands.Exchange.BindOk(),
    ),
    (
        "exchange_bind nowait",
        lambda c: c.exchange_bind(1, "dst", "src", nowait=True),
        commands.Exchange.Bind(0, "dst", "src", "", True, {}),
        None,
    ),
    (
        "exchange_unbind",
        lambda c: c.exchange_unbind(1, "dst", "src", "rk"),
        commands.Exchange.Unbind(0, "dst", "src", "rk", False, {}),
        commands.Exchange.UnbindOk(),
    ),
    (
        "exchange_unbind nowait",
        lambda c: c.exchange_unbind(1, "dst", "src", nowait=True),
        commands.Exchange.Unbind(0, "dst", "src", "", True, {}),
        None,
    ),
    (
        "queue_declare",
        lambda c: c.queue_declare(1, "q", durable=True, exclusive=True, arguments={"x-max-length": 10}),
        commands.Queue.Declare(0, "q", False, True, True, False, False, {"x-max-length": 10}),
        commands.Queue.DeclareOk("q", 0, 0),
    ),
    (
        "queue_declare nowait",
        lambda c: c.queue_declare(1, "q", passive=True, auto_delete=True, nowait=True),
        commands.Queue.Declare(0, "q", True, False, False, True, True, {}),
        None,
    ),
    (
        "queue_bind",
        lambda c: c.queue_bind(1, "q", "x", "rk", arguments={"x-match": "all"}),
        commands.Queue.Bind(0, "q", "x", "rk", False, {"x-match": "all"}),
        commands.Queue.BindOk(),
    ),
    (
        "queue_bind nowait",
        lambda c: c.queue_bind(1, "q", "x", nowait=True),
        commands.Queue.Bind(0, "q", "x", "", True, {}),
        None,
    ),
    (
        "queue_unbind",
        lambda c: c.queue_unbind(1, "q", "x", "rk"),
        commands.Queue.Unbind(0, "q", "x", "rk", {}),
        commands.Queue.UnbindOk(),
    ),
    (
        "queue_purge",
        lambda c: c.queue_purge(1, "q"),
        commands.Queue.Purge(0, "q", False),
        commands.Queue.PurgeOk(4),
    ),
    (
        "queue_purge nowait",
        lambda c: c.queue_purge(1, "q", nowait=True),
        commands.Queue.Purge(0, "q", True),
        None,
    ),
    (
        "queue_delete",
        lambda c: c.queue_delete(1, "q", if_unused=True, if_empty=True),
        commands.Queue.Delete(0, "q", True, True, False),
        commands.Queue.DeleteOk(2),
    ),
    (
        "queue_delete nowait",
        lambda c: c.queue_delete(1, "q", nowait=True),
        commands.Queue.Delete(0, "q", False, False, True),
        None,
    ),
    (
        "basic_qos",
        lambda c: c.basic_qos(1, prefetch_count=10, global_=True),
        commands.Basic.Qos(0, 10, True),
        commands.Basic.QosOk(),
    ),
    (
        "basic_consume",
        lambda c: c.basic_consume(1, "q", exclusive=True, no_local=True, arguments={"x-priority": 5}),
        commands.Basic.Consume(0, "q", "", True, False, True, False, {"x-priority": 5}),
        commands.Basic.ConsumeOk("amq.ctag-1"),
    ),
    (
        "basic_consume nowait",
        lambda c: c.basic_consume(1, "q", "mine", nowait=True),
        commands.Basic.Consume(0, "q", "mine", False, False, False, True, {}),
        None,
    ),
    (
        "basic_cancel",
        lambda c: c.basic_cancel(1, "mine"),
        commands.Basic.Cancel("mine", False),
        commands.Basic.CancelOk("mine"),
    ),
    (
        "basic_cancel nowait",
        lambda c: c.basic_cancel(1, "mine", nowait=True),
        commands.Basic.Cancel("mine", True),
        None,
    ),
    (
        "basic_get",
        lambda c: c.basic_get(1, "q"),
        commands.Basic.Get(0, "q", False),
        commands.Basic.GetEmpty(),
    ),
    (
        "basic_recover",
        lambda c: c.basic_recover(1),
        commands.Basic.Recover(True),
        commands.Basic.RecoverOk(),
    ),
    (
        "confirm_select",
        lambda c: c.confirm_select(1),
        commands.Confirm.Select(False),
        commands.Confirm.SelectOk(),
    ),
    (
        "confirm_select nowait",
        lambda c: c.confirm_select(1, nowait=True),
        commands.Confirm.Select(True),
        None,
    ),
    ("tx_select", lambda c: c.tx_select(1), commands.Tx.Select(), commands.Tx.SelectOk()),
    ("tx_commit", lambda c: c.tx_commit(1), commands.Tx.Commit(), commands.Tx.CommitOk()),
    ("tx_rollback", lambda c: c.tx_rollback(1), commands.Tx.Rollback(), commands.Tx.RollbackOk()),
    (
        "channel_flow",
        lambda c: c.channel_flow(1, True),
        commands.Channel.Flow(True),
        commands.Channel.FlowOk(True),
    ),
]


def same_method(a: Any, b: Any) -> bool:
    return MethodReply(0, a) == MethodReply(0, b)


@pytest.mark.parametrize(
    ("command", "sends", "reply"), [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS]
)
def test_every_command(command: Command, sends: Any, reply: Any) -> None:
    peer = opened()
    peer.open_channel()
    command(peer.connection)
    ((channel, sent),) = peer.sent()
    assert channel == 1
    assert same_method(sent, sends), (vars(sent) if hasattr(sent, "__dict__") else sent, sends)
    if reply is None:
        # A nowait command waits for nothing: the next reply answers the next command.
        peer.connection.basic_qos(1, prefetch_count=1)
        peer.sent()
        assert peer.feed(method(1, commands.Basic.QosOk())) == [MethodReply(1, commands.Basic.QosOk())]
        return
    assert peer.feed(method(1, reply)) == [MethodReply(1, reply)]
    # Nothing more is awaited.
    violation(peer, 503, method(1, reply))


def test_nowait_consume_needs_a_consumer_tag() -> None:
    peer = opened()
    peer.open_channel()
    with pytest.raises(LocalProtocolError, match="needs a consumer_tag"):
        peer.connection.basic_consume(1, "q", nowait=True)
    assert peer.connection.data_to_send(0.0) == b""


def test_get_answers_get_ok_or_get_empty() -> None:
    peer = opened()
    peer.open_channel()
    peer.connection.basic_get(1, "q")
    peer.connection.basic_get(1, "q")
    peer.sent()
    (empty,) = peer.feed(method(1, commands.Basic.GetEmpty()))
    assert empty == MethodReply(1, commands.Basic.GetEmpty())
    events = peer.feed(method(1, commands.Basic.GetOk(5, False, "x", "rk", 0)), content(1, b"m"))
    assert events[0].delivery_tag == 5


# ---- caller misuse ----------------------------------------------------------------------------------


def test_misuse_raises_local_errors_and_queues_nothing() -> None:
    peer = opened(frame_max=4096)
    peer.open_channel()
    connection = peer.connection
    huge_table = {"k": "v" * 5000}
    cases: list[tuple[type[Exception], Callable[[], Any]]] = [
        (FrameTooLarge, lambda: connection.queue_declare(1, "q", arguments=huge_table)),
        (FrameTooLarge, lambda: connection.update_secret("s" * 5000, "r")),
        (LocalProtocolError, lambda: connection.queue_declare(1, "q" * 300)),
        (LocalProtocolError, lambda: connection.exchange_declare(1, "x", arguments={"bad": object()})),
        (LocalProtocolError, lambda: connection.basic_publish(1, b"x", "e" * 300)),
        (LocalProtocolError, lambda: connection.basic_publish(1, b"x", "", "r" * 256)),
        (
            FrameTooLarge,
            lambda: connection.basic_publish(
                1, b"x", properties=commands.Basic.Properties(headers=huge_table)
            ),
        ),
        (LocalProtocolError, lambda: connection.basic_publish(1, "not bytes")),  # type: ignore[arg-type]
        (
            LocalProtocolError,
            lambda: connection.basic_publish(
                1, b"x", properties=commands.Basic.Properties(headers={"x": object()})
            ),
        ),
    ]
    for kind, call in cases:
        with pytest.raises(kind):
            call()
        assert connection.data_to_send(0.0) == b"", kind
    # The connection is unharmed.
    connection.basic_qos(1, prefetch_count=1)
    assert [type(m) for m in peer.sent_methods()] == [commands.Basic.Qos]
    assert peer.feed(method(1, commands.Basic.QosOk())) == [MethodReply(1, commands.Basic.QosOk())]


@pytest.mark.parametrize(
    "arguments",
    [{1: "x"}, {b"x-max-length": 10}, {"x-nested": {2: "x"}}, {"x-array": [{3: "x"}]}],
    ids=["int", "bytes", "nested", "in-array"],
)
@pytest.mark.parametrize("command", ["queue_declare", "exchange_declare", "queue_bind", "basic_consume"])
def test_method_arguments_with_keys_that_are_not_str_are_caller_misuse(
    command: str, arguments: dict[Any, Any]
) -> None:
    # Message headers with such keys were refused as LocalProtocolError, but the same table as the
    # arguments of a declare, bind or consume escaped pamqp as an AttributeError.
    peer = opened()
    channel = peer.open_channel()
    c = peer.connection
    calls: dict[str, Callable[[], None]] = {
        "queue_declare": lambda: c.queue_declare(channel, "q", arguments=arguments),
        "exchange_declare": lambda: c.exchange_declare(channel, "x", "topic", arguments=arguments),
        "queue_bind": lambda: c.queue_bind(channel, "q", "x", "rk", arguments=arguments),
        "basic_consume": lambda: c.basic_consume(channel, "q", "ctag", arguments=arguments),
    }
    with pytest.raises(LocalProtocolError, match="field table keys must be str"):
        calls[command]()
    assert not c.has_data_to_send
    # Nothing was half done: the channel takes the command with good arguments, and its reply.
    c.queue_declare(channel, "q", arguments={"x-max-length": 10})
    assert [type(m) for m in peer.sent_methods()] == [commands.Queue.Declare]
    (reply,) = peer.feed(method(channel, commands.Queue.DeclareOk("q", 0, 0)))
    assert isinstance(reply, MethodReply)


def test_publish_splits_bodies_to_frame_max() -> None:
    peer = opened(frame_max=4096)
    peer.open_channel()
    body = bytes(range(256)) * 40  # 10240 bytes: three body frames of at most 4088 bytes
    assert peer.connection.basic_publish(1, body, "x", "rk") is None
    frames = peer.sent()
    assert [type(f).__name__ for _c, f in frames] == [
        "Publish",
        "ContentHeader",
        "ContentBody",
        "ContentBody",
        "ContentBody",
    ]
    assert [len(f.value) for _c, f in frames[2:]] == [4088, 4088, 2064]
    assert b"".join(f.value for _c, f in frames[2:]) == body
    assert frames[1][1].body_size == len(body)


def test_a_channel_close_that_cannot_be_encoded_leaves_the_channel_open() -> None:
    peer = opened()
    peer.open_channel()
    with pytest.raises(LocalProtocolError):
        peer.connection.close_channel(1, 200, "x" * 300)
    assert peer.connection.data_to_send(0.0) == b""
    peer.connection.close_channel(1)
    assert [type(m) for m in peer.sent_methods()] == [commands.Channel.Close]


def test_consume_before_the_connection_opens_is_a_connection_state_error() -> None:
    with pytest.raises(ConnectionStateError):
        Connection().basic_consume(1, "q", "tag", nowait=True, no_ack=True)
