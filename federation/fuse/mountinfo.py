"""What the kernel says is mounted where (``/proc/self/mountinfo``), and clearing stale mounts.

A FUSE mount whose process died stays in the mount table and answers every access with
ENOTCONN ("Transport endpoint is not connected") until it is lazily unmounted. ``gns fuse``
clears one before mounting again (:func:`clear_stale`); the CSI node's publisher does the
same for the mounts it supervises. This is the one place that knows either.

A FUSE mount whose process is alive but stopped (SIGSTOP, a deadlock) is worse: every
access to it waits, ``stat`` and ``realpath`` of the mount point included. What a
supervisor needs is therefore answered here without touching the mount: :func:`mounts_at`
reads only the mount table, :func:`detach` unmounts lazily, :func:`abort` cuts a FUSE
connection through the kernel's fusectl file system (so that whatever waits on it fails).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from namespace.errors import Conflict, InvalidInput, NotFound, Unavailable

log = logging.getLogger(__name__)

_ESCAPE = re.compile(r"\\([0-7]{3})")


def _mounts() -> list[tuple[str, str]]:
    """(device ``major:minor``, mount point) of every mount, in the kernel's order."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return [(fields[2], _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
                for fields in (line.split() for line in f)]


@dataclass(frozen=True)
class MountEntry:
    """One line of the mount table."""

    device: str
    """``major:minor``; a FUSE mount's minor names its connection under fusectl."""
    point: str
    fstype: str
    """``fuse.gns`` for gns fuse (``fuse.<subtype>``)."""


def mount_table() -> list[MountEntry]:
    """Every mount, in the kernel's order (read it once to look up many paths)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        lines = [line.split() for line in f]
    return [MountEntry(fields[2], _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]),
                       fields[fields.index("-") + 1] if "-" in fields else "")
            for fields in lines]


def mounts_at(path: str | Path, table: list[MountEntry] | None = None) -> list[MountEntry]:
    """The mounts stacked at ``path``, the top one last, from the mount table alone (or
    ``table``, read earlier): the mount point is never resolved (its realpath asks the
    mount, which may not answer)."""
    path = Path(path)
    real = os.path.join(os.path.realpath(path.parent), path.name)
    return [e for e in (mount_table() if table is None else table)
            if e.point in (real, str(path))]


def fuse_connection(device: str) -> Path | None:
    """The fusectl directory of the FUSE connection behind ``device``, if fusectl is
    mounted (it usually is, by systemd; nothing here mounts it)."""
    major, _, minor = device.partition(":")
    conn = Path("/sys/fs/fuse/connections") / minor
    return conn if major == "0" and (conn / "abort").exists() else None


def abort(device: str) -> bool:
    """Cut the FUSE connection behind ``device``: every request waiting on it, and every
    later one, fails at once (ENOTCONN) whatever its process does. False when fusectl is
    not mounted (killing the process cuts it too)."""
    conn = fuse_connection(device)
    if conn is None:
        return False
    try:
        (conn / "abort").write_text("1")
    except OSError:
        return False
    return True


def detach(path: str | Path) -> None:
    """Lazily unmount the top mount at ``path`` (``fusermount3 -uz``): it disappears from
    the path at once, without waiting on its process; quiet when nothing is mounted."""
    if mounts_at(path):
        subprocess.run([fusermount(), "-uz", str(path)], capture_output=True, timeout=10)


def mount_points() -> set[str]:
    return {point for _, point in _mounts()}


def device_of(path: str | Path) -> str | None:
    """The device (``major:minor``) mounted at ``path`` last, without touching the mount
    (a ``stat`` of a FUSE mount waits for its process, which may be the caller)."""
    path = Path(path)
    # realpath of the parent only: resolving the mount point itself asks the mount.
    real = os.path.join(os.path.realpath(path.parent), path.name)
    found = [dev for dev, point in _mounts() if point in (real, str(path))]
    return found[-1] if found else None


def is_mounted(path: str | Path) -> bool:
    points = mount_points()
    return os.path.realpath(path) in points or str(path) in points


def is_stale(path: str | Path) -> bool:
    """Mounted, but its file system process is gone."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def is_live(path: str | Path) -> bool:
    return is_mounted(path) and not is_stale(path)


def answers(path: str | Path) -> bool:
    """A mount's process answers at ``path``: a listing reaches it, where a ``stat`` may be
    answered from the kernel's cache of a dead one's root (what waiting for a mount needs)."""
    if not os.path.ismount(path):
        return False
    try:
        os.listdir(path)
    except OSError:
        return False
    return True


def fusermount() -> str:
    found = shutil.which("fusermount3") or shutil.which("fusermount")
    if not found:
        raise Unavailable("fusermount3 not found: install fuse3 (apt-get install fuse3)")
    return found


def unmount(path: str | Path, lazy: bool = False) -> None:
    """``fusermount3 -u`` (``-uz`` when ``lazy``, or when a plain unmount left it mounted);
    quiet when nothing is mounted there."""
    if not is_mounted(path):
        return
    tool = fusermount()
    subprocess.run([tool, "-uz" if lazy else "-u", str(path)], capture_output=True, timeout=10)
    if is_mounted(path) and not lazy:
        subprocess.run([tool, "-uz", str(path)], capture_output=True, timeout=10)


def clear_stale(mountpoint: Path) -> None:
    """Before mounting on ``mountpoint``: unmount a dead FUSE mount there; refuse a live
    mount, a missing path or one that is not a directory (nothing is changed then)."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            log.warning("clearing a stale mount at %s (its process died)", mountpoint)
            unmount(mountpoint, lazy=True)
            return
        if exc.errno == errno.ENOENT:
            raise NotFound(f"mount point {mountpoint} does not exist") from None
        raise InvalidInput(f"mount point {mountpoint}: {exc.strerror}") from None
    if os.path.ismount(mountpoint):
        raise Conflict(f"{mountpoint} is already a mount point (unmount it first)")
    if not mountpoint.is_dir():
        raise InvalidInput(f"mount point {mountpoint} is not a directory")
