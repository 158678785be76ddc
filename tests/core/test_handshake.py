"""The opening handshake against a scripted broker: negotiation, credentials, and every way it can fail."""

from __future__ import annotations

import pytest
from pamqp import commands

from amqp_core import (
    AuthenticationRefused,
    BrokerClosedDuringHandshake,
    Connection,
    ConnectionOpened,
    ConnectionState,
    ConnectionStateError,
    HandshakeError,
    RemoteProtocolError,
    SecretUpdated,
    WrongProtocol,
)
from amqp_core.codec import decode_table
from amqp_core.handshake import CAPABILITIES, PROTOCOL_HEADER, Credentials, negotiate

from .peer import SERVER_PROPERTIES, Peer, method, opened


def test_initiate_sends_the_protocol_header() -> None:
    connection = Connection()
    connection.initiate(0.0)
    assert connection.data_to_send(0.0) == PROTOCOL_HEADER == b"AMQP\x00\x00\x09\x01"
    assert connection.state is ConnectionState.AWAIT_START
    with pytest.raises(ConnectionStateError):
        connection.initiate(0.0)


def test_full_handshake_plain() -> None:
    peer = Peer(
        username="alice",
        password="s3cret",
        virtual_host="/prod",
        client_properties={"connection_name": "orders", "capabilities": {"extra": True}},
        locale="fr_FR",
    )
    assert peer.start() == []
    ((channel, start_ok),) = peer.sent()[1:]  # the protocol header came first
    assert channel == 0 and isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.mechanism == "PLAIN"
    assert start_ok.response == "\0alice\0s3cret"
    assert start_ok.locale == "fr_FR"
    properties = start_ok.client_properties
    assert properties["connection_name"] == "orders"
    assert properties["product"] == "aio-pika-sansio"
    assert {"product", "version", "platform", "information"} <= set(properties)
    for capability in (
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "exchange_exchange_bindings",
        "per_consumer_qos",
    ):
        assert properties["capabilities"][capability] is True
    assert properties["capabilities"]["extra"] is True
    assert peer.connection.state is ConnectionState.AWAIT_TUNE

    assert peer.feed(method(0, commands.Connection.Tune(2047, 131072, 60))) == []
    tune_ok, open_ = peer.sent_methods()
    assert isinstance(tune_ok, commands.Connection.TuneOk)
    assert isinstance(open_, commands.Connection.Open) and open_.virtual_host == "/prod"
    assert peer.connection.state is ConnectionState.AWAIT_OPEN_OK

    (event,) = peer.feed(method(0, commands.Connection.OpenOk()))
    assert event == ConnectionOpened(131072, 2047, 60, SERVER_PROPERTIES)
    assert peer.connection.state is ConnectionState.OPEN
    assert peer.connection.server_properties == SERVER_PROPERTIES
    assert "s3cret" not in repr(peer.connection)
    assert "s3cret" not in repr(Credentials("alice", "s3cret"))


def test_capabilities_announced_are_the_issue_list() -> None:
    assert set(CAPABILITIES) == {
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
        "exchange_exchange_bindings",
        "per_consumer_qos",
    }


def test_amqplain_response_is_a_table_without_its_length() -> None:
    peer = Peer(username="bob", password="pw", auth_mechanism="AMQPLAIN")
    peer.start()
    start_ok = peer.sent_methods()[-1]
    assert start_ok.mechanism == "AMQPLAIN"
    raw = start_ok.response.encode()
    table, end = decode_table(len(raw).to_bytes(4, "big") + raw, 0, len(raw) + 4)
    assert table == {"LOGIN": "bob", "PASSWORD": "pw"} and end == len(raw) + 4


def test_external_sends_an_empty_response() -> None:
    peer = Peer(auth_mechanism="EXTERNAL")
    peer.start(mechanisms="EXTERNAL PLAIN")
    start_ok = peer.sent_methods()[-1]
    assert (start_ok.mechanism, start_ok.response) == ("EXTERNAL", "")


def test_unknown_mechanism_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="auth_mechanism"):
        Connection(auth_mechanism="GSSAPI")


def test_mechanism_not_offered_by_the_broker() -> None:
    peer = Peer(auth_mechanism="EXTERNAL")
    with pytest.raises(AuthenticationRefused, match=r"EXTERNAL.*PLAIN, AMQPLAIN"):
        peer.start()
    assert peer.connection.closed


