"""The embedded index backend: one SQLite file (stdlib ``sqlite3``, WAL mode), in the original atdata's layout.

Tables (created when missing, exactly as the original creates them, so either library reads the other's file):
``dataset_entries(cid, name, schema_ref, data_urls msgpack, metadata msgpack, legacy_uuid, created_at)``,
``schemas(name, version, schema_json, created_at)``, ``lenses(name, version, lens_json, created_at)`` and
``labels(name, cid, version, description, created_at)``. This backend writes ``created_at`` with microseconds
(same text format, so it still sorts), which keeps "latest label" exact when labels are written in one second.

Several processes may write at once: every write is one ``BEGIN IMMEDIATE`` transaction, waits on a busy
database (``busy_timeout``) and is retried when SQLite still reports it locked.

Example:
    >>> import os, tempfile
    >>> from atdata_torch.index import SqliteStore, Label
    >>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "index.db"))
    >>> store.put_label(Label("digits", "bafyrei-example", "1.0.0"))
    >>> store.get_label("digits").version
    '1.0.0'
    >>> store.close()
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from ..errors import IndexStoreError
from ._records import IndexEntry, Label, now

__all__ = ["SqliteStore"]

R = TypeVar("R")

_CREATE_TABLES = """\
CREATE TABLE IF NOT EXISTS dataset_entries (
    cid         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    schema_ref  TEXT NOT NULL,
    data_urls   BLOB NOT NULL,
    metadata    BLOB,
    legacy_uuid TEXT,
    created_at  TEXT DEFAULT (datetime('now'))
);

CREATE INDEX IF NOT EXISTS idx_entries_name
    ON dataset_entries(name);

CREATE TABLE IF NOT EXISTS schemas (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    schema_json TEXT NOT NULL,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
);

CREATE TABLE IF NOT EXISTS lenses (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    lens_json   TEXT NOT NULL,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
);

CREATE TABLE IF NOT EXISTS labels (
    name        TEXT NOT NULL,
    cid         TEXT NOT NULL,
    version     TEXT NOT NULL DEFAULT '',
    description TEXT,
    created_at  TEXT DEFAULT (datetime('now')),
    PRIMARY KEY (name, version)
);

CREATE INDEX IF NOT EXISTS idx_labels_cid
    ON labels(cid);
