"""Private RabbitMQ nodes for tests that must not touch the shared broker on 127.0.0.1:5672.

Some tests need a broker they may restart, put under a resource alarm, reconfigure for TLS, or fill with
connections to close; doing that to the shared node ``rabbit@localhost`` would break every other test (and
every other engineer) using it. :class:`PrivateNode` starts a separate RabbitMQ node from the installed
package, on ports picked at run time, with every file it writes (config, cookie, Mnesia, logs, certificates)
in one temporary directory::

    with PrivateNode(tls=True) as node:          # start() on enter, destroy() on exit
        node.url                                 # amqp://guest:guest@127.0.0.1:<amqp_port>/
        node.tls_url                             # amqps://guest:guest@localhost:<tls_port>/
        node.ctl("list_queues", "name")          # rabbitmqctl -n <node> -q list_queues name
        node.restart()                           # same ports, same data: durable queues survive
        with node.publishers_blocked():          # memory alarm on this node only
            ...

The node runs as the current user from the package's own scripts (``/usr/lib/rabbitmq/bin`` on Debian and
Ubuntu; the ``/usr/sbin`` wrappers are not used because, run as root, they ``su`` to the ``rabbitmq`` user
and drop the environment). Nothing of ``/etc/rabbitmq`` is read: the node gets its own config file,
``rabbitmq-env.conf``, ``conf.d`` directory, enabled-plugins file, definitions (users) and ``HOME`` (which
holds its own Erlang cookie), so it neither sees nor changes the shared node's settings. Only epmd, the
Erlang port mapper, is shared, which is what it is for.

Control commands (alarms, closing connections, stopping the application, the start-up check) go through
``erl_call``, which ships with Erlang and answers in milliseconds, and fall back to ``rabbitmqctl`` (one to
several seconds a call: it boots an Erlang VM of its own) if that fails. :meth:`PrivateNode.ctl` runs any
``rabbitmqctl`` command.

:meth:`PrivateNode.destroy` stops the node gracefully (SIGTERM to its launcher: ``rabbitmqctl stop``'s
effect), kills whatever of it is left, and removes the temporary directory. It is idempotent and also
registered with :mod:`atexit`. On Linux the launcher gets a parent-death signal as well, so even a pytest
killed outright takes its nodes down with it; directories such a process leaves are swept by the next run.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NodeCommandError",
    "NodeStartError",
    "PrivateNode",
    "PrivateNodeError",
    "TLSFiles",
    "find_rabbitmq_bin_dir",
    "make_tls_files",
    "rabbitmq_available",
]

#: Where the Debian/Ubuntu package keeps the real scripts (``/usr/sbin`` only has ``su`` wrappers).
DEFAULT_BIN_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin", "/opt/rabbitmq/sbin")

#: Overrides the directory holding ``rabbitmq-server`` and ``rabbitmqctl``.
BIN_DIR_ENV = "PRIVATE_NODE_RABBITMQ_BIN"

#: Ports a private node must never take: the shared node's AMQP, TLS, distribution, management and
#: Prometheus ports, epmd, and the range rabbitmqctl itself listens on (RABBITMQ_CTL_DIST_PORT_MIN..+10).
RESERVED_PORTS = frozenset({4369, 5671, 5672, 15672, 15692, 25672, *range(35672, 35683)})

#: The memory watermark and disk limit the node boots with; unblock_publishers() goes back to them.
DEFAULT_MEMORY_WATERMARK = "0.4"
DEFAULT_DISK_FREE_LIMIT = 1_000_000  # bytes
BLOCKING_DISK_FREE_LIMIT = 10**15  # a petabyte: no test machine has that much free

TLS_CLIENT_USER = "tls-client"

#: Node directories are ``<tempdir>/<DIR_PREFIX><node name>-<random>``.
DIR_PREFIX = "rabbitmq-private-"

_live_nodes: weakref.WeakSet[PrivateNode] = weakref.WeakSet()


class PrivateNodeError(RuntimeError):
    """A private node could not be started, stopped or commanded."""


class NodeStartError(PrivateNodeError):
    """The node did not come up; the message carries the tail of its logs."""


class NodeCommandError(PrivateNodeError):
    """A rabbitmqctl command against the node failed."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"rabbitmqctl {' '.join(args)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
        )


# ---- locating RabbitMQ --------------------------------------------------------------------------------


