"""Replay conversations recorded from the real RabbitMQ (``recordings/``) against the core: no broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amqp_core import Connection, Event
from amqp_core.recording import CLIENT, RecordedFrame, Recording, Replayer, ReplayMismatch

from .scenarios import CONNECTION_SETTINGS, SCENARIOS

RECORDINGS = Path(__file__).parent / "recordings"


class ReplayDriver:
    """The replay twin of the capture script's socket driver."""

    def __init__(self, recording: Recording) -> None:
        self.replayer = Replayer(recording)
        self.backlog: list[Event] = []

    def wait_with(self, connection: Connection) -> Callable[[Callable[[Event], bool]], list[Event]]:
        def wait(predicate: Callable[[Event], bool]) -> list[Event]:
            while True:
                for index, event in enumerate(self.backlog):
                    if predicate(event):
                        found, self.backlog = self.backlog[: index + 1], self.backlog[index + 1 :]
                        return found
                position = self.replayer.position
                self.backlog += self.replayer.exchange(connection)
                if self.replayer.position == position:
                    raise AssertionError(f"the recording holds no matching event; got {self.backlog}")

        return wait


def load(name: str) -> Recording:
    return Recording.loads((RECORDINGS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_recorded_conversation_replays(name: str) -> None:
    recording = load(name)
    connection = Connection(**CONNECTION_SETTINGS)
    driver = ReplayDriver(recording)
    facts: dict[str, Any] = {"request_server_close": lambda: None}
    SCENARIOS[name](connection, driver.wait_with(connection), facts)
    driver.replayer.exchange(connection)  # the client's last frames (CloseOk, …)
    assert driver.replayer.done


def test_replay_reports_a_client_frame_the_recording_does_not_have() -> None:
    connection = Connection(**CONNECTION_SETTINGS)
    replayer = Replayer(load("declares"))
    connection.initiate(0.0)
    for _ in range(3):  # header -> Start, StartOk -> Tune, TuneOk + Open -> OpenOk
        replayer.exchange(connection)
    connection.open_channel()
    replayer.exchange(connection)
    connection.queue_declare(1, "something-else")  # the recording declares an exchange here
    with pytest.raises(
        ReplayMismatch, match=r"recording has client method 40\.10 .* sent client method 50\.10"
    ):
        replayer.exchange(connection)


def test_recording_round_trips_through_text_and_splits_arbitrary_chunks() -> None:
    original = load("consume")
    rebuilt = Recording()
    for frame in original.frames:  # re-record the bytes one at a time, as if the socket dribbled them
        for i in range(len(frame.data)):
            rebuilt.record(frame.direction, frame.data[i : i + 1])
    assert rebuilt.frames == original.frames
    assert Recording.loads(rebuilt.dumps()).frames == original.frames


def test_loading_rejects_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction"):
        Recording.loads('{"version": 1, "frames": [{"dir": "sideways", "hex": "00"}]}')


def test_strict_replay_compares_bytes() -> None:
    recording = Recording([RecordedFrame(CLIENT, b"AMQP\x00\x00\x09\x01")])
    connection = Connection()
    connection.initiate(0.0)
    Replayer(recording, strict=True).exchange(connection)
