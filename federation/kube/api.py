"""A small Kubernetes API client: what a level-triggered reconciler needs, nothing more.

Why not the official ``kubernetes`` client: its watch does not recover from HTTP 410 by
itself, it is synchronous (a thread per watch beside the controller's one asyncio loop),
and it brings a very large generated package for four calls. Why not kopf: it would own the
event loop, the status layout and the finalizer protocol of a process that already has a
supervisor, and its progress annotations would be written into every object. What remains is
plain REST: list, watch from a ``resourceVersion``, JSON merge patches (with the object's
``resourceVersion`` as a precondition where ordering matters) and the ``status`` subresource.
"""
from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from namespace.errors import Conflict, GnsError, InvalidInput, NotFound, Unavailable

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ApiError(GnsError):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"kubernetes API: HTTP {status}: {message}")
        self.status = status


class Gone(ApiError):
    """HTTP 410: the resourceVersion a watch resumes from is too old; list again."""


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str

    def path(self, namespace: str | None = None, name: str | None = None,
             sub: str | None = None) -> str:
        p = f"/apis/{self.group}/{self.version}"
        if namespace is not None:
            p += f"/namespaces/{namespace}"
        p += f"/{self.plural}"
        if name is not None:
            p += f"/{name}"
        if sub is not None:
            p += f"/{sub}"
        return p


MIRROR_POLICIES = Resource("gns.io", "v1alpha1", "mirrorpolicies", "MirrorPolicy")
GLOBAL_MOUNTS = Resource("gns.io", "v1alpha1", "globalmounts", "GlobalMount")


@dataclass
class KubeConfig:
    server: str
    ssl: ssl.SSLContext | bool | None = None
    token: str | None = None
    token_file: Path | None = None

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:
            token = self.token_file.read_text().strip()  # bound tokens rotate: read each time
        return {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def load(cls) -> KubeConfig:
        """In-cluster (service account) when running in a pod, else ``KUBECONFIG`` /
        ``~/.kube/config``."""
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if host and port and (SA_DIR / "token").exists():
            ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
            h = f"[{host}]" if ":" in host else host
            return cls(server=f"https://{h}:{port}", ssl=ctx, token_file=SA_DIR / "token")
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube" / "config")
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise InvalidInput(f"no Kubernetes configuration: not in a pod and {path} is "
                               f"unreadable ({exc.strerror})") from None
        return cls.from_kubeconfig(doc, Path(path).parent)

    @classmethod
    def from_kubeconfig(cls, doc: dict[str, Any], base: Path) -> KubeConfig:
        def pick(kind: str, name: str) -> dict[str, Any]:
            for item in doc.get(kind + "s") or []:
                if item.get("name") == name:
                    return item.get(kind) or {}
            raise InvalidInput(f"kubeconfig: no {kind} named {name!r}")

        ctx_name = doc.get("current-context")
        if not ctx_name:
            raise InvalidInput("kubeconfig: no current-context")
        context = pick("context", ctx_name)
        cluster = pick("cluster", context.get("cluster", ""))
        user = pick("user", context.get("user", "")) if context.get("user") else {}
        server = str(cluster.get("server", "")).rstrip("/")
        if not server.startswith(("http://", "https://")):
            raise InvalidInput(f"kubeconfig: cluster server {server!r} is not an http(s) URL")
        ssl_ctx: ssl.SSLContext | bool | None = None
        if server.startswith("https://"):
            if cluster.get("insecure-skip-tls-verify"):
                ssl_ctx = False
            else:
                ssl_ctx = ssl.create_default_context(cafile=_file(cluster, "certificate-authority", base))
            cert = _file(user, "client-certificate", base)
            key = _file(user, "client-key", base)
            if cert and key and isinstance(ssl_ctx, ssl.SSLContext):
                ssl_ctx.load_cert_chain(cert, key)
        token_file = user.get("tokenFile")
        return cls(server=server, ssl=ssl_ctx, token=user.get("token"),
                   token_file=Path(base, token_file) if token_file else None)


def _file(section: dict[str, Any], key: str, base: Path) -> str | None:
    """A kubeconfig file reference or inline ``-data`` value, as a path ssl can load."""
    if section.get(key + "-data"):
        f = tempfile.NamedTemporaryFile(prefix="gns-kube-", delete=False)
        f.write(base64.b64decode(section[key + "-data"]))
        f.close()
        return f.name
    if section.get(key):
        return str(Path(base, section[key]))
    return None


class KubeApi:
    """One aiohttp session to one API server. Create and close it inside the running loop."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.config.server,
                connector=aiohttp.TCPConnector(ssl=self.config.ssl if self.config.ssl is not None else True),
                timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=None),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, *, body: Any = None,
                    content_type: str = "application/json", timeout: float = 30) -> dict[str, Any]:
        """One request; every answer this client asks for is a JSON object."""
        headers = {"Accept": "application/json", **self.config.headers()}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            async with self._http().request(method, path, data=data, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _error(resp.status, text)
                doc = json.loads(text) if text else {}
                if not isinstance(doc, dict):
                    raise ApiError(resp.status, f"expected a JSON object, got {type(doc).__name__}")
                return doc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"kubernetes API {self.config.server} unreachable: {exc!r}") from None

    async def list(self, res: Resource) -> tuple[list[dict[str, Any]], str]:
        """Every object (all namespaces) and the list's resourceVersion."""
        out = await self._call("GET", res.path())
        return list(out.get("items") or []), str(out.get("metadata", {}).get("resourceVersion", ""))

    async def watch(self, res: Resource, resource_version: str,
                    timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        """Events after ``resource_version`` (ADDED, MODIFIED, DELETED, BOOKMARK) until the
        server ends the stream. Raises :class:`Gone` when the version is too old."""
        params = {"watch": "true", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        headers = {"Accept": "application/json", **self.config.headers()}
        try:
            async with self._http().get(res.path(), params=params, headers=headers,
                                        timeout=aiohttp.ClientTimeout(
                                            total=None, connect=5, sock_read=timeout_seconds + 30)
                                        ) as resp:
                if resp.status >= 400:
                    raise _error(resp.status, await resp.text())
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        obj = event.get("object") or {}
                        raise _error(int(obj.get("code", 500)), str(obj.get("message", "")))
                    yield event
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"kubernetes API watch {res.plural} broke: {exc!r}") from None

    async def patch(self, res: Resource, namespace: str, name: str, patch: dict[str, Any],
                    sub: str | None = None) -> dict[str, Any]:
        """JSON merge patch. Put ``metadata.resourceVersion`` in it to make it conditional."""
        return await self._call("PATCH", res.path(namespace, name, sub), body=patch,
                                content_type="application/merge-patch+json")

    async def get(self, res: Resource, namespace: str, name: str) -> dict[str, Any]:
        return await self._call("GET", res.path(namespace, name))


def _error(status: int, text: str) -> GnsError:
    try:
        message = json.loads(text).get("message", text)
    except (ValueError, AttributeError):
        message = text
    if status == 410:
        return Gone(status, message)
    if status == 404:
        return NotFound(f"kubernetes API: {message}")
    if status == 409:
        return Conflict(f"kubernetes API: {message}")
    return ApiError(status, message)
