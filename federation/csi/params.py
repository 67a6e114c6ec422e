"""StorageClass parameters of ``csi.gns.io`` -> what CreateVolume makes (SPEC §9).

Parameters reach the driver as strings (the external-provisioner copies the StorageClass
map); numbers are accepted where a number makes sense (``failoverAfter: 30`` is 30 seconds; ``mirrorInterval`` sets the timer of
``mirrorMode: interval``, default 5m),
unlike MapR's FlexVolume, which refused an integer. Every problem is reported at once, and
nothing is made when there is one.

Parameters (all optional):

================== ===========================================================================
``cluster``        owner of the volume; default the node's cluster (topology, else ``--cluster``)
``mountPrefix``    default ``/k8s``; the mount is ``<prefix>/<pvc namespace>/<pvc name>``
``mirrorTargets``  comma-separated targets as in a MirrorPolicy (a cluster, or a store URI)
``mirrorMode``     ``continuous`` (default) | ``interval`` | ``manual`` | ``sync``
``mirrorInterval`` the timer of ``mirrorMode: interval`` (default 5m)
``failoverAfter``  automatic failover once the owner has been Down this long
``failoverPromoteTo`` the cluster that takes the volume over when failover picks an
                   object-store target (the policy's ``promoteTo``). Default: the first
                   cluster in ``mirrorTargets`` (it holds a replica already and is the
                   operator's stated DR site). Never the owner: it is the one that is Down
                   when failover happens, so with only object-store targets it must be named.
================== ===========================================================================
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

from cloud_adapters.uri import parse_uri
from mirroring.policy import seconds_text
from namespace.cache import NamespaceView
from namespace.durations import parse_duration
from namespace.errors import InvalidInput
from namespace.models import Volume
from namespace.paths import check_name, normalize

PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"
KNOWN = ("cluster", "mountPrefix", "mirrorTargets", "mirrorMode", "failoverAfter", "mirrorInterval",
         "failoverPromoteTo")
PASSED_BY_KUBERNETES = (PVC_NAME, PVC_NAMESPACE, PV_NAME)
MODES = ("continuous", "interval", "manual", "sync")
DEFAULT_PREFIX = "/k8s"
DEFAULT_INTERVAL = "5m"
API_VERSION = "gns.io/v1alpha1"


@dataclass(frozen=True)
class VolumePlan:
    """What one CreateVolume request makes: a volume, its mount and maybe a policy."""

    volume: str
    """DNS-1123 volume name (also the mirror policy's name)."""
    path: str
    """The global mount path: the CSI volume id."""
    cluster: str
    """The owning cluster."""
    policy: dict[str, Any] | None
    """The MirrorPolicy document when ``mirrorTargets`` is set."""

    def context(self) -> dict[str, str]:
        """``volume_context``: what the node needs, and what a human reading the PV wants."""
        return {"path": self.path, "volume": self.volume, "cluster": self.cluster}


_LABEL_BAD = re.compile(r"[^a-z0-9-]+")


def volume_name(request_name: str) -> str:
    """A DNS-1123 label derived from the CO's request name, stable across retries.

    ``pvc-<uid>`` (what the external-provisioner sends) passes unchanged; anything else is
    lower-cased and cleaned, and suffixed with a hash of the original when that changed it
    (two different names must never collide)."""
    try:
        return check_name("volume", request_name)
    except InvalidInput:
        pass
    digest = hashlib.sha256(request_name.encode()).hexdigest()[:10]
    base = _LABEL_BAD.sub("-", request_name.lower()).strip("-")[: 63 - 11].strip("-") or "csi"
    return f"{base}-{digest}"


def _text(value: str) -> str:
    return value.strip()


def targets(value: str) -> list[dict[str, str]]:
    """``onprem-b, s3://bucket/x`` -> policy targets (a URI has a scheme, a cluster has not)."""
    out = []
    for item in (t.strip() for t in value.split(",")):
        if item:
            out.append({"uri": item} if "://" in item else {"cluster": item})
    return out


def _target_problems(found: list[dict[str, str]]) -> list[str]:
    """Malformed targets, found here so they are listed with the other parameter problems
    (the policy check would only see them once nothing else is wrong)."""
    problems = []
    for t in found:
        try:
            if "uri" in t:
                parse_uri(t["uri"])
            else:
                check_name("cluster", t["cluster"])
        except (ValueError, InvalidInput) as exc:
            problems.append(f"parameters.mirrorTargets: {exc}")
    return problems


def plan(name: str, parameters: dict[str, str], default_cluster: str | None) -> VolumePlan:
    """Validate the request name and parameters; raise InvalidInput listing every problem."""
    problems: list[str] = []
    if not name:
        problems.append("name is required")
    unknown = sorted(k for k in parameters if k not in KNOWN and k not in PASSED_BY_KUBERNETES
                     and not k.startswith("csi.storage.k8s.io/"))
    for key in unknown:
        problems.append(f"parameters: unknown parameter {key!r} (known: {', '.join(KNOWN)})")

    cluster = _text(parameters.get("cluster", "")) or (default_cluster or "")
    if not cluster:
        problems.append("parameters.cluster is required: no default (the driver has no --cluster "
                        "and the request carries no topology.gns.io/cluster)")
    else:
        try:
            check_name("cluster", cluster)
        except InvalidInput as exc:
            problems.append(f"parameters.cluster: {exc}")

    prefix = _text(parameters.get("mountPrefix", "")) or DEFAULT_PREFIX
    namespace, pvc = parameters.get(PVC_NAMESPACE, ""), parameters.get(PVC_NAME, "")
    leaf = f"{namespace}/{pvc}" if namespace and pvc else name
    path = ""
    if not prefix.startswith("/"):
        problems.append(f"parameters.mountPrefix {prefix!r} must be an absolute global path")
    else:
        try:
            path = normalize(f"{prefix}/{leaf}")
        except InvalidInput as exc:
            problems.append(f"parameters.mountPrefix: {exc}")

    policy: dict[str, Any] | None = None
    mirror_targets = targets(parameters.get("mirrorTargets", ""))
    problems += _target_problems(mirror_targets)
    promote_to = _text(parameters.get("failoverPromoteTo", "")) or None
    mode = _text(parameters.get("mirrorMode", "")) or None
    after = _text(parameters.get("failoverAfter", "")) or None
    interval = _text(parameters.get("mirrorInterval", "")) or None
    if interval is not None:
        if mode != "interval":
            problems.append("parameters.mirrorInterval is only meaningful with mirrorMode: interval")
        try:
            interval = seconds_text(parse_duration(interval, bare_seconds=True))
        except ValueError as exc:
            problems.append(f"parameters.mirrorInterval: {exc}")
    if mode is not None and mode not in MODES:
        problems.append(f"parameters.mirrorMode {mode!r}: one of {', '.join(MODES)}")
    if after is not None:
        try:
            after = seconds_text(parse_duration(after, bare_seconds=True))
        except ValueError as exc:
            problems.append(f"parameters.failoverAfter: {exc}")
    if not mirror_targets and (mode or after):
        problems.append("parameters.mirrorTargets is required with mirrorMode or failoverAfter")
    if promote_to is not None:
        if after is None:
            problems.append("parameters.failoverPromoteTo is only meaningful with failoverAfter")
        try:
            check_name("cluster", promote_to)
        except InvalidInput as exc:
            problems.append(f"parameters.failoverPromoteTo: {exc}")
    failover: dict[str, Any] | None = None
    if after is not None and mirror_targets:
        failover = {"automatic": True, "after": after}
        stores = [t["uri"] for t in mirror_targets if "uri" in t]
        clusters = [t["cluster"] for t in mirror_targets if "cluster" in t]
        # promoteTo only where the policy needs it (a store may be chosen): a policy that
        # worked without one stays byte-for-byte what earlier CreateVolume calls stored.
        chosen = promote_to or (clusters[0] if stores and clusters else None)
        if chosen is not None:
            failover["promoteTo"] = chosen
        elif stores:
            problems.append(
                f"parameters.failoverPromoteTo is required: failoverAfter with an object-store "
                f"target ({stores[0]}) needs a cluster to take the volume over, and "
                "mirrorTargets names no cluster to default to")
    vol = volume_name(name) if name else ""
    if mirror_targets and vol:
        spec: dict[str, Any] = {"volume": vol, "mode": mode or "continuous", "targets": mirror_targets}
        if mode == "interval":
            spec["interval"] = interval or DEFAULT_INTERVAL
        if failover is not None:
            spec["failover"] = failover
        policy = {"apiVersion": API_VERSION, "kind": "MirrorPolicy",
                  "metadata": {"name": vol}, "spec": spec}
    if problems:
        raise InvalidInput("; ".join(problems))
    return VolumePlan(volume=vol, path=path, cluster=cluster, policy=policy)


def policy_problems(plan: VolumePlan, view: NamespaceView) -> list[str]:
    """What ``gns mirror apply`` would refuse in ``plan.policy`` (unknown target clusters, a
    target that is the owner, ``sync`` to a store, ...), checked against ``view`` as if the
    volume already existed, so a refused request is answered before anything is made."""
    if plan.policy is None:
        return []
    from mirroring.policy import validate_document

    volumes = {**view.volumes, plan.volume: Volume(name=plan.volume, owner=plan.cluster)}
    try:
        validate_document(plan.policy, replace(view, volumes=volumes))
    except InvalidInput as exc:
        return [str(exc)]
    return []
