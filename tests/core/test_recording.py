"""The public record/replay helper, used the way its documentation tells users to use it."""

from __future__ import annotations

import pytest
from pamqp import commands

from amqp_core import ChannelOpened, Connection, ConnectionOpened, MethodReply
from amqp_core.recording import CLIENT, SERVER, RecordedFrame, Recording, Replayer, ReplayMismatch

from .peer import HEARTBEAT, Peer, content, load, method
from .scenarios import CONNECTION_SETTINGS


def test_documented_usage() -> None:
    replayer = Replayer(load("declares"))
    connection = Connection(**CONNECTION_SETTINGS)
    connection.initiate(0.0)
    handshake = replayer.wait(connection, lambda e: isinstance(e, ConnectionOpened))
    assert isinstance(handshake[-1], ConnectionOpened)
    channel = connection.open_channel()
    (opened,) = replayer.wait(connection, lambda e: isinstance(e, ChannelOpened))
    assert opened == ChannelOpened(channel, 1)
    connection.exchange_declare(channel, "amqp-core-recording-declares-x", "topic")
    (declared,) = replayer.wait(connection, lambda e: isinstance(e, MethodReply))
    assert isinstance(declared.method, commands.Exchange.DeclareOk)


def test_wait_reports_a_recording_that_ran_out() -> None:
    replayer = Replayer(load("handshake"))
    connection = Connection(**CONNECTION_SETTINGS)
    connection.initiate(0.0)
    replayer.wait(connection, lambda e: isinstance(e, ConnectionOpened))
    connection.close()
    replayer.wait(connection, lambda e: True)
    with pytest.raises(ReplayMismatch, match="no more broker frames"):
        replayer.wait(connection, lambda e: True)


def test_recording_a_scripted_conversation_and_replaying_it() -> None:
    # Record both directions of a conversation, whatever the chunking, as a socket driver would.
    recording = Recording()
    peer = Peer()
    peer.connection.initiate(0.0)
    broker = [
        method(0, commands.Connection.Start(mechanisms="PLAIN")),
        method(0, commands.Connection.Tune(0, 131072, 0)) + method(0, commands.Connection.OpenOk()),
        method(1, commands.Channel.OpenOk()),
        method(1, commands.Basic.GetOk(1, False, "", "q", 0)) + content(1, b"x" * 10) + HEARTBEAT,
    ]
    actions = [
        lambda: None,
        lambda: None,
        lambda: peer.connection.open_channel(),
        lambda: peer.connection.basic_get(1, "q"),
    ]
    for action, answer in zip(actions, broker, strict=True):
        action()
        sent = peer.connection.data_to_send(0.0)
        for i in range(0, len(sent), 5):
            recording.record(CLIENT, sent[i : i + 5])
        for i in range(0, len(answer), 3):
            recording.record(SERVER, answer[i : i + 3])
        peer.connection.receive_data(answer, 0.0)
    text = recording.dumps()
    replayed = Recording.loads(text)
    assert replayed.frames == recording.frames
    descriptions = [frame.describe() for frame in replayed.frames]
    assert descriptions[:2] == ["client protocol header on channel 0", "server method 10.10 on channel 0"]
    assert "server content header on channel 1" in descriptions
    assert "server content body on channel 1" in descriptions
    assert "server heartbeat on channel 0" in descriptions

    connection = Connection()
    replayer = Replayer(replayed, strict=True)
    connection.initiate(0.0)
    replayer.wait(connection, lambda e: isinstance(e, ConnectionOpened))
    connection.open_channel()
    replayer.wait(connection, lambda e: isinstance(e, ChannelOpened))
    connection.basic_get(1, "q")
    (got,) = replayer.exchange(connection)
    assert got.body == b"x" * 10
    assert replayer.done


def test_mismatches_are_reported() -> None:
    recording = Recording(
        [
            RecordedFrame(CLIENT, b"AMQP\x00\x00\x09\x01"),
            RecordedFrame(SERVER, method(0, commands.Connection.Start(mechanisms="PLAIN"))),
        ]
    )
    connection = Connection()
    connection.initiate(0.0)
    replayer = Replayer(recording)
    replayer.exchange(connection)  # header checked, Start fed: the connection queued StartOk
    with pytest.raises(
        ReplayMismatch, match=r"sent client method 10\.11 on channel 0 after the recording ended"
    ):
        replayer.exchange(connection)

    broker_first = Recording([RecordedFrame(SERVER, HEARTBEAT)])
    connection = Connection()
    connection.initiate(0.0)
    with pytest.raises(ReplayMismatch, match="expects the broker's server heartbeat on channel 0 first"):
        Replayer(broker_first).exchange(connection)

    strict = Recording([RecordedFrame(CLIENT, b"AMQP\x00\x00\x09\x02")])
    connection = Connection()
    connection.initiate(0.0)
    with pytest.raises(ReplayMismatch, match="frame 0"):
        Replayer(strict, strict=True).exchange(connection)


def test_loading_checks_the_format_version() -> None:
    with pytest.raises(ValueError, match="unsupported recording format version 2"):
        Recording.loads('{"version": 2, "frames": []}')


def test_describe_unknown_frame_types() -> None:
    assert (
        RecordedFrame(SERVER, b"\x09\x00\x01\x00\x00\x00\x00\xce").describe()
        == "server frame type 9 on channel 1"
    )
