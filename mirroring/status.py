"""Per-target mirror status: the record the owner writes, and what ``mirror status`` shows.

The volume's owner writes one :class:`TargetStatus` per target to
``/gns/v1/mirrors/<policy>/<quoted target>`` after every pass (and periodically while a
target lags). :func:`statuses` turns those records, the policies and the volumes' published
versions into SPEC §4's ``mirror status`` shape. It only reads a
:class:`~namespace.cache.NamespaceView`: no I/O, and it never raises on a malformed record
(``gns status`` must always answer).

State of a target, first rule that holds wins:

``Error``    ``last_error`` is set and the last attempt failed (``error_at`` is not older
             than ``synced_at``);
``Lagging``  ``lag_seconds > maxLag``. Checked before ``Syncing`` on purpose: a continuous
             mirror that cannot keep up is syncing nearly all the time, and must still show
             ``Lagging``;
``Syncing``  a pass is running;
``Synced``   ``lag_versions == 0``;
``Syncing``  otherwise (behind, the next pass is due).

A target with no record yet (the policy was just applied) reports version 0,
``lag_versions`` = the volume's version and, if that is not 0, ``lag_seconds`` counted from
the head's last publication (it lacks at least that change; 0 said it was current). Its
state is ``Syncing`` for the scheduled modes (continuous, interval, sync: the scheduler will
pick it up) and, for ``manual``, ``Synced`` on an empty volume and
``Lagging`` otherwise (nothing moves until ``gns mirror sync``).
"""
from __future__ import annotations

import builtins
import logging
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mirroring.policy import MirrorPolicy, Target, stored_policy
from namespace import schema
from namespace.cache import NamespaceView

log = logging.getLogger(__name__)

__all__ = ["TargetStatus", "State", "status_key", "target_state", "statuses"]

State = Literal["Synced", "Syncing", "Lagging", "Error"]


class TargetStatus(BaseModel):
    """What a target holds and how the last passes went, as the owner last wrote it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    policy: str
    volume: str
    target: str
    """The target's name as in the policy (cluster id or URI)."""
    version: int = 0
    """Volume version the target fully holds (0: nothing committed yet)."""
    epoch: int = 0
    """Owner epoch that committed ``version``."""
    synced_at: float = 0.0
    """Wall-clock time of the last successful pass (0: never)."""
    bytes: int = 0
    """Bytes moved to this target (cumulative)."""
    files: int = 0
    """Files moved to this target (cumulative)."""
    last_error: str | None = None
    """The last failure, kept in the record after recovery (``mirror status`` shows it only
    while the target is failing)."""
    error_at: float | None = None
    """When ``last_error`` happened; the target is in ``Error`` while it is newer than
    ``synced_at`` (None with ``last_error`` set: the last attempt failed)."""
    syncing: bool = False
    """A pass to this target is running."""
    pending_since: float | None = None
    """Since when the target has been behind the volume (the oldest change not on it)."""
    out_of_sync: bool = False
    """A ``mode: sync`` target that writes were acknowledged without (it left the sync set
    for want of an ack in time): no failover candidate until a pass brings it to the head
    again, since promoting it would lose them. Written before such an ack."""
    updated: float = 0.0
    """When this record was written."""

    def dump(self) -> builtins.bytes:
        return self.model_dump_json().encode()

    @property
    def failed(self) -> bool:
        """Whether the last attempt failed."""
        if not self.last_error:
            return False
        return self.error_at is None or self.error_at >= self.synced_at


def status_key(policy: str, target: str) -> str:
    """The key of a target's status in :attr:`NamespaceView.mirror_status`."""
    return schema.mirror_status(policy, target).decode()[len(schema.MIRRORS) :]


# The owner republishes a running pass's status every second: an older "syncing" flag was
# left by an owner that died mid-pass.
SYNCING_FRESH_S = 2.5


