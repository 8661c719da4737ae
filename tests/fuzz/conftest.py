"""Fuzzers: Hypothesis over structured mutations of valid objects.

The contract under test (docs/protocol.md 1.3): hostile bytes give an ``I24Error`` (a typed reason),
never another exception, and never hang. The routing-core fixtures (``tests/core``) supply
the valid seeds; that folder is put on ``sys.path`` so this one runs on its own too.
``HYPOTHESIS_PROFILE=thorough`` runs ten times the examples (see tests/conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS / "core", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
