"""A local copy of the control plane, fed by one etcd watch, so resolving needs no round trip.

:class:`NamespaceView` is the plain in-memory state (clusters, liveness, volumes, published
volume states, mounts, policies, mirror statuses). :class:`NamespaceCache` loads it with
range reads at one revision R (paged, so a 100k-mount namespace loads within the etcd call
timeout) and then follows a prefix watch from R+1. If the watch breaks (a
dead member, a compaction past our revision) it reloads the whole state and watches again,
so a cache is never silently stale for longer than a reconnect. Listeners hear about every
applied change, after it is applied.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aetcd
import grpc
from pydantic import ValidationError

from namespace import schema
from namespace.etcd import FAILURES, Etcd, prefix_end
from namespace.models import ClusterSpec, ClusterView, Mount, Volume, VolumeState, VolumeView
from namespace.mounts import MountsAt, MountTable, Resolution
from namespace.paths import ancestors, check_name, normalize, normalize_relative

log = logging.getLogger(__name__)

Listener = Callable[[str, str, "bytes | None"], None]
"""Called as ``listener(kind, name, value)``; value None means deleted. After a reload (the
watch broke) every cluster, volume and policy is named, and the mount table once as
``("mounts", "", None)``: any mount may differ (naming each of a million would not do)."""


@dataclass
class NamespaceView:
    """Everything gns keeps in etcd, decoded."""

    clusters: dict[str, ClusterSpec] = field(default_factory=dict)
    alive: dict[str, bytes] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    volstates: dict[str, VolumeState] = field(default_factory=dict)
    mounts: MountTable = field(default_factory=MountTable)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    mirror_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    diverged: dict[str, dict[str, Any]] = field(default_factory=dict)
    leader: str | None = None
    revision: int = 0

    # -- applying etcd keys -------------------------------------------------------------
    def apply(self, key: bytes, value: bytes | None) -> tuple[str, str] | None:
        """Apply one key (None = deleted); returns (kind, name) or None for foreign keys."""
        k = key.decode()
        try:
            if k.startswith(schema.CLUSTERS):
                name = k[len(schema.CLUSTERS) :]
                _store(self.clusters, name, value, ClusterSpec.model_validate_json)
                return "cluster", name
            if k.startswith(schema.ALIVE):
                name = k[len(schema.ALIVE) :]
                _store(self.alive, name, value, bytes)
                return "alive", name
            if k.startswith(schema.VOLUMES):
                name = k[len(schema.VOLUMES) :]
                _store(self.volumes, name, value, Volume.model_validate_json)
                return "volume", name
            if k.startswith(schema.VOLSTATE):
                name = k[len(schema.VOLSTATE) :]
                _store(self.volstates, name, value, VolumeState.model_validate_json)
                return "volstate", name
            if k.startswith(schema.MOUNTS):
                return self.apply_mount(key, value)
            if k.startswith(schema.POLICIES):
                name = k[len(schema.POLICIES) :]
                _store(self.policies, name, value, json.loads)
                return "policy", name
            if k.startswith(schema.MIRRORS):
                name = k[len(schema.MIRRORS) :]
                _store(self.mirror_status, name, value, json.loads)
                return "mirror", name
            if k.startswith(schema.DIVERGED):
                name = k[len(schema.DIVERGED) :]
                _store(self.diverged, name, value, json.loads)
                return "diverged", name
            if k == schema.LEADER:
                self.leader = None if value is None else value.decode()
                return "leader", ""
        except (ValidationError, ValueError) as exc:
            log.warning("ignoring malformed etcd key %s: %s", k, exc)
        return None

    def apply_mount(
        self, key: bytes, value: bytes | None, decode: Callable[[bytes], tuple[str, str, str]] | None = None
    ) -> tuple[str, str] | None:
        """Apply one key under the mounts prefix (the bulk of a load)."""
        try:
            if decode is None:
                decode = _mount_fields
            if value is None:
                path = schema.mount_path(key)
                self.mounts.remove(path)
            else:
                path, volume, subpath = decode(value)
                self.mounts.set(path, volume, subpath)
        except (ValidationError, ValueError) as exc:
            log.warning("ignoring malformed etcd key %s: %s", key.decode(errors="replace"), exc)
            return None
        return "mount", path

    # -- questions ------------------------------------------------------------------------
    def cluster_state(self, cluster_id: str) -> Literal["Ready", "Down"]:
        return "Ready" if cluster_id in self.alive else "Down"

    def cluster_view(self, cluster_id: str) -> ClusterView | None:
        spec = self.clusters.get(cluster_id)
        if spec is None:
            return None
        return ClusterView(**spec.model_dump(), state=self.cluster_state(cluster_id))

    def volume_view(self, name: str) -> VolumeView | None:
        vol = self.volumes.get(name)
        if vol is None:
            return None
        st = self.volstates.get(name)
        return VolumeView(
            name=vol.name,
            owner=vol.owner,
            epoch=vol.epoch,
            version=st.version if st else 0,
            state=self.cluster_state(vol.owner),
            labels=dict(vol.labels),
        )

    def paths_of(self, volume: str, rel: str | None = None) -> list[str]:
        """The global paths where ``volume`` (or ``rel`` inside it) shows in the mount
        table: every mount of it (with a subpath, only what lies below that)."""
        out = []
        for mpath, sub in self.mounts.mounts_of(volume):
            if rel is None:
                out.append(mpath)
                continue
            if sub and rel != sub and not rel.startswith(sub + "/"):
                continue
            tail = rel[len(sub):].lstrip("/") if sub else rel
            out.append(mpath if not tail else (mpath.rstrip("/") + "/" + tail))
        return out

    def aliases_of(self, path: str) -> list[str]:
        """The other global paths showing the bytes at ``path`` (its volume mounted again,
        whole or by a subpath holding it): a grant on any of them reaches them."""
        res = self.resolve(path)
        if res is None:
            return []
        return [p for p in self.paths_of(res.volume, res.relative_path) if p != res.path]

    def mount_list(self) -> list[Mount]:
        return [Mount(path=p, volume=v, subpath=s) for p, (v, s) in self.mounts.items()]

    def resolve(self, path: str) -> Resolution | None:
        return self.mounts.resolve_normal(normalize(path))


def _mount_fields(value: bytes) -> tuple[str, str, str]:
    """(path, volume, subpath) of a stored mount, with the checks ``Mount`` makes but no
    pydantic model per key: 100k mounts then load in well under a second (issue 14)."""
    doc = json.loads(value)
    if type(doc) is dict:
        path, volume, subpath = doc.get("path"), doc.get("volume"), doc.get("subpath", "")
        if type(path) is str and type(volume) is str and type(subpath) is str:
            return normalize(path), check_name("volume", volume), normalize_relative(subpath)
    m = Mount.model_validate_json(value)  # anything else: the model's own error
    return m.path, m.volume, m.subpath


class _MountDecoder:
    """:func:`_mount_fields` for a bulk load: the JSON text scanned by the C scanner alone
    (no encoding sniffing or wrapper frames), and the few distinct volume names and subpaths
    of a large table checked once each. Same answers and same errors as ``_mount_fields``."""

    __slots__ = ("_scan", "_volumes", "_subpaths")

    def __init__(self) -> None:
        decoder: Any = json.JSONDecoder()  # scan_once: set by __init__, not in typeshed
        self._scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once
        self._volumes: set[str] = set()
        self._subpaths: dict[str, str] = {}

    def __call__(self, value: bytes) -> tuple[str, str, str]:
        try:
            text = value.decode()
            doc, end = self._scan(text, 0)
        except (UnicodeDecodeError, StopIteration):
            return _mount_fields(value)
        if end != len(text) or type(doc) is not dict:
            return _mount_fields(value)
        path, volume, subpath = doc.get("path"), doc.get("volume"), doc.get("subpath", "")
        if type(path) is not str or type(volume) is not str or type(subpath) is not str:
            return _mount_fields(value)
        if volume not in self._volumes:
            self._volumes.add(check_name("volume", volume))
        sub = self._subpaths.get(subpath)
        if sub is None:
            sub = self._subpaths[subpath] = normalize_relative(subpath)
        return normalize(path), volume, sub


def _store(table: dict[str, Any], name: str, value: bytes | None, decode: Callable[[bytes], Any]) -> None:
    if value is None:
        table.pop(name, None)
    else:
        table[name] = decode(value)


LEARN_TIMEOUT_S = 5.0
"""How long a request waits for this process's watch to bring what etcd already has."""
LOAD_PAGE = 25000
"""Keys per range read of a (re)load. One read of 100k mounts outlasts the etcd call timeout
on a busy host; but every page also costs etcd a walk over the rest of the range (a limited
Range still counts every key up to its end), so many small pages cost more than they save.
A page that times out is retried at half the size (down to ``MIN_PAGE``)."""
MIN_PAGE = 500


