"""StorageClass parameters of ``csi.gns.io`` -> what CreateVolume makes (SPEC §9).

Parameters reach the driver as strings (the external-provisioner copies the StorageClass
map); numbers are accepted where a number makes sense (``failoverAfter: 30`` is 30 seconds; ``mirrorInterval`` sets the timer of
``mirrorMode: interval``, default 5m),
unlike MapR's FlexVolume, which refused an integer. Every problem is reported at once, and
nothing is made when there is one.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from namespace.durations import parse_duration
from namespace.errors import InvalidInput
from namespace.paths import check_name, normalize

PVC_NAME = "csi.storage.k8s.io/pvc/name"
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PV_NAME = "csi.storage.k8s.io/pv/name"
KNOWN = ("cluster", "mountPrefix", "mirrorTargets", "mirrorMode", "failoverAfter", "mirrorInterval")
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
    mode = _text(parameters.get("mirrorMode", "")) or None
    after = _text(parameters.get("failoverAfter", "")) or None
    interval = _text(parameters.get("mirrorInterval", "")) or None
    if interval is not None:
        if mode != "interval":
            problems.append("parameters.mirrorInterval is only meaningful with mirrorMode: interval")
        try:
            interval = f"{parse_duration(interval, bare_seconds=True):g}s"
        except ValueError as exc:
            problems.append(f"parameters.mirrorInterval: {exc}")
    if mode is not None and mode not in MODES:
        problems.append(f"parameters.mirrorMode {mode!r}: one of {', '.join(MODES)}")
    if after is not None:
        try:
            seconds = parse_duration(after, bare_seconds=True)
            after = f"{seconds:g}s"
        except ValueError as exc:
            problems.append(f"parameters.failoverAfter: {exc}")
    if not mirror_targets and (mode or after):
        problems.append("parameters.mirrorTargets is required with mirrorMode or failoverAfter")
    vol = volume_name(name) if name else ""
    if mirror_targets and vol:
        spec: dict[str, Any] = {"volume": vol, "mode": mode or "continuous", "targets": mirror_targets}
        if mode == "interval":
            spec["interval"] = interval or DEFAULT_INTERVAL
        if after is not None:
            spec["failover"] = {"automatic": True, "after": after}
        policy = {"apiVersion": API_VERSION, "kind": "MirrorPolicy",
                  "metadata": {"name": vol}, "spec": spec}
    if problems:
        raise InvalidInput("; ".join(problems))
    return VolumePlan(volume=vol, path=path, cluster=cluster, policy=policy)
