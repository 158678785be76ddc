"""Heartbeats and timers with a fake clock: time only moves when the test says so."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pamqp import commands

from amqp_core import Connection, HeartbeatTimeout

from .peer import HEARTBEAT, Peer, method


def beating(interval: int = 10) -> Peer:
    peer = Peer(heartbeat=interval)
    peer.handshake(heartbeat=interval)  # at t=0; the client's frames were drained at t=0
    assert peer.connection.heartbeat == interval
    return peer


def test_heartbeat_sent_after_half_an_interval_of_silence() -> None:
    peer = beating(10)
    c = peer.connection
    assert c.next_timer() == 5.0  # min(last sent + 5, last received + 20)
    assert c.handle_timer(4.9) == []
    assert c.data_to_send(4.9) == b""
    assert c.handle_timer(5.0) == []
    assert c.data_to_send(5.0) == HEARTBEAT
    assert c.next_timer() == 10.0
    assert c.handle_timer(10.0) == []
    assert c.data_to_send(10.0) == HEARTBEAT


def test_no_heartbeat_while_traffic_flows() -> None:
    peer = beating(10)
    c = peer.connection
    c.open_channel()
    for now in range(2, 40, 2):
        c.basic_publish(1, b"x") if now > 2 else None
        data = c.data_to_send(float(now))
        assert data and HEARTBEAT not in data[:8]
        c.receive_data(HEARTBEAT if now > 2 else method(1, commands.Channel.OpenOk()), float(now))
        assert c.next_timer() == now + 5.0
        assert c.handle_timer(float(now) + 1) == []
        assert c.data_to_send(float(now) + 1) == b""


def test_broker_heartbeats_keep_the_connection_alive() -> None:
    peer = beating(10)
    c = peer.connection
    for now in (5.0, 10.0, 15.0, 20.0, 25.0, 30.0):
        assert c.handle_timer(now) == []
        assert c.data_to_send(now) == HEARTBEAT
        assert c.receive_data(HEARTBEAT, now) == []
    assert c.next_timer() == 35.0
    assert not c.closed


def test_silence_for_two_intervals_is_a_timeout() -> None:
    peer = beating(10)
    c = peer.connection
    for now in (5.0, 10.0, 15.0):
        c.handle_timer(now)
        c.data_to_send(now)
    assert c.next_timer() == 20.0  # the last byte came at t=0
    assert c.handle_timer(19.9) == []
    assert c.handle_timer(20.0) == [HeartbeatTimeout(20.0)]
    assert c.closed
    assert c.next_timer() is None
    assert c.handle_timer(30.0) == []


def test_empty_reads_are_not_traffic() -> None:
    peer = beating(10)
    c = peer.connection
    for now in (5.0, 10.0, 15.0):
        c.handle_timer(now)
        c.data_to_send(now)
        assert c.receive_data(b"", now) == []  # a read that returned nothing
    assert c.handle_timer(20.0) == [HeartbeatTimeout(20.0)]


def test_partial_frames_count_as_traffic() -> None:
    peer = beating(10)
    c = peer.connection
    c.receive_data(HEARTBEAT[:3], 18.0)
    assert c.next_timer() == 5.0
    for now in (5.0, 10.0, 15.0, 20.0):
        assert c.handle_timer(now) == []
        c.data_to_send(now)
    assert c.next_timer() == 25.0
    assert c.handle_timer(38.0) == [HeartbeatTimeout(20.0)]


@pytest.mark.parametrize(("client", "server"), [(0, 0), (10, 0), (0, 60), (5, 60)])
def test_negotiated_interval_drives_the_timer(client: int, server: int) -> None:
    peer = Peer(heartbeat=client)
    peer.handshake(heartbeat=server)
    interval = client if not server else server if not client else min(client, server)
    c = peer.connection
    assert c.heartbeat == interval
    if interval == 0:
        assert c.next_timer() is None
        assert c.handle_timer(1000.0) == []
        assert c.data_to_send(1000.0) == b""
    else:
        assert c.next_timer() == interval / 2


def test_no_timer_before_the_connection_is_open() -> None:
    connection = Connection(heartbeat=10)
    assert connection.next_timer() is None
    connection.initiate(0.0)
    assert connection.next_timer() is None
    assert connection.handle_timer(100.0) == []


def test_timer_while_closing() -> None:
    peer = beating(10)
    c = peer.connection
    c.close()
    c.data_to_send(1.0)
    assert c.next_timer() == 6.0
    assert c.handle_timer(21.0) == [HeartbeatTimeout(21.0)]


# A monotonic clock's value: seconds since boot, or a test's virtual time starting at 0.
clock = st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False)


def test_the_timer_makes_progress_when_called_at_the_deadline_it_gave() -> None:
    # last_sent + 30 rounds down, so at that very deadline `now - last_sent` is a hair under 30: the
    # heartbeat was neither sent nor the deadline moved, and a driver that sleeps until next_timer()
    # and calls handle_timer() (aio_pika's heartbeat loop, under a virtual clock) spun on it forever.
    peer = Peer(heartbeat=60)
    peer.handshake(heartbeat=60)
    c = peer.connection
    now = 4079.0175090742455
    c.receive_data(HEARTBEAT, now)
    c.open_channel()
    assert c.data_to_send(now)
    deadline = c.next_timer()
    assert deadline == now + 30
    assert c.handle_timer(deadline) == []
    assert c.data_to_send(deadline) == HEARTBEAT
    next_deadline = c.next_timer()
    assert next_deadline is not None and next_deadline > deadline


@given(sent=clock, received=clock, interval=st.integers(1, 65535))
@example(sent=4079.0175090742455, received=4079.0175090742455, interval=60)  # last_sent + 30 rounds down
@example(sent=4100.0, received=4002.353689016469, interval=60)  # last_received + 120 rounds down
def test_handle_timer_at_next_timer_always_acts(sent: float, received: float, interval: int) -> None:
    peer = Peer(heartbeat=interval)
    peer.handshake(heartbeat=interval)
    c = peer.connection
    c.receive_data(HEARTBEAT, received)
    c.open_channel()
    c.data_to_send(sent)
    deadline = c.next_timer()
    assert deadline is not None
    events = c.handle_timer(deadline)
    if events:
        (timeout,) = events
        assert isinstance(timeout, HeartbeatTimeout) and c.closed
    else:
        # The heartbeat went out: the next deadline is later than this one.
        assert c.data_to_send(deadline) == HEARTBEAT
        next_deadline = c.next_timer()
        assert next_deadline is not None and next_deadline > deadline
