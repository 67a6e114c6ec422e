"""Supervised ``gns fuse`` processes, one per published target path, with a watchdog.

Users of every FUSE-based CSI driver know the failure: the FUSE process dies (OOM kill, a
crash, a driver upgrade) and the pod's mount answers "Transport endpoint is not connected"
for good. Here a watchdog thread checks every publication several times a second; when its
process has died, its mount went stale, or its process stopped answering (stopped by
SIGSTOP for :data:`HUNG_AFTER` seconds, or silent past :data:`STUCK_AFTER` while it runs),
it clears the mount (``fusermount3 -uz``; a hung process is killed and its FUSE connection
cut first) and starts the process again on the same target, so the pod's path works again
within seconds (SPEC §9: within 10 s of a death). The watchdog never waits on a mount
itself: it reads the mount table, asks each process through a
:class:`~federation.csi.probe.Probe`, and runs each repair on a thread of its own, so one
frozen or slow publication delays no other.

A target path belongs to the driver once published: a re-attach mounts over whatever an
app wrote into the bare directory while the mount was down (those files stay hidden on the
node's disk, and the log says so). A new publication refuses a target that holds files, is
not a directory, or is a mount the driver did not make; unpublishing touches only what its
publication record says the driver mounted there.

Publications are recorded in ``<state_dir>/publications.json`` (a hostPath: it outlives the
driver and node reboots): a restarted driver re-adopts live FUSE processes (they run in
their own session, so they outlive the driver) and re-attaches the ones that died. A record
holds the PID of its FUSE process and that process's :class:`~federation.pids.ProcessStamp`
(boot id, start time): the driver signals a recorded PID only while the stamp still
matches, never the unrelated process the kernel may have given the PID to since (after a
reboot, every PID is someone else's). A record written before stamps existed is believed
only while its PID runs ``gns fuse`` on that target (or the driver's spare, which becomes
one without changing its command line).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.csi.errors import AlreadyExists, FailedPrecondition
from federation.csi.fields import volume_key
from federation.csi.probe import Probe
from federation.fuse import mountinfo
from federation.pids import ProcessStamp, boot_id, cmdline, is_process, is_stopped, stamp_of
from namespace.errors import Unavailable

log = logging.getLogger(__name__)

FuseCommand = Callable[[str, str, bool], list[str]]
"""(target, global path, read-only) -> the ``gns`` arguments of a foreground ``gns fuse``
(``["--etcd", URL, "fuse", TARGET, "--root", PATH, ...]``)."""
GNS = [sys.executable, "-m", "federation.cli.main"]
SPARE_MODULE = "federation.csi.spare"
SPARE = [sys.executable, "-m", SPARE_MODULE]
FSTYPE = "fuse.gns"
"""What the mount table calls a gns fuse mount (``subtype=gns``)."""

MOUNT_TIMEOUT = 10.0
WATCH_INTERVAL = 0.25
PROBE_EVERY = 0.5
"""Seconds between two questions to a mount's process."""
HUNG_AFTER = 5.0
"""Seconds a stopped FUSE process (SIGSTOP) may leave a statfs unanswered before it is taken
for dead."""
STUCK_AFTER = 40.0
"""The same for a process that runs. gns fuse answers statfs from memory, but all its
workers may be waiting on a slow owner for up to its per-call ``--timeout`` (30 s): only
silence longer than that is a deadlock rather than load (killing it would fail every open
file of the pod)."""
RETRY_MAX = 10.0
"""The longest pause between two failed re-attaches of one target."""
STOP_WAIT = 5.0


