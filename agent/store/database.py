"""The agent's state in one embedded SQLite database (WAL mode).

What lives here survives a crash: outputs waiting for their labels, labels that came before their
outputs, audited pairs, the ids of outputs already dropped (so a late re-delivery is still a
duplicate), source offsets, detector state with the cursors that say which pairs it has
seen, persistent counters and alarm events. Every ingest batch is written in one transaction
together with the source offset it reached, so a restart neither re-reads nor skips a record.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` only ever grows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
]


@dataclass(frozen=True)
class OutputRow:
    seq: int
    id: str
    ts: float
    segment: str | None
    proxies: dict[str, float]


@dataclass(frozen=True)
class PairRow:
    seq: int
    proxy: str
    audit: str
    segment: str | None
    ts: float
    proxy_value: float
    audit_value: float
    weight: float


class Store:
    """SQLite behind one class: a path, ``:memory:`` or a directory (``goodhart.db`` inside).

    One connection shared by the scheduler's threads and the HTTP handlers, serialised by a
    re-entrant lock; :meth:`transaction` groups writes.
    """

    def __init__(self, location: str | Path) -> None:
        location = str(location)
        if location != ":memory:" and Path(location).is_dir():
            location = str(Path(location) / DB_FILENAME)
        self.path = location
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            location, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()

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
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def size_bytes(self) -> int:
        with self.lock:
            pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
            size = self.conn.execute("PRAGMA page_size").fetchone()[0]
        return int(pages) * int(size)

    # -- outputs and labels -----------------------------------------------------------------------
    def insert_output(self, rid: str, ts: float, segment: str | None, proxies: dict[str, float],
                      expires_at: float) -> OutputRow | None:
        """Store an output; None when its id is already known (a re-delivery), even when its row has
        already been dropped by retention (see :meth:`expire`)."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM seen_ids WHERE id = ?", (rid,)).fetchone() is not None:
                return None
            cur = conn.execute(
                "INSERT OR IGNORE INTO outputs(id, ts, segment, proxies, expires_at) VALUES (?,?,?,?,?)",
                (rid, ts, segment, json.dumps(proxies, sort_keys=True), expires_at))
            if cur.rowcount == 0:
                return None
            seq = cur.lastrowid
        assert seq is not None
        return OutputRow(seq, rid, ts, segment, proxies)

    def get_output(self, rid: str) -> OutputRow | None:
        with self.lock:
            row = self.conn.execute(
                "SELECT seq, id, ts, segment, proxies FROM outputs WHERE id = ?", (rid,)).fetchone()
        return None if row is None else OutputRow(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def put_early_label(self, rid: str, ts: float, audits: dict[str, float], weight: float,
                        expires_at: float) -> None:
        """Keep a label whose output has not arrived yet; later labels add to earlier ones."""
        with self.transaction() as conn:
            row = conn.execute("SELECT audits FROM early_labels WHERE id = ?", (rid,)).fetchone()
            merged = {**json.loads(row[0]), **audits} if row else dict(audits)
            conn.execute(
                "INSERT OR REPLACE INTO early_labels(id, ts, audits, weight, expires_at) VALUES (?,?,?,?,?)",
                (rid, ts, json.dumps(merged, sort_keys=True), weight, expires_at))

    def take_early_label(self, rid: str) -> tuple[dict[str, float], float] | None:
        with self.transaction() as conn:
            row = conn.execute("SELECT audits, weight FROM early_labels WHERE id = ?", (rid,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM early_labels WHERE id = ?", (rid,))
        return json.loads(row[0]), float(row[1])

    def insert_pairs(self, output: OutputRow, audits: dict[str, float], weight: float) -> int:
        """Join an output with audit values: one pair per (proxy, audit); first label wins."""
        rows = [(output.id, proxy, audit, output.segment, output.ts, pv, av, weight)
                for audit, av in sorted(audits.items()) for proxy, pv in sorted(output.proxies.items())]
        if not rows:
            return 0
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO pairs(id, proxy, audit, segment, ts, proxy_value, audit_value, weight)"
                " VALUES (?,?,?,?,?,?,?,?)", rows)
            inserted = conn.total_changes - before
            if inserted:
                conn.execute("UPDATE outputs SET labelled = 1 WHERE id = ?", (output.id,))
        return inserted

    # -- reading for the detectors -------------------------------------------------------------------
    def outputs_since(self, seq: int, limit: int = 50_000) -> list[OutputRow]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, id, ts, segment, proxies FROM outputs WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit)).fetchall()
        return [OutputRow(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def pairs_since(self, seq: int, limit: int = 50_000) -> list[PairRow]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, proxy, audit, segment, ts, proxy_value, audit_value, weight FROM pairs"
                " WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [PairRow(*r) for r in rows]

    def recent_pairs(self, proxy: str, audit: str, segment: str | None, limit: int) -> list[tuple[int, float, float]]:
        """The newest ``limit`` pairs of one (proxy, audit, segment) as (seq, proxy value, audit value),
        newest first; ``segment=None`` means the pairs without a segment. Served by the pairs_key index."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, proxy_value, audit_value FROM pairs WHERE proxy = ? AND audit = ? AND segment IS ?"
                " ORDER BY seq DESC LIMIT ?", (proxy, audit, segment, limit)).fetchall()
        return [(int(r[0]), float(r[1]), float(r[2])) for r in rows]

    def max_seq(self, table: str) -> int:
        if table not in ("outputs", "pairs"):
            raise ValueError(table)
        with self.lock:
            row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def pair_counts(self) -> dict[tuple[str, str, str], int]:
        """Audited pairs held per (proxy, audit, segment), with segment ``*`` for all."""
        with self.lock:
            per_segment = self.conn.execute(
                "SELECT proxy, audit, segment, count(*) FROM pairs GROUP BY proxy, audit, segment").fetchall()
        counts: dict[tuple[str, str, str], int] = {}
        for proxy, audit, segment, n in per_segment:
            counts[(proxy, audit, "*")] = counts.get((proxy, audit, "*"), 0) + n
            if segment is not None:
                counts[(proxy, audit, segment)] = n
        return counts

    def pending_counts(self) -> tuple[int, int]:
        """(outputs still waiting for a label, labels still waiting for their output)."""
        with self.lock:
            outputs = self.conn.execute("SELECT count(*) FROM outputs WHERE labelled = 0").fetchone()[0]
            labels = self.conn.execute("SELECT count(*) FROM early_labels").fetchone()[0]
        return int(outputs), int(labels)

    # -- small key/value tables -----------------------------------------------------------------------
    def get_offset(self, source: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.conn.execute("SELECT state FROM offsets WHERE source = ?", (source,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_offset(self, source: str, state: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO offsets(source, state) VALUES (?, ?)",
                         (source, json.dumps(state, sort_keys=True)))

    def get_cursor(self, name: str) -> int:
        with self.lock:
            row = self.conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, name: str, value: int) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO cursors(name, value) VALUES (?, ?)", (name, value))

    def segments(self) -> list[str]:
        with self.lock:
            rows = self.conn.execute("SELECT value FROM segments ORDER BY first_seen, value").fetchall()
        return [r[0] for r in rows]

    def add_segment(self, value: str, ts: float) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO segments(value, first_seen) VALUES (?, ?)", (value, ts))

    def save_detectors(self, states: dict[str, dict[str, Any]]) -> None:
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO detectors(key, state) VALUES (?, ?)",
                             [(k, json.dumps(v, sort_keys=True)) for k, v in states.items()])

    def load_detectors(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT key, state FROM detectors").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def clear_detectors(self) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM detectors")

    # -- counters and events ----------------------------------------------------------------------------
    def incr(self, name: str, labels: tuple[tuple[str, str], ...] = (), by: float = 1.0) -> None:
        key = json.dumps(dict(labels), sort_keys=True)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO counters(name, labels, value) VALUES (?, ?, ?)"
                " ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value", (name, key, by))

    def counters(self) -> list[tuple[str, dict[str, str], float]]:
        with self.lock:
            rows = self.conn.execute("SELECT name, labels, value FROM counters ORDER BY name, labels").fetchall()
        return [(n, json.loads(labels), float(v)) for n, labels, v in rows]

    def counter(self, name: str, **labels: str) -> float:
        key = json.dumps(labels, sort_keys=True)
        with self.lock:
            row = self.conn.execute(
                "SELECT value FROM counters WHERE name = ? AND labels = ?", (name, key)).fetchone()
        return float(row[0]) if row else 0.0

    def append_event(self, ts: float, body: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO events(ts, body) VALUES (?, ?)", (ts, json.dumps(body, sort_keys=True)))

    def recent_events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.lock:
            rows = self.conn.execute("SELECT body FROM events ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    # -- retention ---------------------------------------------------------------------------------------
    def expire(self, now: float, pairs_min_ts: float, max_pending: int, max_pairs: int,
               max_events: int, remember_ids_seconds: float = 0.0,
               max_seen_ids: int | None = None) -> dict[str, int]:
        """Bound disk use; returns what was dropped, by kind, for the expiry counters.

        Pairs are deleted only behind the detectors' cursor, so nothing unseen is lost. The id of
        every output dropped is kept in ``seen_ids`` until ``remember_ids_seconds`` after the
        output's own expiry (the pipeline passes the label TTL: ids are remembered for twice the
        TTL after ingest), so that re-delivering it is still a duplicate; beyond ``max_seen_ids`` of
        them, the ones closest to their expiry are forgotten first.
        """
        dropped: dict[str, int] = {}
        with self.transaction() as conn:
            conn.execute("DELETE FROM seen_ids WHERE expires_at <= ?", (now,))
            fed = self.get_cursor("detect.outputs")  # outputs the detectors have not seen yet stay
            expired = "expires_at <= ? AND seq <= ?"
            dropped["output"] = self._drop_outputs(conn, expired + " AND labelled = 0", (now, fed),
                                                   remember_ids_seconds)
            self._drop_outputs(conn, expired, (now, fed), remember_ids_seconds)
            dropped["label"] = conn.execute("DELETE FROM early_labels WHERE expires_at <= ?", (now,)).rowcount
            # Beyond max_pending outputs still waiting for a label, the oldest waiting ones go.
            dropped["output"] += self._drop_outputs(
                conn, "seq IN (SELECT seq FROM outputs WHERE labelled = 0 ORDER BY seq DESC LIMIT -1 OFFSET ?)"
                " AND seq <= ?", (max_pending, fed), remember_ids_seconds)
            conn.execute("DELETE FROM early_labels WHERE id IN"
                         " (SELECT id FROM early_labels ORDER BY ts DESC LIMIT -1 OFFSET ?)", (max_pending,))
            seen = self.get_cursor("detect.pairs")
            dropped["pair"] = conn.execute(
                "DELETE FROM pairs WHERE seq <= ? AND (ts < ? OR seq IN"
                " (SELECT seq FROM pairs ORDER BY seq DESC LIMIT -1 OFFSET ?))",
                (seen, pairs_min_ts, max_pairs)).rowcount
            if max_seen_ids is not None:
                conn.execute("DELETE FROM seen_ids WHERE id IN"
                             " (SELECT id FROM seen_ids ORDER BY expires_at DESC LIMIT -1 OFFSET ?)", (max_seen_ids,))
            conn.execute("DELETE FROM events WHERE seq IN"
                         " (SELECT seq FROM events ORDER BY seq DESC LIMIT -1 OFFSET ?)", (max_events,))
        return dropped

    @staticmethod
    def _drop_outputs(conn: sqlite3.Connection, where: str, params: tuple[float, ...],
                      remember_seconds: float) -> int:
        """Delete the outputs matching ``where``, keeping their ids in ``seen_ids``; returns how many."""
        conn.execute("INSERT OR REPLACE INTO seen_ids(id, expires_at)"
                     f" SELECT id, expires_at + ? FROM outputs WHERE {where}", (remember_seconds, *params))
        return int(conn.execute(f"DELETE FROM outputs WHERE {where}", params).rowcount)
