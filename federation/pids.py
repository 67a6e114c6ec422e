"""Processes by PID: whether one is still there (the one check used by ``gns up``/``down``,
the FUSE staging sweep and the CSI node's publisher), and stopping a child we started (the
local harness, the benchmarks and the tests)."""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` runs; a PID we may not signal (another user's) counts as running,
    a zombie as gone."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def stop_child(proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> None:
    """SIGTERM a child process (SIGCONT first: a stopped one would not act on it), SIGKILL
    if it lingers past ``timeout`` seconds; reaps it either way."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass
