"""pytest fixtures for private RabbitMQ nodes (see :mod:`tests.support.private_node`).

A test module that needs one loads this plugin, then asks for the fixture::

    pytest_plugins = ["tests.support.fixtures"]

    def test_reconnects(private_node): ...      # plain node: private_node.url, .amqp_port, .ctl(), …
    def test_tls(tls_node): ...                  # plus .tls_port, .ca_cert, .client_cert, .client_key

Both fixtures are session-scoped: every module shares the same two nodes, so a whole run boots at most two
(and only those its selected tests use; the first request launches all of them, so that they boot in
parallel). Tests may stop, restart or block a node: after every test a node left stopped, with its
application stopped, or under an alarm is brought back (see :meth:`PrivateNode.reset_after_test`), so a
test failing half-way does not break the next ones. Data (queues, users) is shared: use unique names.

Tests using the fixtures get the ``private_node`` marker (``pytest -m "not private_node"`` skips them).
When RabbitMQ (or, for ``tls_node``, the openssl CLI) is not installed, they are skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from .private_node import PrivateNode, PrivateNodeError, _pids_with_env, find_rabbitmq_bin_dir

__all__ = ["NODE_FIXTURES", "NodePool", "private_node", "tls_node"]

#: fixture name -> PrivateNode keyword arguments
NODE_FIXTURES: dict[str, dict[str, Any]] = {
    "private_node": {"name": "priv"},
    "tls_node": {"name": "priv-tls", "tls": True},
}


class NodePool:
    """The session's private nodes, created on first use and destroyed at the end of the session."""

    def __init__(self, wanted: set[str]) -> None:
        self.wanted = wanted  # fixtures the selected tests use: launched together
        self.nodes: dict[str, PrivateNode] = {}

    def get(self, fixture: str) -> PrivateNode:
        if find_rabbitmq_bin_dir() is None:
            pytest.skip("RabbitMQ is not installed: private nodes are unavailable")
        if NODE_FIXTURES[fixture].get("tls") and shutil.which("openssl") is None:
            pytest.skip("the openssl command is not installed: no TLS private node")
        if fixture not in self.nodes:
            # Launch every node the session will need now: they boot in parallel.
            for name in [fixture, *sorted(self.wanted - {fixture} - self.nodes.keys())]:
                node = None
                try:
                    node = PrivateNode(**NODE_FIXTURES[name])
                    node.launch()
                except PrivateNodeError:
                    if node is not None:
                        node.destroy()
                    if name != fixture:
                        continue  # its own fixture will report it
                    raise
                self.nodes[name] = node
        node = self.nodes[fixture]
        try:
            node.wait_until_ready()
        except BaseException:
            # pytest caches the error for the session: no test retries this boot after the next test.
            del self.nodes[fixture]
            node.destroy()
            raise
        return node

    def reset(self) -> None:
        for node in self.nodes.values():
            node.reset_after_test()

    def destroy(self) -> None:
        """Destroy every node; complain (teardown error) if any process or file was left behind."""
        leftovers = []
        for node in self.nodes.values():
            node.terminate()  # all shut down in parallel
        for node in self.nodes.values():
            node.destroy()
            pids = _pids_with_env(f"RABBITMQ_NODENAME={node.node}")
            if pids or node.base_dir.exists():
                leftovers.append(
                    f"{node.node}: processes {sorted(pids)}, directory exists {node.base_dir.exists()}"
                )
        self.nodes.clear()
        if leftovers:
            raise PrivateNodeError("private nodes left things behind: " + "; ".join(leftovers))


@pytest.fixture(scope="session")
def private_node_pool(request: pytest.FixtureRequest) -> Iterator[NodePool]:
    """The session's :class:`NodePool` (most tests want ``private_node`` or ``tls_node`` instead)."""
    wanted = {
        name
        for item in request.session.items
        for name in NODE_FIXTURES
        if name in getattr(item, "fixturenames", ())
    }
    pool = NodePool(wanted)
    try:
        yield pool
    finally:
        pool.destroy()


@pytest.fixture(scope="session")
def private_node(private_node_pool: NodePool) -> PrivateNode:
    """A private plain-AMQP RabbitMQ node shared by the session (``.url``, ``.amqp_port``, ``.ctl()``, …)."""
    return private_node_pool.get("private_node")


@pytest.fixture(scope="session")
def tls_node(private_node_pool: NodePool) -> PrivateNode:
    """A private node that also listens for AMQPS on ``.tls_port`` (certificates: ``.ca_cert``,
    ``.client_cert``, ``.client_key``; EXTERNAL logs in as ``.tls_client_user``)."""
    return private_node_pool.get("tls_node")


@pytest.fixture(autouse=True)
def _reset_private_nodes(private_node_pool: NodePool) -> Iterator[None]:
    """After each test, bring a node left stopped or blocked back (a no-op when all is well)."""
    yield
    private_node_pool.reset()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in NODE_FIXTURES):
            item.add_marker(pytest.mark.private_node)
