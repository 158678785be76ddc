"""The programs in ``examples/``, each run as a subprocess against the real broker.

The seed's programs hard-code their names ("test_queue", "hello", "task_queue", "logs", "rpc_queue", ...),
and two of them even declare the "logs" exchange with different types. So they run in a private vhost,
created with ``rabbitmqctl`` for this module and deleted afterwards, handed to them as ``AMQP_URL``; before
each test, the queues and exchanges those names denote are deleted. Producer/consumer pairs run together: the
consumer is started, the test waits until the broker counts its consumer, runs the producer, asserts on what
the consumer printed and stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from pamqp import base, commands, frame, header

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TUTORIAL = EXAMPLES / "tutorial"
BROKER = "amqp://guest:guest@127.0.0.1/"
RABBITMQCTL = shutil.which("rabbitmqctl")

# The names the seed's programs use.
SEED_QUEUES = ("test_queue", "test", "hello", "task_queue", "rpc_queue")
SEED_EXCHANGES = ("direct", "logs", "topic_logs")

WAIT = 20.0  # seconds: the longest any single step may take

pytestmark = pytest.mark.broker


# --- broker-side helpers --------------------------------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    assert RABBITMQCTL is not None
    result = subprocess.run(
        [RABBITMQCTL, "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"rabbitmqctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def broker_call(vhost: str, *methods: base.Frame) -> base.Frame:
    """Sends AMQP methods on a fresh connection and channel to ``vhost``, one after the other, and returns
    the broker's reply to the last one, or the ``Channel.Close`` of the first one it refused.

    Raw pamqp frames on a socket: the tests look at the broker without the aio_pika under test, and in
    milliseconds where rabbitmqctl takes a second."""
    assert methods
    with socket.create_connection(("127.0.0.1", 5672), timeout=WAIT) as sock:
        buffer = bytearray()

        def send(value: base.Frame | header.ProtocolHeader, channel: int = 0) -> None:
            sock.sendall(frame.marshal(value, channel))

        def receive() -> base.Frame:
            while True:
                if len(buffer) >= 7:
                    size = 7 + struct.unpack_from(">I", buffer, 3)[0] + 1
                    if len(buffer) >= size:
                        _, _, value = frame.unmarshal(bytes(buffer[:size]))
                        del buffer[:size]
                        if isinstance(value, base.Frame):
                            return value
                        continue  # a heartbeat
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the broker closed the connection")
                buffer.extend(data)

        send(header.ProtocolHeader())
        assert isinstance(receive(), commands.Connection.Start)
        send(commands.Connection.StartOk(response="\0guest\0guest"))
        tune = receive()
        assert isinstance(tune, commands.Connection.Tune)
        send(commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
        send(commands.Connection.Open(virtual_host=vhost))
        assert isinstance(receive(), commands.Connection.OpenOk)
        send(commands.Channel.Open(), 1)
        assert isinstance(receive(), commands.Channel.OpenOk)
        for method in methods:
            send(method, 1)
            reply = receive()
            if isinstance(reply, commands.Channel.Close):
                break
        send(commands.Connection.Close(reply_code=200, reply_text="Normal shutdown", class_id=0, method_id=0))
        return reply


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def server_named_consumers(vhost: str, *programs: Program) -> int:
    for program in programs:
        program.check_running()
    return rabbitmqctl("list_consumers", "-p", vhost, "--no-table-headers", "queue_name").count("amq.gen-")


def queue_state(vhost: str, queue: str) -> tuple[int, int] | None:
    """(ready messages, consumers) of ``queue``, or None when it does not exist."""
    reply = broker_call(vhost, commands.Queue.Declare(queue=queue, passive=True))
    if isinstance(reply, commands.Queue.DeclareOk):
        return reply.message_count, reply.consumer_count
    assert isinstance(reply, commands.Channel.Close) and reply.reply_code == 404, reply
    return None


def consumers(vhost: str, queue: str) -> int | None:
    state = queue_state(vhost, queue)
    return None if state is None else state[1]


def exchange_exists(vhost: str, exchange: str) -> bool:
    reply = broker_call(vhost, commands.Exchange.Declare(exchange=exchange, passive=True))
    assert isinstance(reply, commands.Exchange.DeclareOk | commands.Channel.Close), reply
    return isinstance(reply, commands.Exchange.DeclareOk)


@pytest.fixture(scope="module")
def private_vhost() -> Iterator[str]:
    if RABBITMQCTL is None:
        pytest.skip("rabbitmqctl is needed to create the private vhost the examples run in")
    name = f"aio-pika-examples-{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def vhost(private_vhost: str) -> str:
    """The private vhost, rid of what earlier tests' programs left there under the seed's fixed names."""
    reply = broker_call(
        private_vhost,
        *(commands.Queue.Delete(queue=queue) for queue in SEED_QUEUES),
        *(commands.Exchange.Delete(exchange=exchange) for exchange in SEED_EXCHANGES),
    )
    assert isinstance(reply, commands.Exchange.DeleteOk), reply  # deleting what is not there is no error
    return private_vhost


def wait_consumers(vhost: str, *programs: Program, queue: str, count: int = 1) -> None:
    """Waits, while the ``programs`` run, until ``queue`` in ``vhost`` has ``count`` consumers."""
    deadline = time.monotonic() + WAIT
    while (consumers(vhost, queue) or 0) < count:
        for program in programs:
            program.check_running()
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {program.name}:\n{program.output}" for program in programs)
            raise AssertionError(f"{count} consumer(s) on {queue} did not appear\n{details}")
        time.sleep(0.05)


# --- running the programs -------------------------------------------------------------------------


def example_env(vhost: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AMQP_URL", None)
    if vhost is not None:
        env["AMQP_URL"] = BROKER + vhost
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run(
    script: Path, *args: str, env: dict[str, str], timeout: float = WAIT, peers: Sequence[Program] = ()
) -> str:
    """Runs a program to completion and returns what it printed; it must exit 0 within ``timeout``.

    A failure message shows the program's output and that of ``peers`` (the programs it talks to).
    """
    name = " ".join([script.name, *args])
    try:
        result = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as timeout_expired:
        printed = "".join(_text(part) for part in (timeout_expired.stdout, timeout_expired.stderr))
        problem = f"{name} did not finish within {timeout} s:\n{printed}"
    else:
        if result.returncode == 0:
            return result.stdout
        problem = f"{name} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    raise AssertionError(problem + "".join(f"\n--- {peer.name}:\n{peer.output}" for peer in peers))


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


class Program:
    """A program running in the background; its output (stdout and stderr) is collected as it comes."""

    def __init__(self, script: Path, *args: str, env: dict[str, str]) -> None:
        self.name = " ".join([script.name, *args])
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        self._finished = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            self._reader.join(timeout=5)
            raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{self.output}")

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        """Waits until the program has printed ``text``; returns its whole output so far."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in (output := "".join(self._lines)):
                remaining = deadline - time.monotonic()
                if self._finished or remaining <= 0:
                    why = "exited" if self._finished else f"did not print it within {timeout} s"
                    raise AssertionError(f"{self.name} {why}; waiting for {text!r}, it printed:\n{output}")
                self._changed.wait(remaining)
        return output

    def wait_exit(self, timeout: float = WAIT) -> int:
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout} s:\n{self.output}") from None
        self._reader.join(timeout=5)
        return returncode

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)


