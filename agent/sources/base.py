"""The source contract: read a batch, let the pipeline persist it, then commit the offset.

A source never advances past data that is not yet stored: :meth:`Source.read` returns the items
and the offset *after* them; the pipeline writes the records and the offset in one store
transaction and only then calls :meth:`Source.commit`. A crash in between re-reads the batch,
which the store's join by id makes harmless.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric


@dataclass
class Batch:
    items: list[bytes | dict[str, Any]] = field(default_factory=list)
    offset: dict[str, Any] | None = None  # where the source stands after these items
    too_large: int = 0  # items the source had to drop for size before decoding them


@dataclass
class IngestResult:
    """What the pipeline made of one batch (a push source answers with it)."""

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    joined: int = 0


@dataclass
class Drained:
    """What one bounded read of a source did: items read, and whether it stopped at its cap with
    more still to read (a backlog: the daemon reads on at once instead of idling until the next run)."""

    items: int = 0
    more: bool = False

    def __add__(self, other: Drained) -> Drained:
        return Drained(self.items + other.items, self.more or other.more)


def drain(source: Source, store: Callable[[str, Batch], object], max_items: int,
          max_batches: int | None = None) -> Drained:
    """Read ``source`` batch by batch, storing each (records and offset in one transaction) before
    committing its offset; at most ``max_batches`` batches."""
    total = batches = 0
    while max_batches is None or batches < max_batches:
        batch = source.read(max_items)
        if not batch.items and not batch.too_large and batch.offset is None:
            return Drained(total, False)
        store(source.name, batch)
        source.commit(batch.offset)
        total += len(batch.items)
        batches += 1
    return Drained(total, True)


#: Stores a source's items in one transaction: ``ingest(source_name, items)``; a push source is given
#: one (``Pipeline.ingest_items``) so that it answers only once its records are stored, without
#: depending on the pipeline.
Ingest = Callable[[str, list[bytes | dict[str, Any]]], IngestResult]


class Source(ABC):
    #: value of the ``source`` label on ``goodhart_records_total``
    name: str = "source"

    def __init__(self) -> None:
        #: errors by reason, exported as ``goodhart_source_errors_total{reason}``
        self.errors: dict[str, int] = {}

    def count_error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    @abstractmethod
    def read(self, max_items: int) -> Batch:
        """Up to ``max_items`` new items; an empty batch when nothing is new."""

    def start(self) -> None:  # noqa: B027 - optional hook
        """Begin serving (a push source's listener); called when the agent starts."""

    def commit(self, offset: dict[str, Any] | None) -> None:  # noqa: B027 - optional hook
        """The batch that ended at ``offset`` is stored."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and sockets."""

    def collect(self) -> Iterator[Metric]:
        """The source's own series beyond ``goodhart_source_errors_total`` (none by default)."""
        return iter(())

    @property
    def up(self) -> bool:
        """Whether the source is reachable right now (``goodhart_up{component="source"}``)."""
        return True
