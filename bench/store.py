"""Store costs at scale (issue #16): retention with nothing to drop, a detector checkpoint, bytes per record.

    python -m bench.store                      # 1,000,000 outputs; a window of 100,000 pairs
    python -m bench.store --outputs 200000 --window 20000 --repeat 3   # quicker

Everything runs on real SQLite files in a temporary directory, and old and new are timed in the
same run, alternating, min and median of ``--repeat`` runs:

* **Retention**: a store of ``--outputs`` outputs (one in three labelled, two audited pairs each),
  1,000 early labels, ``--seen-ids`` remembered ids and 10,000 events, everything inside its TTL
  and under every bound (the defaults: 1M pending, 1M pairs, 2M ids), so there is nothing to drop.
  *Old*: the statements retention ran before issue #16 (:func:`old_expire`), on the file at schema
  7, as it was. *New*: ``Store.expire`` and ``Store.expire_evidence`` on a copy upgraded to the
  current schema (the upgrade, which builds the new indexes, is timed once). Also, with
  ``max_pending`` below the span of pending seqs, the case where the new code has to walk an index.
* **Checkpoint**: one decoupling detector with a full window of ``--window`` pairs; before each
  checkpoint ``--new-pairs`` more pairs arrive. *Old*: its whole ``state_dict()`` as JSON into the
  ``detectors`` table (the old ``save_detectors``). *New*: ``Store.save_detectors`` of its
  ``checkpoint_state()``: the window's ring goes to chunks, only those written since the last.
  Loading is timed both ways, and the loaded detector is checked to equal the saved one.
* **Bytes per record**: the file's size over its outputs, at schema 7 and at the current schema.
* **Insert cost**: what the new index on pending outputs costs the ingest path's SQL (inserts and
  the label join's updates), schema 7 against the current one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agent.detect.base import PairObservation
from agent.detect.decoupling import DecouplingDetector
from agent.store import MIGRATIONS, Store

OLD_SCHEMA = 7  # the schema before issue #16's indexes and detector chunks
T0 = 1_790_000_000.0
DAY = 86_400.0
PROXIES = '{"resolution_seconds": %.1f, "thumbs_up": %d}'


def old_expire(conn: sqlite3.Connection, now: float, pairs_min_ts: float, max_pending: int, max_pairs: int,
               max_events: int, remember_ids_seconds: float, max_seen_ids: int) -> dict[str, int]:
    """Retention's statements before issue #16, verbatim (agent/store/retention.py at schema 7)."""
    def cursor(name: str) -> int:
        row = conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def drop(where: str, params: tuple[float, ...]) -> int:
        conn.execute("INSERT OR REPLACE INTO seen_ids(id, expires_at)"
                     f" SELECT id, expires_at + ? FROM outputs WHERE {where}", (remember_ids_seconds, *params))
        return int(conn.execute(f"DELETE FROM outputs WHERE {where}", params).rowcount)

    dropped: dict[str, int] = {}
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM seen_ids WHERE expires_at <= ?", (now,))
    fed = cursor("detect.outputs")
    expired = "expires_at <= ? AND seq <= ?"
    dropped["output"] = drop(expired + " AND labelled = 0", (now, fed))
    drop(expired, (now, fed))
    dropped["label"] = conn.execute("DELETE FROM early_labels WHERE expires_at <= ?", (now,)).rowcount
    dropped["output"] += drop("seq IN (SELECT seq FROM outputs WHERE labelled = 0 ORDER BY seq DESC LIMIT -1"
                              " OFFSET ?) AND seq <= ?", (max_pending, fed))
    conn.execute("DELETE FROM early_labels WHERE id IN"
                 " (SELECT id FROM early_labels ORDER BY ts DESC LIMIT -1 OFFSET ?)", (max_pending,))
    dropped["pair"] = conn.execute(
        "DELETE FROM pairs WHERE seq <= ? AND (ts < ? OR seq IN"
        " (SELECT seq FROM pairs ORDER BY seq DESC LIMIT -1 OFFSET ?))",
        (cursor("detect.pairs"), pairs_min_ts, max_pairs)).rowcount
    conn.execute("DELETE FROM seen_ids WHERE id IN"
                 " (SELECT id FROM seen_ids ORDER BY expires_at DESC LIMIT -1 OFFSET ?)", (max_seen_ids,))
    conn.execute("DELETE FROM events WHERE seq IN"
                 " (SELECT seq FROM events ORDER BY seq DESC LIMIT -1 OFFSET ?)", (max_events,))
    # expire_evidence, the same way
    conn.execute("DELETE FROM excerpts WHERE ts < ?", (pairs_min_ts,))
    conn.execute("DELETE FROM excerpts WHERE id IN (SELECT id FROM excerpts ORDER BY ts DESC LIMIT -1 OFFSET ?)",
                 (max_pairs,))
    conn.execute("DELETE FROM verdicts WHERE ts < ?", (pairs_min_ts,))
    conn.execute("DELETE FROM verdicts WHERE seq IN (SELECT seq FROM verdicts ORDER BY seq DESC LIMIT -1 OFFSET ?)",
                 (max_events,))
    conn.execute("COMMIT")
    return dropped


