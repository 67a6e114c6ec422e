"""What :class:`~federation.client.Client` methods return: typed, immutable results.

Each model's ``to_json()`` is exactly the JSON ``gns ... --json`` prints (SPEC §4; extra
fields only where SPEC says "more fields may be added"), and ``from_json()`` reads that JSON
back: the ``--controller`` client (:mod:`federation.remote`) receives results as JSON from
the controller's Control service, which runs the etcd-path code and sends ``to_json()``.

Records the control plane already models are reused as they are: clusters, volumes and
mounts are :mod:`namespace.models` (pydantic), an access grant is :class:`namespace.acl.Grant`.
Nothing here talks to the network; protobuf replies are converted in the client modules.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from namespace.acl import Grant
    from namespace.models import ClusterView, Mount, VolumeView

__all__ = [
    "AccessReport", "CallerIdentity", "Change", "DirEntry", "Divergence", "EdgeBacklog", "EdgeSite",
    "EdgeToken", "FailoverSettings", "FileInfo", "MirrorApplyResult", "MirrorPlanEntry",
    "MirrorPolicySummary", "MirrorStatus", "MirrorTargetStatus", "MirrorVerifyReport",
    "Replica", "Resolution", "Status", "VolumeOwner", "VolumeStatus", "grant_from_json",
]

FileType = Literal["file", "dir"]
Json = dict[str, Any]
"""One JSON object, as ``json.loads`` gives it."""


# -- data (SPEC §5) ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file or directory as ``stat`` and ``put`` report it (``gns stat --json``)."""

    path: str
    type: FileType
    size: int
    mtime: float
    sha256: str
    version: int
    """The volume version that last changed this path."""
    mode: int
    served_by: str | None = None
    """The cluster that answered, when it was not the owner (a replica or away-site mirror)."""
    stale: bool = False
    """Served by a mirror while the owner (an edge site) is away: maybe not the newest."""
    mirrored_version: int | None = None
    """With ``stale``: the volume version that mirror holds."""

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    def to_json(self) -> Json:
        out: Json = {
            "path": self.path, "type": self.type, "size": self.size, "mtime": self.mtime,
            "sha256": self.sha256, "version": self.version, "mode": self.mode,
        }
        # Present only when they say something, as the CLI always printed them.
        if self.served_by:
            out["served_by"] = self.served_by
        if self.stale:
            out["stale"] = True
        if self.mirrored_version is not None:
            out["mirrored_version"] = self.mirrored_version
        return out


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One entry of a directory listing (``ls``, ``listdir``)."""

    name: str
    type: FileType
    size: int
    mtime: float
    """0 for a directory that only exists because files are below it."""
    mode: int
    """Permission bits; 0 for implicit directories."""

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    def to_json(self) -> Json:
        """SPEC §4's ``ls`` entry: name, type and size."""
        return {"name": self.name, "type": self.type, "size": self.size}


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of a volume, as ``Client.watch`` streams them (version order)."""

    version: int
    op: str
    """What happened: ``put``, ``delete``, ``rename``, ``mkdir``, ``rmdir``, ``chmod``, ..."""
    path: str
    """The global path changed (a rename's new name)."""
    src: str
    """A rename's old global path ("" otherwise)."""
    volume: str
    relative_path: str
    size: int
    mtime: float
    mode: int

    def to_json(self) -> Json:
        return {
            "version": self.version, "op": self.op, "path": self.path, "src": self.src,
            "volume": self.volume, "relative_path": self.relative_path, "size": self.size,
            "mtime": self.mtime, "mode": self.mode,
        }


# -- resolve (SPEC §4) ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VolumeOwner:
    cluster: str
    endpoint: str
    epoch: int

    def to_json(self) -> Json:
        return {"cluster": self.cluster, "endpoint": self.endpoint, "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class Replica:
    """A mirror target holding a volume: a cluster id or an object-store URI."""

    target: str
    version: int
    lag_seconds: float

    def to_json(self) -> Json:
        return {"target": self.target, "version": self.version, "lag_seconds": self.lag_seconds}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Replica:
        return cls(target=d["target"], version=d["version"], lag_seconds=d["lag_seconds"])


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a global path lives (``gns resolve PATH``): mount, volume, owner, replicas."""

    path: str
    mount: str
    volume: str
    relative_path: str
    owner: VolumeOwner
    replicas: list[Replica]
    """Nearest (least lag, clusters before object stores) first."""
    stale: bool = False
    """The owner is an edge site that is away: reads come from ``served_by``."""
    mirrored_version: int | None = None
    served_by: str | None = None

    def to_json(self) -> Json:
        out: Json = {
            "path": self.path, "mount": self.mount, "volume": self.volume,
            "relative_path": self.relative_path, "owner": self.owner.to_json(),
            "replicas": [r.to_json() for r in self.replicas],
        }
        if self.stale:
            out.update(stale=True, mirrored_version=self.mirrored_version, served_by=self.served_by)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Resolution:
        o = d["owner"]
        return cls(
            path=d["path"], mount=d["mount"], volume=d["volume"], relative_path=d["relative_path"],
            owner=VolumeOwner(cluster=o["cluster"], endpoint=o["endpoint"], epoch=o["epoch"]),
            replicas=[Replica.from_json(r) for r in d.get("replicas", [])],
            stale=bool(d.get("stale", False)), mirrored_version=d.get("mirrored_version"),
            served_by=d.get("served_by"),
        )


# -- mirror policies (SPEC §4, §6) --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MirrorTargetStatus:
    """One target of ``mirror status`` (the rules for ``state`` are in :mod:`mirroring.status`)."""

    target: str
    state: Literal["Synced", "Syncing", "Lagging", "Error"]
    version: int
    """Volume version the target fully holds (0: nothing yet)."""
    lag_versions: int
    lag_seconds: float
    bytes: int
    files: int
    last_error: str | None
    """Why the target is failing; None while it is not (a recovered error is not shown)."""
    synced_at: float | None
    error_at: float | None = None
    """When ``last_error`` happened."""

    def to_json(self) -> Json:
        return {
            "target": self.target, "state": self.state, "version": self.version,
            "lag_versions": self.lag_versions, "lag_seconds": self.lag_seconds,
            "bytes": self.bytes, "files": self.files, "last_error": self.last_error,
            "synced_at": self.synced_at, "error_at": self.error_at,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MirrorTargetStatus:
        return cls(
            target=d["target"], state=d["state"], version=d["version"],
            lag_versions=d["lag_versions"], lag_seconds=d["lag_seconds"], bytes=d["bytes"],
            files=d["files"], last_error=d.get("last_error"), synced_at=d.get("synced_at"),
            error_at=d.get("error_at"),
        )


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """One policy of ``mirror status``: its volume, mode and every target's state."""

    policy: str
    volume: str
    mode: str
    targets: list[MirrorTargetStatus]

    def target(self, name: str) -> MirrorTargetStatus | None:
        return next((t for t in self.targets if t.target == name), None)

    def to_json(self) -> Json:
        return {"policy": self.policy, "volume": self.volume, "mode": self.mode,
                "targets": [t.to_json() for t in self.targets]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MirrorStatus:
        return cls(policy=d["policy"], volume=d["volume"], mode=d["mode"],
                   targets=[MirrorTargetStatus.from_json(t) for t in d.get("targets", [])])


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    """A policy's ``failover`` block as ``mirror list`` shows it."""

    automatic: bool
    after: str
    priority: list[str]
    promote_to: str | None

    def to_json(self) -> Json:
        return {"automatic": self.automatic, "after": self.after, "priority": self.priority,
                "promoteTo": self.promote_to}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FailoverSettings:
        return cls(automatic=d["automatic"], after=d["after"], priority=list(d.get("priority", [])),
                   promote_to=d.get("promoteTo"))


@dataclass(frozen=True, slots=True)
class MirrorPolicySummary:
    """One row of ``mirror list``; durations as written in the policy (``30s``, ``5m``)."""

    name: str
    volume: str
    mode: str
    interval: str | None
    targets: list[str]
    failover: FailoverSettings
    max_lag: str

    def to_json(self) -> Json:
        return {"name": self.name, "volume": self.volume, "mode": self.mode,
                "interval": self.interval, "targets": self.targets,
                "failover": self.failover.to_json(), "maxLag": self.max_lag}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MirrorPolicySummary:
        return cls(name=d["name"], volume=d["volume"], mode=d["mode"], interval=d.get("interval"),
                   targets=list(d["targets"]), failover=FailoverSettings.from_json(d["failover"]),
                   max_lag=d["maxLag"])


@dataclass(frozen=True, slots=True)
class MirrorPlanEntry:
    """What a first pass would copy to one target (None: only the owner's journal knows)."""

    target: str
    files: int | None
    bytes: int | None

    def to_json(self) -> Json:
        return {"target": self.target, "files": self.files, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class MirrorApplyResult:
    """What ``mirror apply`` did: ``action`` created, updated, unchanged or dry-run (then
    ``change`` says which of the first three it would have been, and ``plan`` what moves)."""

    policy: str
    action: str
    volume: str
    mode: str
    targets: list[str]
    change: str | None = None
    plan: list[MirrorPlanEntry] | None = None
    previous_volume: str | None = None
    """The volume the policy mirrored before this document moved it to ``volume``."""

    def to_json(self) -> Json:
        out: Json = {"policy": self.policy, "action": self.action, "volume": self.volume,
                     "mode": self.mode, "targets": self.targets}
        if self.previous_volume is not None:
            out["previous_volume"] = self.previous_volume
        if self.action == "dry-run":
            out["change"] = self.change
            out["plan"] = [p.to_json() for p in self.plan or []]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MirrorApplyResult:
        plan = d.get("plan")
        return cls(
            policy=d["policy"], action=d["action"], volume=d["volume"], mode=d["mode"],
            targets=list(d["targets"]), change=d.get("change"),
            previous_volume=d.get("previous_volume"),
            plan=None if plan is None else [
                MirrorPlanEntry(target=p["target"], files=p.get("files"), bytes=p.get("bytes")) for p in plan
            ],
        )


@dataclass(frozen=True, slots=True)
class MirrorVerifyReport:
    """``mirror verify`` for one target: paths missing, extra or different there."""

    target: str
    version: int
    missing: list[str]
    extra: list[str]
    mismatched: list[str]
    repaired: bool
    ok: bool
    error: str | None
    deep: bool = False
    """The target's bytes were re-read and hashed (``--deep``), not only its recorded sha256."""

    def to_json(self) -> Json:
        return {"target": self.target, "version": self.version, "missing": self.missing,
                "extra": self.extra, "mismatched": self.mismatched, "repaired": self.repaired,
                "ok": self.ok, "error": self.error, "deep": self.deep}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MirrorVerifyReport:
        return cls(target=d["target"], version=d["version"], missing=list(d["missing"]),
                   extra=list(d["extra"]), mismatched=list(d["mismatched"]), repaired=d["repaired"],
                   ok=d["ok"], error=d.get("error"), deep=bool(d.get("deep", False)))


# -- status (SPEC §4) ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Divergence:
    """Writes a former owner kept after a forced promotion (they never reached the new owner)."""

    cluster: str
    epoch: int
    paths: list[str]

    def to_json(self) -> Json:
        return {"cluster": self.cluster, "epoch": self.epoch, "paths": self.paths}


@dataclass(frozen=True, slots=True)
class VolumeStatus:
    """A volume in ``gns status``: :class:`~namespace.models.VolumeView` plus divergences."""

    name: str
    owner: str
    epoch: int
    version: int
    state: Literal["Ready", "Down"]
    diverged: list[Divergence]
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, v: VolumeView, diverged: list[Divergence]) -> VolumeStatus:
        return cls(name=v.name, owner=v.owner, epoch=v.epoch, version=v.version, state=v.state,
                   diverged=diverged, labels=dict(v.labels))

    def to_json(self) -> Json:
        out: Json = {"name": self.name, "owner": self.owner, "epoch": self.epoch,
                     "version": self.version, "state": self.state,
                     "diverged": [d.to_json() for d in self.diverged]}
        if self.labels:  # as `volume show` says them: only where a volume has some
            out["labels"] = dict(self.labels)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VolumeStatus:
        return cls(name=d["name"], owner=d["owner"], epoch=d["epoch"], version=d["version"],
                   state=d["state"], diverged=[
                       Divergence(cluster=r["cluster"], epoch=r["epoch"], paths=list(r["paths"]))
                       for r in d.get("diverged", [])
                   ], labels=dict(d.get("labels") or {}))


@dataclass(frozen=True, slots=True)
class Status:
    """``gns status``: the whole federation with health and lag."""

    leader: str | None
    clusters: list[ClusterView]
    volumes: list[VolumeStatus]
    mounts: list[Mount]
    mirrors: list[MirrorStatus]

    def to_json(self) -> Json:
        return {
            "leader": self.leader,
            "clusters": [c.model_dump() for c in self.clusters],
            "volumes": [v.to_json() for v in self.volumes],
            "mounts": [m.model_dump() for m in self.mounts],
            "mirrors": [m.to_json() for m in self.mirrors],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Status:
        from namespace.models import ClusterView, Mount

        return cls(
            leader=d.get("leader"),
            clusters=[ClusterView.model_validate(c) for c in d.get("clusters", [])],
            volumes=[VolumeStatus.from_json(v) for v in d.get("volumes", [])],
            mounts=[Mount.model_validate(m) for m in d.get("mounts", [])],
            mirrors=[MirrorStatus.from_json(m) for m in d.get("mirrors", [])],
        )


# -- access control (SPEC §10) -------------------------------------------------------------------
def grant_from_json(d: Mapping[str, Any]) -> Grant:
    """A :class:`namespace.acl.Grant` from its ``as_dict()`` JSON."""
    from namespace.acl import Grant

    return Grant(path=d["path"], subject=d["subject"], perms=frozenset(d["perms"]))


@dataclass(frozen=True, slots=True)
class AccessReport:
    """``gns acl check``: what a subject may do on a path, and the grants that say so."""

    path: str
    subject: str
    groups: list[str]
    perms: list[str]
    """Effective permissions, in ``read, write, admin`` order."""
    admin_by_default: bool
    """The subject is the administrator identity, or a controller of the federation (a
    registered cluster that is no linked edge site): either may do everything."""
    grants: list[Grant]

    def to_json(self) -> Json:
        return {"path": self.path, "subject": self.subject, "groups": self.groups,
                "perms": self.perms, "admin_by_default": self.admin_by_default,
                "grants": [g.as_dict() for g in self.grants]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AccessReport:
        return cls(path=d["path"], subject=d["subject"], groups=list(d["groups"]),
                   perms=list(d["perms"]), admin_by_default=d["admin_by_default"],
                   grants=[grant_from_json(g) for g in d["grants"]])


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who a controller takes the caller for (``whoami``); None without access control."""

    identity: str | None
    groups: list[str]
    access_control: bool

    def to_json(self) -> Json:
        return {"identity": self.identity, "groups": self.groups, "access_control": self.access_control}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CallerIdentity:
        return cls(identity=d.get("identity"), groups=list(d.get("groups", [])),
                   access_control=bool(d.get("access_control")))


# -- edge sites (SPEC §8) ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EdgeToken:
    """A single-use join token for one site (``gns edge token create``)."""

    token: str
    site: str
    hub: str
    expires_at: float

    def to_json(self) -> Json:
        return {"token": self.token, "site": self.site, "hub": self.hub, "expires_at": self.expires_at}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EdgeToken:
        return cls(token=d["token"], site=d["site"], hub=d["hub"], expires_at=d["expires_at"])


@dataclass(frozen=True, slots=True)
class EdgeBacklog:
    """Changes committed at a site and not yet shipped to its hub."""

    versions: int
    bytes: int

    def to_json(self) -> Json:
        return {"versions": self.versions, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class EdgeSite:
    """A joined edge site (``gns edge list``)."""

    site: str
    hub: str
    state: Literal["Ready", "Down"]
    connected_since: float | None
    backlog: EdgeBacklog
    # None while Ready (the hub's live count); for a Down site, when it last reported the
    # backlog shown (it may have grown since: the site goes on writing while away).
    backlog_as_of: float | None = None

    def to_json(self) -> Json:
        return {"site": self.site, "hub": self.hub, "state": self.state,
                "connected_since": self.connected_since, "backlog": self.backlog.to_json(),
                "backlog_as_of": self.backlog_as_of}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EdgeSite:
        b = d.get("backlog") or {}
        return cls(site=d["site"], hub=d["hub"], state=d["state"], connected_since=d.get("connected_since"),
                   backlog=EdgeBacklog(versions=b.get("versions", 0), bytes=b.get("bytes", 0)),
                   backlog_as_of=d.get("backlog_as_of"))
