"""A FAKE Kubernetes API server for tests and benchmarks: no kube-apiserver can run here.

It speaks the real REST and watch protocol for custom resources, including the parts a
reconciler must get right and that kmock's emulator leaves out: ``resourceVersion`` (one
counter over the store, as etcd's revision), ``generation`` (bumped on spec changes only),
``uid`` and ``creationTimestamp``, the ``status`` subresource (the main resource ignores
status, ``/status`` changes only status), optimistic concurrency (409 on a stale
``metadata.resourceVersion``), finalizers (DELETE sets ``deletionTimestamp``; the object
goes when the last finalizer is removed), JSON merge patches, bearer-token checks, and watch
streams from a ``resourceVersion`` that answer an expired one (see :meth:`FakeKube.expire`)
with an ``ERROR`` event of code 410 exactly as the real server does.

It runs its own event loop in a thread; ``stop()`` and ``start()`` on the same port act as an
API server restart: the objects (etcd's job in a real cluster) survive, open watches break.
Not implemented: label/field selectors, server-side apply, schema validation, pagination.
"""
from __future__ import annotations

import asyncio
import copy
import datetime
import json
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

GROUP_VERSION = "gns.io/v1alpha1"
KINDS = {"mirrorpolicies": "MirrorPolicy", "globalmounts": "GlobalMount"}
TOKEN = "fake-token"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Store:
    """What etcd holds behind a real API server: survives restarts of the fake."""

    rv: int = 100
    objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(
        default_factory=lambda: {p: {} for p in KINDS})
    events: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    compacted: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Failure", "message": message, "reason": reason,
                              "code": code}, status=code)


