"""List, then watch from the list's resourceVersion; keep a cache; relist when told to.

The official client's watch leaves the caller to notice an expired resourceVersion: here a
410 (as an HTTP status or as an ERROR event in the stream) drops the version and lists
again, and any other break (the API server restarting, a network blip) resumes the watch
from the last version seen, so no event between the two is lost. Objects that vanished
while the watch was down are noticed by the relist (compared with the cache).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from federation.kube.api import Gone, KubeApi, Resource
from namespace.errors import GnsError

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name)"""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


class Informer:
    def __init__(self, api: KubeApi, resource: Resource, notify: Callable[[Key], None],
                 watch_timeout: int = 300) -> None:
        self.api = api
        self.resource = resource
        self.notify = notify
        self.watch_timeout = watch_timeout
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self.relists = 0
        self.resumes = 0

    async def run(self) -> None:
        version: str | None = None
        delay = 0.1
        while True:
            try:
                if version is None:
                    version = await self._relist()
                async for event in self.api.watch(self.resource, version, self.watch_timeout):
                    delay = 0.1
                    obj = event.get("object") or {}
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    kind = event.get("type")
                    if kind == "BOOKMARK":
                        continue
                    k = key_of(obj)
                    if kind == "DELETED":
                        self.cache.pop(k, None)
                    else:
                        self.cache[k] = obj
                    self.notify(k)
                self.resumes += 1  # the server ended the watch (its timeout): resume
            except Gone:
                log.info("watch of %s expired (410): listing again", self.resource.plural)
                version = None
            except GnsError as exc:
                log.warning("watch of %s: %s; retrying in %.1fs", self.resource.plural, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                self.resumes += 1

    async def _relist(self) -> str:
        items, version = await self.api.list(self.resource)
        fresh = {key_of(o): o for o in items}
        gone = set(self.cache) - set(fresh)
        self.cache = fresh
        self.relists += 1
        for k in sorted(gone | set(fresh)):
            self.notify(k)
        self.synced.set()
        return version
