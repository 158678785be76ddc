"""Every backend test runs three ways: the asyncio backend on asyncio, and the anyio backend on
asyncio and on trio. trio must be installed: without it those tests error instead of skipping."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backends import Backend, create_backend


@pytest.fixture(
    params=[
        pytest.param(("asyncio", "asyncio"), id="asyncio"),
        pytest.param(("asyncio", "anyio"), id="anyio-on-asyncio"),
        pytest.param(("trio", "anyio"), id="anyio-on-trio"),
    ]
)
def loop_and_backend(request: pytest.FixtureRequest) -> tuple[str, str]:
    param: tuple[str, str] = request.param
    return param


@pytest.fixture
def anyio_backend(loop_and_backend: tuple[str, str]) -> str:
    """The event loop the anyio pytest plugin runs the test on."""
    return loop_and_backend[0]


@pytest.fixture
def backend_name(loop_and_backend: tuple[str, str]) -> str:
    """The backend under test, as create_backend() names it."""
    return loop_and_backend[1]


@pytest.fixture
def make_backend(backend_name: str) -> Callable[[], Backend]:
    """Creates the backend under test; call it inside the test, where the event loop runs."""
    return lambda: create_backend(backend_name)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1: (cert.pem, key.pem)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_ssl_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def client_ssl_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """Verifies the server against the test certificate, hostname included."""
    return ssl.create_default_context(cafile=str(certificate[0]))