class _PageTooBig(Exception):
    """A page timed out: ask again for fewer keys."""


async def _range_page(
    client: Any, start: bytes, end: bytes, revision: int, limit: int, serializable: bool = False
) -> Any:
    # aetcd's get_range has no limit/revision: build its request and set them here.
    req = client._build_get_range_request(key=start, range_end=end)
    req.limit = limit
    req.revision = revision
    req.serializable = serializable
    try:
        return await client.kvstub.Range(req, timeout=client._timeout, metadata=client.metadata)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and limit > MIN_PAGE:
            raise _PageTooBig from exc
        aetcd.exceptions._handle_exception(exc)  # raises aetcd's error for this status


async def load_view(etcd: Etcd, *, lasting: bool = False) -> NamespaceView:
    """One consistent snapshot of the whole control plane: range reads of up to
    ``LOAD_PAGE`` keys, every page at the revision of the first.

    The next page is asked for as soon as a page arrives, before that page is decoded, so
    etcd serves one while this process decodes the other. Only the first page is a
    linearizable read; the others name its revision, which the member that served it has
    applied, so they are served locally (serializable) without another quorum round.

    ``lasting``: a watch will keep this view current for long (:class:`NamespaceCache`), so
    its mount table asks for huge pages once it is big (see :class:`MountTable`)."""
    view = NamespaceView(mounts=MountTable(huge_pages=lasting))
    prefix = schema.ROOT.encode()
    end = prefix_end(prefix)
    limit = LOAD_PAGE

    async def page(start: bytes, revision: int) -> Any:
        nonlocal limit
        while True:
            try:
                return await etcd.call(_range_page, etcd.client, start, end, revision, limit, bool(revision))
            except _PageTooBig:
                limit = max(MIN_PAGE, limit // 2)
                log.info("namespace load: page timed out; asking for %d keys a page", limit)

    rsp = await page(prefix, 0)
    revision = rsp.header.revision
    view.mounts.reserve(rsp.count)
    mount_prefix = schema.MOUNTS.encode()
    decode = _MountDecoder()
    while True:
        more = rsp.more and rsp.kvs
        ahead = asyncio.ensure_future(page(rsp.kvs[-1].key + b"\0", revision)) if more else None
        try:
            for kv in rsp.kvs:
                if kv.key.startswith(mount_prefix):
                    view.apply_mount(kv.key, kv.value, decode)
                else:
                    view.apply(kv.key, kv.value)
        except BaseException:
            if ahead is not None:
                ahead.cancel()
            raise
        if ahead is None:
            break
        rsp = await ahead
    view.mounts.settle()  # a lasting table's keys on huge pages too, now all are in
    view.revision = revision
    return view


async def load_path_view(etcd: Etcd, path: str) -> NamespaceView:
    """The part of the namespace that routing one request to ``path`` reads: the mount keys
    on the path's prefixes (one transaction of gets), the volume the longest of them names,
    then that volume's owner record and liveness key. A one-shot command (``gns stat``) then
    costs three small round trips whatever the size of the namespace, instead of a read of
    all of it. Nothing else is in the view: callers that need more (replicas, mirrors, error
    messages about the whole table) load the whole view."""
    path = normalize(path)
    view = NamespaceView()
    await _read_keys(etcd, view, [schema.mount(p) for p in ancestors(path)])
    res = view.resolve(path)
    if res is not None:
        await _read_keys(etcd, view, [schema.volume(res.volume)])
        vol = view.volumes.get(res.volume)
        if vol is not None:
            await _read_keys(etcd, view, [schema.cluster(vol.owner), schema.alive(vol.owner)])
    return view


async def load_mount_points(etcd: Etcd, path: str) -> MountsAt:
    """What a one-shot listing or stat of ``path`` needs of the mount table (the mount
    points directly below it, whether one is at it, whether it is under one). Reads the
    mount keys below ``path`` (one range: keys are the quoted paths, so a quoted prefix is
    a key prefix) and those on its way up, not the whole namespace."""
    path = normalize(path)
    view = NamespaceView()
    kvs, _ = await etcd.get_prefix(schema.mount("/" if path == "/" else path + "/"))
    for key, value in kvs:
        view.apply(key, value)
    await _read_keys(etcd, view, [schema.mount(p) for p in ancestors(path)])
    return view.mounts.at(path)


async def _read_keys(etcd: Etcd, view: NamespaceView, keys: list[bytes]) -> None:
    """Get ``keys`` in one transaction (one revision) and apply those that exist; the view's
    revision becomes that of the latest read."""
    tx = etcd.tx
    _, responses = await etcd.txn([], [tx.get(k) for k in keys])
    for key, found in zip(keys, responses, strict=True):
        for value, meta in found:
            view.apply(key, value)
            view.revision = max(view.revision, meta.header.revision)


class NamespaceCache:
    """A :class:`NamespaceView` kept current by an etcd watch."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.view = NamespaceView(mounts=MountTable(huge_pages=True))
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()
        self._changed = asyncio.Condition()
        self.reloads = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def own_write(self, *, volume: Volume | None = None, leader: str | None = None) -> None:
        """Show what this process just committed to etcd (a volume record, the leader key)
        at once, instead of after the watch delivers it (moments later, same value). The
        one write into the view from outside the watch; a volume never goes back an epoch."""
        if volume is not None:
            current = self.view.volumes.get(volume.name)
            if current is None or current.epoch <= volume.epoch:
                self.view.volumes[volume.name] = volume
        if leader is not None:
            self.view.leader = leader

    async def load(self) -> None:
        """The first snapshot; then run :meth:`follow` (or use :meth:`start`)."""
        await self._reload()

    async def start(self) -> None:
        """Load, then follow the watch on a task this cache owns (until :meth:`stop`)."""
        await self.load()
        self._task = asyncio.create_task(self.follow(), name="namespace-cache-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait_for(self, predicate: Callable[[NamespaceView], bool], timeout: float) -> bool:
        """Wait until ``predicate(view)`` holds (checked after every applied change)."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self.view)), timeout)
                return True
            except TimeoutError:
                return False

    async def learn(self, *, volume: str = "", path: str = "", timeout: float = LEARN_TIMEOUT_S) -> bool:
        """Make sure this view shows ``volume``, or the mount and volume ``path`` resolves
        to, if etcd has them: whether it does now.

        Why: a caller whose own view is ahead (it made the volume or the mount a moment ago,
        or its watch is simply faster) must not hear "not found" from a controller whose
        watch is a few milliseconds behind. So a miss costs one consistent read of those
        keys; only if etcd has them does this wait for the watch to bring them (it does
        not write into the view itself: the watch stays its one writer, in etcd's order)."""
        known: Callable[[NamespaceView], bool]
        if volume:
            if volume in self.view.volumes:
                return True
            if await self.etcd.get(schema.volume(volume)) is None:
                return False

            def known(view: NamespaceView) -> bool:
                return volume in view.volumes
        else:
            path = normalize(path)
            fresh = await load_path_view(self.etcd, path)
            found = fresh.resolve(path)
            if found is None or found.volume not in fresh.volumes:
                return False
            mount = found.mount

            def known(view: NamespaceView) -> bool:
                res = view.resolve(path)
                return res is not None and res.mount == mount and res.volume in view.volumes
        return known(self.view) or await self.wait_for(known, timeout)

    async def _reload(self) -> None:
        fresh = await load_view(self.etcd, lasting=True)
        old, self.view = self.view, fresh
        self.reloads += 1
        # Tell listeners about everything that may differ; they re-read the view.
        for kind, names in (
            ("cluster", set(old.clusters) | set(fresh.clusters)),
            ("alive", set(old.alive) | set(fresh.alive)),
            ("volume", set(old.volumes) | set(fresh.volumes)),
            ("policy", set(old.policies) | set(fresh.policies)),
        ):
            for name in names:
                self._notify(kind, name, None)
        self._notify("mounts", "", None)
        await self._signal()

    async def follow(self) -> None:
        """Apply the watch's changes until cancelled, reloading whenever the watch breaks."""
        prefix = schema.ROOT.encode()
        while True:
            try:
                watch = await self.etcd.call(
                    self.etcd.client.watch_prefix, prefix, start_revision=self.view.revision + 1
                )
                async for event in watch:
                    value = None if event.kind == "DELETE" else event.kv.value
                    applied = self.view.apply(event.kv.key, value)
                    self.view.revision = max(self.view.revision, event.kv.mod_revision)
                    if applied:
                        self._notify(applied[0], applied[1], value)
                    await self._signal()
                raise ConnectionError("watch stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost stream, compaction, dead member: start over
                log.info("namespace watch lost (%s); reloading", exc,
                         exc_info=not isinstance(exc, FAILURES))
                await asyncio.sleep(0.2)
                while True:
                    try:
                        await self._reload()
                        break
                    except asyncio.CancelledError:
                        raise
                    except FAILURES as exc2:
                        log.warning("namespace reload failed (%s); retrying", exc2)
                        await asyncio.sleep(1.0)

    def _notify(self, kind: str, name: str, value: bytes | None) -> None:
        for listener in self._listeners:
            try:
                listener(kind, name, value)
            except Exception:
                log.exception("namespace listener failed for %s %s", kind, name)

    async def _signal(self) -> None:
        async with self._changed:
            self._changed.notify_all()
