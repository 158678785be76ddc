"""The programs in ``examples/``, each run as a subprocess against the real broker.

The seed's programs hard-code their names ("test_queue", "hello", "task_queue", "logs", "rpc_queue", ...),
and two of them even declare the "logs" exchange with different types. So they run in private vhosts, created
with ``rabbitmqctl`` for this module and deleted afterwards, handed to them as ``AMQP_URL``: one for the
programs whose names don't clash, one each for the direct and topic tutorials (``rabbitmqctl`` starts an
Erlang VM per call, so vhosts are few and made in parallel). Producer/consumer pairs run together: the
consumer is started, the test waits until the broker lists its consumer, runs the producer, asserts on what
the consumer printed and stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TUTORIAL = EXAMPLES / "tutorial"
BROKER = "amqp://guest:guest@127.0.0.1/"
RABBITMQCTL = shutil.which("rabbitmqctl")

# The private vhosts: "logs" is a fanout exchange in "shared" and a direct one in "direct"; "task_queue" is
# a work queue in "shared" and bound to the "logs" / "topic_logs" exchanges in "direct" / "topic".
VHOSTS = ("shared", "direct", "topic")

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


def rabbitmqctl_all(commands: Sequence[Sequence[str]], *, check: bool = True) -> None:
    """Runs several rabbitmqctl commands in parallel (each one starts an Erlang VM, ~1 s)."""
    assert RABBITMQCTL is not None
    processes = [
        subprocess.Popen(
            [RABBITMQCTL, "-q", *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for command in commands
    ]
    failures = []
    for command, process in zip(commands, processes, strict=True):
        output, _ = process.communicate(timeout=60)
        if process.returncode != 0:
            failures.append(f"rabbitmqctl {' '.join(command)}: {output}")
    if check:
        assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def vhosts() -> Iterator[dict[str, str]]:
    if RABBITMQCTL is None:
        pytest.skip("rabbitmqctl is needed to create the private vhosts the examples run in")
    prefix = f"aio-pika-examples-{uuid.uuid4().hex[:8]}"
    names = {key: f"{prefix}-{key}" for key in VHOSTS}
    try:
        rabbitmqctl_all([["add_vhost", name] for name in names.values()])
        rabbitmqctl_all(
            [["set_permissions", "-p", name, "guest", ".*", ".*", ".*"] for name in names.values()]
        )
        yield names
    finally:
        rabbitmqctl_all([["delete_vhost", name] for name in names.values()], check=False)


def table(vhost: str, what: str, *columns: str) -> list[list[str]]:
    output = rabbitmqctl(what, "-p", vhost, "--no-table-headers", *columns)
    return [line.split("\t") for line in output.splitlines() if line.strip()]


def wait_consumers(vhost: str, *programs: Program, queue: str, count: int = 1) -> None:
    """Waits until the broker lists ``count`` consumers in ``vhost`` on ``queue`` (a name, or a prefix
    ending in ``*``) while the ``programs`` run."""
    deadline = time.monotonic() + WAIT
    while True:
        for program in programs:
            program.check_running()
        names = [row[0] for row in table(vhost, "list_consumers", "queue_name")]
        if queue.endswith("*"):
            matching = [name for name in names if name.startswith(queue[:-1])]
        else:
            matching = [name for name in names if name == queue]
        if len(matching) >= count:
            return
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {program.name}:\n{program.output}" for program in programs)
            raise AssertionError(f"{count} consumer(s) on {queue} did not appear\n{details}")
        time.sleep(0.2)


def queue_names(vhost: str) -> list[str]:
    return [row[0] for row in table(vhost, "list_queues", "name")]


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


def test_simple_consumer_receives_what_simple_publisher_sends(vhosts: dict[str, str]) -> None:
    vhost = vhosts["shared"]
    env = example_env(vhost)
    with background(EXAMPLES / "simple_consumer.py", env=env) as consumer:
        wait_consumers(vhost, consumer, queue="test_queue")
        run(EXAMPLES / "simple_publisher.py", env=env, peers=[consumer])
        # The message names the queue, so the consumer leaves its `async for` loop and closes the connection.
        assert consumer.wait_exit() == 0, consumer.output
    assert "b'Hello test_queue'" in consumer.output
    assert "Traceback" not in consumer.output
    assert "test_queue" not in queue_names(vhost)  # auto_delete: gone with its consumer


def test_get_single_message(vhosts: dict[str, str]) -> None:
    vhost = vhosts["shared"]
    # queue.get(timeout=5) raises QueueEmpty (exit 1) unless the published message came back.
    run(EXAMPLES / "get_single_message.py", env=example_env(vhost))
    # The program acked the message, unbound and deleted its queue; the auto-delete exchange went with
    # its last binding.
    assert "test_queue" not in queue_names(vhost)
    assert "direct" not in [row[0] for row in table(vhost, "list_exchanges", "name")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_tornado_example_publishes_and_subscribes_over_http(vhosts: dict[str, str]) -> None:
    pytest.importorskip("tornado")
    vhost = vhosts["shared"]
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


def test_tutorial_1_hello_world(vhosts: dict[str, str]) -> None:
    vhost = vhosts["shared"]
    env = example_env(vhost)
    with background(TUTORIAL / "receive.py", env=env) as receiver:
        wait_consumers(vhost, receiver, queue="hello")
        assert " [x] Sent 'Hello World!'" in run(TUTORIAL / "send.py", env=env, peers=[receiver])
        output = receiver.wait_for("After sleep!", timeout=WAIT)  # the async callback sleeps 5 s
    assert "Message body is: b'Hello World!'" in output
    assert output.index("Before sleep!") < output.index("After sleep!")


def test_tutorial_2_work_queues_share_tasks_between_workers(vhosts: dict[str, str]) -> None:
    vhost = vhosts["shared"]
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

        # `with message.process()` acked every task: nothing is left ready or unacknowledged.
        deadline = time.monotonic() + WAIT
        while ["task_queue", "0", "0"] not in (
            rows := table(vhost, "list_queues", "name", "messages_ready", "messages_unacknowledged")
        ):
            assert time.monotonic() < deadline, f"tasks were not acked: {rows}"
            time.sleep(0.2)


def test_tutorial_3_publish_subscribe_reaches_every_receiver(vhosts: dict[str, str]) -> None:
    vhost = vhosts["shared"]
    env = example_env(vhost)
    with (
        background(TUTORIAL / "receive_logs.py", env=env) as receiver1,
        background(TUTORIAL / "receive_logs.py", env=env) as receiver2,
    ):
        # Each receiver consumes from its own exclusive, server-named queue.
        wait_consumers(vhost, receiver1, receiver2, queue="amq.gen-*", count=2)
        run(TUTORIAL / "emit_log.py", "info:", "hello", "subscribers", env=env)
        for receiver in (receiver1, receiver2):
            receiver.wait_for(" [x] b'info: hello subscribers'")


def test_tutorial_4_routing_delivers_only_the_bound_severities(vhosts: dict[str, str]) -> None:
    vhost = vhosts["direct"]
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


def test_tutorial_5_topics_route_by_pattern(vhosts: dict[str, str]) -> None:
    vhost = vhosts["topic"]
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


def test_tutorial_6_rpc_computes_fib_30(vhosts: dict[str, str]) -> None:
    vhost = vhosts["shared"]
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
    pytest.importorskip("trio")
    check_demo_output(run(EXAMPLES / "trio_demo.py", env=example_env()))
