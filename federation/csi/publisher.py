"""Supervised ``gns fuse`` processes, one per published target path, with a watchdog.

Users of every FUSE-based CSI driver know the failure: the FUSE process dies (OOM kill, a
crash, a driver upgrade) and the pod's mount answers "Transport endpoint is not connected"
for good. Here a watchdog thread checks every publication several times a second; when its
process has died or its mount went stale, it clears the mount (``fusermount3 -uz``) and
starts the process again on the same target, so the pod's path works again within seconds
(SPEC §9: within 10 s).

Publications are recorded in ``<state_dir>/publications.json``: a restarted driver re-adopts
live FUSE processes (they run in their own session, so they outlive the driver) and
re-attaches the ones that died with it.
"""
from __future__ import annotations

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

from federation.csi.errors import AlreadyExists
from federation.fuse import mountinfo
from federation.pids import pid_alive
from namespace.errors import Unavailable

log = logging.getLogger(__name__)

FuseCommand = Callable[[str, str, bool], list[str]]
"""(target, global path, read-only) -> the ``gns`` arguments of a foreground ``gns fuse``
(``["--etcd", URL, "fuse", TARGET, "--root", PATH, ...]``)."""
GNS = [sys.executable, "-m", "federation.cli.main"]
SPARE = [sys.executable, "-m", "federation.csi.spare"]

MOUNT_TIMEOUT = 10.0
WATCH_INTERVAL = 0.25


@dataclass
class Publication:
    volume_id: str
    path: str
    target: str
    readonly: bool
    pid: int = 0
    restarts: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid)

    def record(self) -> dict[str, object]:
        return {"volume_id": self.volume_id, "path": self.path, "target": self.target,
                "readonly": self.readonly, "pid": self.pid, "restarts": self.restarts}


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
            targets = list(self._pubs)
        if unmount:
            for target in targets:
                self.unpublish(target)

    # -- publish / unpublish ------------------------------------------------------------------
    def _target_lock(self, target: str) -> threading.Lock:
        """One lock per target path: publications of different pods proceed in parallel,
        and one target is never attached twice at once."""
        with self._lock:
            return self._locks.setdefault(target, threading.Lock())

    def publish(self, volume_id: str, path: str, target: str, readonly: bool) -> Publication:
        with self._target_lock(target):
            pub = self.get(target)
            if pub is not None:
                if (pub.volume_id, pub.readonly) != (volume_id, readonly):
                    raise AlreadyExists(
                        f"target_path {target} already publishes {pub.volume_id}"
                        f"{' read-only' if pub.readonly else ''}")
                if pub.alive() and mountinfo.is_live(target):
                    return pub
                self._attach(pub)
                with self._lock:
                    self._save()
                return pub
            if mountinfo.is_mounted(target):
                if mountinfo.is_stale(target):
                    mountinfo.unmount(target, lazy=True)
                else:
                    raise AlreadyExists(f"target_path {target} is already a mount point "
                                        "this driver did not make")
            Path(target).mkdir(parents=True, exist_ok=True)
            pub = Publication(volume_id=volume_id, path=path, target=target, readonly=readonly)
            self._attach(pub)
            try:
                with self._lock:
                    self._pubs[target] = pub
                    self._save()
            except BaseException:  # never leave a mount nobody knows about
                with self._lock:
                    self._pubs.pop(target, None)
                self._terminate(pub)
                mountinfo.unmount(target, lazy=True)
                raise
            return pub

    def unpublish(self, target: str) -> bool:
        """Unmount ``target``; False if nothing of ours was there (still OK for the CO)."""
        with self._target_lock(target):
            with self._lock:
                pub = self._pubs.pop(target, None)
                if pub is not None:
                    self._save()
            if pub is not None:
                self._terminate(pub)
            mountinfo.unmount(target, lazy=mountinfo.is_stale(target))
            try:
                os.rmdir(target)
            except OSError:
                pass
            return pub is not None

    def get(self, target: str) -> Publication | None:
        with self._lock:
            return self._pubs.get(target)

    def publications(self) -> list[Publication]:
        with self._lock:
            return list(self._pubs.values())

    # -- internals ----------------------------------------------------------------------------
    def _log_path(self, target: str) -> Path:
        import hashlib

        return self.state_dir / f"fuse-{hashlib.sha256(target.encode()).hexdigest()[:16]}.log"

    def _attach(self, pub: Publication) -> None:
        """Start ``gns fuse`` on the target and wait until the mount answers."""
        if mountinfo.is_mounted(pub.target):
            mountinfo.unmount(pub.target, lazy=True)
        self._terminate(pub)
        log_path = self._log_path(pub.target)
        proc = self._launch(self.command(pub.target, pub.path, pub.readonly), log_path)
        pub.proc, pub.pid = proc, proc.pid
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if mountinfo.is_live(pub.target):
                return
            time.sleep(0.02)
        self._terminate(pub)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
        raise Unavailable(f"gns fuse did not mount {pub.path} at {pub.target}"
                          f"{': ' + tail[0] if tail else ''}")

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

    def _terminate(self, pub: Publication) -> None:
        if pub.alive() and pub.pid > 0:
            try:
                os.kill(pub.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while pub.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if pub.alive():
                try:
                    os.kill(pub.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if pub.proc is not None:
            try:
                pub.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            for pub in self.publications():
                lock = self._target_lock(pub.target)
                if not lock.acquire(blocking=False):
                    continue  # a publish or unpublish of this target is under way
                try:
                    if self.get(pub.target) is not pub:
                        continue  # unpublished meanwhile
                    if pub.alive() and not mountinfo.is_stale(pub.target) \
                            and mountinfo.is_mounted(pub.target):
                        continue
                    started = time.monotonic()
                    log.warning("FUSE process for %s at %s is gone: re-attaching",
                                pub.path, pub.target)
                    try:
                        self._attach(pub)
                    except Exception:
                        log.exception("re-attaching %s failed; retrying", pub.target)
                        continue
                    pub.restarts += 1
                    with self._lock:
                        self._save()
                    for cb in self.on_reattach:
                        cb(pub, time.monotonic() - started)
                finally:
                    lock.release()

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
        for target, rec in data.items():
            pub = Publication(volume_id=rec["volume_id"], path=rec["path"], target=target,
                              readonly=bool(rec["readonly"]), pid=int(rec.get("pid", 0)),
                              restarts=int(rec.get("restarts", 0)))
            self._pubs[target] = pub  # the watchdog re-attaches it if it is not live
        self._save()
