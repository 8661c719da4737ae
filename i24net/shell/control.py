"""The control socket of a node process: how commands reach agencies that are running.

Every process that runs node machines (``i24net host``, ``i24net node``) listens on a Unix
socket, ``state/ctl/<process>.sock`` (mode 0600 in a 0700 directory: only the home's owner
may speak to it). Requests and answers are JSON objects, one per line:

- ``{"op": "wake", "agency": A}``: A's outbox was written (``i24net publish``), send now.
- ``{"op": "watch", "agency": A, "id": HEX}``: first the outbox entry as it stands
  (``{"event": "state", "state": ..., "reason": ..., "receipts": {...}}``), then one line
  per event of that message (``accepted``, ``refused``, ``deferred``, ``receipt``,
  ``delivered``, ``expired``) until the caller hangs up.
- ``{"op": "status"}``: every agency of the process with its state (``up``, ``starting``,
  ``stopped``, ``failed``) and, for a failed one, why.
- ``{"op": "stop", "agencies": [...], "kill": bool}`` / ``{"op": "start", "agencies": [...]}``:
  act on agencies inside the process; the answer comes once each is stopped, or up or failed.

Errors come back as ``{"ok": false, "reason": CODE, "error": TEXT}``. This module is the
client side (blocking, for the CLI); ``i24net.shell.host`` serves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from i24net.config.home import Home
from i24net.core.errors import I24Error

MAX_LINE = 1 << 20  # a status answer of a host of thousands of agencies fits
REQUEST_TIMEOUT_S = 10.0


class ControlError(I24Error):
    """The process did not answer (not running, or gone while answering)."""


def ctl_dir(home: Home) -> Path:
    return home.state_dir / "ctl"


def ctl_path(home: Home, process: str) -> Path:
    return ctl_dir(home) / f"{process}.sock"


MAX_SUN_PATH = 100  # a Unix socket address holds about 108 bytes


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for the socket at ``path`` that fits a Unix socket address however deep
    the home is: a long path is reached through an O_PATH descriptor of its folder
    (``/proc/self/fd/N/NAME``), held open while the address is in use."""
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _connect(path: Path, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        with socket_address(path) as address:
            s.connect(address)
    except OSError as exc:
        s.close()
        raise ControlError(f"no process answers on {path} ({exc.strerror or exc})",
                           reason="control.unreachable") from None
    return s


def _lines(s: socket.socket) -> Iterator[dict[str, Any]]:
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ControlError(f"the control link broke ({exc})",
                               reason="control.unreachable") from None
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)
        if len(buf) > MAX_LINE:
            raise ControlError("oversized answer on the control socket",
                               reason="control.protocol")


def request(path: Path, message: dict[str, Any],
            timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
    """Send one request and return its answer; raises ``ControlError`` if nobody answers,
    or the error the process reported."""
    with _connect(path, timeout) as s:
        s.sendall(json.dumps(message).encode() + b"\n")
        try:
            for answer in _lines(s):
                if not answer.get("ok", True):
                    raise I24Error(str(answer.get("error", "refused")),
                                   reason=str(answer.get("reason", "control.refused")))
                return answer
        except TimeoutError:
            raise ControlError(f"no answer on {path} within {timeout:g} s",
                               reason="control.timeout") from None
    raise ControlError(f"the process on {path} hung up without answering",
                       reason="control.unreachable")


def watch(path: Path, agency: str, msg_id: str, deadline: float) -> Iterator[dict[str, Any]]:
    """The events of one outgoing message, as they happen, until ``deadline``
    (``time.monotonic()``); ends early only if the process goes away."""
    with _connect(path, REQUEST_TIMEOUT_S) as s:
        s.sendall(json.dumps({"op": "watch", "agency": agency, "id": msg_id}).encode()
                  + b"\n")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            s.settimeout(left)
            try:
                for event in _lines(s):
                    if not event.get("ok", True):
                        raise I24Error(str(event.get("error")),
                                       reason=str(event.get("reason", "control.refused")))
                    yield event
                    s.settimeout(max(deadline - time.monotonic(), 0.001))
                return  # the process hung up
            except TimeoutError:
                return
