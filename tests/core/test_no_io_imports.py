"""The core stays sans-IO: no module of amqp_core imports an event loop, a socket, threads or a clock."""

from __future__ import annotations

import ast
from pathlib import Path

import amqp_core

FORBIDDEN = {"asyncio", "anyio", "trio", "socket", "ssl", "selectors", "threading", "time"}
CORE = Path(amqp_core.__file__).parent


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):  # walks into functions and conditionals too: a lazy import counts
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_the_core_has_modules_to_check() -> None:
    assert {"connection.py", "channel.py", "codec.py", "events.py"} <= {p.name for p in CORE.glob("*.py")}


def test_no_core_module_imports_io() -> None:
    offenders = {}
    for path in sorted(CORE.rglob("*.py")):
        roots = {name.split(".")[0] for name in imported_modules(ast.parse(path.read_text(), str(path)))}
        if bad := roots & FORBIDDEN:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_the_checker_catches_every_form() -> None:
    source = """
import asyncio
import socket as s
from time import monotonic
from anyio.abc import ByteStream
def f():
    import threading
    importlib.import_module("ssl")
    __import__("selectors")
"""
    roots = {name.split(".")[0] for name in imported_modules(ast.parse(source))}
    assert roots >= {"asyncio", "socket", "time", "anyio", "threading", "ssl", "selectors"}