def test_secure_is_answered_with_secure_ok() -> None:
    peer = Peer(username="u", password="p")
    peer.start()
    peer.sent()
    assert peer.feed(method(0, commands.Connection.Secure("challenge"))) == []
    (secure_ok,) = peer.sent_methods()
    assert isinstance(secure_ok, commands.Connection.SecureOk) and secure_ok.response == "\0u\0p"
    peer.feed(method(0, commands.Connection.Tune(0, 0, 0)))
    assert [type(m) for m in peer.sent_methods()] == [commands.Connection.TuneOk, commands.Connection.Open]


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [(0, 0, 0), (0, 60, 60), (60, 0, 60), (10, 60, 10), (60, 10, 10), (5, 5, 5)],
)
def test_negotiate_table(client: int, server: int, expected: int) -> None:
    assert negotiate(client, server) == expected


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [
        # (channel_max, frame_max, heartbeat) proposed by each side, and the result.
        ((2047, 131072, 0), (2047, 131072, 60), (2047, 131072, 60)),
        ((100, 8192, 30), (2047, 131072, 60), (100, 8192, 30)),
        ((2047, 131072, 60), (10, 4096, 5), (10, 4096, 5)),
        ((0, 0, 0), (0, 0, 0), (0, 0, 0)),
        ((0, 0, 0), (300, 65536, 20), (300, 65536, 20)),
        ((50, 16384, 15), (0, 0, 0), (50, 16384, 15)),
    ],
)
def test_tune_negotiation(
    client: tuple[int, int, int], server: tuple[int, int, int], expected: tuple[int, int, int]
) -> None:
    peer = Peer(channel_max=client[0], frame_max=client[1], heartbeat=client[2])
    peer.start()
    peer.sent()
    peer.feed(method(0, commands.Connection.Tune(*server)))
    tune_ok, _open = peer.sent_methods()
    channel_max, frame_max, heartbeat = expected
    # Channel 0 for channel_max means "no limit": the client sends and uses 65535, the protocol maximum.
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == (
        channel_max or 65535,
        frame_max,
        heartbeat,
    )
    (event,) = peer.feed(method(0, commands.Connection.OpenOk()))
    assert isinstance(event, ConnectionOpened)
    negotiated = (event.channel_max, event.frame_max, event.heartbeat)
    assert negotiated == (channel_max or 65535, frame_max, heartbeat)
    assert peer.connection.frame_max == frame_max


def test_constructor_validates_limits() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        Connection(heartbeat=-1)
    with pytest.raises(ValueError, match="channel_max"):
        Connection(channel_max=70000)
    with pytest.raises(ValueError, match="frame_max"):
        Connection(frame_max=100)
    with pytest.raises(ValueError, match="max_body_size"):
        Connection(max_body_size=-1)


def test_update_secret() -> None:
    peer = opened()
    peer.connection.update_secret("new-token", "refresh")
    (update,) = peer.sent_methods()
    assert isinstance(update, commands.Connection.UpdateSecret)
    assert (update.new_secret, update.reason) == ("new-token", "refresh")
    assert peer.feed(method(0, commands.Connection.UpdateSecretOk())) == [SecretUpdated()]


def test_update_secret_needs_an_open_connection() -> None:
    peer = Peer()
    peer.start()
    with pytest.raises(ConnectionStateError):
        peer.connection.update_secret("x", "y")


# ---- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [b"AMQP\x00\x00\x09\x01", b"AMQP\x01\x01\x00\x0a", b"AMQP\x00\x00\x08\x00"])
def test_server_answering_with_a_protocol_header_is_wrong_protocol(reply: bytes) -> None:
    peer = Peer()
    peer.connection.initiate(0.0)
    assert peer.connection.receive_data(reply[:5], 0.0) == []  # maybe a header: wait for all of it
    with pytest.raises(WrongProtocol, match="does not speak AMQP 0-9-1") as caught:
        peer.connection.receive_data(reply[5:], 0.0)
    assert isinstance(caught.value, HandshakeError)
    assert peer.connection.closed
    assert peer.connection.receive_data(b"more", 0.0) == []


def test_start_offering_another_version_is_wrong_protocol() -> None:
    peer = Peer()
    peer.connection.initiate(0.0)
    with pytest.raises(WrongProtocol, match="AMQP 0-8"):
        peer.feed(method(0, commands.Connection.Start(0, 8, mechanisms="PLAIN")))


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"\x15\x03\x03\x00\x02\x02\x46",  # a TLS alert
        b"ABCDEFGHIJKLMNOP",  # starts like a protocol header, but is not one
    ],
)
def test_garbage_during_the_handshake_says_the_server_is_not_amqp(garbage: bytes) -> None:
    connection = Connection()
    connection.initiate(0.0)
    connection.data_to_send(0.0)
    with pytest.raises(RemoteProtocolError, match="did not speak AMQP 0-9-1") as caught:
        connection.receive_data(garbage, 0.0)
    assert caught.value.reply_code == 501
    assert connection.closed
    assert connection.data_to_send(0.0) == b""  # the handshake never finished: no Close to send


