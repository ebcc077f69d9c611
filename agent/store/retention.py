"""Retention: bound disk use without losing anything the detectors have not seen."""

from __future__ import annotations

import sqlite3

from agent.store.database import newest_beyond, span_fits
from agent.store.state import StateTables


class RetentionTables(StateTables):
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

        Every statement goes by an index (migration 8): with nothing to drop, retention costs a few
        index lookups however large the store (``python -m bench.store``), where it used to scan the
        outputs, the pairs and the remembered ids on every run.
        """
        dropped: dict[str, int] = {}
        with self.transaction() as conn:
            conn.execute("DELETE FROM seen_ids WHERE expires_at <= ?", (now,))
            fed = self.get_cursor("detect.outputs")  # outputs the detectors have not seen yet stay
            expired = "expires_at <= ? AND +seq <= ?"  # by the expiry index, not every output up to the cursor
            dropped["output"] = self._drop_outputs(conn, expired + " AND +labelled = 0", (now, fed),
                                                   remember_ids_seconds)
            self._drop_outputs(conn, expired, (now, fed), remember_ids_seconds)
            dropped["label"] = conn.execute("DELETE FROM early_labels WHERE expires_at <= ?", (now,)).rowcount
            # Beyond max_pending outputs still waiting for a label, the oldest waiting ones go.
            cut = newest_beyond(conn, "outputs WHERE labelled = 0", max_pending)
            if cut is not None:
                dropped["output"] += self._drop_outputs(conn, "labelled = 0 AND seq <= ?", (min(cut, fed),),
                                                        remember_ids_seconds)
            if not span_fits(conn, "early_labels", max_pending):  # else it walks every early label
                conn.execute("DELETE FROM early_labels WHERE id IN"
                             " (SELECT id FROM early_labels ORDER BY ts DESC LIMIT -1 OFFSET ?)", (max_pending,))
            seen = self.get_cursor("detect.pairs")
            # "+seq": by the ts index (old pairs are few), not by walking seq up to the cursor (all of them)
            dropped["pair"] = conn.execute("DELETE FROM pairs WHERE ts < ? AND +seq <= ?",
                                           (pairs_min_ts, seen)).rowcount
            cut = newest_beyond(conn, "pairs", max_pairs)  # of those left: the age bound goes first
            if cut is not None:
                dropped["pair"] += conn.execute("DELETE FROM pairs WHERE seq <= ?", (min(cut, seen),)).rowcount
            over = conn.execute("SELECT ids FROM seen_ids_total WHERE id = 1").fetchone()[0] - (max_seen_ids or 0)
            if max_seen_ids is not None and over > 0:  # the ids closest to their expiry go first
                conn.execute("DELETE FROM seen_ids WHERE id IN"
                             " (SELECT id FROM seen_ids ORDER BY expires_at LIMIT ?)", (over,))
            cut = newest_beyond(conn, "events", max_events)
            if cut is not None:
                conn.execute("DELETE FROM events WHERE seq <= ?", (cut,))
        return dropped

    @staticmethod
    def _drop_outputs(conn: sqlite3.Connection, where: str, params: tuple[float, ...],
                      remember_seconds: float) -> int:
        """Delete the outputs matching ``where``, keeping their ids in ``seen_ids``; returns how many."""
        # an upsert, not INSERT OR REPLACE: a replaced row fires no delete trigger (seen_ids_total)
        conn.execute("INSERT INTO seen_ids(id, expires_at)"
                     f" SELECT id, expires_at + ? FROM outputs WHERE {where}"
                     " ON CONFLICT(id) DO UPDATE SET expires_at = excluded.expires_at", (remember_seconds, *params))
        return int(conn.execute(f"DELETE FROM outputs WHERE {where}", params).rowcount)