@contextmanager
def background(script: Path, *args: str, env: dict[str, str]) -> Iterator[Program]:
    program = Program(script, *args, env=env)
    try:
        yield program
    finally:
        program.stop()


# --- section 3: usage examples --------------------------------------------------------------------


def test_simple_consumer_receives_what_simple_publisher_sends(vhost: str) -> None:
    env = example_env(vhost)
    with background(EXAMPLES / "simple_consumer.py", env=env) as consumer:
        wait_consumers(vhost, consumer, queue="test_queue")
        run(EXAMPLES / "simple_publisher.py", env=env, peers=[consumer])
        # The message names the queue, so the consumer leaves its `async for` loop and closes the connection.
        assert consumer.wait_exit() == 0, consumer.output
    assert "b'Hello test_queue'" in consumer.output
    assert "Traceback" not in consumer.output
    wait_until(lambda: queue_state(vhost, "test_queue") is None, "the auto-delete queue to go")


def test_get_single_message(vhost: str) -> None:
    # queue.get(timeout=5) raises QueueEmpty (exit 1) unless the published message came back.
    run(EXAMPLES / "get_single_message.py", env=example_env(vhost))
    # The program acked the message, unbound and deleted its queue; the auto-delete exchange went with
    # its last binding.
    assert queue_state(vhost, "test_queue") is None
    wait_until(lambda: not exchange_exists(vhost, "direct"), "the auto-delete exchange to go")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_tornado_example_publishes_and_subscribes_over_http(vhost: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with background(EXAMPLES / "tornado_pubsub.py", env=example_env(vhost, PORT=str(port))) as server:
        wait_consumers(vhost, server, queue="test")
        for body in (b"first over AMQP", b"second over AMQP"):
            request = urllib.request.Request(f"{base}/publish", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=WAIT) as response:
                assert response.read() == b"OK"
        for body in (b"first over AMQP", b"second over AMQP"):
            with urllib.request.urlopen(f"{base}/subscribe", timeout=WAIT) as response:
                assert response.read() == body
        server.check_running()


# --- section 5: the RabbitMQ tutorials ------------------------------------------------------------


def test_tutorial_1_hello_world(vhost: str) -> None:
    env = example_env(vhost)
    with background(TUTORIAL / "receive.py", env=env) as receiver:
        wait_consumers(vhost, receiver, queue="hello")
        assert " [x] Sent 'Hello World!'" in run(TUTORIAL / "send.py", env=env, peers=[receiver])
        output = receiver.wait_for("After sleep!", timeout=WAIT)  # the async callback sleeps 5 s
    assert "Message body is: b'Hello World!'" in output
    assert output.index("Before sleep!") < output.index("After sleep!")


def test_tutorial_2_work_queues_share_tasks_between_workers(vhost: str) -> None:
    env = example_env(vhost)
    tasks = ["First message.", "Second message..", "Third message...", "Fourth message...."]
    with (
        background(TUTORIAL / "worker.py", env=env) as worker1,
        background(TUTORIAL / "worker.py", env=env) as worker2,
    ):
        wait_consumers(vhost, worker1, worker2, queue="task_queue", count=2)
        for task in tasks:
            assert " [x] Sent " in run(TUTORIAL / "new_task.py", task, env=env, peers=[worker1, worker2])

        deadline = time.monotonic() + WAIT
        lines = [f" Message body is: {task.encode()!r}" for task in tasks]
        while not all(line in worker1.output + worker2.output for line in lines):
            worker1.check_running()
            worker2.check_running()
            assert time.monotonic() < deadline, f"tasks not processed:\n{worker1.output}{worker2.output}"
            time.sleep(0.1)

        # Every task went to exactly one worker, and with prefetch_count=1 both got some.
        for line in lines:
            assert (worker1.output + worker2.output).count(line) == 1
        assert any(line in worker1.output for line in lines)
        assert any(line in worker2.output for line in lines)

    # `with message.process()` acked every task. The broker drops a stopped worker's consumer and requeues
    # what it left unacknowledged in one step, so once the consumers are gone nothing may be ready again.
    wait_until(lambda: consumers(vhost, "task_queue") == 0, "the workers' consumers to go")
    assert queue_state(vhost, "task_queue") == (0, 0), "the workers left tasks unacknowledged"


def test_tutorial_3_publish_subscribe_reaches_every_receiver(vhost: str) -> None:
    env = example_env(vhost)
    with (
        background(TUTORIAL / "receive_logs.py", env=env) as receiver1,
        background(TUTORIAL / "receive_logs.py", env=env) as receiver2,
    ):
        # Each receiver consumes from its own exclusive, server-named queue: only rabbitmqctl can count them.
        wait_until(lambda: server_named_consumers(vhost, receiver1, receiver2) == 2, "two receivers")
        run(TUTORIAL / "emit_log.py", "info:", "hello", "subscribers", env=env)
        for receiver in (receiver1, receiver2):
            receiver.wait_for(" [x] b'info: hello subscribers'")


def test_tutorial_4_routing_delivers_only_the_bound_severities(vhost: str) -> None:
    env = example_env(vhost)

    usage = subprocess.run(
        [sys.executable, str(TUTORIAL / "receive_logs_direct.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert usage.returncode == 1
    assert "Usage:" in usage.stderr

    with background(TUTORIAL / "receive_logs_direct.py", "warning", "error", env=env) as receiver:
        wait_consumers(vhost, receiver, queue="task_queue")
        run(TUTORIAL / "emit_log_direct.py", "info", "an info message", env=env)
        run(TUTORIAL / "emit_log_direct.py", "warning", "a warning", env=env)
        assert "b'Run. Run. Or it will explode.'" in run(
            TUTORIAL / "emit_log_direct.py", "error", "Run. Run. Or it will explode.", env=env
        )
        # Messages reach the queue in order, so once the error is printed the info would have been too.
        output = receiver.wait_for(" [x] 'error':b'Run. Run. Or it will explode.'")
    assert " [x] 'warning':b'a warning'" in output
    assert "an info message" not in output


def test_tutorial_5_topics_route_by_pattern(vhost: str) -> None:
    env = example_env(vhost)
    with background(TUTORIAL / "receive_logs_topic.py", "kern.*", "*.critical", env=env) as receiver:
        wait_consumers(vhost, receiver, queue="task_queue")
        for routing_key, text in [
            ("user.info", "nobody listens to this"),
            ("kern.info", "kernel info"),
            ("user.critical", "a critical user error"),
            ("kern.critical", "A critical kernel error"),
        ]:
            run(TUTORIAL / "emit_log_topic.py", routing_key, text, env=env)
        output = receiver.wait_for(" [x] 'kern.critical':b'A critical kernel error'")
    assert " [x] 'kern.info':b'kernel info'" in output
    assert " [x] 'user.critical':b'a critical user error'" in output
    assert "nobody listens to this" not in output
    # Matching both bindings still delivers one copy to the queue.
    assert output.count("A critical kernel error") == 1


def test_tutorial_6_rpc_computes_fib_30(vhost: str) -> None:
    env = example_env(vhost)
    with background(TUTORIAL / "rpc_server.py", env=env) as server:
        wait_consumers(vhost, server, queue="rpc_queue")
        output = run(TUTORIAL / "rpc_client.py", env=env, peers=[server])
        assert " [x] Requesting fib(30)" in output
        assert " [.] Got 832040" in output
        server_output = server.wait_for("Request complete")
    assert " [.] fib(30)" in server_output


# --- the modern-style demos -----------------------------------------------------------------------


def check_demo_output(output: str) -> None:
    assert "published 5 messages, the broker confirmed 5" in output
    for number in range(1, 6):
        assert f"received 'message {number}' (message_id={number})" in output
    assert "done: 5 messages published, confirmed and consumed" in output
    assert "guest:guest" not in output  # the connection's str hides the password


def test_demo() -> None:
    check_demo_output(run(EXAMPLES / "demo.py", env=example_env()))


def test_trio_demo() -> None:
    check_demo_output(run(EXAMPLES / "trio_demo.py", env=example_env()))
