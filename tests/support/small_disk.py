"""A controller whose data directory is a small disk of its own: a tmpfs of a few MiB that
root mounts, for the tests of what a full disk does (skipped with the reason otherwise)."""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.fixtures.federation import Controller, Federation

NEEDS_SMALL_DISKS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
    pytest.mark.skipif(shutil.which("mount") is None, reason="mount(8) is missing"),
]


@contextmanager
def on_small_disk(fed: Federation, cid: str, mib: int) -> Iterator[Controller]:
    """Controller ``cid`` added and started on a ``mib`` MiB disk; stopped, and the disk
    unmounted, on the way out."""
    ctl = fed.add(cid, start=False)
    ctl.data_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(ctl.data_dir)], check=True)
    try:
        fed.start(cid)
        yield ctl
    finally:
        fed.stop(cid)
        subprocess.run(["umount", "-l", str(ctl.data_dir)], check=False)