def find_rabbitmq_bin_dir() -> Path | None:
    """The directory with the real ``rabbitmq-server``/``rabbitmqctl`` scripts, or None if not installed.

    Looks at ``$PRIVATE_NODE_RABBITMQ_BIN``, the usual package locations, then resolves ``rabbitmq-server``
    on ``PATH`` through its symlinks (``/usr/sbin/rabbitmq-server`` -> ``/usr/lib/rabbitmq/bin/...``).
    """
    candidates: list[Path] = []
    if os.environ.get(BIN_DIR_ENV):
        candidates.append(Path(os.environ[BIN_DIR_ENV]))
    candidates += [Path(d) for d in DEFAULT_BIN_DIRS]
    for name in ("rabbitmq-server", "rabbitmqctl"):
        found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin")
        if found:
            candidates.append(Path(found).resolve().parent)
    for directory in candidates:
        if (directory / "rabbitmq-server").is_file() and (directory / "rabbitmqctl").is_file():
            server = (directory / "rabbitmq-server").read_bytes()[:4096]
            if b"rabbitmq-script-wrapper" not in server and b"su rabbitmq" not in server:
                return directory
    return None


def find_erl_call() -> str | None:
    """The ``erl_call`` program (Erlang's base package ships it), or None."""
    found = shutil.which("erl_call")
    if found:
        return found
    for pattern in ("/usr/lib/erlang/bin/erl_call", "/usr/lib/erlang/lib/erl_interface-*/bin/erl_call"):
        for path in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            if os.access(path, os.X_OK):
                return str(path)
    return None


def _erlang_string(text: str) -> str:
    """``text`` as an Erlang string literal."""
    body = "".join(c if " " <= c <= "~" and c not in '"\\' else f"\\x{{{ord(c):x}}}" for c in text)
    return f'"{body}"'


def rabbitmq_available() -> bool:
    """Whether private nodes can be started here (RabbitMQ and the openssl CLI are installed)."""
    return find_rabbitmq_bin_dir() is not None and shutil.which("openssl") is not None


# ---- ports --------------------------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def pick_free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free now.

    They are taken *below* the kernel's ephemeral range, so that no outgoing connection (rabbitmqctl makes
    plenty) grabs one of them as its local port while the node is down between stop() and start().
    """
    low = 20000
    high = min(_ephemeral_range()[0], 65536) - 1
    if high - low < 1000:  # an unusual ephemeral range: fall back to whatever the kernel hands out
        low, high = 1024, 65535
    ports: list[int] = []
    rng = random.Random()
    for _ in range(10000):
        port = rng.randint(low, high)
        if port in RESERVED_PORTS or port in ports or not _port_is_free(port):
            continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise PrivateNodeError("could not find free TCP ports for a private RabbitMQ node")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


# ---- certificates -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """PEM files made by :func:`make_tls_files`: a CA and the server and client certificates it signed."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_cn: str


