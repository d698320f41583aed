"""Logging set-up of visattn's programs: the ``visattn`` logger prints plain lines to stderr.

The library itself only logs (``logging.getLogger(__name__)``); programs (the CLI, the demo) call
:func:`log_to_stderr` once, and users of the Python API configure logging as they like.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["log_to_stderr"]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (pytest and notebooks replace it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """Progress and log lines go to stderr (results go to stdout); idempotent."""
    logger = logging.getLogger("visattn")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
