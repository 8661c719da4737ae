"""SQLite stores: the node's (``node``), the router's (``router``) and the notice authority's
(``notices``), all on one footing (``sqlite``: one connection, WAL, every write committed
before it returns, SQLite errors in words)."""

from .node import OUTBOX_STATES, Handover, SqliteNodeStore
from .router import SqliteRouterStore
from .sqlite import SCHEMA_VERSION, StoreError

__all__ = ["OUTBOX_STATES", "SCHEMA_VERSION", "Handover", "SqliteNodeStore", "SqliteRouterStore",
           "StoreError"]
