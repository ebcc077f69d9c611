"""The per-pair series as the last detect step left them, rendered once and served as bytes.

Building and rendering the per-pair families is most of a scrape's cost (about 20 series per
pair, and it reads the store), and they only change at a detect step. So :class:`CachedExposition`
asks its collector once per detect step (``Pipeline.snapshot_hooks``: after a detect step, a
rebaseline, a reference import), keeps the families and their rendering, and a scrape appends
those bytes to the live series (agent/http/routes.py): a scrape never waits for the store, an
ingest or a detect step, and costs the same whatever the number of pairs.

A rebuild runs in the thread of the step that changed the snapshot; the swap of the built result
is one assignment, so a scrape sees either the old exposition or the new one, never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

OPENMETRICS_EOF = b"# EOF\n"


class _Families(Collector):
    """Already built families, for the renderers (which take a registry)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def render(families: list[Metric], openmetrics: bool) -> bytes:
    """The families in the classic text format, or in OpenMetrics without its closing ``# EOF``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    if not openmetrics:
        return generate_latest(registry)
    body = generate_openmetrics(registry)
    return body[:-len(OPENMETRICS_EOF)] if body.endswith(OPENMETRICS_EOF) else body


@dataclass
class _Built:
    families: list[Metric]
    generation: int
    bodies: dict[bool, bytes] = field(default_factory=dict)  # by openmetrics


class CachedExposition(Collector):
    """Serves what ``source`` yielded at the last :meth:`rebuild`: as families (:meth:`collect`, for a
    registry) and as rendered bytes (:meth:`body`, for ``/metrics``)."""

    def __init__(self, source: Collector) -> None:
        self.source = source
        self._rebuilding = threading.Lock()  # one rebuild at a time; scrapes never take it
        self._render_lock = threading.Lock()
        self._wanted = {False}  # formats rendered at each rebuild: text, and OpenMetrics once asked for
        self._built = _Built([], 0)
        self.rebuild()

    @property
    def generation(self) -> int:
        """How many times the exposition was built (a test waits for the next one)."""
        return self._built.generation

    def rebuild(self) -> None:
        """Ask the collector afresh and render the formats scrapes ask for; then swap."""
        with self._rebuilding:
            families = list(self.source.collect())
            built = _Built(families, self._built.generation + 1)
            with self._render_lock:
                wanted = sorted(self._wanted)
            for openmetrics in wanted:
                built.bodies[openmetrics] = render(families, openmetrics)
            self._built = built

    def collect(self) -> Iterator[Metric]:
        return iter(self._built.families)

    def body(self, openmetrics: bool) -> bytes:
        """The last built exposition; a format asked for the first time is rendered now (CPU only,
        no store) and at every rebuild from then on."""
        built = self._built
        cached = built.bodies.get(openmetrics)
        if cached is None:
            with self._render_lock:
                self._wanted.add(openmetrics)
                cached = built.bodies.get(openmetrics)
                if cached is None:
                    cached = built.bodies[openmetrics] = render(built.families, openmetrics)
        return cached
