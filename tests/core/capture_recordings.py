"""Capture the recordings under ``recordings/`` from the real RabbitMQ on 127.0.0.1:5672.

    .venv/bin/python tests/core/capture_recordings.py [scenario ...]

Each scenario of ``scenarios.py`` runs through a blocking socket; every byte both sides sent is kept as
frames in ``recordings/<scenario>.json``. The replay tests then run the same scenarios with no broker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amqp_core import Connection, Event
from amqp_core.recording import CLIENT, SERVER, Recording

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import CONNECTION_SETTINGS, PREFIX, SCENARIOS

RECORDINGS = Path(__file__).parent / "recordings"


class SocketDriver:
    """Runs a connection over a blocking socket, recording both directions."""

    def __init__(self, connection: Connection, recording: Recording) -> None:
        self.connection = connection
        self.recording = recording
        self.sock = socket.create_connection(("127.0.0.1", 5672), timeout=10)
        self.backlog: list[Event] = []

    def wait(self, predicate: Callable[[Event], bool]) -> list[Event]:
        deadline = time.monotonic() + 10
        while True:
            for index, event in enumerate(self.backlog):
                if predicate(event):
                    found, self.backlog = self.backlog[: index + 1], self.backlog[index + 1 :]
                    return found
            outgoing = self.connection.data_to_send(time.monotonic())
            if outgoing:
                self.recording.record(CLIENT, outgoing)
                self.sock.sendall(outgoing)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching event; got {self.backlog}")
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the broker closed the socket")
            self.recording.record(SERVER, data)
            self.backlog += self.connection.receive_data(data, time.monotonic())

    def close(self) -> None:
        outgoing = self.connection.data_to_send(time.monotonic())
        if outgoing:
            self.recording.record(CLIENT, outgoing)
            self.sock.sendall(outgoing)
        self.sock.close()


def close_recorder_connections() -> None:
    """Ask the broker to close (320) every connection named like ours."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in listing.splitlines():
        if "amqp-core-recorder" in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "recorded close"], check=True)


def delete_leftovers() -> None:
    for kind in ("queue", "exchange"):
        names = subprocess.run(
            ["rabbitmqctl", "-q", f"list_{kind}s", "name"], capture_output=True, text=True, check=True
        ).stdout.split()
        for name in names:
            if name.startswith(PREFIX):
                subprocess.run(["rabbitmqadmin", "delete", kind, f"name={name}"], check=False)


def capture(name: str) -> None:
    recording = Recording()
    connection = Connection(**CONNECTION_SETTINGS)
    driver = SocketDriver(connection, recording)
    facts: dict[str, Any] = {"request_server_close": close_recorder_connections}
    try:
        SCENARIOS[name](connection, driver.wait, facts)
    finally:
        driver.close()
    RECORDINGS.mkdir(exist_ok=True)
    (RECORDINGS / f"{name}.json").write_text(recording.dumps())
    print(f"{name}: {len(recording.frames)} frames {facts if name == 'handshake' else ''}")


if __name__ == "__main__":
    for scenario in sys.argv[1:] or SCENARIOS:
        capture(scenario)
