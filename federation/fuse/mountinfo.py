"""What the kernel says is mounted where (``/proc/self/mountinfo``), and clearing stale mounts.

A FUSE mount whose process died stays in the mount table and answers every access with
ENOTCONN ("Transport endpoint is not connected") until it is lazily unmounted.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess

_ESCAPE = re.compile(r"\\([0-7]{3})")


def mount_points() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return {_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4]) for line in f}


def is_mounted(path: str) -> bool:
    return os.path.realpath(path) in mount_points() or path in mount_points()


def is_stale(path: str) -> bool:
    """Mounted, but its file system process is gone."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def is_live(path: str) -> bool:
    return is_mounted(path) and not is_stale(path)


def unmount(path: str, lazy: bool = False) -> None:
    """``fusermount3 -u`` (``-uz`` when ``lazy``); quiet when nothing is mounted there."""
    if not is_mounted(path):
        return
    tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
    subprocess.run([tool, "-uz" if lazy else "-u", path], capture_output=True, timeout=10)
    if is_mounted(path) and not lazy:
        subprocess.run([tool, "-uz", path], capture_output=True, timeout=10)