def target_state(
    st: TargetStatus | None, *, mode: str, head: int, max_lag: float, now: float,
    head_updated: float | None = None, owner_ready: bool = True,
) -> dict[str, Any]:
    """State and lag of one target (the fields of SPEC §4 except ``target``).

    Lag in seconds counts from the first change the target lacks (``pending_since``, set by
    the owner at that commit); until that record arrives, from the head's last publication
    (an underestimate, never the idle time before the change)."""
    if st is None:
        lag_versions = max(0, head)
        state: State
        if mode != "manual":
            state = "Syncing"
        else:
            state = "Synced" if lag_versions == 0 else "Lagging"
        never = max(0.0, now - head_updated) if lag_versions and head_updated else 0.0
        return {
            "state": state, "version": 0, "lag_versions": lag_versions,
            "lag_seconds": round(never, 3),
            "bytes": 0, "files": 0, "last_error": None, "error_at": None, "synced_at": None,
        }
    lag_versions = max(0, head - st.version)
    lag_seconds = 0.0
    if lag_versions:
        since = st.pending_since or head_updated
        lag_seconds = max(0.0, now - since) if since else 0.0
    syncing = st.syncing and owner_ready and now - st.updated < SYNCING_FRESH_S
    if st.failed:
        state = "Error"
    elif lag_seconds > max_lag:
        state = "Lagging"
    elif syncing:
        state = "Syncing"
    elif lag_versions == 0:
        state = "Synced"
    else:
        # Behind with no pass running: continuous targets are about to get one; a manual
        # target waits for `gns mirror sync`.
        state = "Lagging" if mode == "manual" else "Syncing"
    return {
        "state": state,
        "version": st.version,
        "lag_versions": lag_versions,
        "lag_seconds": round(lag_seconds, 3),
        "bytes": st.bytes,
        "files": st.files,
        # Only while it holds: next to `Synced`, an error the target has recovered from
        # reads as a current one (the record keeps it; the controller's log has it too).
        "last_error": st.last_error if st.failed else None,
        "error_at": st.error_at if st.failed else None,
        "synced_at": st.synced_at or None,
    }


def statuses(view: NamespaceView, name: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """SPEC §4's ``mirror status`` list: one entry per policy (sorted by name, or only
    ``name``), one per target in policy order. Unknown ``name`` gives an empty list."""
    now = time.time() if now is None else now
    out: list[dict[str, Any]] = []
    names = sorted(view.policies) if name is None else [n for n in (name,) if n in view.policies]
    for pname in names:
        policy = stored_policy(view, pname)
        if policy is None:
            continue
        volume = policy.spec.volume
        vs = view.volstates.get(volume)
        head = vs.version if vs is not None else 0
        vol = view.volumes.get(volume)
        owner_ready = vol is not None and vol.owner in view.alive
        targets = []
        for tname, mode in effective_targets(view, policy):
            st = target_record(view, pname, tname)
            entry = {"target": tname}
            entry.update(target_state(
                st, mode=mode, head=head, max_lag=policy.spec.max_lag.seconds, now=now,
                head_updated=vs.updated if vs is not None else None,
                owner_ready=owner_ready,
            ))
            targets.append(entry)
        out.append({"policy": pname, "volume": volume, "mode": policy.spec.mode, "targets": targets})
    return out


def replica_targets(view: NamespaceView, policy: MirrorPolicy, owner: str) -> list[Target]:
    """The targets ``owner`` of the policy's volume sends copies to: the policy's targets
    minus ``owner`` itself (after a failover the owner may be one of them), plus the
    volume's former owners, which come back as replicas (failback, SPEC §7). What the
    owner's mirror workers serve, and where a failover may land (a Down owner being
    ``owner``); :func:`effective_targets` is what ``mirror list``/``status`` show."""
    found = [t for t in policy.spec.targets if not (t.is_cluster and t.cluster == owner)]
    names = {t.name for t in found}
    found += [Target(cluster=f) for f in _returning_owners(view, policy.spec.volume, owner, names)]
    return found


def effective_targets(view: NamespaceView, policy: MirrorPolicy) -> list[tuple[str, str]]:
    """(target, mode) pairs the volume's owner mirrors to now: the policy's targets minus
    the owner itself (after a failover the owner may be one of them), plus former owners,
    which come back as continuous replicas (failback)."""
    vol = view.volumes.get(policy.spec.volume)
    owner = vol.owner if vol is not None else None
    found: list[tuple[str, str]] = [(t.name, policy.spec.mode) for t in policy.spec.targets
             if not (t.is_cluster and t.cluster == owner)]
    names = {n for n, _ in found}
    found += [(f, "continuous") for f in _returning_owners(view, policy.spec.volume, owner, names)]
    return found


def _returning_owners(view: NamespaceView, volume: str, owner: str | None, named: set[str]) -> list[str]:
    """The volume's former owners that come back as its replicas, beside the ``named``
    targets. Not one that is an edge site: nothing dials in to one, so the owner sends it
    nothing and it is no failover candidate (a site pulls from the new owner over its link,
    ``edge.follow``); listed as a target, it showed Syncing at version 0 for good."""
    vol = view.volumes.get(volume)
    found: list[str] = []
    for former in (vol.former_owners if vol is not None else []):
        site = view.clusters.get(former)
        if former == owner or former in named or former in found or (site is not None and site.provider == "edge"):
            continue
        found.append(former)
    return found


def target_record(view: NamespaceView, policy: str, target: str) -> TargetStatus | None:
    """The status record the owner last wrote for one target of a policy (None: none, or
    unreadable)."""
    raw = view.mirror_status.get(status_key(policy, target))
    if raw is None:
        return None
    try:
        return TargetStatus.model_validate(raw)
    except ValidationError as exc:
        log.warning("mirror status %s/%s is malformed, ignored: %s", policy, target, exc)
        return None