def build_old_store(path: Path, outputs: int, seen_ids: int) -> float:
    """A store at schema 7 with ``outputs`` outputs, nothing of it expired; returns 'now'."""
    conn = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:OLD_SCHEMA], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")
    now = T0 + outputs * 0.5 + 1.0
    segments = ("billing", "shipping", "returns")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO outputs(seq, id, ts, segment, proxies, labelled, expires_at) VALUES (?,?,?,?,?,?,?)",
        ((i + 1, f"conv-{i:07d}", T0 + i * 0.5, segments[i % 3], PROXIES % (30 + i % 97, i % 2),
          int(i % 3 == 0), T0 + i * 0.5 + 7 * DAY) for i in range(outputs)))
    conn.executemany(
        "INSERT INTO pairs(id, proxy, audit, segment, ts, proxy_value, audit_value, weight) VALUES (?,?,?,?,?,?,?,1)",
        ((f"conv-{i:07d}", proxy, "resolved", segments[i % 3], T0 + i * 0.5, float(i % 97), float(i % 2))
         for i in range(0, outputs, 3) for proxy in ("resolution_seconds", "thumbs_up")))
    conn.executemany("INSERT INTO early_labels(id, ts, audits, weight, expires_at) VALUES (?,?,?,1,?)",
                     ((f"late-{i}", now - i, '{"resolved": 1}', now + 7 * DAY) for i in range(1000)))
    conn.executemany("INSERT INTO seen_ids(id, expires_at) VALUES (?,?)",
                     ((f"gone-{i:08d}", now + 7 * DAY - i) for i in range(seen_ids)))
    conn.executemany("INSERT INTO events(ts, body) VALUES (?, '{}')", ((now - i,) for i in range(10_000)))
    pairs = conn.execute("SELECT max(seq) FROM pairs").fetchone()[0]
    conn.executemany("INSERT INTO cursors(name, value) VALUES (?,?)",
                     (("detect.outputs", outputs), ("detect.pairs", pairs)))
    conn.execute("COMMIT")
    conn.close()
    return now


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ms(times: list[float]) -> str:
    return f"min {min(times) * 1e3:.2f} ms, median {statistics.median(times) * 1e3:.2f} ms"


