"""Test support code: private RabbitMQ nodes and a tiny blocking AMQP driver.

- :mod:`tests.support.private_node` — :class:`PrivateNode`, a RabbitMQ node of the test's own (ports,
  data, TLS certificates, restarts, alarms), never the shared broker on 127.0.0.1:5672.
- :mod:`tests.support.fixtures` — the session-scoped ``private_node`` and ``tls_node`` pytest fixtures; a
  test module loads them with ``pytest_plugins = ["tests.support.fixtures"]``.
- :mod:`tests.support.raw_amqp` — :class:`BlockingAMQP`, ``amqp_core.Connection`` over a blocking socket.

See ``docs/testing.md``, "Private broker nodes".
"""

from .private_node import NodeCommandError, NodeStartError, PrivateNode, PrivateNodeError, rabbitmq_available

__all__ = ["NodeCommandError", "NodeStartError", "PrivateNode", "PrivateNodeError", "rabbitmq_available"]
