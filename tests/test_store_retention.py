"""Retention drops what the old whole-table statements dropped (the pairs: what they were meant to
drop), and goes by index: with nothing to drop, no statement it runs scans a table or sorts."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from agent.store import Store
from bench.store import old_expire

TABLES = {"outputs": "id, ts, segment, proxies, labelled, expires_at", "pairs": "seq, id, ts",
          "early_labels": "id, ts, expires_at", "seen_ids": "id, expires_at", "events": "seq, ts",
          "excerpts": "id, ts", "verdicts": "seq, ts"}


def fill(store: Store, rng: random.Random) -> None:
    """Outputs (some labelled, some sharing an id with a remembered one), pairs, early labels,
    remembered ids, events, excerpts and verdicts, at random times; cursors short of the end."""
    conn = store.conn
    n = rng.randrange(50, 400)
    conn.executemany("INSERT INTO outputs(id, ts, segment, proxies, labelled, expires_at) VALUES (?,?,?,?,?,?)",
                     [(f"o{i}", rng.uniform(0, 100), None, "{}", rng.random() < 0.4, rng.uniform(0, 100))
                      for i in range(n)])
    conn.executemany("INSERT INTO pairs(id, proxy, audit, segment, ts, proxy_value, audit_value, weight)"
                     " VALUES (?, 'p', 'a', NULL, ?, 1, 1, 1)", [(f"o{i}", rng.uniform(0, 100)) for i in range(n)])
    conn.executemany("INSERT INTO early_labels(id, ts, audits, weight, expires_at) VALUES (?, ?, '{}', 1, ?)",
                     [(f"e{i}", rng.uniform(0, 100), rng.uniform(0, 100)) for i in range(rng.randrange(0, 150))])
    conn.executemany("INSERT INTO seen_ids(id, expires_at) VALUES (?, ?)",
                     [(f"o{i}" if i % 5 == 0 else f"s{i}", rng.uniform(0, 200)) for i in range(rng.randrange(0, 300))])
    for table in ("events", "verdicts"):
        cols = "ts, body" if table == "events" else "proxy, audit, segment, ts, state, body"
        marks = "?, '{}'" if table == "events" else "'p', 'a', '*', ?, 'ok', '{}'"
        conn.executemany(f"INSERT INTO {table}({cols}) VALUES ({marks})",
                         [(rng.uniform(0, 100),) for _ in range(rng.randrange(0, 120))])
    conn.executemany("INSERT INTO excerpts(id, ts) VALUES (?, ?)", [(f"o{i}", rng.uniform(0, 100)) for i in range(n)])
    store.set_cursor("detect.outputs", rng.randrange(0, n + 1))
    store.set_cursor("detect.pairs", rng.randrange(0, n + 1))


def contents(store: Store) -> dict[str, list[Any]]:
    return {t: sorted(store.conn.execute(f"SELECT {cols} FROM {t}").fetchall(), key=repr) for t, cols in TABLES.items()}


def expected_pairs(store: Store, min_ts: float, max_pairs: int) -> list[int]:
    """The pairs retention keeps: those the detectors have not seen, and of the others those not
    older than ``min_ts``, of which (with the unseen) only the newest ``max_pairs``.

    The old single statement (``ts < ? OR seq IN (... OFFSET max_pairs)``) is not the reference
    here: SQLite evaluated its subquery only at the first row the age test let through, part way
    into the deletion, so how many the count bound dropped depended on the order rows were visited.
    """
    seen = store.get_cursor("detect.pairs")
    rows = store.conn.execute("SELECT seq, ts FROM pairs ORDER BY seq").fetchall()
    left = [seq for seq, ts in rows if seq > seen or ts >= min_ts]
    beyond = set(left[:-max_pairs]) if len(left) > max_pairs else set()
    return sorted(seq for seq in left if seq > seen or seq not in beyond)


@pytest.mark.parametrize("seed", range(12))
def test_retention_drops_what_the_old_statements_dropped(tmp_path: Path, seed: int) -> None:
    old, new = Store(tmp_path / "old.db"), Store(tmp_path / "new.db")
    for store in (old, new):
        fill(store, random.Random(seed))
    rng = random.Random(1000 + seed)
    for _ in range(3):  # a few rounds: each starts from what the last one left
        args = {"now": rng.uniform(0, 120), "pairs_min_ts": rng.uniform(0, 60), "max_pending": rng.randrange(10, 200),
                "max_pairs": rng.randrange(10, 300), "max_events": rng.randrange(10, 80),
                "remember_ids_seconds": rng.uniform(0, 50), "max_seen_ids": rng.randrange(10, 300)}
        kept = expected_pairs(new, args["pairs_min_ts"], args["max_pairs"])
        with old.lock:
            before = old_expire(old.conn, **args)
        after = new.expire(**args)
        new.expire_evidence(args["pairs_min_ts"], args["max_pairs"], args["max_events"])
        assert {k: v for k, v in after.items() if k != "pair"} == {k: v for k, v in before.items() if k != "pair"}
        now, then = contents(new), contents(old)
        assert sorted(row[0] for row in now.pop("pairs")) == kept
        then.pop("pairs")
        assert now == then
        total = new.conn.execute("SELECT ids FROM seen_ids_total").fetchone()[0]
        assert total == new.conn.execute("SELECT count(*) FROM seen_ids").fetchone()[0]
    old.close()
    new.close()


def test_with_nothing_to_drop_no_retention_statement_scans_a_table_or_sorts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    fill(store, random.Random(7))
    store.set_cursor("detect.outputs", 10**6)
    store.set_cursor("detect.pairs", 10**6)
    ran: list[str] = []
    store.conn.set_trace_callback(ran.append)
    dropped = store.expire(now=-1.0, pairs_min_ts=-1.0, max_pending=10**6, max_pairs=10**6, max_events=10**6,
                           remember_ids_seconds=1.0, max_seen_ids=10**6)
    store.expire_evidence(-1.0, 10**6, 10**6)
    store.conn.set_trace_callback(None)
    assert dropped == {"output": 0, "label": 0, "pair": 0}
    plans = {sql: [row[3] for row in store.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
             for sql in ran if sql.split()[0] in ("SELECT", "DELETE", "INSERT", "UPDATE")}
    assert len(plans) >= 15
    for sql, plan in plans.items():
        for step in plan:
            assert "TEMP B-TREE" not in step, (sql, plan)
            assert not step.startswith("SCAN"), (sql, plan)
