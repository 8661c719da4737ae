"""The one log format of every i24net process, and the two ways a process sets it up.

Each process writes plain text lines (``logs/<process>.log`` under ``i24net up``)::

    2026-12-07 16:23:32,123 i24net.router-1 INFO ...

time, logger name (the daemons' own loggers are ``i24net.<process>``), level, message.
``configure_logging`` sets it on the root logger of a process (the daemons, the embedded
broker's process, the benchmark's workers); ``file_logger`` gives one logger writing to a
file of its own in the same format (the benchmark's in-process nodes and broker).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"

#: Third-party loggers that log every connection and packet at INFO.
CHATTY = ("amqtt", "transitions", "paho")


def configure_logging(level: str | int = logging.WARNING, *, stream: TextIO | None = None,
                      quiet: Iterable[str] = ()) -> None:
    """Log ``LOG_FORMAT`` lines at ``level`` (a name such as ``"info"``, or a number) to
    ``stream`` (default stderr), unless the process has configured logging already; the
    loggers named in ``quiet`` (e.g. ``CHATTY``) only from WARNING on."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level,
                        format=LOG_FORMAT, stream=stream)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def file_logger(path: Path, name: str, level: int = logging.INFO) -> logging.Logger:
    """The logger ``name``, writing ``LOG_FORMAT`` lines to ``path`` only (not propagated
    to the root logger); a second call replaces its handler."""
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(level)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    return log
