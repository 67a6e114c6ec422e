"""Access-control grants on global paths (SPEC §10): their etcd schema, store and checker.

A grant gives one SUBJECT (``user:NAME``, ``group:NAME``, ``cluster:ID`` or ``*``) a set of
permissions (``read``, ``write``, ``admin``) on a global path and everything below it, on
whole components (``/data`` covers ``/data/x`` but not ``/database``). ``admin`` implies
``read`` and ``write``. The federation's administrator (identity ``user:client``, made by
``gns certs init``) holds ``admin`` on ``/`` without a stored grant, so a fresh federation
can never lock its owner out.

etcd keys (under the namespace's root, beside the keys drawn in ``namespace.__doc__``)::

    acl/<quoted path>/<quoted subject>   {"path", "subject", "perms": [...]}

One key per (path, subject) makes grant and revoke single-key transactions. Controllers keep
every grant in memory (:class:`AclCache`, fed by one prefix watch) and answer
:meth:`Grants.allowed` with one dict lookup per path component, so a check costs a few
microseconds however many grants exist.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from namespace import schema
from namespace.errors import InvalidInput, NotFound
from namespace.etcd import Etcd
from namespace.paths import ancestors, check_name, normalize

log = logging.getLogger(__name__)

ACL = schema.ROOT + "acl/"
PERMS = ("read", "write", "admin")
ADMIN_SUBJECT = "user:client"
"""The administrator ``gns certs init`` makes: admin on ``/`` by construction."""

_IMPLIED: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"write"}),
    "admin": frozenset({"read", "write", "admin"}),
}
# User and group names: what a certificate subject can carry and a shell can type.
_PRINCIPAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def check_subject(subject: str) -> str:
    """``subject`` if it is ``*``, ``user:NAME``, ``group:NAME`` or ``cluster:ID``."""
    if not isinstance(subject, str):
        raise InvalidInput("subject must be a string")
    if subject == "*":
        return subject
    kind, sep, name = subject.partition(":")
    if not sep or kind not in ("user", "group", "cluster"):
        raise InvalidInput(
            f"invalid subject {subject!r}: expected user:NAME, group:NAME, cluster:ID or *"
        )
    if kind == "cluster":
        check_name("cluster", name)
    elif not _PRINCIPAL.fullmatch(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: letters, digits and . _ @ - (not first), at most 128"
        )
    return subject


def check_principal(kind: str, name: str) -> str:
    """A user or group name as certificates carry them."""
    if not isinstance(name, str) or not _PRINCIPAL.fullmatch(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: letters, digits and . _ @ - (not first), at most 128"
        )
    return name


def parse_perms(perms: str | Iterable[str]) -> frozenset[str]:
    """``read,write`` (or a list) as a set; refuses unknown or empty permissions."""
    items = perms.split(",") if isinstance(perms, str) else list(perms)
    out = set()
    for raw in items:
        p = raw.strip() if isinstance(raw, str) else raw
        if p not in PERMS:
            raise InvalidInput(f"invalid permission {raw!r}: a comma list of read, write, admin")
        out.add(p)
    if not out:
        raise InvalidInput("no permission given: a comma list of read, write, admin")
    return frozenset(out)


def grant_key(path: str, subject: str) -> bytes:
    return (ACL + quote(path, safe="") + "/" + quote(subject, safe="")).encode()


def _parse_key(key: bytes) -> tuple[str, str] | None:
    rest = key.decode()[len(ACL):]
    qpath, sep, qsubject = rest.rpartition("/")
    if not sep:
        return None
    return unquote(qpath), unquote(qsubject)


@dataclass(frozen=True)
class Grant:
    path: str
    subject: str
    perms: frozenset[str]

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "subject": self.subject,
                "perms": [p for p in PERMS if p in self.perms]}


def _hit(granted: dict[str, frozenset[str]], subjects: tuple[str, ...], perm: str) -> bool:
    for s in subjects:
        perms = granted.get(s)
        if perms is not None and perm in perms:
            return True
    return False


class Grants:
    """Every grant, indexed by path: answers "may these subjects do P on this path?"."""

    def __init__(self) -> None:
        # path -> subject -> the permissions it implies (admin expanded)
        self._by_path: dict[str, dict[str, frozenset[str]]] = {}
        self._raw: dict[tuple[str, str], Grant] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def set(self, grant: Grant) -> None:
        self._raw[(grant.path, grant.subject)] = grant
        implied = frozenset().union(*(_IMPLIED[p] for p in grant.perms))
        self._by_path.setdefault(grant.path, {})[grant.subject] = implied

    def remove(self, path: str, subject: str) -> None:
        self._raw.pop((path, subject), None)
        subjects = self._by_path.get(path)
        if subjects is not None:
            subjects.pop(subject, None)
            if not subjects:
                del self._by_path[path]

    def all(self) -> list[Grant]:
        return [self._raw[k] for k in sorted(self._raw)]

    def effective(self, subjects: Iterable[str], path: str) -> frozenset[str]:
        """The permissions ``subjects`` (one caller's identity, groups and ``*``) hold on
        normal ``path``."""
        subjects = tuple(subjects)
        if ADMIN_SUBJECT in subjects:
            return _IMPLIED["admin"]
        found: set[str] = set()
        by_path = self._by_path
        for prefix in ancestors(path):
            granted = by_path.get(prefix)
            if granted:
                for s in subjects:
                    perms = granted.get(s)
                    if perms:
                        found |= perms
        return frozenset(found)

    def allowed(self, subjects: Iterable[str], path: str, perm: str) -> bool:
        """May ``subjects`` do ``perm`` on normal ``path``? One dict lookup per component
        (plus one per subject where a component has grants); no allocation but slices."""
        subjects = subjects if isinstance(subjects, tuple) else tuple(subjects)
        if ADMIN_SUBJECT in subjects:
            return True
        by_path = self._by_path
        if not by_path:
            return False
        granted = by_path.get("/")
        if granted and _hit(granted, subjects, perm):
            return True
        if path == "/":
            return False
        end = path.find("/", 1)
        while True:
            granted = by_path.get(path if end == -1 else path[:end])
            if granted and _hit(granted, subjects, perm):
                return True
            if end == -1:
                return False
            end = path.find("/", end + 1)

    def relevant(self, path: str) -> list[Grant]:
        """Grants on ``path``, its ancestors and everything below it."""
        up = set(ancestors(path))
        below = path.rstrip("/") + "/"
        return [g for g in self.all() if g.path in up or g.path.startswith(below)]

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply one etcd key of the ``acl/`` prefix (None = deleted)."""
        parsed = _parse_key(key)
        if parsed is None:
            return
        path, subject = parsed
        if value is None:
            self.remove(path, subject)
            return
        try:
            doc = json.loads(value)
            grant = Grant(normalize(doc["path"]), check_subject(doc["subject"]), parse_perms(doc["perms"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed grant %s: %s", key.decode(errors="replace"), exc)
            return
        self.set(grant)


# -- the store (etcd) ---------------------------------------------------------------------

async def load_grants(etcd: Etcd) -> tuple[Grants, int]:
    kvs, revision = await etcd.get_prefix(ACL.encode())
    grants = Grants()
    for key, value in kvs:
        grants.apply(key, value)
    return grants, revision


async def grant(etcd: Etcd, path: str, subject: str, perms: str | Iterable[str]) -> Grant:
    """Add ``perms`` to what ``subject`` holds on ``path`` (one transaction; races retry)."""
    path = normalize(path)
    check_subject(subject)
    wanted = parse_perms(perms)
    key = grant_key(path, subject)
    tx = etcd.tx
    for _ in range(10):
        kv = await etcd.call(etcd.client.get, key)
        held: frozenset[str] = frozenset()
        if kv is not None:
            held = parse_perms(json.loads(kv.value)["perms"])
        g = Grant(path, subject, held | wanted)
        body = json.dumps(g.as_dict()).encode()
        cond = [tx.create(key) == 0] if kv is None else [tx.mod(key) == kv.mod_revision]
        ok, _ = await etcd.txn(cond, [tx.put(key, body)])
        if ok:
            return g
    raise InvalidInput(f"grant on {path} kept changing under us; try again")


async def revoke(etcd: Etcd, path: str, subject: str) -> None:
    """Remove every permission ``subject`` holds by a grant on exactly ``path``."""
    path = normalize(path)
    check_subject(subject)
    key = grant_key(path, subject)
    tx = etcd.tx
    ok, _ = await etcd.txn([tx.create(key) != 0], [tx.delete(key)])
    if not ok:
        raise NotFound(f"no grant for {subject} on {path}")


async def list_grants(etcd: Etcd, path: str | None = None) -> list[dict[str, object]]:
    grants, _ = await load_grants(etcd)
    found = grants.all() if path is None else grants.relevant(normalize(path))
    return [g.as_dict() for g in found]


def check_report(grants: Grants, path: str, subject: str, groups: Iterable[str] = (),
                 controller: bool = False, aliases: Iterable[str] = ()) -> dict[str, object]:
    """What ``gns acl check PATH --as SUBJECT`` prints: effective permissions and why.
    ``controller``: the subject is a controller of the federation (a registered cluster
    that is no linked edge site), which controllers trust with everything, whatever the
    grants say. ``aliases``: the other global paths showing the same bytes (its volume
    mounted again); a grant on any of them reaches them, as controllers decide
    (``Authorizer._check``), so the report counts them too."""
    path = normalize(path)
    check_subject(subject)
    group_list = [check_principal("group", g) for g in groups]
    subjects = [subject, "*", *(f"group:{g}" for g in group_list)]
    shown = [path, *(normalize(a) for a in aliases)]
    perms: frozenset[str] = _IMPLIED["admin"] if controller else frozenset().union(
        *(grants.effective(subjects, p) for p in shown))
    up = {a for p in shown for a in ancestors(p)}
    via = [g.as_dict() for g in grants.all() if g.path in up and g.subject in subjects]
    return {
        "path": path, "subject": subject, "groups": group_list,
        "perms": [p for p in PERMS if p in perms],
        "admin_by_default": subject == ADMIN_SUBJECT or controller,
        "grants": via,
    }


class AclCache:
    """Every grant, kept current by an etcd prefix watch (what each controller checks)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.grants = Grants()
        self.revision = 0
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) after every change of the grants."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def start(self) -> None:
        self.grants, self.revision = await load_grants(self.etcd)
        self._task = asyncio.create_task(self._follow(), name="acl-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _follow(self) -> None:
        prefix = ACL.encode()
        while True:
            try:
                watch = await self.etcd.call(
                    self.etcd.client.watch_prefix, prefix, start_revision=self.revision + 1
                )
                async for event in watch:
                    value = None if event.kind == "DELETE" else event.kv.value
                    self.grants.apply(event.kv.key, value)
                    self.revision = max(self.revision, event.kv.mod_revision)
                    self._changed()
                raise ConnectionError("watch stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost stream or compaction: reload everything
                log.info("acl watch lost (%s); reloading", exc)
                while True:
                    await asyncio.sleep(0.2)
                    try:
                        self.grants, self.revision = await load_grants(self.etcd)
                        self._changed()
                        break
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc2:
                        log.warning("acl reload failed (%s); retrying", exc2)
