"""The connection, the schema migrations and transactions; the table families build on :class:`Database`.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` only ever grows.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

DB_FILENAME = "goodhart.db"

MIGRATIONS: list[str] = [
    # 1: the core pipeline
    """
    CREATE TABLE outputs(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        ts REAL NOT NULL,
        segment TEXT,
        proxies TEXT NOT NULL,
        labelled INTEGER NOT NULL DEFAULT 0,
        expires_at REAL NOT NULL);
    CREATE INDEX outputs_expiry ON outputs(expires_at);
    CREATE TABLE early_labels(
        id TEXT PRIMARY KEY,
        ts REAL NOT NULL,
        audits TEXT NOT NULL,
        weight REAL NOT NULL,
        expires_at REAL NOT NULL);
    CREATE INDEX early_labels_expiry ON early_labels(expires_at);
    CREATE TABLE pairs(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        proxy TEXT NOT NULL,
        audit TEXT NOT NULL,
        segment TEXT,
        ts REAL NOT NULL,
        proxy_value REAL NOT NULL,
        audit_value REAL NOT NULL,
        weight REAL NOT NULL,
        UNIQUE(id, proxy, audit));
    CREATE INDEX pairs_key ON pairs(proxy, audit, segment);
    CREATE INDEX pairs_ts ON pairs(ts);
    CREATE TABLE offsets(source TEXT PRIMARY KEY, state TEXT NOT NULL);
    CREATE TABLE cursors(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE detectors(key TEXT PRIMARY KEY, state TEXT NOT NULL);
    CREATE TABLE segments(value TEXT PRIMARY KEY, first_seen REAL NOT NULL);
    CREATE TABLE counters(name TEXT NOT NULL, labels TEXT NOT NULL, value REAL NOT NULL,
                          PRIMARY KEY(name, labels));
    CREATE TABLE events(seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, body TEXT NOT NULL);
    """,
    # 2: the durable audit queue (judges and graders) and their budgets; see agent/store/audits.py
    """
    CREATE TABLE audit_queue(
        id TEXT NOT NULL,
        audit TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_at REAL NOT NULL,
        next_attempt_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        weight REAL NOT NULL,
        output TEXT NOT NULL,
        body TEXT NOT NULL,
        result REAL,
        error TEXT,
        finished_at REAL,
        PRIMARY KEY(id, audit));
    CREATE INDEX audit_queue_due ON audit_queue(audit, status, next_attempt_at);
    CREATE INDEX audit_queue_finished ON audit_queue(status, finished_at);
    CREATE TABLE audit_budget(audit TEXT NOT NULL, span TEXT NOT NULL, tokens REAL NOT NULL,
                              updated_at REAL NOT NULL, PRIMARY KEY(audit, span));
    """,
    # 3: ids of outputs that retention dropped, kept longer (and compactly), so that a late
    # re-delivery of one (a push retry, a pull page fetched again) is still a duplicate
    """
    CREATE TABLE seen_ids(id TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
    CREATE INDEX seen_ids_expiry ON seen_ids(expires_at);
    """,
    # 4: which pairs started from a reference artifact (detection.reference_file, `reference
    # import`), by the artifact's hash, and whether they were rebaselined since; see store/references.py
    """
    CREATE TABLE reference_imports(key TEXT PRIMARY KEY, artifact TEXT NOT NULL, imported_at REAL NOT NULL,
                                   rebaselined_at REAL);
    """,
    # 5: a forwarder's durable buffer of records not yet accepted by the gateway, and its running
    # totals (kept by triggers, so they are right after any crash); see agent/store/forward.py
    """
    CREATE TABLE forward_buffer(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        buffered_at REAL NOT NULL,
        bytes INTEGER NOT NULL,
        body BLOB NOT NULL);
    CREATE TABLE forward_totals(id INTEGER PRIMARY KEY CHECK (id = 1), records INTEGER NOT NULL,
                                bytes INTEGER NOT NULL);
    INSERT INTO forward_totals(id, records, bytes) VALUES (1, 0, 0);
    CREATE TRIGGER forward_buffer_added AFTER INSERT ON forward_buffer BEGIN
        UPDATE forward_totals SET records = records + 1, bytes = bytes + NEW.bytes WHERE id = 1;
    END;
    CREATE TRIGGER forward_buffer_removed AFTER DELETE ON forward_buffer BEGIN
        UPDATE forward_totals SET records = records - 1, bytes = bytes - OLD.bytes WHERE id = 1;
    END;
    """,
    # 6: why a pair alarmed (agent/store/evidence.py): short input/output excerpts of outputs, when
    # evidence.keep_text is on, and a bounded history of each pair's verdicts for the report's plots
    """
    CREATE TABLE excerpts(id TEXT PRIMARY KEY, ts REAL NOT NULL, input TEXT, output TEXT);
    CREATE INDEX excerpts_ts ON excerpts(ts);
    CREATE TABLE verdicts(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        proxy TEXT NOT NULL,
        audit TEXT NOT NULL,
        segment TEXT NOT NULL,
        ts REAL NOT NULL,
        state TEXT NOT NULL,
        body TEXT NOT NULL);
    CREATE INDEX verdicts_key ON verdicts(proxy, audit, segment, seq);
    """,
    # 7: one row rewritten by the store's write probe (agent/store/health.py), which /readyz reports
    """
    CREATE TABLE health_probe(id INTEGER PRIMARY KEY CHECK (id = 1), written_at REAL NOT NULL);
    """,
    # 8: retention by index, not by scanning (agent/store/retention.py: outputs still waiting for a
    # label in seq order, early labels and verdicts by ts, a count of remembered ids kept by triggers);
    # detectors' ring buffers saved in chunks, only the chunks written since the last checkpoint
    # (agent/store/detectors.py)
    """
    CREATE INDEX outputs_pending ON outputs(seq) WHERE labelled = 0;
    CREATE INDEX early_labels_ts ON early_labels(ts);
    CREATE INDEX verdicts_ts ON verdicts(ts);
    CREATE TABLE seen_ids_total(id INTEGER PRIMARY KEY CHECK (id = 1), ids INTEGER NOT NULL);
    INSERT INTO seen_ids_total(id, ids) SELECT 1, count(*) FROM seen_ids;
    CREATE TRIGGER seen_ids_added AFTER INSERT ON seen_ids BEGIN
        UPDATE seen_ids_total SET ids = ids + 1 WHERE id = 1;
    END;
    CREATE TRIGGER seen_ids_removed AFTER DELETE ON seen_ids BEGIN
        UPDATE seen_ids_total SET ids = ids - 1 WHERE id = 1;
    END;
    CREATE TABLE detector_chunks(
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        chunk INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY(key, name, chunk));
    """,
]


class OutputRow(NamedTuple):
    """A stored output. Rows are named tuples (immutable, as cheap to make as a tuple): ingest makes
    one per output and keeps it for the detect step (agent/store/feed.py), and a tuple of numbers
    and strings drops out of the garbage collector's walks once it has survived one."""

    seq: int
    id: str
    ts: float
    segment: str | None
    proxies: dict[str, float]


class PairRow(NamedTuple):
    """A stored audited output (a named tuple, like :class:`OutputRow`)."""

    seq: int
    proxy: str
    audit: str
    segment: str | None
    ts: float
    proxy_value: float
    audit_value: float
    weight: float


class Database:
    """SQLite behind one class: a path, ``:memory:`` or a directory (``goodhart.db`` inside).

    One connection shared by the scheduler's threads and the HTTP handlers, serialised by a
    re-entrant lock; :meth:`transaction` groups writes.
    """

    def __init__(self, location: str | Path, read_only: bool = False, durable: bool = True) -> None:
        location = str(location)
        if location != ":memory:" and Path(location).is_dir():
            location = str(Path(location) / DB_FILENAME)
        self.path = location
        self.lock = threading.RLock()
        self._committed: list[Callable[[], None]] = []  # after_commit callbacks of the open transaction
        self._conn: sqlite3.Connection | None
        if read_only:
            self._conn = self._open_read_only(location)
            return
        self._conn = sqlite3.connect(location, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives the agent's crash (WAL), and a power loss loses at most the last
        # ones. ``durable=False`` (replay's own store, which acknowledges nothing to anyone and is
        # started afresh after any failure) leaves syncing to the OS: commits and checkpoints cost less.
        self._conn.execute("PRAGMA synchronous=NORMAL" if durable else "PRAGMA synchronous=OFF")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @staticmethod
    def _open_read_only(location: str) -> sqlite3.Connection:
        """A reader next to a running daemon (WAL: it sees the last committed state and blocks
        nobody), or of a stopped one's store; never migrates. FileNotFoundError when absent."""
        if not Path(location).is_file():
            raise FileNotFoundError(2, "no store", location)
        conn = sqlite3.connect(f"{Path(location).absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                               isolation_level=None, timeout=30.0)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            conn.close()
            raise RuntimeError(f"database schema {version} is newer than this agent understands ({len(MIGRATIONS)})")
        return conn

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is closed")
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.lock:
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"database schema {current} is newer than this agent understands ({len(MIGRATIONS)})")
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                self.conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            conn = self.conn
            if conn.in_transaction:  # nested: the outer transaction commits
                yield conn
                return
            conn.execute("BEGIN IMMEDIATE")
            self._committed = []
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._committed = []
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            done, self._committed = self._committed, []
            for callback in done:
                callback()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction is committed (never if it rolls back): for
        what a writer remembers of the rows it wrote (the detectors' chunk marks)."""
        with self.lock:
            if self.conn.in_transaction:
                self._committed.append(callback)
            else:
                callback()

    def size_bytes(self) -> int:
        with self.lock:
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)


def span_fits(conn: sqlite3.Connection, rows: str, keep: int) -> bool:
    """Whether ``rows`` (``table [WHERE ...]``, with an index on the rowid for that WHERE) surely
    hold at most ``keep`` rows, in two index lookups: rowids are distinct integers, so ``max - min +
    1 <= keep`` says so. False means "maybe more": count them the slow way."""
    lo = conn.execute(f"SELECT min(rowid) FROM {rows}").fetchone()[0]
    if lo is None:
        return True
    return int(conn.execute(f"SELECT max(rowid) FROM {rows}").fetchone()[0]) - int(lo) + 1 <= keep


def newest_beyond(conn: sqlite3.Connection, rows: str, keep: int) -> int | None:
    """The ``seq`` (the rowid) of the newest row past the newest ``keep`` of ``rows`` (``table
    [WHERE ...]``, with an index on ``seq`` for that WHERE), so that ``seq <= it`` is what a bound
    of ``keep`` rows drops; None when there are at most ``keep``.

    The usual answer costs two index lookups (:func:`span_fits`). Only when the span is wider does
    it walk the index, at most ``keep`` entries (the old shape, ``seq IN (... ORDER BY seq DESC
    LIMIT -1 OFFSET keep)``, walked every row, every time).
    """
    if span_fits(conn, rows, keep):
        return None
    row = conn.execute(f"SELECT seq FROM {rows} ORDER BY seq DESC LIMIT 1 OFFSET ?", (keep,)).fetchone()
    return None if row is None else int(row[0])
