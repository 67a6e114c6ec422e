"""The control commands of :class:`~federation.client.Client` on the etcd path (SPEC §4):
clusters, volumes, mounts, access grants, status, edge sites and mirror policies.

A ``--controller`` client (:mod:`federation.remote`) overrides each of these with one call
to the controller's Control service, which runs this very code.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.client.connection import Connection
from federation.client.models import (
    AccessReport,
    CallerIdentity,
    Divergence,
    EdgeSite,
    EdgeToken,
    MirrorApplyResult,
    MirrorPolicySummary,
    MirrorStatus,
    MirrorVerifyReport,
    Resolution,
    Status,
    VolumeStatus,
    grant_from_json,
)
from federation.client.streams import Progress
from federation.resolution import describe
from namespace.cache import NamespaceView
from namespace.errors import (
    Conflict,
    GnsError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from namespace.models import ClusterView, Mount, VolumeView
from namespace.paths import check_name

if TYPE_CHECKING:
    from namespace.acl import Grant

SYNC_TRIGGER_TIMEOUT = 30.0
"""Seconds a ``mirror sync`` without ``wait`` may take: the owner only starts its passes."""
SYNC_WAIT_TIMEOUT = 3600.0
"""Seconds a ``mirror sync --wait`` may take: until every target holds the current version."""
VERIFY_TIMEOUT = 3600.0
"""Seconds a ``mirror verify`` may take: it hashes (and repairs) every target."""


class ControlCommands(Connection):
    """The control-plane half of :class:`~federation.client.Client` (a base class of it)."""

    def clusters(self) -> list[ClusterView]:
        return self._run(self._control().clusters())

    def cluster(self, cluster_id: str) -> ClusterView:
        return self._run(self._control().cluster(cluster_id))

    def remove_cluster(self, cluster_id: str) -> None:
        self._run(self._control().remove_cluster(cluster_id))

    def create_volume(self, name: str, cluster: str,
                      labels: dict[str, str] | None = None) -> VolumeView:
        return self._run(self._control().create_volume(name, cluster, labels))

    def volumes(self) -> list[VolumeView]:
        found = self._run(self._control().volumes())
        view = self.view()
        return [self._live_version(v, view) for v in found]

    def volume(self, name: str) -> VolumeView:
        return self._live_version(self._run(self._control().volume(name)), self.view())

    def _live_version(self, v: VolumeView, view: NamespaceView) -> VolumeView:
        """The owner's committed version if it answers (etcd's copy is batched)."""
        if v.state != "Ready":
            return v
        try:
            spec = view.clusters.get(v.owner)
            if spec is None:
                return v
            reply = self._stub(spec.endpoint).VolumeState(
                pb.VolumeStateRequest(volume=v.name), timeout=2.0
            )
            return v.model_copy(update={"version": max(v.version, reply.version)})
        except (grpc.RpcError, GnsError):
            return v

    def remove_volume(self, name: str) -> None:
        """Forget volume ``name``; refused (Conflict) while a mount or policy names it."""
        self._run(self._control().remove_volume(name))

    def promote(self, name: str, to: str, *, force: bool = False) -> VolumeView:
        """Make ``to`` (a cluster, or an object-store target of the volume's policy) own
        volume ``name``. Refused while the owner is Ready unless ``force`` (planned hand-over:
        drain, final sync, switch)."""
        check_name("volume", name)
        if not to or ("://" not in to):
            check_name("cluster", to)
        view = self.view()
        vol = view.volumes.get(name)
        if vol is None:
            raise NotFound(f"volume {name!r} not found")
        # What the controller checks first (failover.promote), so the answer is the same
        # with or without --force: a target that does not exist is "not found".
        if "://" not in to and to not in view.clusters:
            raise NotFound(f"cluster {to!r} not found")
        if vol.owner in view.alive and not force:
            raise Conflict(f"owner {vol.owner} of volume {name!r} is Ready; use --force for a planned hand-over")
        # Any Ready controller can orchestrate; prefer the one taking over, then the leader.
        entry = next((c for c in (to, view.leader) if c and c in view.alive and c in view.clusters),
                     next(iter(sorted(view.alive)), None))
        if entry is None:
            raise Unavailable("no controller is Ready to carry out the promotion")
        stub = pb_grpc.FailoverStub(self._channel(view.clusters[entry].endpoint))
        try:
            stub.Promote(pb.PromoteRequest(volume=name, to=to, force=force, reason="manual"), timeout=3600)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"cluster {entry}") from None
        return self.volume(name)

    def add_mount(self, path: str, target: str) -> Mount:
        return self._run(self._control().add_mount(path, target))

    def mounts(self) -> list[Mount]:
        return self._run(self._control().mounts())

    def remove_mount(self, path: str) -> None:
        self._run(self._control().remove_mount(path))

    # -- access control (SPEC §10) ---------------------------------------------------------
    def acl_grant(self, path: str, subject: str, perms: str) -> Grant:
        from namespace import acl

        return self._run(acl.grant(self._control().etcd, path, subject, perms))

    def acl_revoke(self, path: str, subject: str) -> None:
        from namespace import acl

        self._run(acl.revoke(self._control().etcd, path, subject))

    def acl_list(self, path: str | None = None) -> list[Grant]:
        from namespace import acl

        return [grant_from_json(g) for g in self._run(acl.list_grants(self._control().etcd, path))]

    def acl_check(self, path: str, subject: str, groups: list[str] | None = None) -> AccessReport:
        from namespace import acl

        grants, _ = self._run(acl.load_grants(self._control().etcd))
        kind, _, name = subject.partition(":")
        spec = self.view().clusters.get(name) if kind == "cluster" else None
        return AccessReport.from_json(acl.check_report(
            grants, path, subject, groups or [],
            controller=spec is not None and not spec.linked_site, aliases=self.view().aliases_of(path)))

    def whoami(self) -> CallerIdentity:
        """Who controllers take this client for: the identity in the certificate it dials
        with (``identity`` in ``tls_dir``). Without TLS there is none, and no access control."""
        if self.tls_dir is None:
            return CallerIdentity(identity=None, groups=[], access_control=False)
        from federation.tls import identity_file  # cryptography: only when asked

        who = identity_file(self.tls_dir, self.identity)
        return CallerIdentity(identity=who.subject, groups=list(who.groups), access_control=True)

    def resolve(self, path: str) -> Resolution:
        return Resolution.from_json(describe(self.view(), path))

    def status(self) -> Status:
        """Clusters, volumes, mounts and mirrors with health and lag (``gns status``)."""
        view = self.view()
        clusters = [c for c in map(view.cluster_view, sorted(view.clusters)) if c is not None]
        volumes = []
        for name in sorted(view.volumes):
            v = view.volume_view(name)
            if v is None:  # view.volumes names it: cannot happen, but never fail `gns status`
                continue
            diverged = [
                Divergence(cluster=r["cluster"], epoch=r["epoch"], paths=list(r["paths"]))
                for r in view.diverged.values() if r.get("volume") == name
            ]
            volumes.append(VolumeStatus.of(self._live_version(v, view), diverged))
        return Status(leader=view.leader, clusters=clusters, volumes=volumes,
                      mounts=view.mount_list(), mirrors=self._mirror_statuses(view))

    def _mirror_statuses(self, view: NamespaceView, name: str | None = None) -> list[MirrorStatus]:
        from mirroring.status import statuses

        return [MirrorStatus.from_json(p) for p in statuses(view, name)]

    # -- edge sites (SPEC §8) -------------------------------------------------------------
    def edge_token_create(self, site: str, *, ttl: float = 3600.0, hub: str | None = None) -> EdgeToken:
        """A single-use join token for ``site``, pinning this federation's CA."""
        from namespace import edge

        check_name("site", site)
        view = self.view()
        if hub is None:
            ready = sorted(c for c in view.alive if c in view.clusters and view.clusters[c].provider != "edge")
            hub = view.leader if view.leader in ready else (ready[0] if ready else None)
            if hub is None:
                raise Unavailable("no Ready hub cluster to join through; start one or pass --hub")
        check_name("hub cluster", hub)
        spec = view.clusters.get(hub)
        if spec is None:
            raise NotFound(f"hub cluster {hub!r} not found")
        if spec.provider == "edge":
            raise InvalidInput(f"cluster {hub!r} is an edge site; a hub must be a core cluster")
        ca = (self.tls_dir / "ca.crt").read_bytes() if self.tls_dir is not None else None
        token = self._run(edge.create_token(self._control().etcd, site, hub, ttl, edge.ca_fingerprint(ca)))
        return EdgeToken.from_json(token)

    def edge_sites(self) -> list[EdgeSite]:
        """Every joined edge site: hub, state, connected-since, backlog (``gns edge list``)."""
        from namespace import edge

        return [EdgeSite.from_json(s) for s in self._run(edge.list_sites(self._control().etcd))]

    # -- mirror policies ------------------------------------------------------------------
    def mirror_apply(self, text: str, *, dry_run: bool = False) -> MirrorApplyResult:
        """Validate and store a mirror policy document (YAML or JSON)."""
        from mirroring.policy_store import apply_policy

        return MirrorApplyResult.from_json(self._run(apply_policy(self._control().etcd, text, dry_run=dry_run)))

    def mirror_list(self) -> list[MirrorPolicySummary]:
        from mirroring.policy_store import list_policies

        return [MirrorPolicySummary.from_json(p) for p in self._run(list_policies(self._control().etcd))]

    def mirror_status(self, name: str | None = None) -> list[MirrorStatus]:
        """SPEC §4 ``mirror status``; NotFound for an unknown policy NAME."""
        if name is not None:
            check_name("policy", name)
        view = self.view()
        if name is not None and name not in view.policies:
            raise NotFound(f"mirror policy {name!r} not found")
        return self._mirror_statuses(view, name)

    def mirror_remove(self, name: str) -> None:
        from mirroring.policy_store import remove_policy

        self._run(remove_policy(self._control().etcd, name))

    def _mirroring_stub(self, policy: str) -> tuple[pb_grpc.MirroringStub, str]:
        """Any Ready controller serves the Mirroring RPCs (forwarding to the owner)."""
        check_name("policy", policy)
        view = self.view()
        from mirroring.policy import stored_policy

        found = stored_policy(view, policy)
        if found is None:
            raise NotFound(f"mirror policy {policy!r} not found")
        owner = view.volumes.get(found.spec.volume)
        entry = self.via or (owner.owner if owner else None)
        if entry is None or entry not in view.alive:
            raise Unavailable(f"owner {entry} of policy {policy!r}'s volume is Down")
        return pb_grpc.MirroringStub(self._channel(view.clusters[entry].endpoint)), entry

    def mirror_sync(self, name: str, *, wait: bool = False, progress: Progress | None = None,
                    timeout: float | None = None) -> list[MirrorStatus]:
        """Run passes to every target of policy ``name`` now; with ``wait``, until they end.

        ``timeout`` (seconds) bounds the whole call: by default :data:`SYNC_WAIT_TIMEOUT`
        with ``wait``, else :data:`SYNC_TRIGGER_TIMEOUT`. Raises the last target error (as
        :class:`GnsError`) if a pass failed, :class:`Unavailable` if the owner did not answer
        in time."""
        stub, where = self._mirroring_stub(name)
        seen: dict[str, int] = {}
        reached: dict[str, int] = {}
        errors: list[str] = []
        deadline = timeout if timeout is not None else (SYNC_WAIT_TIMEOUT if wait else SYNC_TRIGGER_TIMEOUT)
        try:
            for msg in stub.Sync(pb.MirrorSyncRequest(policy=name, wait=wait), timeout=deadline):
                if progress and msg.bytes >= seen.get(msg.target, 0):
                    progress(int(msg.bytes) - seen.get(msg.target, 0))
                    seen[msg.target] = int(msg.bytes)
                if msg.done and msg.error:
                    errors.append(f"{msg.target}: {msg.error}")
                elif msg.done:
                    reached[msg.target] = int(msg.version)
        except grpc.RpcError as exc:
            raise _mirror_error(exc, f"mirror sync {name}", where, deadline) from None
        if errors:
            raise Unavailable("mirror sync failed for " + "; ".join(errors))
        if wait:
            return self._status_showing(name, reached)
        return self.mirror_status(name)

    def _status_showing(self, name: str, reached: dict[str, int], timeout: float = 5.0) -> list[MirrorStatus]:
        """``mirror status`` of ``name`` once it shows what the passes reached (``reached``:
        target -> version), or what it shows after ``timeout`` seconds. A core owner
        publishes a target's status as its pass ends (a watch delivers it a moment later);
        an edge site's arrives with its next report, through its hub."""
        give_up = time.monotonic() + timeout
        while True:
            st = self.mirror_status(name)
            shown = {t.target: t for p in st for t in p.targets}
            settled = all(t.state != "Syncing" and t.version >= reached.get(t.target, 0) for t in shown.values())
            if (settled and reached.keys() <= shown.keys()) or time.monotonic() >= give_up:
                return st
            time.sleep(0.05 if self._watch else 0.2)

    def mirror_verify(self, name: str, *, repair: bool = True, deep: bool = False) -> list[MirrorVerifyReport]:
        """Compare every target of policy ``name`` with the volume by sha256 (and repair)."""
        stub, where = self._mirroring_stub(name)
        try:
            reply: pb.MirrorVerifyReply = stub.Verify(pb.MirrorVerifyRequest(policy=name, repair=repair, deep=deep),
                                                      timeout=VERIFY_TIMEOUT)
        except grpc.RpcError as exc:
            raise _mirror_error(exc, f"mirror verify {name}", where, VERIFY_TIMEOUT) from None
        return [
            MirrorVerifyReport(
                target=r.target, version=int(r.version), missing=list(r.missing), extra=list(r.extra),
                mismatched=list(r.mismatched), repaired=r.repaired,
                ok=not (r.missing or r.extra or r.mismatched or r.error), error=r.error or None,
                deep=r.deep,
            )
            for r in reply.reports
        ]


def _mirror_error(exc: grpc.RpcError, what: str, where: str, deadline: float) -> Exception:
    """A failed Mirroring call as the error it stands for; running out of time says so."""
    code = getattr(exc, "code", None)
    if callable(code) and code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"{what}: not done within {deadline:g}s (entered at cluster {where})")
    return from_rpc_error(exc, f"cluster {where}")