_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise PrivateNodeError(f"openssl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


def make_tls_files(directory: Path, client_cn: str = TLS_CLIENT_USER, days: int = 7) -> TLSFiles:
    """Generate a throw-away CA plus a server and a client certificate with the ``openssl`` CLI.

    The server certificate is for ``CN=localhost`` with SANs ``DNS:localhost`` and ``IP:127.0.0.1``; the
    client certificate has ``CN=client_cn`` (the user name EXTERNAL authentication logs in as). Keys are
    unencrypted P-256 EC keys (fast to make); extensions are set so that strict verifiers accept them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)
    files = TLSFiles(
        ca_cert=directory / "ca_certificate.pem",
        ca_key=directory / "ca_key.pem",
        server_cert=directory / "server_certificate.pem",
        server_key=directory / "server_key.pem",
        client_cert=directory / "client_certificate.pem",
        client_key=directory / "client_key.pem",
        client_cn=client_cn,
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    # The CA: self-signed.
    _openssl(
        directory, "req", "-x509", "-config", config.name, "-extensions", "ca", *new_key,
        "-keyout", files.ca_key.name, "-out", files.ca_cert.name, "-days", str(days),
        "-subj", f"/O=aio-pika-sansio tests/CN=private node test CA {uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    for name, cert, key, subject in (
        ("server", files.server_cert, files.server_key, "/O=aio-pika-sansio tests/CN=localhost"),
        ("client", files.client_cert, files.client_key, f"/O=aio-pika-sansio tests/CN={client_cn}"),
    ):
        request = directory / f"{name}.csr"
        _openssl(
            directory, "req", "-new", "-config", config.name, *new_key,
            "-keyout", key.name, "-out", request.name, "-subj", subject,
        )  # fmt: skip
        _openssl(
            directory, "x509", "-req", "-in", request.name, "-CA", files.ca_cert.name,
            "-CAkey", files.ca_key.name, "-set_serial", str(random.getrandbits(63)), "-days", str(days),
            "-extfile", config.name, "-extensions", name, "-out", cert.name,
        )  # fmt: skip
        request.unlink()
    for path in (files.ca_key, files.server_key, files.client_key):
        path.chmod(0o600)
    return files


def _password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


# ---- the node -----------------------------------------------------------------------------------------


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the launcher gets SIGTERM when the thread that started it dies (its trap stops the VM)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class PrivateNode:
    """One private RabbitMQ node: its own name, ports, data directory, config, cookie and logs.

    Creating the object only picks the name and the ports and writes the files; :meth:`start` boots the
    node, :meth:`destroy` (or leaving the ``with`` block) kills it and removes everything.

    :param tls: also listen for AMQPS on :attr:`tls_port`, with certificates generated into the node's
        directory (:attr:`ca_cert`, :attr:`client_cert`, :attr:`client_key`, …). The server verifies client
        certificates when one is presented but does not require one, so both EXTERNAL (certificate, user
        :attr:`tls_client_user`) and PLAIN (guest/guest) logins work over TLS.
    :param name: node name prefix; the node is ``<name>-<8 hex>@localhost``.
    :param plugins: extra plugins to enable (``rabbitmq_auth_mechanism_ssl`` is added for TLS). Plugins that
        open ports of their own (management, prometheus) need ``extra_config`` giving them free ports.
    :param extra_config: lines appended to the node's ``rabbitmq.conf`` (new-style sysctl format).
    :param startup_timeout: seconds :meth:`start` waits for the node to boot.
    :param keep_dir: do not remove the node's directory on destroy (to read its logs after a failure).
    """

    host = "127.0.0.1"
    username = "guest"
    password = "guest"

    def __init__(
        self,
        *,
        tls: bool = False,
        name: str = "priv",
        plugins: Sequence[str] = (),
        extra_config: str | Sequence[str] = (),
        startup_timeout: float = 90.0,
        keep_dir: bool = False,
    ) -> None:
        bin_dir = find_rabbitmq_bin_dir()
        if bin_dir is None:
            raise PrivateNodeError(
                f"RabbitMQ is not installed (no rabbitmq-server in {', '.join(DEFAULT_BIN_DIRS)} or on PATH;"
                f" set ${BIN_DIR_ENV} to its scripts directory)"
            )
        if tls and shutil.which("openssl") is None:
            raise PrivateNodeError("the openssl command is needed to generate TLS certificates")
        self.bin_dir = bin_dir
        self._erl_call_path = find_erl_call()
        self.tls = tls
        self.startup_timeout = startup_timeout
        self.keep_dir = keep_dir
        self.node = f"{name}-{uuid.uuid4().hex[:8]}@localhost"
        ports = pick_free_ports(3 if tls else 2)
        self.amqp_port = ports[0]
        self.dist_port = ports[1]
        self.tls_port: int | None = ports[2] if tls else None
        _sweep_stale_dirs()
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{self.node.split('@')[0]}-"))
        (self.base_dir / "owner.pid").write_text(str(os.getpid()))
        self.home = self.base_dir / "home"
        self.log_dir = self.base_dir / "log"
        self.log_file = self.log_dir / "node.log"
        self.server_output = self.base_dir / "server.out"
        self.config_file = self.base_dir / "rabbitmq.conf"
        self.cookie = uuid.uuid4().hex.upper()
        self.tls_files: TLSFiles | None = None
        self.tls_client_user = TLS_CLIENT_USER
        self._process: subprocess.Popen[bytes] | None = None
        self._blocked: str | None = None
        self._ready = False
        self._app_stopped = False
        self._launched_at = 0.0
        self._lock = threading.RLock()
        self._destroyed = False
        try:
            self._write_files(plugins, extra_config)
        except BaseException:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            raise
        _live_nodes.add(self)

    # ---- addresses and files ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<amqp_port>/``"""
        return f"amqp://{self.username}:{self.password}@{self.host}:{self.amqp_port}/"

    @property
    def tls_url(self) -> str:
        """``amqps://guest:guest@localhost:<tls_port>/`` (``localhost`` is the name in the certificate)."""
        return f"amqps://{self.username}:{self.password}@localhost:{self._require_tls_port()}/"

    @property
    def ca_cert(self) -> Path:
        """The CA certificate that signed the server and client certificates (PEM)."""
        return self._require_tls().ca_cert

    @property
    def server_cert(self) -> Path:
        return self._require_tls().server_cert

    @property
    def server_key(self) -> Path:
        return self._require_tls().server_key

    @property
    def client_cert(self) -> Path:
        """The client certificate (CN ``tls-client``) for EXTERNAL authentication (PEM)."""
        return self._require_tls().client_cert

    @property
    def client_key(self) -> Path:
        """The client certificate's unencrypted private key (PEM)."""
        return self._require_tls().client_key

    @property
    def env(self) -> dict[str, str]:
        """The environment the node and ``rabbitmqctl`` run with (``HOME`` holds the node's cookie).

        From a shell: ``env HOME=<node.home> <bin_dir>/rabbitmqctl -n <node.node> status``.
        """
        return dict(self._env)

    def ssl_context(self, *, client_cert: bool = True, verify: bool = True) -> ssl.SSLContext:
        """A client context trusting :attr:`ca_cert`, presenting :attr:`client_cert` unless told not to."""
        files = self._require_tls()
        context = ssl.create_default_context(cafile=str(files.ca_cert))
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_cert:
            context.load_cert_chain(str(files.client_cert), str(files.client_key))
        return context

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's log and of the launcher's output, for error messages."""
        parts = []
        for path in (self.server_output, self.log_file):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def __repr__(self) -> str:
        tls = f" tls={self.tls_port}" if self.tls_port else ""
        return f"<PrivateNode {self.node} amqp={self.amqp_port}{tls} {'running' if self.running else 'down'}>"

    # ---- lifecycle --------------------------------------------------------------------------------

    @property
    def vm_running(self) -> bool:
        """Whether the node's Erlang VM is alive (the broker application may be stopped or booting)."""
        return self._process is not None and self._process.poll() is None

    @property
    def running(self) -> bool:
        """Whether the broker is up: VM alive and the application not stopped by :meth:`stop`."""
        return self.vm_running and not self._app_stopped

    @property
    def blocked(self) -> str | None:
        """The alarm :meth:`block_publishers` raised (``"memory"`` or ``"disk"``), or None."""
        return self._blocked

    def start(self, timeout: float | None = None) -> None:
        """Bring the broker up (boot the VM, or start the application after ``stop()``) and wait until it
        serves AMQP. Same ports, same data. A no-op when it is running."""
        if self.vm_running and self._app_stopped:
            self._command(("rabbit", "start", "[]"), ("start_app",), timeout=timeout or self.startup_timeout)
            self._app_stopped = False
            deadline = time.monotonic() + (timeout or self.startup_timeout)
            self._wait_for_listeners(deadline)
            self._wait_for_boot_marker(deadline)
            return
        self.launch()
        self.wait_until_ready(timeout)

    def launch(self) -> None:
        """Start the node's VM in the background without waiting (see :meth:`wait_until_ready`).

        Lets a caller boot several nodes in parallel: ``a.launch(); b.launch(); a.wait_until_ready(); …``
        Launched from the main thread, the launcher gets the parent-death signal (Linux delivers it when the
        launching *thread* ends, so a node launched from a worker thread goes without it).
        """
        with self._lock:
            if self._destroyed:
                raise PrivateNodeError(f"{self.node} was destroyed")
            if self.vm_running:
                return
            self._kill()  # leftovers of a VM that died on its own
            busy = [p for p in self._ports() if not _port_is_free(p)]
            if busy:
                raise NodeStartError(f"cannot start {self.node}: ports {busy} are taken by someone else")
            main_thread = threading.current_thread() is threading.main_thread()
            with self.server_output.open("ab") as output:
                self._process = subprocess.Popen(
                    [str(self.bin_dir / "rabbitmq-server")],
                    env=self._env,
                    cwd=self.base_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # not in pytest's process group: a Ctrl-C is handled by us
                    preexec_fn=_set_parent_death_signal if main_thread and sys.platform == "linux" else None,
                )
            self._launched_at = time.monotonic()

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait until the launched node listens and ``rabbitmqctl await_startup`` succeeds.

        :raises NodeStartError: the node died or did not boot within ``timeout`` seconds (default:
            ``startup_timeout``, counted from :meth:`launch`); it is killed and the log tail is reported.
        """
        with self._lock:
            if not self.vm_running:
                raise NodeStartError(
                    f"{self.node} is not running (call start() or launch())\n{self.log_tail()}"
                )
            if self._ready:
                return
            deadline = self._launched_at + (timeout or self.startup_timeout)
            try:
                self._await_startup(deadline)
            except BaseException:
                self._kill(grace=2.0)
                raise
            self._ready = True

    def stop(self, *, full: bool = False, timeout: float = 30.0) -> None:
        """Take the broker down: its connections are closed and its AMQP ports refuse connections.

        By default only the RabbitMQ application stops (``rabbitmqctl stop_app``, a couple of seconds; the
        Erlang VM stays up, so :meth:`start` is quick too). ``full=True`` stops the whole node: its launcher
        gets SIGTERM, which it passes on to the VM, whose handler stops RabbitMQ and halts — what
        ``rabbitmqctl stop`` does, without the CLI's start-up cost; what is left after ``timeout`` seconds
        is killed. Either way the data stays: :meth:`start` brings the broker back on the same ports with
        its durable queues, exchanges, bindings, persistent messages and users. Alarms set by
        :meth:`block_publishers` do not survive.
        """
        with self._lock:
            if not full and self.vm_running:
                if not self._app_stopped:
                    self._command(("rabbit", "stop", "[]"), ("stop_app",), timeout=timeout)
                    self._app_stopped = True
                    self._blocked = None
                self._wait_for_ports_closed(self._amqp_ports(), timeout)
                return
            self.terminate()
            process = self._process
            if process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=timeout)
            self._kill()
            self._wait_for_ports_closed(self._ports(), timeout)

    def terminate(self) -> None:
        """Ask the VM to stop (SIGTERM to its launcher) without waiting; :meth:`stop` waits."""
        if self.vm_running:
            assert self._process is not None
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)

    def restart(self, *, full: bool = False, timeout: float | None = None) -> None:
        """:meth:`stop` then :meth:`start`: a broker restart on the same ports with the same data."""
        self.stop(full=full)
        self.start(timeout)

    @contextlib.contextmanager
    def stopped(self, *, full: bool = False) -> Iterator[PrivateNode]:
        """``with node.stopped():`` the broker is down inside the block and running again after it."""
        self.stop(full=full)
        try:
            yield self
        finally:
            self.start()

    def destroy(self) -> None:
        """Stop the node, kill anything left of it, remove its directory. Safe to call more than once.

        The node gets SIGTERM (a graceful stop, like ``rabbitmqctl stop``) and five seconds; a node still
        booting may not react to it, so then everything left of it is killed: its data is deleted anyway.
        """
        with self._lock:
            if self._destroyed:
                return
            self._destroyed = True
            try:
                self.terminate()
                if self._process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._process.wait(timeout=5)
            finally:
                self._kill(grace=1.0)
                _live_nodes.discard(self)
                if not self.keep_dir:
                    shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PrivateNode:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # ---- commands ---------------------------------------------------------------------------------

    def ctl(
        self, *args: str, check: bool = True, quiet: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``rabbitmqctl -n <node> [-q] <args>`` against this node; raises NodeCommandError on failure.

        ``node.ctl("list_queues", "name", "durable").stdout`` — ``-q`` (no banners) unless ``quiet=False``.
        Each call starts the CLI's own Erlang VM: one to a few seconds. :meth:`rpc` takes milliseconds.
        """
        command = [str(self.bin_dir / "rabbitmqctl"), "-n", self.node, *(["-q"] if quiet else []), *args]
        try:
            result = subprocess.run(
                command, env=self._env, cwd=self.base_dir, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise PrivateNodeError(f"rabbitmqctl {' '.join(args)} did not finish in {timeout} s") from exc
        if check and result.returncode != 0:
            raise NodeCommandError(args, result)
        return result

    def rpc(self, module: str, function: str, args: str = "[]", *, timeout: float = 60.0) -> str:
        """Call ``module:function(args…)`` on the node with ``erl_call`` and return the printed result.

        ``args`` is an Erlang list literal: ``node.rpc("rabbit_alarm", "get_alarms")``,
        ``node.rpc("vm_memory_monitor", "set_vm_memory_high_watermark", "[0.4]")``. ``erl_call`` (part of
        Erlang's base package) talks the distribution protocol directly: milliseconds where rabbitmqctl
        needs seconds. These are the broker's internal functions (the ones rabbitmqctl calls, too).

        :raises PrivateNodeError: erl_call is not installed, the node is unreachable, or the call raised.
        """
        return self._erl_call(["-a", f"{module} {function} {args}"], None, timeout)

    def eval(self, expression: str, *, timeout: float = 60.0) -> str:
        """Evaluate Erlang ``expression`` on the node with ``erl_call``; returns its printed value.

        ``node.eval("length(rabbit_networking:connections_local())")`` (the final ``.`` is optional).
        """
        expression = expression.rstrip()
        out = self._erl_call(["-e"], expression + ("\n" if expression.endswith(".") else ".\n"), timeout)
        return out[len("{ok, ") : -1] if out.startswith("{ok, ") and out.endswith("}") else out

    def block_publishers(self, resource: str = "memory") -> None:
        """Raise a resource alarm on this node only, so that it blocks publishing connections.

        ``"memory"`` sets the memory high watermark to one byte (``set_vm_memory_high_watermark absolute
        1``); ``"disk"`` sets the free disk limit to a petabyte (``set_disk_free_limit``). RabbitMQ blocks
        a connection when it publishes under the alarm: it stops reading from its socket and, when the
        client announced the ``connection.blocked`` capability, sends ``Connection.Blocked``.
        Returns once the node lists the alarm, so that anything published afterwards meets it.
        :meth:`unblock_publishers` clears the alarm (``Connection.Unblocked`` follows); a restart does too.
        """
        if resource == "memory":
            self._command(
                ("vm_memory_monitor", "set_vm_memory_high_watermark", "[{absolute, 1}]"),
                ("set_vm_memory_high_watermark", "absolute", "1"),
            )
        elif resource == "disk":
            self._command(
                ("rabbit_disk_monitor", "set_disk_free_limit", f"[{BLOCKING_DISK_FREE_LIMIT}]"),
                ("set_disk_free_limit", str(BLOCKING_DISK_FREE_LIMIT)),
            )
        else:
            raise ValueError(f"resource must be 'memory' or 'disk', not {resource!r}")
        self._blocked = resource
        # The monitor hands the alarm to rabbit_alarm asynchronously, and rabbit_alarm tells the connection
        # processes: until it lists the alarm, a publish sent now may still be read as if there were none.
        # Once it does, every connection process has the alarm queued ahead of anything sent after.
        deadline = time.monotonic() + 30
        while resource not in self.alarms():
            if time.monotonic() > deadline:
                raise PrivateNodeError(f"the {resource} alarm did not go on within 30 s")
            time.sleep(0.02)

    def unblock_publishers(self) -> None:
        """Clear the alarm :meth:`block_publishers` raised (the node's boot-time limit comes back)."""
        if self._blocked != "disk":
            self._command(
                ("vm_memory_monitor", "set_vm_memory_high_watermark", f"[{DEFAULT_MEMORY_WATERMARK}]"),
                ("set_vm_memory_high_watermark", DEFAULT_MEMORY_WATERMARK),
            )
        if self._blocked != "memory":
            self._command(
                ("rabbit_disk_monitor", "set_disk_free_limit", f"[{DEFAULT_DISK_FREE_LIMIT}]"),
                ("set_disk_free_limit", str(DEFAULT_DISK_FREE_LIMIT)),
            )
        self._blocked = None

    @contextlib.contextmanager
    def publishers_blocked(self, resource: str = "memory") -> Iterator[PrivateNode]:
        """``with node.publishers_blocked():`` an alarm is on inside the block and cleared after it."""
        self.block_publishers(resource)
        try:
            yield self
        finally:
            self.unblock_publishers()

    def alarms(self) -> list[str]:
        """The resources (``"memory"``, ``"disk"``, …) the node currently has an alarm for."""
        try:
            listing = self.rpc("rabbit_alarm", "get_alarms", timeout=30)
        except PrivateNodeError:
            listing = self.ctl("eval", "rabbit_alarm:get_alarms().").stdout
        return re.findall(r"resource_limit,\s*(\w+)", listing)

    def close_all_connections(self, reason: str = "closed by the test suite") -> None:
        """Have the broker close (320 CONNECTION_FORCED) every client connection on this node.

        Like ``rabbitmqctl close_all_connections --global <reason>``; the reason shows in the reply text.
        """
        self._command(
            f"[rabbit_networking:close_connection(P, {_erlang_string(reason)})"
            " || P <- rabbit_networking:connections_local()].",
            ("close_all_connections", "--global", reason),
        )

    def list_connections(self, *items: str) -> list[list[str]]:
        """``rabbitmqctl list_connections <items>`` as rows of tab-separated columns."""
        out = self.ctl("list_connections", "--no-table-headers", *(items or ("name",))).stdout
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def reset_after_test(self) -> None:
        """Bring the node back to its ready state: running, no alarm.

        Cheap when nothing is to be done (no command runs); fixtures call it after every test so that a
        test failing half-way through a stop or a block does not break the tests after it.
        """
        if self._destroyed:
            return
        if not self.running:
            self.start()
        elif self._blocked is not None:
            self.unblock_publishers()

    # ---- internals --------------------------------------------------------------------------------

    def _command(
        self, fast: tuple[str, str, str] | str, ctl_args: tuple[str, ...], timeout: float = 60.0
    ) -> None:
        """Run a broker command through erl_call (``(module, function, args)`` or an expression) when it is
        installed and works, through rabbitmqctl otherwise."""
        if self._erl_call_path is not None:
            try:
                if isinstance(fast, str):
                    self.eval(fast, timeout=timeout)
                else:
                    self.rpc(*fast, timeout=timeout)
                return
            except PrivateNodeError as error:
                # rabbitmqctl gets the final say (and reports a proper error); make the slow path visible.
                warnings.warn(
                    f"{error}; running rabbitmqctl {' '.join(ctl_args)}", RuntimeWarning, stacklevel=3
                )
        self.ctl(*ctl_args, timeout=timeout)

    def _erl_call(self, args: list[str], stdin: str | None, timeout: float) -> str:
        if self._erl_call_path is None:
            raise PrivateNodeError("erl_call is not installed (it comes with Erlang's base package)")
        seconds = str(max(1, int(timeout)))
        command = [self._erl_call_path, "-sname", self.node, "-c", self.cookie, "-timeout", seconds, *args]
        try:
            result = subprocess.run(
                command, input=stdin, env=self._env, capture_output=True, text=True, timeout=timeout + 5
            )
        except subprocess.TimeoutExpired as exc:
            raise PrivateNodeError(f"erl_call {' '.join(args)} did not finish in {timeout} s") from exc
        out = result.stdout.strip()
        if result.returncode != 0 or out.startswith(("{badrpc", "{error")):
            raise PrivateNodeError(f"erl_call {' '.join(args)} {stdin or ''} failed: {out} {result.stderr}")
        return out

    def _require_tls(self) -> TLSFiles:
        if self.tls_files is None:
            raise PrivateNodeError(f"{self.node} was started without tls=True")
        return self.tls_files

    def _require_tls_port(self) -> int:
        if self.tls_port is None:
            raise PrivateNodeError(f"{self.node} was started without tls=True")
        return self.tls_port

    def _ports(self) -> list[int]:
        return [p for p in (self.amqp_port, self.dist_port, self.tls_port) if p is not None]

    def _amqp_ports(self) -> list[int]:
        return [p for p in (self.amqp_port, self.tls_port) if p is not None]

    def _wait_for_ports_closed(self, ports: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(_port_open(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _write_files(self, plugins: Sequence[str], extra_config: str | Sequence[str]) -> None:
        base = self.base_dir
        for directory in (self.home, self.log_dir, base / "mnesia", base / "conf.d"):
            directory.mkdir(parents=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)
        (base / "rabbitmq-env.conf").write_text("# private node: settings come from the environment\n")

        enabled = list(plugins)
        config = [
            f"listeners.tcp.1 = {self.host}:{self.amqp_port}",
            f"vm_memory_high_watermark.relative = {DEFAULT_MEMORY_WATERMARK}",
            f"disk_free_limit.absolute = {DEFAULT_DISK_FREE_LIMIT}",
            f"load_definitions = {base / 'definitions.json'}",
            "log.console = false",
            "log.file.level = info",
        ]
        if self.tls:
            self.tls_files = make_tls_files(base / "tls")
            if "rabbitmq_auth_mechanism_ssl" not in enabled:
                enabled.append("rabbitmq_auth_mechanism_ssl")
            config += [
                f"listeners.ssl.1 = {self.host}:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls_files.ca_cert}",
                f"ssl_options.certfile = {self.tls_files.server_cert}",
                f"ssl_options.keyfile = {self.tls_files.server_key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
                "auth_mechanisms.1 = EXTERNAL",
                "auth_mechanisms.2 = PLAIN",
                "auth_mechanisms.3 = AMQPLAIN",
                "ssl_cert_login_from = common_name",
            ]
        config += [extra_config] if isinstance(extra_config, str) else list(extra_config)
        self.config_file.write_text("\n".join(config) + "\n")
        (base / "enabled_plugins").write_text(f"[{','.join(enabled)}].\n")
        (base / "definitions.json").write_text(json.dumps(self._definitions(), indent=2))

        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        if "ERL_EPMD_PORT" in os.environ:  # the shared epmd's port, when it is not the default
            env["ERL_EPMD_PORT"] = os.environ["ERL_EPMD_PORT"]
        env.update(
            HOME=str(self.home),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.config_file),
            RABBITMQ_CONFIG_FILES=str(base / "conf.d"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_LOGS=str(self.log_file),
            RABBITMQ_PID_FILE=str(base / "rabbitmq.pid"),
            RABBITMQ_MOTD_FILE=str(base / "motd"),
            # Keep the distribution listener on the loopback interface.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        self._env = env

    def _definitions(self) -> dict[str, object]:
        """Users, vhost and permissions, imported at every boot (no rabbitmqctl round trips needed).

        With definitions to load RabbitMQ does not seed guest itself, so guest is defined here too. The
        EXTERNAL user (the client certificate's CN) has no password at all: PLAIN cannot log in as it.
        """
        users = [(self.username, _password_hash(self.password), ["administrator"])]
        if self.tls:
            users.append((self.tls_client_user, "", []))
        return {
            "users": [
                {"name": name, "password_hash": hashed, "hashing_algorithm": "rabbit_password_hashing_sha256",
                 "tags": tags}
                for name, hashed, tags in users
            ],
            "vhosts": [{"name": "/"}],
            "permissions": [
                {"user": name, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
                for name, _, _ in users
            ],
        }  # fmt: skip

    def _await_startup(self, deadline: float) -> None:
        # The listeners open at the very end of the boot. Wait for them cheaply first: before the VM is
        # registered with epmd, await_startup fails at once, and while the node boots, rabbitmqctl
        # await_startup re-checks only every 10 seconds. Once they are up, await_startup confirms that the
        # boot finished: rabbit:await_startup/3 through erl_call (what rabbitmqctl await_startup calls,
        # without the CLI's seconds of start-up), else rabbitmqctl await_startup itself.
        self._wait_for_listeners(deadline)
        # A node launched long before anyone waits for it (the pool boots nodes in parallel) has its
        # deadline behind it already: it still gets one full await_startup before it is given up on.
        deadline = max(deadline, time.monotonic() + 30)
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NodeStartError(f"{self.node} did not finish booting in time\n{self.log_tail()}")
            wait_ms = max(1000, int(remaining * 1000))
            try:
                self._command(
                    ("rabbit", "await_startup", f"['{self.node}', false, {wait_ms}]"),
                    ("await_startup", "--timeout", str(wait_ms // 1000)),
                    timeout=remaining + 10,
                )
                break
            except PrivateNodeError:
                time.sleep(0.2)
        self._wait_for_boot_marker(deadline)

    def _wait_for_boot_marker(self, deadline: float) -> None:
        """Wait until the boot lets go of its marker, the process registered as ``rabbit_boot``.

        It outlives the listeners and ``await_startup`` by up to a few hundred milliseconds, and until it
        is gone ``rabbit:start()`` takes the node for still booting: a ``stop()`` then ``start()`` in that
        window returns at once and leaves the broker stopped.
        """
        query = "erlang:whereis(rabbit_boot)."
        while True:
            try:
                if self._erl_call_path is not None:
                    marker = self.eval(query, timeout=30)
                else:
                    marker = self.ctl("eval", query, timeout=30).stdout.strip()
            except PrivateNodeError as error:
                # Seen once under load: erl_call "failed to connect to node" just after start_app.
                marker, failure = "", f"\n(last query: {error})"
            else:
                failure = ""  # the timeout's message names only the last query's failure
            if marker == "undefined":
                return
            self._check_alive()
            if time.monotonic() > deadline:
                late = f"{self.node} did not finish booting in time"
                raise NodeStartError(f"{late}{failure}\n{self.log_tail()}")
            time.sleep(0.05)

    def _wait_for_listeners(self, deadline: float) -> None:
        for port in (self.amqp_port, self.tls_port):
            while port is not None and not _port_open(port):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise NodeStartError(f"{self.node} does not listen on {port}\n{self.log_tail()}")
                time.sleep(0.05)

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise NodeStartError(
                f"{self.node} exited with {self._process.returncode} while starting\n{self.log_tail()}"
            )

    def _kill(self, grace: float = 5.0) -> None:
        """SIGTERM, then (after ``grace`` seconds) SIGKILL, every process left of the node: launcher shell,
        VM, port programs.

        On Linux they are found by pid as the processes whose environment holds this node's unique
        ``RABBITMQ_NODENAME``; elsewhere the launcher's process group is signalled while the launcher lives.
        """
        process = self._process
        self._ready = False
        self._blocked = None
        self._app_stopped = False
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not self._signal_node_processes(process, sig):
                break
            deadline = time.monotonic() + wait
            while self._signal_node_processes(process, 0) and time.monotonic() < deadline:
                time.sleep(0.05)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._process = None

    def _signal_node_processes(self, process: subprocess.Popen[bytes] | None, sig: int) -> bool:
        """Send ``sig`` to the node's live processes; False when there are none."""
        launcher_alive = process is not None and process.poll() is None
        if not os.path.isdir("/proc/self"):
            if launcher_alive:
                assert process is not None
                _signal(process.pid, sig, group=True)
            return launcher_alive
        pids = _pids_with_env(f"RABBITMQ_NODENAME={self.node}")
        if launcher_alive:
            assert process is not None
            pids.add(process.pid)
        for pid in pids:
            _signal(pid, sig)
        return bool(pids)


def _pids_with_env(entry: str) -> set[int]:
    """Live processes (not zombies) whose environment contains ``entry`` (``NAME=value``), from /proc."""
    wanted = entry.encode()
    found: set[int] = set()
    if not os.path.isdir("/proc/self"):
        return found
    for proc in os.scandir("/proc"):
        if not proc.name.isdigit():
            continue
        try:
            with open(f"/proc/{proc.name}/environ", "rb") as file:
                environ = file.read()
        except OSError:  # gone, or someone else's
            continue
        if wanted in environ.split(b"\0"):
            found.add(int(proc.name))
    return found


def _signal(pid: int, sig: int, *, group: bool = False) -> bool:
    """Send ``sig`` to a process (group); False when there is no such process (group)."""
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_dirs() -> None:
    """Remove node directories left by a process that was killed outright (SIGKILL skips all cleanup).

    A directory is stale when the process that made it (``owner.pid``) is gone and no process runs its
    node; directories of other live test sessions are left alone.
    """
    for directory in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((directory / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or _signal(owner, 0):
            continue
        node = directory.name[len(DIR_PREFIX) :].rsplit("-", 1)[0] + "@localhost"
        if os.path.isdir("/proc/self") and _pids_with_env(f"RABBITMQ_NODENAME={node}"):
            continue
        shutil.rmtree(directory, ignore_errors=True)


def live_nodes() -> list[PrivateNode]:
    """Private nodes created in this process and not destroyed yet."""
    return list(_live_nodes)


@atexit.register
def _destroy_leftover_nodes() -> None:
    for node in list(_live_nodes):
        with contextlib.suppress(Exception):
            node.destroy()
