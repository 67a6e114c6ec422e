"""Refusing a write at ``open``, not at ``close``: what the mount knows of its own write grants.

The owner decides every commit (SPEC §10), but a staged file is committed when it is closed,
and close errors are what programs ignore: bash's ``echo x > f`` exited 0 for a user who
may only read, and the data was gone. So before ``create`` and ``open`` for writing, the
mount asks whether its own identity holds ``write`` there (``Client.acl_check`` on its own
subject, which needs no admin) and answers EACCES at once if it does not.

One check serves a whole directory: a grant on a prefix covers everything below it, so
``write`` on a file's directory is ``write`` on the file. Answers are kept ``ttl`` seconds
per path, and one check at a time runs per path (parallel creates in a fresh directory wait
for the first instead of each asking), so filling a directory costs one check per ``ttl``.

This is a forecast of the owner's decision, never a second authority: it refuses only on a
clear "no". It does not ask at all when access control is off (no TLS), for the
administrator, or for a cluster identity (a controller, which the owner trusts, or an edge
site, whose rights beyond its grants only the owner knows); and when a check fails for any
other reason (controller or etcd unreachable, too slow), the open goes ahead and the owner
decides at close, as before. A volume mounted at more than one path is judged as the owner
judges it: a write grant on any global path reaching the same bytes allows it. A grant
revoked after the open is still refused there. It never talks to etcd or gRPC but through
the ``Client``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from namespace.acl import ADMIN_SUBJECT

if TYPE_CHECKING:
    from federation.client import AccessReport, CallerIdentity

log = logging.getLogger(__name__)

DEFAULT_TTL = 2.0
"""Seconds an answer is kept: how long a new grant (or a revoke, which the owner enforces
anyway) takes to show at open. At ~400 creates/s, a check every 2 s is noise."""

Verdict = bool | None
"""True: may write. False: the grants say no. None: unknown; the owner decides at close."""


class AccessClient(Protocol):
    """What the gate needs of a :class:`~federation.client.Client`."""

    def whoami(self) -> CallerIdentity: ...

    def acl_check(self, path: str, subject: str, groups: list[str] | None = None) -> AccessReport: ...


def parent_of(gpath: str) -> str:
    """The directory of normal global path ``gpath`` (``/`` for a top-level name)."""
    head = gpath.rpartition("/")[0]
    return head or "/"


class WriteGate:
    """Whether this mount's identity may write a global path, asked of the grants and kept
    a little while. :meth:`cached` answers without blocking when it can; :meth:`check`
    blocks (run it in a worker thread). Thread-safe."""

    def __init__(self, client: AccessClient, *,
                 aliases: Callable[[str], list[str]] | None = None,
                 ttl: float = DEFAULT_TTL, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        # The other global paths showing the bytes at a path (NamespaceView.aliases_of).
        self._aliases = aliases
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        # Learnt on first use (no I/O in a constructor): (subject, groups), or None once it
        # is known that nothing is to be checked.
        self._who: tuple[str, list[str]] | None = None
        self._settled = False
        self._who_retry_at = 0.0
        self._verdicts: dict[str, tuple[Verdict, float]] = {}
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -- answers without blocking -----------------------------------------------------------
    def cached(self, gpath: str) -> Verdict:
        """True or False if that is already known, None if :meth:`check` must ask. An
        unknown answer kept from a failed check reads True: the open goes ahead."""
        if self._settled and self._who is None:
            return True
        if not self._settled:
            return None
        found, v = self._kept(parent_of(gpath))
        if not found:
            return None
        if v is not False:
            return True
        found, v = self._kept(gpath)
        if not found:
            return None
        return v is not False

    # -- asking ---------------------------------------------------------------------------
    def check(self, gpath: str) -> bool:
        """Blocking: False only if the grants clearly refuse this mount ``write`` on
        ``gpath``: on its directory, on itself, and its volume is mounted nowhere else."""
        who = self._identity()
        if who is None:
            return True
        if self._verdict(parent_of(gpath), lambda: self._ask(parent_of(gpath), who)) is not False:
            return True
        return self._verdict(gpath, lambda: self._ask_file(gpath, who)) is not False

    def defer(self, gpath: str) -> None:
        """A check that took too long: let opens in that directory go ahead for ``ttl``
        (the owner decides at close) rather than wait on it again."""
        self._keep(parent_of(gpath), None)

    def _identity(self) -> tuple[str, list[str]] | None:
        """(subject, groups) to check, or None when nothing is to be checked (or the
        identity is unknown for now: the owner decides, and it is asked again later)."""
        if self._settled:
            return self._who
        if self._clock() < self._who_retry_at:
            return None
        try:
            me = self._client.whoami()
        except Exception as exc:  # noqa: BLE001 - any failure: the owner decides, as before
            log.warning("gns fuse: cannot tell this mount's identity (%s): writes are checked "
                        "at close only for now", exc)
            self._who_retry_at = self._clock() + self.ttl
            return None
        subject = me.identity
        if not me.access_control or subject is None or subject == ADMIN_SUBJECT \
                or subject.startswith("cluster:"):
            self._who = None
        else:
            self._who = (subject, list(me.groups))
        self._settled = True
        return self._who

    def _verdict(self, path: str, ask: Callable[[], Verdict]) -> Verdict:
        """``path``'s answer, kept or asked; one ask at a time per path."""
        found, v = self._kept(path)
        if found:
            return v
        with self._lock:
            found, v = self._kept(path)
            if found:
                return v
            running = self._inflight.get(path)
            if running is None:
                self._inflight[path] = threading.Event()
        if running is not None:
            running.wait(self.ttl * 5)
            found, v = self._kept(path)
            return v if found else None
        try:
            v = ask()
            self._keep(path, v)
            return v
        finally:
            with self._lock:
                self._inflight.pop(path).set()

    def _ask(self, path: str, who: tuple[str, list[str]]) -> Verdict:
        subject, groups = who
        try:
            report = self._client.acl_check(path, subject, groups)
        except Exception as exc:  # noqa: BLE001 - not a denial of the write: the owner decides
            log.warning("gns fuse: write check of %s for %s failed (%s): the owner decides at "
                        "close", path, subject, exc)
            return None
        return "write" in report.perms

    def _ask_file(self, gpath: str, who: tuple[str, list[str]]) -> Verdict:
        """A file whose directory is refused: a grant on the file itself may still allow
        it, and so may one on another path showing the same bytes (its volume mounted
        there too), as the owner takes it. Refused only if every one of them is."""
        v = self._ask(gpath, who)
        if v is not False:
            return v
        if self._aliases is None:
            return False
        try:
            others = self._aliases(gpath)
        except Exception:  # noqa: BLE001 - cannot tell: do not refuse
            return None
        for other in others:
            seen = self._ask(other, who)
            if seen is not False:
                return seen
        return False

    # -- the kept answers -------------------------------------------------------------------
    def _kept(self, path: str) -> tuple[bool, Verdict]:
        got = self._verdicts.get(path)
        if got is None or got[1] <= self._clock():
            return False, None
        return True, got[0]

    def _keep(self, path: str, v: Verdict) -> None:
        now = self._clock()
        with self._lock:
            if len(self._verdicts) >= self.max_entries:
                for p in [p for p, (_, until) in self._verdicts.items() if until <= now]:
                    del self._verdicts[p]
                if len(self._verdicts) >= self.max_entries:
                    self._verdicts.clear()
            self._verdicts[path] = (v, now + self.ttl)
