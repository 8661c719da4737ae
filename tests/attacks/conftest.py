"""Attack drills: one module per threat, run against the real machines.

The drills reuse the routing-core fixtures (``tests/core/netfixtures.py``: the demo network
with fixed keys, an in-memory ``Net`` of one router and eight nodes) and, for the broker
drills, ``tests/broker/support.py``. Both folders are put on ``sys.path`` here so this
folder runs on its own too (``pytest tests/attacks``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS / "core", _TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