class FakeKube:
    def __init__(self, port: int = 0, store: Store | None = None) -> None:
        self.port = port
        self.store = store or Store()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._changed: asyncio.Event | None = None
        """Set (and replaced) at every change: watchers wait on the one they saw."""
        self._expired = 0
        """Bumped by :meth:`expire`: open watches end, so they must resume (and get 410)."""
        self._closing = False
        self.requests: list[tuple[str, str]] = []
        self.watches_opened = 0

    # -- process control --------------------------------------------------------------------
    def start(self) -> FakeKube:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-kube-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake API server did not start")
        return self

    async def _serve(self) -> None:
        self._changed = asyncio.Event()
        self._closing = False
        app = web.Application(middlewares=[self._auth])
        base = "/apis/gns.io/v1alpha1"
        app.router.add_get(base + "/{plural}", self._list_or_watch)
        app.router.add_get(base + "/namespaces/{ns}/{plural}", self._list_or_watch)
        app.router.add_post(base + "/namespaces/{ns}/{plural}", self._create)
        one = base + "/namespaces/{ns}/{plural}/{name}"
        app.router.add_get(one, self._get)
        app.router.add_put(one, self._update)
        app.router.add_patch(one, self._patch)
        app.router.add_delete(one, self._delete)
        app.router.add_get(one + "/status", self._get)
        app.router.add_put(one + "/status", self._update)
        app.router.add_patch(one + "/status", self._patch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the OS chose for port 0

    def stop(self) -> None:
        """Stop serving (open watches break); the store is kept for a restart."""
        if self._loop is None or self._runner is None or self._thread is None:
            return
        loop, runner, thread = self._loop, self._runner, self._thread

        async def shutdown() -> None:
            self._closing = True
            self._wake()
            await runner.cleanup()
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        return path

    def expire(self) -> None:
        """Compact the history, as etcd does: every watch resuming from an older
        resourceVersion gets 410 Gone. Open watches are ended so they must resume."""
        with self.store.lock:
            self.store.compacted = self.store.rv
            self.store.events.clear()
        self._poke(expire=True)

    def _poke(self, expire: bool = False) -> None:
        loop = self._loop
        if loop is None:
            return

        def notify() -> None:
            if expire:
                self._expired += 1
            self._wake()

        loop.call_soon_threadsafe(notify)

    def _wake(self) -> None:
        """Wake every watcher (on the server's loop)."""
        ev, self._changed = self._changed, asyncio.Event()
        if ev is not None:
            ev.set()

    # -- HTTP ---------------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    def _items(self, request: web.Request) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
        plural = request.match_info["plural"]
        if plural not in KINDS:
            raise web.HTTPNotFound()
        return plural, self.store.objects[plural]

    async def _list_or_watch(self, request: web.Request) -> web.StreamResponse:
        plural, items = self._items(request)
        ns = request.match_info.get("ns")
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, plural, ns)
        with self.store.lock:
            out = [copy.deepcopy(o) for (n, _), o in sorted(items.items()) if ns in (None, n)]
            rv = self.store.rv
        return web.json_response({"apiVersion": GROUP_VERSION, "kind": KINDS[plural] + "List",
                                  "metadata": {"resourceVersion": str(rv)}, "items": out})

    async def _watch(self, request: web.Request, plural: str, ns: str | None) -> web.StreamResponse:
        self.watches_opened += 1
        since_text = request.query.get("resourceVersion", "")
        since = int(since_text) if since_text.isdigit() else self.store.rv
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        start_expired = self._expired
        while True:
            changed = self._changed
            assert changed is not None
            with self.store.lock:
                compacted = self.store.compacted
                pending = [(rv, t, o) for rv, p, t, o in self.store.events
                           if rv > since and p == plural
                           and ns in (None, o["metadata"].get("namespace"))]
            if since < compacted:
                gone = {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {since} ({compacted})"}}
                await resp.write(json.dumps(gone).encode() + b"\n")
                return resp
            for rv, t, o in pending:
                await resp.write(json.dumps({"type": t, "object": o}).encode() + b"\n")
                since = rv
            remaining = deadline - loop.time()
            if remaining <= 0:
                return resp
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, 1.0))
            except TimeoutError:
                pass
            if self._closing:
                return resp
            if self._expired != start_expired:
                return resp  # history compacted: end the stream; the client resumes and gets 410

    def _record(self, plural: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Bump the store's version, stamp it on ``obj`` and log the event (lock held)."""
        self.store.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.store.rv)
        self.store.events.append((self.store.rv, plural, kind, copy.deepcopy(obj)))
        return obj

    async def _create(self, request: web.Request) -> web.Response:
        plural, items = self._items(request)
        ns = request.match_info["ns"]
        body = await request.json()
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            return _status(422, "Invalid", "metadata.name: Required value")
        with self.store.lock:
            if (ns, name) in items:
                return _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
            obj = {"apiVersion": GROUP_VERSION, "kind": KINDS[plural],
                   "metadata": {**{k: v for k, v in meta.items() if k in (
                       "name", "labels", "annotations", "finalizers")},
                       "namespace": ns, "uid": str(uuid.uuid4()), "generation": 1,
                       "creationTimestamp": _now()},
                   "spec": body.get("spec")}
            items[(ns, name)] = self._record(plural, "ADDED", obj)
            out = copy.deepcopy(obj)
        self._poke()
        return web.json_response(out, status=201)

    async def _get(self, request: web.Request) -> web.Response:
        _, items = self._items(request)
        key = (request.match_info["ns"], request.match_info["name"])
        with self.store.lock:
            obj = items.get(key)
            if obj is None:
                return _status(404, "NotFound", f'"{key[1]}" not found')
            return web.json_response(copy.deepcopy(obj))

    async def _update(self, request: web.Request) -> web.Response:
        return await self._change(request, lambda obj, body: body)

    async def _patch(self, request: web.Request) -> web.Response:
        ctype = request.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip() not in ("application/merge-patch+json",):
            return _status(415, "UnsupportedMediaType", f"patch type {ctype!r} not supported")
        return await self._change(request, merge_patch)

    async def _change(self, request: web.Request, make: Any) -> web.Response:
        plural, items = self._items(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        is_status = request.path.endswith("/status")
        body = await request.json()
        with self.store.lock:
            old = items.get((ns, name))
            if old is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and str(want_rv) != old["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", f'Operation cannot be fulfilled on {plural} '
                               f'"{name}": the object has been modified; please apply your '
                               'changes to the latest version and try again')
            merged = make(copy.deepcopy(old), body)
            new = copy.deepcopy(old)
            if is_status:
                new["status"] = merged.get("status")
                if new["status"] is None:
                    new.pop("status", None)
            else:
                new["spec"] = merged.get("spec")
                meta = merged.get("metadata") or {}
                for k in ("labels", "annotations", "finalizers"):
                    if meta.get(k):
                        new["metadata"][k] = meta[k]
                    else:
                        new["metadata"].pop(k, None)
                if new["spec"] != old.get("spec"):
                    new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            if new == old:
                return web.json_response(copy.deepcopy(old))
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                del items[(ns, name)]
                self._record(plural, "DELETED", new)
            else:
                items[(ns, name)] = self._record(plural, "MODIFIED", new)
            out = copy.deepcopy(new)
        self._poke()
        return web.json_response(out)

    async def _delete(self, request: web.Request) -> web.Response:
        plural, items = self._items(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        with self.store.lock:
            obj = items.get((ns, name))
            if obj is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            if obj["metadata"].get("finalizers"):
                if not obj["metadata"].get("deletionTimestamp"):
                    obj = copy.deepcopy(obj)
                    obj["metadata"]["deletionTimestamp"] = _now()
                    obj["metadata"]["generation"] += 1
                    items[(ns, name)] = self._record(plural, "MODIFIED", obj)
            else:
                del items[(ns, name)]
                self._record(plural, "DELETED", copy.deepcopy(obj))
            out = copy.deepcopy(obj)
        self._poke()
        return web.json_response(out, status=200)

    # -- a kubectl-like client for tests ---------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def apply(self, doc: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        """Create, or replace the spec of, a resource (what ``kubectl apply`` amounts to)."""
        plural = {v: k for k, v in KINDS.items()}[doc["kind"]]
        base = f"/apis/gns.io/v1alpha1/namespaces/{namespace}/{plural}"
        code, out = self.call("POST", base, doc)
        if code == 409:  # replace the spec, as kubectl apply ends up doing
            path = f"{base}/{doc['metadata']['name']}"
            code, current = self.call("GET", path)
            assert code == 200, (code, current)
            code, out = self.call("PUT", path, {**current, "spec": doc["spec"]})
        assert code in (200, 201) and isinstance(out, dict), (code, out)
        return out

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        plural = {v: k for k, v in KINDS.items()}[kind]
        code, out = self.call("GET", f"/apis/gns.io/v1alpha1/namespaces/{namespace}/{plural}/{name}")
        return out if code == 200 else None

    def delete(self, kind: str, name: str, namespace: str = "default") -> int:
        plural = {v: k for k, v in KINDS.items()}[kind]
        code, _ = self.call("DELETE", f"/apis/gns.io/v1alpha1/namespaces/{namespace}/{plural}/{name}")
        return code