"""

_ENTRY_COLS = "cid, name, schema_ref, data_urls, metadata, legacy_uuid, created_at"
_LABEL_COLS = "name, cid, version, description, created_at"

# Connections inherited through fork() are never used or closed in the child (SQLite forbids it); they are kept
# referenced here so that garbage collection does not close them either.
_INHERITED: list[sqlite3.Connection] = []


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


class SqliteStore:
    """An :class:`~atdata_torch.index.IndexStore` in one SQLite file.

    Args:
        path: The database file (created with its parent directories when missing).
        timeout: Seconds a write waits for other writers before it fails.

    Raises:
        IndexStoreError: when the file cannot be opened or is not an index database.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path).expanduser().absolute()
        self.location = str(self.path)
        self.timeout = timeout
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexStoreError(f"cannot create the directory of the index database {self.path}: {exc}") from exc
        self._db()

    # ------------------------------------------------------------------------------------------ connection
    def _db(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # forked: leave the parent's connection alone
            _INHERITED.append(self._conn)
            self._conn = None
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise IndexStoreError(f"cannot open the index database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = NORMAL")
            self._retry(lambda: conn.executescript(_CREATE_TABLES))
        except sqlite3.Error as exc:
            conn.close()
            raise IndexStoreError(
                f"{self.path} is not a usable index database ({exc}); pass another path or remove the file"
            ) from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry(self, fn: Callable[[], R]) -> R:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)

    def _write(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction, retried while the database is locked."""
        with self._lock:
            conn = self._db()

            def attempt() -> R:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                    conn.execute("COMMIT")
                    return out
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

            try:
                return self._retry(attempt)
            except sqlite3.Error as exc:
                raise IndexStoreError(f"cannot write to the index database {self.path}: {exc}") from exc

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._db()
            try:
                return self._retry(lambda: conn.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise IndexStoreError(f"cannot read the index database {self.path}: {exc}") from exc

    # ------------------------------------------------------------------------------------------ entries
    def put_entry(self, entry: IndexEntry, label: Label | None = None) -> None:
        """Upsert ``entry`` (and ``label``) in one transaction."""
        created = entry.created_at or now()

        def tx(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO dataset_entries ({_ENTRY_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.cid,
                    entry.name,
                    entry.schema_ref,
                    msgpack.packb(list(entry.data_urls)),
                    msgpack.packb(entry.metadata) if entry.metadata is not None else None,
                    entry.legacy_uuid,
                    created,
                ),
            )
            if label is not None:
                self._insert_label(conn, label)

        self._write(tx)
        entry.created_at = created

    def get_entry(self, cid: str) -> IndexEntry | None:
        """The entry with this CID, or ``None``."""
        rows = self._read(f"SELECT {_ENTRY_COLS} FROM dataset_entries WHERE cid = ?", (cid,))
        return _entry(rows[0]) if rows else None

    def entries_named(self, name: str) -> list[IndexEntry]:
        """Entries named ``name``, newest first."""
        rows = self._read(
            f"SELECT {_ENTRY_COLS} FROM dataset_entries WHERE name = ? ORDER BY created_at DESC, rowid DESC",
            (name,),
        )
        return [_entry(r) for r in rows]

    def iter_entries(self) -> Iterator[IndexEntry]:
        """Every entry."""
        for r in self._read(f"SELECT {_ENTRY_COLS} FROM dataset_entries"):
            yield _entry(r)

    # ------------------------------------------------------------------------------------------ labels
    @staticmethod
    def _insert_label(conn: sqlite3.Connection, label: Label) -> None:
        label.created_at = now()
        conn.execute(
            f"INSERT OR REPLACE INTO labels ({_LABEL_COLS}) VALUES (?, ?, ?, ?, ?)",
            (label.name, label.cid, label.version or "", label.description, label.created_at),
        )

    def put_label(self, label: Label) -> None:
        """Upsert a label by (name, version)."""
        self._write(lambda conn: self._insert_label(conn, label))

    def get_label(self, name: str, version: str | None = None) -> Label | None:
        """The label ``name@version``, or the newest label of ``name``."""
        if version is not None:
            rows = self._read(f"SELECT {_LABEL_COLS} FROM labels WHERE name = ? AND version = ?", (name, version))
        else:
            rows = self._read(
                f"SELECT {_LABEL_COLS} FROM labels WHERE name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (name,),
            )
        return _label(rows[0]) if rows else None

    def labels_named(self, name: str) -> list[Label]:
        """Labels of ``name``, newest first."""
        rows = self._read(
            f"SELECT {_LABEL_COLS} FROM labels WHERE name = ? ORDER BY created_at DESC, rowid DESC", (name,)
        )
        return [_label(r) for r in rows]

    def iter_labels(self) -> Iterator[Label]:
        """Every label."""
        for r in self._read(f"SELECT {_LABEL_COLS} FROM labels"):
            yield _label(r)

    def names(self) -> set[str]:
        """Every entry and label name."""
        rows = self._read("SELECT name FROM dataset_entries UNION SELECT name FROM labels")
        return {str(r[0]) for r in rows}

    # ------------------------------------------------------------------------------------------ schemas, lenses
    def _put_record(self, table: str, col: str, name: str, version: str, text: str, replace: bool) -> bool:
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"{verb} INTO {table} (name, version, {col}, created_at) VALUES (?, ?, ?, ?)",
                (name, version, text, now()),
            )
            return cur.rowcount > 0

        return self._write(tx)

    def put_schema(self, name: str, version: str, schema_json: str, *, replace: bool = True) -> bool:
        """Store a schema (``replace=False``: only when the version is free)."""
        return self._put_record("schemas", "schema_json", name, version, schema_json, replace)

    def get_schema(self, name: str, version: str) -> str | None:
        """A schema's JSON, or ``None``."""
        rows = self._read("SELECT schema_json FROM schemas WHERE name = ? AND version = ?", (name, version))
        return str(rows[0][0]) if rows else None

    def schema_versions(self, name: str) -> list[str]:
        """Versions stored for ``name``."""
        return [str(r[0]) for r in self._read("SELECT version FROM schemas WHERE name = ?", (name,))]

    def iter_schemas(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(name, version, schema_json)``."""
        for n, v, j in self._read("SELECT name, version, schema_json FROM schemas"):
            yield str(n), str(v), str(j)

    def put_lens(self, name: str, version: str, lens_json: str, *, replace: bool = True) -> bool:
        """Store a lens record (``replace=False``: only when the version is free)."""
        return self._put_record("lenses", "lens_json", name, version, lens_json, replace)

    def get_lens(self, name: str, version: str) -> str | None:
        """A lens record's JSON, or ``None``."""
        rows = self._read("SELECT lens_json FROM lenses WHERE name = ? AND version = ?", (name, version))
        return str(rows[0][0]) if rows else None

    def lens_versions(self, name: str) -> list[str]:
        """Versions stored for lens ``name``."""
        return [str(r[0]) for r in self._read("SELECT version FROM lenses WHERE name = ?", (name,))]

    def iter_lenses(self) -> Iterator[tuple[str, str, str]]:
        """Every ``(name, version, lens_json)``."""
        for n, v, j in self._read("SELECT name, version, lens_json FROM lenses"):
            yield str(n), str(v), str(j)

    # ------------------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close this process's connection (a later call reopens it)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.location!r})"


def _unpack(blob: Any) -> Any:
    return msgpack.unpackb(bytes(blob), raw=False, strict_map_key=False)


def _entry(row: tuple[Any, ...]) -> IndexEntry:
    cid, name, schema_ref, urls, meta, legacy, created = row
    try:
        data_urls = [str(u) for u in _unpack(urls)]
        metadata = _unpack(meta) if meta is not None else None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise IndexStoreError(f"index entry {cid} has undecodable data_urls/metadata (not msgpack): {exc}") from exc
    return IndexEntry(
        name=str(name),
        schema_ref=str(schema_ref),
        data_urls=data_urls,
        metadata=metadata if isinstance(metadata, dict) else None,
        cid=str(cid),
        created_at=str(created) if created is not None else None,
        legacy_uuid=str(legacy) if legacy else None,
    )


def _label(row: tuple[Any, ...]) -> Label:
    name, cid, version, description, created = row
    return Label(
        name=str(name),
        cid=str(cid),
        version=str(version) if version else None,
        description=str(description) if description is not None else None,
        created_at=str(created) if created is not None else None,
    )
