"""Being a good client of a judge or grader: a circuit breaker (backoff and Retry-After are in
:mod:`agent.http.client`).

Retries are scheduled through the durable queue (an item's next attempt), not by sleeping, so a
long backoff costs nothing and survives restarts. What follows the *server's* state rather than an
item's (the circuit breaker, a Retry-After pause after 429) runs on the real monotonic clock, also
in ``replay``, because the server lives in real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Stops calling a server that keeps failing; one trial request at a time once the pause is over.

    ``closed``: every request may go. After ``failure_threshold`` consecutive failures: ``open`` for
    ``open_seconds``, nothing goes. Then one trial per round: success closes the circuit, failure
    opens it again. :meth:`hold` is the same pause without counting a failure (a 429's Retry-After).
    """

    def __init__(self, failure_threshold: int, open_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._now = monotonic
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._hold_until = 0.0

    @property
    def is_open(self) -> bool:
        return self._failures >= self.failure_threshold

    def permits(self, wanted: int) -> int:
        """How many requests may go now."""
        with self._lock:
            now = self._now()
            if now < self._hold_until:
                return 0
            if not self.is_open:
                return wanted
            return 1 if now >= self._open_until else 0

    def success(self) -> None:
        with self._lock:
            self._failures = 0

    def failure(self) -> bool:
        """Count a failed request; True when this failure opened (or re-opened) the circuit."""
        with self._lock:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open_until = self._now() + self.open_seconds
                return True
            return False

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._hold_until = max(self._hold_until, self._now() + seconds)