def test_close_403_during_the_handshake_is_authentication_refused() -> None:
    peer = Peer()
    peer.start()
    peer.sent()
    reason = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"
    close = commands.Connection.Close(403, reason, 0, 0)
    with pytest.raises(AuthenticationRefused, match="Login was refused") as caught:
        peer.feed(method(0, close))
    assert "Login was refused" in caught.value.reason
    assert [type(m) for m in peer.sent_methods()] == [commands.Connection.CloseOk]
    assert peer.connection.closed


def test_eof_after_start_ok_is_authentication_refused() -> None:
    peer = Peer()
    peer.start()
    with pytest.raises(AuthenticationRefused, match="right after receiving the credentials"):
        peer.connection.receive_eof()
    assert peer.connection.closed


@pytest.mark.parametrize("state", ["await-start", "await-open-ok"])
def test_eof_elsewhere_in_the_handshake_is_broker_closed(state: str) -> None:
    peer = Peer()
    peer.connection.initiate(0.0)
    if state == "await-open-ok":
        peer.feed(method(0, commands.Connection.Start(mechanisms="PLAIN")))
        peer.feed(method(0, commands.Connection.Tune(0, 0, 0)))
    assert peer.connection.state.value == state
    with pytest.raises(BrokerClosedDuringHandshake, match="dropped the connection"):
        peer.connection.receive_eof()


def test_close_530_after_open_is_broker_closed_during_handshake() -> None:
    peer = Peer(virtual_host="/missing")
    peer.start()
    peer.feed(method(0, commands.Connection.Tune(0, 0, 0)))
    peer.sent()
    close = commands.Connection.Close(530, "NOT_ALLOWED - vhost /missing not found", 10, 40)
    with pytest.raises(BrokerClosedDuringHandshake, match="vhost /missing not found") as caught:
        peer.feed(method(0, close))
    assert caught.value.reply_code == 530
    assert not isinstance(caught.value, AuthenticationRefused)
    assert [type(m) for m in peer.sent_methods()] == [commands.Connection.CloseOk]
    assert peer.connection.closed


def test_unexpected_method_during_the_handshake() -> None:
    peer = Peer()
    peer.start()
    with pytest.raises(RemoteProtocolError, match=r"unexpected Connection\.OpenOk") as caught:
        peer.feed(method(0, commands.Connection.OpenOk()))
    assert caught.value.reply_code == 503
    assert peer.connection.closed


def test_channel_method_during_the_handshake() -> None:
    peer = Peer()
    peer.start()
    with pytest.raises(RemoteProtocolError, match="before the connection opened"):
        peer.feed(method(1, commands.Channel.OpenOk()))


def test_heartbeats_during_the_handshake_are_ignored() -> None:
    from .peer import HEARTBEAT

    peer = Peer()
    peer.connection.initiate(0.0)
    assert peer.feed(HEARTBEAT) == []
    assert peer.connection.state is ConnectionState.AWAIT_START


def test_close_before_and_during_the_handshake() -> None:
    idle = Connection()
    idle.close()
    assert idle.closed and idle.data_to_send(0.0) == b""

    peer = Peer()
    peer.start()
    peer.sent()
    peer.connection.close()
    (close,) = peer.sent_methods()
    assert isinstance(close, commands.Connection.Close)
    assert peer.connection.state is ConnectionState.CLOSING
    # The broker's late Tune is ignored while closing; its CloseOk ends the connection.
    assert peer.feed(method(0, commands.Connection.Tune(0, 0, 0))) == []
    (closed,) = peer.feed(method(0, commands.Connection.CloseOk()))
    assert not closed.by_peer and peer.connection.closed


def test_bad_settings_fail_at_construction_not_mid_handshake() -> None:
    with pytest.raises(ValueError, match="invalid connection settings"):
        Connection(client_properties={"bad": object()})
    with pytest.raises(ValueError, match="invalid connection settings"):
        Connection(virtual_host="v" * 200)
    with pytest.raises(ValueError, match="before tuning"):
        Connection(client_properties={"big": "x" * 5000})
    with pytest.raises(ValueError, match="AMQPLAIN"):
        Connection(auth_mechanism="AMQPLAIN", password="p" * 200)


def test_mechanisms_that_are_not_utf8() -> None:
    start = commands.Connection.Start(mechanisms="PLAIN")
    frame = bytearray(method(0, start))
    # Replace "PLAIN" (the mechanisms longstr) with bytes that are not UTF-8.
    at = frame.index(b"PLAIN")
    frame[at : at + 5] = b"\xffLAIN"
    connection = Connection()
    connection.initiate(0.0)
    with pytest.raises(AuthenticationRefused, match="does not offer the PLAIN"):
        connection.receive_data(bytes(frame), 0.0)


def test_a_tuned_frame_max_below_the_protocol_minimum_is_refused() -> None:
    peer = Peer()
    peer.start()
    peer.sent()
    with pytest.raises(RemoteProtocolError, match="below the protocol's minimum of 4096"):
        peer.feed(method(0, commands.Connection.Tune(0, 1024, 0)))
    assert peer.connection.closed
