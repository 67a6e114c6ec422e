"""Followers of the per-volume change streams (``Client.watch``) that keep a mount's caches
honest: each committed change anywhere invalidates the attributes, the listing and the
kernel's cached pages and dentries of the paths it names, within ~50 ms of the commit.

One thread per volume the mount has touched, each owned by :class:`Watcher` (``stop()``
cancels the streams and joins them). While a stream is down the cache falls back to a
one-second lifetime for that volume and the stream is re-opened from the current version.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from federation.client import Change, Client
    from federation.fuse.operations import GnsOperations

log = logging.getLogger(__name__)

_RETRY_S = 0.5
_RETRY_MAX_S = 30.0
_ATTR_ONLY = ("chmod", "utime", "dirattr")  # changes that leave the tree as it is


class Watcher:
    def __init__(self, ops: GnsOperations, client: Client) -> None:
        self.ops = ops
        self.client = client
        self._threads: dict[str, threading.Thread] = {}
        self._streams: dict[str, Any] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def ensure(self, volume: str) -> None:
        """Follow ``volume`` from now on (idempotent; any thread)."""
        with self._lock:
            if volume in self._threads or self._stop.is_set():
                return
            t = threading.Thread(target=self._follow, args=(volume,), daemon=True,
                                 name=f"gns-fuse-watch-{volume}")
            self._threads[volume] = t
            t.start()

    def follow_mount_table(self) -> None:
        """Follow the mount table too: a mount made or removed changes what this mount
        shows at and above its mount point (another volume's tree, a new prefix in a
        listing), which no volume's change stream says."""
        self.client.on_namespace_change(self._mount_table_changed)

    def _mount_table_changed(self, kind: str, name: str, value: bytes | None) -> None:
        if kind == "mounts":  # the table was reloaded: any mount may differ
            self.ops.cache.invalidate_tree("")
            return
        if kind != "mount":
            return
        rel = self.ops.rel_of(name)
        if rel is None:
            if not self.ops.root.startswith(name.rstrip("/") + "/"):
                return  # beside --root: nothing shown here changed
            rel = ""  # above --root: all shown here may now be another volume's
        self.ops.cache.invalidate_tree(rel)
        self.ops.invalidate(rel, gone=value is None and rel != "")
        while rel:  # a mount prefix shows in every listing above it
            rel = rel.rpartition("/")[0]
            self.ops.cache.invalidate(rel)

    def _mount_path(self, volume: str) -> str | None:
        for m in self.client.view().mount_list():
            if m.volume == volume:
                return str(m.path)
        return None

    def _follow(self, volume: str) -> None:
        failures = 0
        while not self._stop.is_set():
            lived = time.monotonic()
            try:
                gpath = self._mount_path(volume)
                if gpath is None:
                    return
                since = int(self.client.volume(volume).version)
                stream = self.client.watch(gpath, from_version=since)
                with self._lock:
                    self._streams[volume] = stream
                if self._stop.is_set():
                    stream.close()
                    return
                self.ops.cache.set_healthy(volume, True)
                for change in stream:
                    failures = 0
                    self._apply(change)
            except Exception as exc:  # the stream comes back; meanwhile caches live 1 s
                # A call refused as it starts (no read on the volume's root) opens fine and
                # fails at its first message: only a stream that delivered a change or lived
                # a while counts as a success, or the retries never backed off (two refused
                # calls, two audit lines, a second, per controller, for good).
                failures = 1 if time.monotonic() - lived > _RETRY_MAX_S else failures + 1
                if failures == 1:  # once per outage, not once per retry
                    log.info("change stream of volume %s interrupted: %s", volume, exc)
            finally:
                self.ops.cache.set_healthy(volume, False)
            # A stream refused for good (no read on the volume's root: the mount still reads
            # what it may, with 1 s caches) must not be asked twice a second forever.
            self._stop.wait(min(_RETRY_MAX_S, _RETRY_S * 2 ** max(0, failures - 1)))

    def _rels(self, volume: str, vrel: str) -> list[str]:
        """Mount-relative paths showing ``vrel`` of ``volume`` (every mount of it)."""
        shown = (self.ops.rel_of(g) for g in self.client.view().paths_of(volume, vrel))
        return [rel for rel in shown if rel is not None]

    def _apply(self, change: Change) -> None:
        volume = change.volume
        if self.ops.is_own(volume, change.version):
            return  # this mount made it and already knows
        gone = change.op in ("rmdir", "delete") or (
            change.op == "rename" and not change.src)  # the old name's row
        if change.op not in _ATTR_ONLY:
            # A volume root's mtime is its tree's last change (what `gns stat` shows).
            for rel in self._rels(volume, ""):
                self.ops.cache.forget_attrs(rel)
        for rel in self._rels(volume, change.relative_path):
            if change.op not in _ATTR_ONLY:
                self.ops.cache.recheck_ancestors(rel, removed=gone)
            if gone:
                self.ops.cache.invalidate_tree(rel)
            self.ops.invalidate(rel, gone=gone)
        if change.src:
            res = self.client.view().resolve(change.src)
            if res is not None:
                for rel in self._rels(volume, res.relative_path):
                    self.ops.cache.invalidate_tree(rel)
                    self.ops.invalidate(rel, gone=True)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
            threads = list(self._threads.values())
        for s in streams:
            s.close()
        for t in threads:
            t.join(5)
