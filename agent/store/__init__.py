"""The agent's state in one embedded SQLite database; one module per table family.

``database`` holds the connection, migrations and transactions; the other modules hold the SQL of
one family of tables each. Import from ``agent.store``; the split is an inside detail.
"""

from agent.store.audits import AuditQueue, BudgetLevels, QueueItem, load_budget, save_budget
from agent.store.database import DB_FILENAME, MIGRATIONS, OutputRow, PairRow, Store

__all__ = ["DB_FILENAME", "MIGRATIONS", "AuditQueue", "BudgetLevels", "OutputRow", "PairRow", "QueueItem", "Store",
           "load_budget", "save_budget"]
