"""Whether a FUSE mount's process answers, asked without ever blocking the one who asks.

Every access to a FUSE mount waits for its process; one that is alive but stopped (SIGSTOP,
a deadlock, a stuck disk) makes the asker wait with it. The publisher's watchdog checks all
publications of a node: if it asked on its own thread, one frozen mount would stop the
re-attaching of every other. So each question runs on a thread of its own, at most one per
mount at a time, and the watchdog only reads how long the outstanding one has waited.

The question is ``statvfs``: the kernel caches no statfs, so it always reaches the process,
and gns fuse answers it from memory (a ``stat`` of the root may come from the kernel's
attribute cache; a listing may wait on a slow owner).
"""
from __future__ import annotations

import errno
import os
import threading
import time

DISCONNECTED = frozenset({errno.ENOTCONN, errno.ECONNABORTED})
"""What a FUSE mount answers once its process is gone or its connection was aborted."""


class Probe:
    """The questions asked of one mount (a new mount gets a new probe: an answer that
    arrives late belongs to the mount it was asked of)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._asked: float | None = None
        """When the outstanding question was asked (monotonic); None when there is none."""
        self._answered_at = 0.0
        self._errno: int | None = None
        """The errno of the last answer; None for a good answer (or none yet)."""
        self._done = threading.Event()

    def ask(self, every: float = 0.0) -> None:
        """Ask now, unless a question is outstanding or the last answer is younger than
        ``every`` seconds."""
        with self._lock:
            if self._asked is not None or time.monotonic() - self._answered_at < every:
                return
            self._asked = time.monotonic()
            self._done.clear()
        threading.Thread(target=self._question, name="csi-fuse-probe", daemon=True).start()

    def _question(self) -> None:
        err: int | None = None
        try:
            os.statvfs(self.path)
        except OSError as exc:
            err = exc.errno
        with self._lock:
            self._errno, self._asked, self._answered_at = err, None, time.monotonic()
        self._done.set()

    def silent_for(self) -> float:
        """Seconds the outstanding question has waited (0 when none is outstanding)."""
        with self._lock:
            return 0.0 if self._asked is None else time.monotonic() - self._asked

    def disconnected(self) -> bool:
        """The last answer said the mount's process is gone."""
        with self._lock:
            return self._errno in DISCONNECTED

    def answers(self, timeout: float) -> bool:
        """Ask and wait up to ``timeout`` seconds: True if the process answered (with
        anything but "disconnected")."""
        self.ask()
        if not self._done.wait(timeout):
            return False
        return not self.disconnected()
