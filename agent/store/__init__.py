"""The agent's state in one embedded SQLite database (WAL mode), one module per table family.

What lives here survives a crash: outputs waiting for their labels, labels that came before their
outputs, audited outputs, the ids of outputs already dropped (so a late re-delivery is still a
duplicate), source offsets, detector state with the cursors that say what it has seen, persistent
counters and alarm events, the audit queue and budgets. Every ingest batch is written in one
transaction together with the source offset it reached, so a restart neither re-reads nor skips.

``database`` holds the connection, migrations and transactions; ``join`` outputs, labels and
audited outputs; ``state`` offsets, cursors and segments; ``detectors`` detector checkpoints (their
ring buffers in chunks); ``log`` counters and events; ``retention`` what may be dropped; ``audits``
the audit queue and budgets; ``references`` which pairs started from a reference artifact;
``forward`` a forwarder's buffer of records on their way to the gateway; ``evidence`` the audited
outputs behind an excursion, text excerpts and verdict history; ``health`` the write probe and
integrity check behind ``/readyz``. All SQL of the agent lives in this package.
"""

from agent.store.audits import AuditQueue, BudgetLevels, QueueItem, load_budget, save_budget
from agent.store.database import DB_FILENAME, MIGRATIONS, Database, OutputRow, PairRow
from agent.store.detectors import DetectorTables
from agent.store.evidence import EvidenceRow, EvidenceTables, Line, VerdictRow
from agent.store.forward import BufferedBatch, BufferStats, ForwardTables
from agent.store.health import HealthTables
from agent.store.join import JoinTables, KnownIds, LabelJoin, OutputJoin
from agent.store.log import LogTables
from agent.store.references import ImportRow, ReferenceTables
from agent.store.retention import RetentionTables
from agent.store.state import StateTables


class Store(JoinTables, EvidenceTables, LogTables, RetentionTables, StateTables, DetectorTables, ReferenceTables,
            ForwardTables, HealthTables, Database):
    """SQLite behind one class: a path, ``:memory:`` or a directory (``goodhart.db`` inside).

    One connection shared by the scheduler's threads and the HTTP handlers, serialised by a
    re-entrant lock; :meth:`transaction` groups writes.
    """


__all__ = ["DB_FILENAME", "MIGRATIONS", "AuditQueue", "BudgetLevels", "BufferStats", "BufferedBatch",
           "EvidenceRow", "ImportRow", "KnownIds", "LabelJoin", "Line", "OutputJoin", "OutputRow", "PairRow",
           "QueueItem",
           "Store", "VerdictRow", "load_budget", "save_budget"]
