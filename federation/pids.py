"""Whether a process is still there, by PID (the one check used by ``gns up``/``down``,
the FUSE staging sweep and the CSI node's publisher)."""
from __future__ import annotations

import os


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
