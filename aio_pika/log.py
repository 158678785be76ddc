"""The package's loggers: everything logs under ``aio_pika``."""

from __future__ import annotations

import logging

logger = logging.getLogger("aio_pika")


def get_logger(name: str) -> logging.Logger:
    """A child of the ``aio_pika`` logger for a module (``aio_pika.channel`` → ``aio_pika.channel``)."""
    return logging.getLogger(name if name.startswith("aio_pika") else f"aio_pika.{name}")


__all__ = ("get_logger", "logger")
