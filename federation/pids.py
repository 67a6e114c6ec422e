"""Processes by PID: whether one is still there (the one check used by ``gns up``/``down``,
the FUSE staging sweep and the CSI node's publisher), which process a PID names now
(:class:`ProcessStamp`: a recorded PID outlives its process, and the kernel hands it to the
next one), and stopping a child we started (the local harness, the benchmarks and the
tests)."""
from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


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


@dataclass(frozen=True)
class ProcessStamp:
    """What tells a process from a later one given the same PID: the boot it runs in and
    when it started (clock ticks since boot). A PID written to disk is only safe to signal
    while both still match; after a reboot, or once the PID was reused, they do not."""

    boot_id: str
    start_ticks: int


def boot_id() -> str:
    """This boot's id ("" where /proc does not say)."""
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """Fields 3 on of ``/proc/<pid>/stat`` (state, ppid, ...); empty if there is no such
    process (or no /proc)."""
    if pid <= 0:
        return []
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return []
    # comm (field 2) may hold spaces and parentheses: the fields after it follow the last ')'
    return stat.rpartition(")")[2].split()


def stamp_of(pid: int) -> ProcessStamp | None:
    """The stamp of the process ``pid`` names now; None if there is none (or no /proc)."""
    rest = _stat_fields(pid)
    try:
        start = int(rest[19])  # field 22, starttime; rest[0] is field 3
    except (IndexError, ValueError):
        return None
    boot = boot_id()
    return ProcessStamp(boot, start) if boot else None


def is_process(pid: int, stamp: ProcessStamp) -> bool:
    """Whether ``pid`` still names the running process ``stamp`` was taken of."""
    return pid_alive(pid) and stamp_of(pid) == stamp


def is_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, or a tracer holding it): it does nothing
    until continued."""
    rest = _stat_fields(pid)
    return bool(rest) and rest[0] in ("T", "t")


def cmdline(pid: int) -> list[str]:
    """The argument vector of process ``pid`` (empty if it is gone or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [os.fsdecode(a) for a in raw.split(b"\0") if a]


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