@dataclass
class Publication:
    volume_id: str
    path: str
    target: str
    readonly: bool
    pid: int = 0
    stamp: ProcessStamp | None = None
    """Which process ``pid`` is; None: no process this driver may signal."""
    device: str = ""
    """``major:minor`` of the mount made at the target ("" when unknown: a record written
    before devices were, or one from an earlier boot)."""
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    probe: Probe | None = field(default=None, repr=False, compare=False)
    failures: int = field(default=0, compare=False)
    retry_at: float = field(default=0.0, compare=False)

    def alive(self) -> bool:
        """Its FUSE process runs: the child this driver started, or a previous driver
        process's whose PID still names the process it stamped."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.stamp is not None and is_process(self.pid, self.stamp)

    def record(self) -> dict[str, object]:
        rec: dict[str, object] = {
            "volume_id": self.volume_id, "path": self.path, "target": self.target,
            "readonly": self.readonly, "restarts": self.restarts, "device": self.device}
        if self.pid > 0:  # never a 0: whoever reads it must not take it for a process
            rec["pid"] = self.pid
        if self.stamp is not None:
            rec |= {"boot_id": self.stamp.boot_id, "start_ticks": self.stamp.start_ticks}
        return rec


class Publisher:
    def __init__(self, command: FuseCommand, state_dir: Path,
                 env: dict[str, str] | None = None, spares: int = 2) -> None:
        self.command = command
        self.state_dir = state_dir
        self.env = env
        self.spares = spares
        """Warm ``gns`` processes kept ready (two: a re-attach and a publish often come
        together, and under load a spare takes seconds to warm up)."""
        self._spare: list[subprocess.Popen[bytes]] = []
        self._pubs: dict[str, Publication] = {}
        self._lock = threading.RLock()
        """Guards the publication table, the spares and the state file (held briefly)."""
        self._locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_reattach: list[Callable[[Publication, float], None]] = []

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._adopt()
        self._refill_spare()
        self._thread = threading.Thread(target=self._watch, name="csi-fuse-watchdog", daemon=True)
        self._thread.start()

    def stop(self, unmount: bool = False) -> None:
        """Stop watching. FUSE processes keep serving their pods unless ``unmount``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for spare in self._spare:
                spare.kill()
                spare.wait()
            self._spare.clear()
            pubs = list(self._pubs.values())
        if unmount:
            for pub in pubs:
                self.unpublish(pub.target, pub.volume_id)

    # -- publish / unpublish ------------------------------------------------------------------
    def _target_lock(self, target: str) -> threading.Lock:
        """One lock per target path: publications of different pods proceed in parallel,
        and one target is never attached twice at once."""
        with self._lock:
            return self._locks.setdefault(target, threading.Lock())

    def publish(self, volume_id: str, path: str, target: str, readonly: bool) -> Publication:
        with self._target_lock(target):
            pub = self.get(target)
            if pub is None:
                return self._publish_new(volume_id, path, target, readonly)
            if (pub.volume_id, pub.readonly) != (volume_id, readonly):
                raise AlreadyExists(
                    f"target_path {target} already publishes {pub.volume_id} "
                    f"{'read-only' if pub.readonly else 'read-write'}")
            why = self._trouble(pub)
            if why is not None:
                log.warning("publication of %s at %s: %s; re-attaching", pub.path, target, why)
                self._cut_if_hung(pub)
                self._attach(pub, reattach=True)
                with self._lock:
                    self._save()
            return pub

    def _publish_new(self, volume_id: str, path: str, target: str,
                     readonly: bool) -> Publication:
        made = _prepare_target(target)
        pub = Publication(volume_id=volume_id, path=path, target=target, readonly=readonly)
        try:
            self._attach(pub, reattach=False)
        except BaseException:
            if made:  # a refused publication leaves nothing behind
                _remove_dir(target)
            raise
        try:
            with self._lock:
                self._pubs[target] = pub
                self._save()
        except BaseException:  # never leave a mount nobody knows about
            with self._lock:
                self._pubs.pop(target, None)
            self._terminate(pub)
            mountinfo.detach(target)
            raise
        return pub

    def unpublish(self, target: str, volume_id: str | None = None) -> bool:
        """Unmount what this driver published at ``target`` (for ``volume_id``, if given);
        False, touching nothing, if it published nothing there (still OK for the CO)."""
        with self._target_lock(target):
            pub = self.get(target)
            if pub is None:
                if mountinfo.mounts_at(target):
                    log.warning("unpublish %s: %s is a mount this driver did not make; left "
                                "as it is", volume_id, target)
                return False
            if volume_id is not None and volume_id != pub.volume_id:
                log.warning("unpublish %s: %s publishes %s, not that volume; left as it is",
                            volume_id, target, pub.volume_id)
                return False
            with self._lock:
                self._pubs.pop(target, None)
                self._save()
            self._terminate(pub)  # gns fuse unmounts itself on SIGTERM
            if self._our_mount(pub) is not None:  # it died before it could
                mountinfo.detach(target)
            _remove_dir(target)
            return True

    def get(self, target: str) -> Publication | None:
        with self._lock:
            return self._pubs.get(target)

    def publications(self) -> list[Publication]:
        with self._lock:
            return list(self._pubs.values())

    # -- attaching ----------------------------------------------------------------------------
    def _log_path(self, target: str) -> Path:
        return self.state_dir / f"fuse-{hashlib.sha256(target.encode()).hexdigest()[:16]}.log"

    def _attach(self, pub: Publication, reattach: bool) -> None:
        """Start ``gns fuse`` on the target and wait until the mount answers; first clear
        what an earlier attach left there (its process, its mount)."""
        self._terminate(pub)
        if self._our_mount(pub) is not None:
            mountinfo.detach(pub.target)  # lazily: a dead or hung mount never answers
        # The bare directory, held open: what apps write into it until the new mount is up
        # stays visible through this descriptor once it is hidden.
        bare = _open_dir(pub.target) if reattach else None
        try:
            self._mount(pub)
            if bare is not None:
                _warn_hidden(pub, bare)
        finally:
            if bare is not None:
                os.close(bare)

    def _mount(self, pub: Publication) -> None:
        """Start ``gns fuse`` on the bare target and wait until the new mount answers."""
        log_path = self._log_path(pub.target)
        proc = self._launch(self.command(pub.target, pub.path, pub.readonly), log_path)
        pub.proc, pub.pid, pub.stamp = proc, proc.pid, stamp_of(proc.pid)
        pub.device, pub.probe = "", None
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            top = mountinfo.mounts_at(pub.target)[-1:]
            if top and top[0].fstype == FSTYPE:
                probe = Probe(pub.target)
                if probe.answers(max(0.0, deadline - time.monotonic())):
                    pub.device, pub.probe = top[0].device, probe
                    return
                break
            time.sleep(0.02)
        self._terminate(pub, kill=True)
        if _top_is_gns(pub.target):  # a mount that never answered: its process is gone now
            mountinfo.detach(pub.target)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] \
            if log_path.exists() else []
        raise Unavailable(f"gns fuse did not mount {pub.path} at {pub.target}"
                          f"{': ' + tail[0] if tail else ''}")

    def _our_mount(self, pub: Publication, table: list[mountinfo.MountEntry] | None = None
                   ) -> mountinfo.MountEntry | None:
        """The mount on top of the target if it is the one this publication made."""
        top = mountinfo.mounts_at(pub.target, table)[-1:]
        if not top or top[0].fstype != FSTYPE:
            return None
        if pub.device and top[0].device != pub.device:
            return None
        return top[0]

    def _launch(self, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        """``gns ARGS`` in the background: handed to the warm spare when one is ready,
        else started cold."""
        with self._lock:
            return self._launch_locked(args, log_path)

    def _launch_locked(self, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        while self._spare:
            spare = self._spare.pop(0)
            if spare.poll() is not None or spare.stdin is None:
                continue
            try:
                spare.stdin.write(json.dumps({"argv": args, "log": str(log_path)}).encode() + b"\n")
                spare.stdin.close()
            except OSError:
                spare.kill()
                spare.wait()
                continue
            self._refill_spare()
            return spare
        self._refill_spare()
        with open(log_path, "ab") as log_file:
            return subprocess.Popen(
                GNS + args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                env=self.env, start_new_session=True,  # outlives the driver; no shared signals
            )

    def _refill_spare(self) -> None:
        self._spare = [p for p in self._spare if p.poll() is None]
        while len(self._spare) < self.spares:
            with open(self.state_dir / "spare.log", "ab") as log_file:
                self._spare.append(subprocess.Popen(
                    SPARE, stdin=subprocess.PIPE, stdout=log_file, stderr=log_file,
                    env=self.env, start_new_session=True,
                ))

    def _terminate(self, pub: Publication, kill: bool = False) -> None:
        """Stop the publication's FUSE process if it is one this driver started (its child,
        or a predecessor's whose stamp still matches), never whatever process holds its PID
        now. ``kill``: SIGKILL at once (a process that stopped answering would not act on
        SIGTERM)."""
        if pub.proc is not None:
            _stop_child(pub.proc, kill)
        elif pub.alive():
            _stop_adopted(pub, kill)
        pub.proc, pub.pid, pub.stamp = None, 0, None

    def _cut_if_hung(self, pub: Publication) -> None:
        """A process that stopped answering: cut its FUSE connection (whatever waits on it
        fails now, instead of when the process dies) and kill it."""
        if not _hung(pub):
            return
        mount = self._our_mount(pub)
        if mount is not None:
            mountinfo.abort(mount.device)
        self._terminate(pub, kill=True)

    # -- the watchdog -------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                table = mountinfo.mount_table()  # once a round: a node has many mounts
            except OSError:
                log.exception("reading the mount table failed")
                continue
            for pub in self.publications():
                try:
                    self._check(pub, table)
                except Exception:  # the watchdog must outlive any one publication's trouble
                    log.exception("checking the publication at %s failed", pub.target)

    def _check(self, pub: Publication, table: list[mountinfo.MountEntry]) -> None:
        """Start a repair of ``pub`` on a thread of its own if it needs one."""
        if time.monotonic() < pub.retry_at:
            return
        lock = self._target_lock(pub.target)
        if not lock.acquire(blocking=False):
            return  # a publish, unpublish or repair of this target is under way
        try:
            why = self._trouble(pub, table) if self.get(pub.target) is pub else None
        except BaseException:
            lock.release()
            raise
        if why is None:
            lock.release()
            return
        threading.Thread(target=self._repair, args=(pub, why, lock),
                         name="csi-reattach", daemon=True).start()

    def _trouble(self, pub: Publication, table: list[mountinfo.MountEntry] | None = None
                 ) -> str | None:
        """What is wrong with a publication, found without waiting on its mount; None if
        nothing is (as far as its last answer goes: this asks the next question)."""
        if not pub.alive():
            return "its FUSE process is gone"
        if self._our_mount(pub, table) is None:
            return "its mount is gone"
        if pub.probe is None:
            pub.probe = Probe(pub.target)
        if pub.probe.disconnected():
            return "its mount is disconnected"
        if _hung(pub):
            return f"its FUSE process has not answered for {pub.probe.silent_for():.0f} s"
        pub.probe.ask(every=PROBE_EVERY)
        return None

    def _repair(self, pub: Publication, why: str, lock: threading.Lock) -> None:
        """Re-attach ``pub`` (the caller acquired ``lock``, its target's: released here)."""
        try:
            started = time.monotonic()
            log.warning("publication of %s at %s: %s; re-attaching", pub.path, pub.target, why)
            self._cut_if_hung(pub)
            try:
                self._attach(pub, reattach=True)
            except Exception:
                pub.failures += 1
                pub.retry_at = time.monotonic() + min(RETRY_MAX, 0.5 * 2 ** pub.failures)
                log.exception("re-attaching %s failed (%d in a row); retrying", pub.target,
                              pub.failures)
                return
            pub.failures, pub.restarts = 0, pub.restarts + 1
            with self._lock:
                self._save()
            for cb in self.on_reattach:
                cb(pub, time.monotonic() - started)
        finally:
            lock.release()

    # -- the state file -----------------------------------------------------------------------
    def _state_file(self) -> Path:
        return self.state_dir / "publications.json"

    def _save(self) -> None:
        data = {t: p.record() for t, p in self._pubs.items()}
        tmp = self._state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self._state_file())

    def _adopt(self) -> None:
        """Take over the publications a previous driver process left."""
        try:
            data = json.loads(self._state_file().read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        for target, rec in data.items():
            try:
                pub = _from_record(target, rec)
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("ignoring the malformed publication record of %s: %r", target, rec)
                continue
            self._pubs[target] = pub  # the watchdog re-attaches it if it is not live
        self._save()


def _from_record(target: str, rec: dict[str, Any]) -> Publication:
    pub = Publication(volume_id=volume_key(str(rec["volume_id"])), path=str(rec["path"]),
                      target=target, readonly=bool(rec["readonly"]),
                      restarts=int(rec.get("restarts", 0)), device=str(rec.get("device", "")))
    pid = int(rec.get("pid", 0))
    if "boot_id" in rec and "start_ticks" in rec:
        stamp = ProcessStamp(str(rec["boot_id"]), int(rec["start_ticks"]))
        if stamp.boot_id != boot_id():
            pub.device = ""  # the node rebooted: device numbers are another boot's
        if is_process(pid, stamp):
            pub.pid, pub.stamp = pid, stamp
    elif pid > 0 and _runs_fuse_for(pid, target):
        pub.pid, pub.stamp = pid, stamp_of(pid)
    if not pub.pid and pid > 0:
        log.info("publication at %s: PID %d is no longer its FUSE process; re-attaching",
                 target, pid)
    return pub


def _hung(pub: Publication) -> bool:
    """Its process has left a question unanswered too long (see :data:`HUNG_AFTER`)."""
    if pub.probe is None:
        return False
    silent = pub.probe.silent_for()
    if silent <= HUNG_AFTER:
        return False
    return silent > STUCK_AFTER or (pub.pid > 0 and is_stopped(pub.pid))


def _runs_fuse_for(pid: int, target: str) -> bool:
    """Whether ``pid`` runs what the driver starts for ``target``: ``gns fuse TARGET``, or
    a spare (which becomes one without changing its command line)."""
    argv = cmdline(pid)
    if SPARE_MODULE in argv:
        return True
    gns = "federation.cli.main" in argv or (bool(argv) and os.path.basename(argv[0]) == "gns")
    return gns and "fuse" in argv and target in argv


def _stop_child(proc: subprocess.Popen[bytes], kill: bool) -> None:
    # Popen signals only a child it has not reaped: its PID cannot have been reused.
    if kill:
        proc.kill()
    else:
        proc.terminate()
        proc.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
    try:
        proc.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            log.error("FUSE process %d does not die (uninterruptible?)", proc.pid)


def _stop_adopted(pub: Publication, kill: bool) -> None:
    """Signal a predecessor's process, re-checking its stamp before every signal."""
    sigs = [signal.SIGKILL] if kill else [signal.SIGTERM, signal.SIGCONT]
    _signal_if(pub, sigs)
    deadline = time.monotonic() + STOP_WAIT
    while pub.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal_if(pub, [signal.SIGKILL])


def _signal_if(pub: Publication, sigs: list[signal.Signals]) -> None:
    for sig in sigs:
        if not pub.alive():
            return
        try:
            os.kill(pub.pid, sig)
        except ProcessLookupError:
            return


def _prepare_target(target: str) -> bool:
    """Check a target path no publication holds, making it if missing; True if made.

    Refused: a mount this driver did not make (a dead FUSE mount left there is cleared), a
    path that is not a directory, a directory that holds files (mounting would hide them)."""
    if mountinfo.mounts_at(target):
        probe = Probe(target)
        if probe.answers(1.0) or not probe.disconnected():
            raise AlreadyExists(f"target_path {target} is already a mount point this driver "
                                "did not make")
        mountinfo.detach(target)
    if os.path.lexists(target):
        if not os.path.isdir(target):
            raise FailedPrecondition(f"target_path {target} exists and is not a directory")
        try:
            with os.scandir(target) as entries:
                first = next(entries, None)
        except OSError as exc:
            raise FailedPrecondition(f"target_path {target}: {exc.strerror}") from None
        if first is not None:
            raise FailedPrecondition(f"target_path {target} is not empty (it holds "
                                     f"{first.name!r}, ...): mounting there would hide its files")
        return False
    try:
        Path(target).mkdir(parents=True)
    except FileExistsError:  # made meanwhile by someone else: not ours to remove
        return False
    except NotADirectoryError:
        raise FailedPrecondition(f"target_path {target}: a parent of it is not a "
                                 "directory") from None
    except OSError as exc:
        raise FailedPrecondition(f"target_path {target} cannot be made: {exc.strerror}") from None
    return True


def _top_is_gns(target: str) -> bool:
    top = mountinfo.mounts_at(target)[-1:]
    return bool(top) and top[0].fstype == FSTYPE


def _open_dir(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None


def _warn_hidden(pub: Publication, bare: int) -> None:
    """Say so when a re-attach mounted over files written into the bare target (``bare``,
    a descriptor of it) while the mount was down: they are on the node's disk, not in the
    volume, and hidden now."""
    try:
        with os.scandir(bare) as entries:
            names = sorted(e.name for e in entries)
    except OSError:
        return
    if names:
        log.warning("re-attached %s at %s over %d file(s) written to the node's disk while "
                    "its mount was down (%s): they are not in the volume and stay hidden "
                    "under the mount until it is unpublished", pub.path, pub.target, len(names),
                    ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))


def _remove_dir(target: str) -> None:
    try:
        os.rmdir(target)
    except OSError:
        pass  # not empty, a mount point, or gone already: not ours to force
