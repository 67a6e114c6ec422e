"""A real ``gns fuse`` process on a real kernel FUSE mount, for the tests that need one
(started as the CLI runs it, in the foreground; always stopped by PID and unmounted)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from federation.fuse.mountinfo import answers, is_stale
from federation.pids import stop_child
from tests.fixtures.federation import Federation
from tests.support.waiting import wait_for


class Mount:
    """One ``gns fuse`` process and its mount point (stopped by PID)."""

    def __init__(self, fed: Federation, mnt: Path, cache: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.fed, self.mnt, self.cache = fed, mnt, cache
        if not is_stale(str(mnt)):  # a dead mount there is the CLI's to clear
            mnt.mkdir(parents=True, exist_ok=True)
        self.log = mnt.parent / f"{mnt.name}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "federation.cli.main", "fuse", str(mnt),
                 "--cache-dir", str(cache), *args],
                env=fed.env() if env is None else env, stdout=subprocess.DEVNULL, stderr=err,
            )
        wait_for(lambda: self.proc.poll() is not None or answers(mnt), 30)
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self) -> None:
        stop_child(self.proc, 20)
        if os.path.ismount(self.mnt) or is_stale(str(self.mnt)):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)

