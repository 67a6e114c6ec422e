"""Checks of CSI request fields, shared by the controller and node services.

Each check raises :class:`~namespace.errors.InvalidInput` naming the field, so every
missing or malformed field reaches the caller as ``INVALID_ARGUMENT`` saying which one.
"""
from __future__ import annotations

from collections.abc import Iterable

from federation.api._gen.csi.v1 import csi_pb2 as csi
from namespace.errors import InvalidInput
from namespace.paths import normalize

Mode = csi.VolumeCapability.AccessMode
READ_ONLY_MODES = frozenset({Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY})
KNOWN_MODES = frozenset({
    Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY,
    Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER,
    Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER,
})


def required(field: str, value: str) -> str:
    if not value:
        raise InvalidInput(f"{field} is required")
    return value


def global_path(field: str, value: str) -> str:
    """A volume id: a global path (SPEC §3), normalized."""
    required(field, value)
    if not value.startswith("/"):
        raise InvalidInput(f"{field} {value!r} is not a global path (it must start with '/')")
    try:
        return normalize(value)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}: {exc}") from None


def volume_key(value: str) -> str:
    """A volume id as publications compare it: a global path normalized (``/k8s//a/`` is
    ``/k8s/a``), anything else as it is."""
    if value.startswith("/"):
        try:
            return normalize(value)
        except InvalidInput:
            pass
    return value


def capability_problems(cap: csi.VolumeCapability, field: str) -> list[str]:
    """What is wrong with one volume capability (empty: gns can serve it)."""
    problems = []
    if cap.WhichOneof("access_type") is None:
        problems.append(f"{field}.access_type is required (mount)")
    elif cap.HasField("block"):
        problems.append(f"{field}.block: gns volumes are file systems; use access type mount")
    elif cap.mount.fs_type not in ("", "fuse", "fuse.gns"):
        problems.append(f"{field}.mount.fs_type {cap.mount.fs_type!r}: gns volumes mount as 'fuse'")
    if not cap.HasField("access_mode"):
        problems.append(f"{field}.access_mode is required")
    elif cap.access_mode.mode not in KNOWN_MODES:
        problems.append(f"{field}.access_mode.mode {cap.access_mode.mode} is not a known access mode")
    return problems


def check_capabilities(caps: Iterable[csi.VolumeCapability], field: str) -> None:
    caps = list(caps)
    if not caps:
        raise InvalidInput(f"{field} is required")
    problems = [p for i, c in enumerate(caps) for p in capability_problems(c, f"{field}[{i}]")]
    if problems:
        raise InvalidInput("; ".join(problems))


def check_capability(cap: csi.VolumeCapability, present: bool, field: str) -> bool:
    """Check one capability; True if it asks for read-only access."""
    if not present:
        raise InvalidInput(f"{field} is required")
    problems = capability_problems(cap, field)
    if problems:
        raise InvalidInput("; ".join(problems))
    return cap.access_mode.mode in READ_ONLY_MODES or "ro" in cap.mount.mount_flags
