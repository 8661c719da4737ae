"""Logging what a broker refuses, with a rate limit, so that a flood cannot fill the disk.

Every refused login, denied publish, subscription or delivery and oversized packet is worth a
line: it is how an operator sees an agency probing topics that are not its own. A hostile
client can cause thousands a second, though, so each ``RefusalLog`` is a token bucket: at most
``burst`` lines at once, then ``per_second``; what it holds back is counted and the count
appears on the next line written ("... (and 12,345 more not logged)"). The Mosquitto plugin
applies the same two numbers in C (``mosquitto_guard``).

Names and topics come from clients: ``shown`` quotes them (control characters escaped) and
cuts them at 200 characters, so a line cannot be forged or made huge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LOG_BURST", "LOG_PER_SECOND", "RefusalLog", "shown"]

LOG_BURST = 20
"""Refusal lines written at once before the rate limit applies (per ``RefusalLog``)."""
LOG_PER_SECOND = 1.0
"""Refusal lines per second once the burst is spent (per ``RefusalLog``)."""
_SHOWN_CHARS = 200


def shown(value: object) -> str:
    """``value`` quoted for a log line: ``repr`` of a string, cut at 200 characters."""
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + "...'"


class RefusalLog:
    """A rate-limited warning log for one kind of refusal (logins, topics, packets)."""

    def __init__(self, logger: logging.Logger, *, burst: float = LOG_BURST,
                 per_second: float = LOG_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._burst = burst
        self._per_second = per_second
        self._clock = clock
        self._tokens = burst
        self._last = clock()
        #: refusals seen, logged or not.
        self.refusals = 0
        #: refusals held back since the last line written.
        self.suppressed = 0

    def refused(self, message: str, *args: object) -> bool:
        """Count one refusal and log it (a warning, ``message % args``) if the bucket allows;
        returns whether a line was written."""
        self.refusals += 1
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        if self.suppressed:
            self._logger.warning(message + " (and %d more not logged)", *args, self.suppressed)
            self.suppressed = 0
        else:
            self._logger.warning(message, *args)
        return True
