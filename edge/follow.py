"""A site follows the new owner of a volume it used to own (``promote --force`` while away).

Why it exists: SPEC §7 has a returning old owner become a mirror target of the new owner
and resync. A core controller would be pushed to; an edge site cannot be (nothing dials in
to it, SPEC §8), so the site pulls instead. Once the volume manager has failed the volume
back (the site's writes the new owner never saw kept under ``.gns/diverged/<epoch>/``, the
volume a replica), this asks the new owner, over the link, for its version and files
(``VolumeState``, ``List``, ``Stat``, ``Read`` run AT the owner through the hub), fetches
the blobs the site lacks and resets the site's copy to exactly that version in one step.
The new owner's data wins; the diverged copies stay where fail-back put them.

A pass is redone when the owner's version moved while it read (the next kick catches up),
after every namespace change, every time the link comes up, and every few seconds while it
is up and behind.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from edge.site import LocalNamespace
from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api._gen.gns.federation.v1 import federation_pb2_grpc as pb_grpc
from federation.api.errors import from_rpc_error
from federation.api.wire import read_data, read_raw
from federation.channels import BASE_OPTIONS
from federation.sitekit import FileMeta, IOPool, VolumeManager, VolumeStorage
from federation.stream_feed import feed_blocking
from namespace.errors import Conflict, InvalidInput

log = logging.getLogger(__name__)

RECHECK_S = 5.0


class Follower:
    def __init__(self, site: str, cache: LocalNamespace, volumes: VolumeManager, pool: ThreadPoolExecutor,
                 uplink: Callable[[str], Awaitable[str]], link_up: asyncio.Event) -> None:
        self.site = site
        self.cache = cache
        self.volumes = volumes
        self.uplink = uplink
        self.link_up = link_up
        self._pool = pool
        self._io = IOPool(pool).run
        self._kick = asyncio.Event()
        self.followed: dict[str, tuple[int, int]] = {}
        """volume -> (version, epoch) the site's replica was last reset to (status, tests)."""

    def kick(self, *_: Any) -> None:
        self._kick.set()

    def followable(self) -> list[tuple[str, str]]:
        """(volume, new owner) for volumes this site held and another cluster owns now."""
        view = self.cache.view
        return sorted((n, v.owner) for n, v in view.volumes.items()
                      if v.owner and v.owner != self.site and self.site in v.former_owners
                      and self.volumes.has_local(n))

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), timeout=RECHECK_S)
            except TimeoutError:
                pass
            self._kick.clear()
            if not self.link_up.is_set():
                continue
            for name, owner in self.followable():
                try:
                    await self.follow(name, owner)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("site %s: following %s from its new owner %s failed: %s",
                                self.site, name, owner, exc)

    async def follow(self, name: str, owner: str) -> bool:
        """One pass; True when the site's replica was reset to the owner's current version."""
        vs = await self._io(self.volumes.storage, name)
        if vs.role != "replica":
            return False  # the volume manager has not failed it back yet (diverged writes first)
        channel = grpc.aio.insecure_channel(await self.uplink(owner), options=BASE_OPTIONS)
        stub = pb_grpc.FederationStub(channel)
        try:
            state = await stub.VolumeState(pb.VolumeStateRequest(volume=name), timeout=30)
            version, epoch = int(state.version), int(state.epoch)
            if (int(vs.version), int(vs.epoch)) == (version, epoch):
                self.followed[name] = (version, epoch)
                return False
            files, dirs = await self._walk(channel, stub, name, version)
            after = await stub.VolumeState(pb.VolumeStateRequest(volume=name), timeout=30)
            if int(after.version) != version:
                self._kick.set()  # it moved while we read: again, at once
                raise Conflict(f"{owner} committed v{after.version} while the site read v{version}")
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, f"owner {owner}") from None
        finally:
            await channel.close()

        def reset() -> None:
            if vs.epoch < epoch:
                vs.set_epoch(epoch)
            vs.reset_to(files, version, dirs)

        await self._io(reset)
        self.followed[name] = (version, epoch)
        log.warning("site %s: volume %s now mirrors its owner %s (v%d, epoch %d, %d files)",
                    self.site, name, owner, version, epoch, len(files))
        return True

    async def _walk(self, channel: grpc.aio.Channel, stub: pb_grpc.FederationStub, name: str,
                    version: int) -> tuple[list[FileMeta], list[tuple[str, int, float]]]:
        """Every file (blob fetched if missing) and explicit directory the owner holds."""
        vs = await self._io(self.volumes.storage, name)
        files: list[FileMeta] = []
        dirs: list[tuple[str, int, float]] = []
        pending = [""]
        while pending:
            rel = pending.pop()
            listing = await stub.List(pb.ListRequest(target=pb.Target(volume=name, relative_path=rel)), timeout=60)
            for e in listing.entries:
                path = f"{rel}/{e.name}" if rel else e.name
                if e.type == "dir":
                    pending.append(path)
                    if e.mode:  # explicit (mkdir), not implied by a file below it
                        dirs.append((path, int(e.mode), float(e.mtime)))
                    continue
                info = await stub.Stat(pb.StatRequest(target=pb.Target(volume=name, relative_path=path)),
                                       timeout=60)
                if not await self._io(vs.has_blob, info.sha256):
                    await self._fetch(channel, vs, name, path, info.sha256)
                files.append(FileMeta(path, int(info.size), info.sha256, float(info.mtime),
                                      min(int(info.version) or version, version), int(info.mode) or 0o644))
        return files, dirs

    async def _fetch(self, channel: grpc.aio.Channel, vs: VolumeStorage, name: str, path: str, sha256: str) -> None:
        """Store one file's blob as it streams in (a file far larger than the site's memory
        follows too), checked against the sha256 its ``Stat`` gave."""
        async def data() -> AsyncIterator[memoryview]:
            async for message in read_raw(channel)(
                    pb.ReadRequest(target=pb.Target(volume=name, relative_path=path)), timeout=600):
                if chunk := read_data(message):
                    yield chunk

        try:
            await feed_blocking(functools.partial(vs.ingest_blob, expect_sha256=sha256), data(), self._pool)
        except InvalidInput as exc:  # the bytes are not those its Stat described
            raise Conflict(f"{path} changed at the owner while the site read it ({exc})") from None

