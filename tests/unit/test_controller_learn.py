"""The Federation service asks its cache to learn what a request names before it answers
"not found" (a volume or mount made a moment ago that its watch has not brought yet)."""
from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller.service import FederationService
from namespace import schema
from namespace.cache import NamespaceView
from namespace.errors import NotFound
from namespace.models import Mount, Volume


class _BehindCache:
    """A cache whose watch has not delivered ``pending`` yet; ``learn`` brings it (as the
    real one waits for its watch) when ``etcd_has`` says etcd holds it."""

    def __init__(self, pending: list[tuple[bytes, bytes]], etcd_has: bool = True) -> None:
        self.view = NamespaceView()
        self.pending, self.etcd_has = pending, etcd_has
        self.asked: list[dict[str, str]] = []

    async def learn(self, **what: str) -> bool:
        self.asked.append(what)
        if not self.etcd_has:
            return False
        for key, value in self.pending:
            self.view.apply(key, value)
        return True


def _service(cache: _BehindCache) -> FederationService:
    return FederationService("c1", cast(Any, cache), cast(Any, None), cast(Any, None),
                             cast(Any, None), cast(Any, None))


def _made() -> list[tuple[bytes, bytes]]:
    return [(schema.volume("fresh"), Volume(name="fresh", owner="c1").dump()),
            (schema.mount("/fresh"), Mount(path="/fresh", volume="fresh").dump())]


def test_a_volume_or_mount_made_a_moment_ago_is_learned_not_refused() -> None:
    cache = _BehindCache(_made())
    svc = _service(cache)
    r = asyncio.run(svc._resolved(pb.Target(global_path="/fresh/a/b")))
    assert (r.volume, r.rel) == ("fresh", "a/b") and cache.asked == [{"path": "/fresh/a/b"}]

    cache = _BehindCache(_made())
    svc = _service(cache)
    r = asyncio.run(svc._resolved(pb.Target(volume="fresh", relative_path="x")))
    assert r.volume == "fresh" and "fresh" in cache.view.volumes
    assert cache.asked == [{"volume": "fresh"}]
    asyncio.run(svc._resolved(pb.Target(volume="fresh", relative_path="y")))
    assert len(cache.asked) == 1  # known now: nothing asked


def test_resolve_learns_a_mount_made_a_moment_ago() -> None:
    cache = _BehindCache(_made())
    reply = asyncio.run(_service(cache).Resolve(pb.ResolveRequest(path="/fresh/f"), cast(Any, None)))
    assert (reply.volume, reply.relative_path, reply.owner.cluster) == ("fresh", "f", "c1")
    cache = _BehindCache(_made(), etcd_has=False)
    with pytest.raises(NotFound):
        asyncio.run(_service(cache).Resolve(pb.ResolveRequest(path="/fresh/f"), cast(Any, None)))


def test_what_etcd_does_not_have_is_still_not_found() -> None:
    cache = _BehindCache(_made(), etcd_has=False)
    with pytest.raises(NotFound):
        asyncio.run(_service(cache)._resolved(pb.Target(global_path="/fresh/a")))
    assert cache.asked == [{"path": "/fresh/a"}]
