"""The listener's accept loop: it wakes for a connection or for :meth:`AcceptLoop.stop`, not on a timer.

``socketserver``'s ``serve_forever`` wakes every ``poll_interval`` (half a second by default) only to
look at its shutdown flag: four wake-ups a second in an idle agent with its own push listener, and a
stop that waits up to that long. Here the selector also watches a pipe that :meth:`AcceptLoop.stop`
writes to, so an idle listener sleeps until there is something to do, and stops at once.
"""

from __future__ import annotations

import os
import selectors
import socketserver
import threading


class AcceptLoop:
    """Accepts ``server``'s connections in a daemon thread from :meth:`start` until :meth:`stop`.

    ``wake_every`` (seconds; None: never) also ends each wait after that long, for callers that want
    the old polling rhythm; the agent passes None.
    """

    def __init__(self, server: socketserver.TCPServer, wake_every: float | None = None, name: str = "http") -> None:
        self.server = server
        self.server.timeout = 0  # handle_request() below never waits: the selector said a connection is there
        self.wake_every = wake_every
        self._wake_read, self._wake_write = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        listening = self.server.fileno()
        with selectors.PollSelector() as selector:
            selector.register(listening, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._stopping:
                ready = selector.select(self.wake_every)
                if not self._stopping and any(key.fd == listening for key, _ in ready):
                    self.server.handle_request()  # accepts one connection and hands it to its thread
                self.server.service_actions()

    def stop(self) -> None:
        """No new connection is accepted once this returns (connections already handed over go on)."""
        self._stopping = True
        os.write(self._wake_write, b"x")
        if self._thread.is_alive():
            self._thread.join()
        os.close(self._wake_read)
        os.close(self._wake_write)