def bench_retention(tmp: Path, outputs: int, seen_ids: int, repeat: int) -> None:
    old_path, new_path = tmp / "old.db", tmp / "new.db"
    t0 = time.perf_counter()
    now = build_old_store(old_path, outputs, seen_ids)
    print(f"built {outputs:,} outputs at schema {OLD_SCHEMA} in {time.perf_counter() - t0:.1f} s")
    shutil.copy(old_path, new_path)
    old_bytes = old_path.stat().st_size
    t0 = time.perf_counter()
    store = Store(new_path)
    print(f"upgrade to schema {len(MIGRATIONS)} (builds the new indexes): {time.perf_counter() - t0:.2f} s, once")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    new_bytes = new_path.stat().st_size
    old = sqlite3.connect(old_path, isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("PRAGMA synchronous=NORMAL")
    args = {"now": now, "pairs_min_ts": now - 30 * DAY, "max_pending": 1_000_000, "max_pairs": 1_000_000,
            "max_events": 10_000, "remember_ids_seconds": 7 * DAY, "max_seen_ids": 2_000_000}

    def new_run(**over: Any) -> dict[str, int]:
        a = {**args, **over}
        dropped = store.expire(**a)
        store.expire_evidence(a["pairs_min_ts"], a["max_pairs"], a["max_events"])
        return dropped

    assert old_expire(old, **args) == new_run() == {"output": 0, "label": 0, "pair": 0}
    old_t: list[float] = []
    new_t: list[float] = []
    for _ in range(repeat):  # alternating, so both see the same machine
        old_t += timed(lambda: old_expire(old, **args), 1)
        new_t += timed(new_run, 1)
    pending = store.pending_counts()[0]
    print(f"retention, nothing to drop ({outputs:,} outputs, {pending:,} waiting for a label, {seen_ids:,} ids "
          f"remembered): old {ms(old_t)}; new {ms(new_t)}; "
          f"new/old {statistics.median(new_t) / statistics.median(old_t):.4f}")
    # max_pending under the span of pending seqs, over their count: the new code walks the index
    walk = timed(lambda: new_run(max_pending=pending + 1), repeat)
    print(f"  the same, max_pending {pending + 1:,} (pending seqs span more): new {ms(walk)} (walks that many "
          "index entries)")
    records = outputs + store.conn.execute("SELECT count(*) FROM pairs").fetchone()[0]
    print(f"bytes on disk: schema {OLD_SCHEMA} {old_bytes / outputs:.0f} per output ({old_bytes / records:.0f} per "
          f"output or pair row); schema {len(MIGRATIONS)} {new_bytes / outputs:.0f} per output "
          f"({new_bytes / records:.0f} per row)")
    old.close()
    store.close()


def _feed(det: DecouplingDetector, rng: np.random.Generator, start: int, n: int) -> int:
    p = rng.normal(size=n)
    a = 0.6 * p + rng.normal(scale=0.8, size=n)
    for i in range(n):
        det.observe_pair(PairObservation(float(start + i), float(p[i]), float(a[i])))
    return start + n


def bench_checkpoint(tmp: Path, window: int, new_pairs: int, repeat: int) -> None:
    rng = np.random.default_rng(0)
    det = DecouplingDetector(arl0=200_000, window=window)
    t = _feed(det, rng, 0, window + 200)
    # one file each: the old checkpoints' 5.5 MB fill the WAL, whose automatic checkpoints (every
    # 1,000 pages) would otherwise land on whichever commit crosses the mark, old or new
    store, old_store = Store(tmp / "checkpoint.db"), Store(tmp / "checkpoint-old.db")
    extra = {"alarm": {"state": "ok"}, "settings": {"detector": "decoupling"}}

    def old_save() -> int:
        text = json.dumps({"detector": det.state_dict(), **extra}, sort_keys=True)
        with old_store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO detectors(key, state) VALUES (?, ?)", ('["old"]', text))
        return len(text)

    def new_save() -> None:
        store.save_detectors({'["new"]': {"detector": det.checkpoint_state(), **extra}})

    first = timed(new_save, 1)
    old_bytes = old_save()
    old_t: list[float] = []
    new_t: list[float] = []
    for _ in range(repeat):
        t = _feed(det, rng, t, new_pairs)
        old_t += timed(old_save, 1)
        t = _feed(det, rng, t, new_pairs)
        new_t += timed(new_save, 1)
    row = store.conn.execute("SELECT length(state) FROM detectors WHERE key = '[\"new\"]'").fetchone()[0]
    chunk = store.conn.execute("SELECT max(length(data)) FROM detector_chunks").fetchone()[0]
    print(f"checkpoint of one detector, {window:,} pairs in its window, {new_pairs:,} new since the last: "
          f"old {ms(old_t)} ({old_bytes / 1e6:.1f} MB of JSON); new {ms(new_t)} ({row:,} B of JSON and "
          f"{(new_pairs + 1023) // 1024 + 1}-{(new_pairs + 1023) // 1024 + 2} chunks of {chunk // 1024} KB); "
          f"new/old {statistics.median(new_t) / statistics.median(old_t):.4f}; "
          f"the first new one (every chunk) {first[0] * 1e3:.1f} ms")

    def old_load() -> DecouplingDetector:
        text = old_store.conn.execute("SELECT state FROM detectors WHERE key = '[\"old\"]'").fetchone()[0]
        again = DecouplingDetector(arl0=2.0)
        again.load_state(json.loads(text)["detector"])
        return again

    def new_load() -> DecouplingDetector:
        again = DecouplingDetector(arl0=2.0)
        again.load_state(Store(tmp / "checkpoint.db").load_detectors()['["new"]']["detector"])
        return again

    new_save()
    assert new_load().state_dict() == det.state_dict()
    lo, ln = timed(old_load, repeat), timed(new_load, repeat)
    print(f"  loading it: old {ms(lo)}; new {ms(ln)} (the loaded detector's state_dict equals the saved one's)")
    store.close()
    old_store.close()


def bench_insert_cost(tmp: Path, repeat: int) -> None:
    """What the new index on pending outputs costs the ingest path: 30,000 outputs in batches of 100,
    a third of them then labelled (the join's UPDATE), at schema 7 and at the current schema."""
    def run(schema: int) -> float:
        path = tmp / f"insert-{schema}.db"
        path.unlink(missing_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for version, script in enumerate(MIGRATIONS[:schema], start=1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={version};\nCOMMIT;")
        t0 = time.perf_counter()
        for start in range(0, 30_000, 100):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO outputs(id, ts, segment, proxies, expires_at) VALUES (?,?,?,?,?)",
                             [(f"conv-{i:07d}", T0 + i, "billing", PROXIES % (30 + i % 97, i % 2), T0 + i + 7 * DAY)
                              for i in range(start, start + 100)])
            conn.executemany("UPDATE outputs SET labelled = 1 WHERE id = ?",
                             [(f"conv-{i:07d}",) for i in range(start, start + 100, 3)])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - t0
        conn.close()
        return elapsed

    old_t: list[float] = []
    new_t: list[float] = []
    for _ in range(repeat):
        old_t.append(run(OLD_SCHEMA))
        new_t.append(run(len(MIGRATIONS)))
    print(f"output inserts and label updates, 30,000 outputs: schema {OLD_SCHEMA} {ms(old_t)}; schema "
          f"{len(MIGRATIONS)} {ms(new_t)}; new/old {statistics.median(new_t) / statistics.median(old_t):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outputs", type=int, default=1_000_000)
    parser.add_argument("--seen-ids", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=100_000)
    parser.add_argument("--new-pairs", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        bench_retention(Path(tmp), args.outputs, args.seen_ids, args.repeat)
        bench_checkpoint(Path(tmp), args.window, args.new_pairs, args.repeat)
        bench_insert_cost(Path(tmp), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
