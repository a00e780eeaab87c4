"""The metadata database: one SQLite file under the data root.

Why SQLite from the event loop thread: each use-case runs one small local transaction (a handful of
indexed row reads/writes, sub-millisecond in WAL mode with ``synchronous=NORMAL``), cheaper than a
thread hop. Slow work (tar extraction, hashing) runs in threads *before* the transaction that records
its result. A re-entrant lock still guards the connection so a stray call from a worker thread is
serialized rather than corrupting state.

Modules own their tables: each calls ``register_schema(name, migrations)`` with an append-only list
of DDL steps; applied versions are kept per module in ``schema_versions``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dockyard.errors import SystemFailure

__all__ = ["Database", "Row"]

Row = sqlite3.Row
_META_VERSION = 1


class Database:
    """A SQLite connection with per-module migrations and one-transaction-per-use-case helpers."""

    def __init__(self, path: Path | str) -> None:
        """Open (creating if needed) the database file.

        Args:
            path: the file, e.g. ``<data-root>/dockyard.db``; ``":memory:"`` for tests.
        """
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._init_meta()

    def _init_meta(self) -> None:
        with self.transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version < _META_VERSION:
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_versions "
                    "(name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                self._conn.execute(f"PRAGMA user_version={_META_VERSION}")

    def register_schema(self, name: str, migrations: Sequence[str]) -> None:
        """Apply the not-yet-applied steps of module ``name``'s schema, in order.

        Args:
            name: the owning module, e.g. ``"images"``.
            migrations: DDL statements; step ``i`` brings the schema to version ``i + 1``. Append only:
                never edit a released step.
        """
        with self.transaction():
            row = self._conn.execute("SELECT version FROM schema_versions WHERE name = ?", (name,)).fetchone()
            current = row[0] if row else 0
            for step in migrations[current:]:
                self._conn.execute(step)
            self._conn.execute(
                "INSERT INTO schema_versions(name, version) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET version = excluded.version",
                (name, max(current, len(migrations))),
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one ``BEGIN IMMEDIATE`` transaction; nested blocks join the outer one.

        Yields:
            The connection, for ``execute``.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _begin(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise SystemFailure(f"metadata database unavailable: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run a read query outside any explicit transaction (a consistent WAL snapshot)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        """Run a read query and return its first row, if any."""
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    def close(self) -> None:
        """Close the connection (the daemon's shutdown)."""
        with self._lock:
            self._conn.close()
