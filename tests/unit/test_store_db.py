"""Tests for the metadata database: migrations and transactions."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.store.db import Database


def test_wal_and_foreign_keys(tmp_path: Path) -> None:
    db = Database(tmp_path / "sub" / "d.db")
    assert db.query_one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
    assert db.query_one("PRAGMA foreign_keys")[0] == 1  # type: ignore[index]
    db.close()


def test_migrations_apply_once_and_append(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    db = Database(path)
    db.register_schema("m", ["CREATE TABLE a (x INTEGER)"])
    db.register_schema("m", ["CREATE TABLE a (x INTEGER)"])
    db.close()
    db = Database(path)
    db.register_schema("m", ["CREATE TABLE a (x INTEGER)", "ALTER TABLE a ADD COLUMN y TEXT"])
    with db.transaction() as conn:
        conn.execute("INSERT INTO a(x, y) VALUES (1, 'z')")
    assert [tuple(r) for r in db.query("SELECT x, y FROM a")] == [(1, "z")]
    assert db.query_one("SELECT version FROM schema_versions WHERE name='m'")[0] == 2  # type: ignore[index]
    db.close()


def test_rollback_on_error(tmp_path: Path) -> None:
    db = Database(tmp_path / "d.db")
    db.register_schema("m", ["CREATE TABLE a (x INTEGER)"])
    with pytest.raises(RuntimeError), db.transaction() as conn:
        conn.execute("INSERT INTO a VALUES (1)")
        with db.transaction() as inner:
            inner.execute("INSERT INTO a VALUES (2)")
        raise RuntimeError("boom")
    assert db.query("SELECT * FROM a") == []
    with db.transaction() as conn:
        conn.execute("INSERT INTO a VALUES (3)")
    assert [r[0] for r in db.query("SELECT x FROM a")] == [3]
    db.close()


def test_failed_migration_is_rolled_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "d.db")
    with pytest.raises(Exception, match="syntax"):
        db.register_schema("m", ["CREATE TABLE a (x INTEGER)", "NOT SQL"])
    assert db.query("SELECT name FROM sqlite_master WHERE name='a'") == []
    assert db.query("SELECT * FROM schema_versions WHERE name='m'") == []
    db.close()
