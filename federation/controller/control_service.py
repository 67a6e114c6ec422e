"""The ``Control`` gRPC service: control commands for clients without etcd (SPEC §4, §10).

A ``--controller`` client (:mod:`federation.remote`) sends every control command here. Each
operation runs the very code the etcd-path :class:`~federation.client.Client` runs — this
service holds one such client of its own, talking to etcd with the controller's
configuration and to peers with the cluster's certificate — so both ways give the same
answers and the same errors. Arguments and results are JSON (``gns.control.v1``).

With access control on (TLS), each operation first checks the caller (established by
:mod:`federation.controller.authz`) on the paths it touches: ``admin`` to change volumes,
mounts, mirror policies and grants under a path; ``read`` to resolve a path. Listings show
what the caller may read (clusters are visible to every authenticated identity). Admin
operations are written to the audit log whatever their outcome.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from federation.api._gen.gns.control.v1 import control_pb2 as cpb
from federation.api.errors import kind_of
from federation.client import Client
from federation.controller.authz import Authorizer, caller, volume_paths
from namespace.cache import NamespaceCache, NamespaceView
from namespace.errors import InvalidInput, NotFound
from namespace.models import check_labels
from namespace.paths import check_name, normalize

Op = Callable[[dict[str, Any]], Awaitable[Any]]
SERVICE = "gns.control.v1.Control"


class ControlService:
    def __init__(self, client: Client, cache: NamespaceCache, authz: Authorizer | None) -> None:
        self.client = client
        self.cache = cache
        self.authz = authz
        self.ops: dict[str, Op] = {
            "ListClusters": self._list_clusters,
            "GetCluster": self._get_cluster,
            "RemoveCluster": self._remove_cluster,
            "CreateVolume": self._create_volume,
            "RemoveVolume": self._remove_volume,
            "ListVolumes": self._list_volumes,
            "GetVolume": self._get_volume,
            "PromoteVolume": self._promote,
            "AddMount": self._add_mount,
            "ListMounts": self._list_mounts,
            "RemoveMount": self._remove_mount,
            "Resolve": self._resolve,
            "Status": self._status,
            "MirrorApply": self._mirror_apply,
            "MirrorList": self._mirror_list,
            "MirrorStatus": self._mirror_status,
            "MirrorSync": self._mirror_sync,
            "MirrorVerify": self._mirror_verify,
            "MirrorRemove": self._mirror_remove,
            "AclGrant": self._acl_grant,
            "AclRevoke": self._acl_revoke,
            "AclList": self._acl_list,
            "AclCheck": self._acl_check,
            "WhoAmI": self._whoami,
            "EdgeTokenCreate": self._edge_token_create,
            "EdgeList": self._edge_list,
        }

    def add_to_server(self, server: grpc.aio.Server) -> None:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name, op),
                request_deserializer=cpb.Call.FromString,
                response_serializer=cpb.Reply.SerializeToString,
            )
            for name, op in self.ops.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))

    def _handler(self, name: str, op: Op) -> Callable[[cpb.Call, grpc.aio.ServicerContext], Awaitable[cpb.Reply]]:
        # Errors are not mapped here: the controller's ErrorInterceptor
        # (federation.controller.rpc_errors) maps what this raises, as for every servicer.
        async def handle(request: cpb.Call, context: grpc.aio.ServicerContext) -> cpb.Reply:
            try:
                args = json.loads(request.args_json or "{}")
            except ValueError:
                raise InvalidInput(f"{name}: arguments are not JSON") from None
            if not isinstance(args, dict):
                raise InvalidInput(f"{name}: arguments must be a JSON object")
            result = await op(args)
            return cpb.Reply(result_json=json.dumps(_plain(result)))

        return handle

    # -- helpers --------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run one blocking Client call in a worker thread (the Client has its own loop)."""
        return await asyncio.to_thread(fn, *args, **kw)

    @property
    def view(self) -> NamespaceView:
        return self.cache.view

    def _require(self, perm: str, paths: list[str], action: str, *, every: bool = True) -> None:
        if self.authz is not None:
            self.authz.require(perm, paths, action, every=every)

    async def _admin(self, action: str, paths: list[str], fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Check ``admin`` on every one of ``paths``, run, and audit the outcome."""
        self._require("admin", paths, action)
        try:
            result = await self._run(fn, *args, **kw)
        except Exception as exc:
            if self.authz is not None:
                self.authz.admin_done(action, paths[0] if paths else "/", f"error: {kind_of(exc).name}")
            raise
        if self.authz is not None:
            self.authz.admin_done(action, paths[0] if paths else "/", "ok")
        return result

    def _volume_paths(self, volume: str) -> list[str]:
        return volume_paths(self.view, volume) or ["/"]

    def _may_read(self, paths: list[str]) -> bool:
        who = caller()
        if self.authz is None or who is None:
            return True
        return self.authz.allowed(who, "read", paths or ["/"])

    def _policy_volume(self, name: str) -> str:
        from mirroring.policy import stored_policy

        check_name("policy", name)
        found = stored_policy(self.view, name)
        if found is None:
            raise NotFound(f"mirror policy {name!r} not found")
        return str(found.spec.volume)

    # -- clusters -------------------------------------------------------------------------
    async def _list_clusters(self, a: dict[str, Any]) -> Any:
        return await self._run(self.client.clusters)

    async def _get_cluster(self, a: dict[str, Any]) -> Any:
        return await self._run(self.client.cluster, _str(a, "id"))

    async def _remove_cluster(self, a: dict[str, Any]) -> Any:
        await self._admin("cluster.remove", ["/"], self.client.remove_cluster, _str(a, "id"))
        return {"removed": a["id"]}

    # -- volumes --------------------------------------------------------------------------
    async def _create_volume(self, a: dict[str, Any]) -> Any:
        labels = a.get("labels") or {}  # absent from clients older than volume labels
        return await self._admin("volume.create", ["/"], self.client.create_volume,
                                 _str(a, "name"), _str(a, "cluster"), check_labels(labels))

    async def _remove_volume(self, a: dict[str, Any]) -> Any:
        # What the CSI driver's DeleteVolume needs (refused while a mount or policy names
        # the volume, so it is mounted nowhere by then): the root's to administer.
        name = check_name("volume", _str(a, "name"))
        return await self._admin("volume.remove", ["/"], self.client.remove_volume, name)

    async def _list_volumes(self, a: dict[str, Any]) -> Any:
        found = await self._run(self.client.volumes)
        return [v for v in found if self._may_read(self._volume_paths(v.name))]

    async def _get_volume(self, a: dict[str, Any]) -> Any:
        name = check_name("volume", _str(a, "name"))
        if name in self.view.volumes:
            self._require("read", self._volume_paths(name), "volume.show", every=False)
        return await self._run(self.client.volume, name)

    async def _promote(self, a: dict[str, Any]) -> Any:
        name = check_name("volume", _str(a, "name"))
        return await self._admin("volume.promote", self._volume_paths(name), self.client.promote,
                                 name, _str(a, "to"), force=bool(a.get("force")))

    # -- mounts ---------------------------------------------------------------------------
    async def _add_mount(self, a: dict[str, Any]) -> Any:
        from namespace.models import parse_mount_target

        path = normalize(_str(a, "path"))
        volume, _ = parse_mount_target(_str(a, "target"))
        # Mounting a volume somewhere new exposes its data there: admin on it as well.
        paths = [path, *(self._volume_paths(volume) if volume in self.view.volumes else [])]
        return await self._admin("mount.add", paths, self.client.add_mount, path, a["target"])

    async def _list_mounts(self, a: dict[str, Any]) -> Any:
        found = await self._run(self.client.mounts)
        return [m for m in found if self._may_read([m.path])]

    async def _remove_mount(self, a: dict[str, Any]) -> Any:
        path = normalize(_str(a, "path"))
        await self._admin("mount.remove", [path], self.client.remove_mount, path)
        return {"removed": path}

    async def _resolve(self, a: dict[str, Any]) -> Any:
        path = normalize(_str(a, "path"))
        self._require("read", [path], "resolve")
        return await self._run(self.client.resolve, path)

    async def _status(self, a: dict[str, Any]) -> Any:
        st = _plain(await self._run(self.client.status))
        if self.authz is None or caller() is None:
            return st
        visible = {v["name"] for v in st["volumes"] if self._may_read(self._volume_paths(v["name"]))}
        st["volumes"] = [v for v in st["volumes"] if v["name"] in visible]
        st["mounts"] = [m for m in st["mounts"] if self._may_read([m["path"]])]
        st["mirrors"] = [m for m in st["mirrors"] if m.get("volume") in visible]
        return st

    # -- mirror policies ------------------------------------------------------------------
    async def _mirror_apply(self, a: dict[str, Any]) -> Any:
        text = _str(a, "text")
        return await self._admin("mirror.apply", self._apply_paths(text), self.client.mirror_apply,
                                 text, dry_run=bool(a.get("dry_run")))

    def _apply_paths(self, text: str) -> list[str]:
        """The paths whose ``admin`` a policy document needs: its volume's mounts.

        Only the raw document is read here, never the model: a model parse stops at the
        first structural problem, and the caller must get the same full list of problems the
        etcd path gives (the Client's own validation, run after this check). Text that is
        not a mapping raises here exactly as it would there. A document too broken to name a
        valid volume needs admin on "/", as an unknown or unmounted volume does."""
        from mirroring.policy import parse_document

        doc = parse_document(text)
        spec = doc.get("spec")
        volume = spec.get("volume") if isinstance(spec, dict) else None
        try:
            paths = self._volume_paths(check_name("volume", volume if isinstance(volume, str) else ""))
        except InvalidInput:
            paths = ["/"]
        # Re-applying a stored policy replaces it: that needs admin on the volume it covers
        # now too, or admin on one volume would let a caller rewrite another's policy.
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        stored = self.view.policies.get(name) if isinstance(name, str) else None
        old_spec = (stored or {}).get("spec") if isinstance(stored, dict) else None
        old_volume = old_spec.get("volume") if isinstance(old_spec, dict) else None
        if isinstance(old_volume, str) and old_volume != volume:
            paths += [p for p in self._volume_paths(old_volume) if p not in paths]
        return paths

    async def _mirror_list(self, a: dict[str, Any]) -> Any:
        found = await self._run(self.client.mirror_list)
        return [p for p in found if self._may_read(self._volume_paths(p.volume))]

    async def _mirror_status(self, a: dict[str, Any]) -> Any:
        name = a.get("name")
        if name is not None:
            self._require("read", self._volume_paths(self._policy_volume(_str(a, "name"))),
                          "mirror.status", every=False)
        found = await self._run(self.client.mirror_status, name)
        return [p for p in found if self._may_read(self._volume_paths(p.volume))]

    async def _mirror_sync(self, a: dict[str, Any]) -> Any:
        name = _str(a, "name")
        return await self._admin("mirror.sync", self._volume_paths(self._policy_volume(name)),
                                 self.client.mirror_sync, name, wait=bool(a.get("wait")))

    async def _mirror_verify(self, a: dict[str, Any]) -> Any:
        name = _str(a, "name")
        return await self._admin("mirror.verify", self._volume_paths(self._policy_volume(name)),
                                 self.client.mirror_verify, name, repair=bool(a.get("repair", True)),
                                 deep=bool(a.get("deep")))

    async def _mirror_remove(self, a: dict[str, Any]) -> Any:
        name = _str(a, "name")
        await self._admin("mirror.remove", self._volume_paths(self._policy_volume(name)),
                          self.client.mirror_remove, name)
        return {"removed": name}

    # -- grants ---------------------------------------------------------------------------
    async def _acl_grant(self, a: dict[str, Any]) -> Any:
        from namespace.acl import check_subject, parse_perms

        path = normalize(_str(a, "path"))
        check_subject(_str(a, "subject"))
        parse_perms(_str(a, "perms"))
        return await self._admin("acl.grant", [path], self.client.acl_grant, path, a["subject"], a["perms"])

    async def _acl_revoke(self, a: dict[str, Any]) -> Any:
        from namespace.acl import check_subject

        path = normalize(_str(a, "path"))
        check_subject(_str(a, "subject"))
        await self._admin("acl.revoke", [path], self.client.acl_revoke, path, a["subject"])
        return {"removed": f"{a['subject']} on {path}"}

    async def _acl_list(self, a: dict[str, Any]) -> Any:
        path = normalize(a["path"]) if a.get("path") is not None else None
        self._require("admin", [path or "/"], "acl.list")
        return await self._run(self.client.acl_list, path)

    async def _acl_check(self, a: dict[str, Any]) -> Any:
        path = normalize(_str(a, "path"))
        subject = _str(a, "subject")
        who = caller()
        if who is None or who.subject != subject:
            self._require("admin", [path], "acl.check")
        groups = a.get("groups") or []
        if not isinstance(groups, list):
            raise InvalidInput("groups must be a list")
        if not groups and who is not None and who.subject == subject:
            groups = list(who.groups)  # asking of oneself: the groups TLS proved count
        return await self._run(self.client.acl_check, path, subject, [str(g) for g in groups])

    async def _whoami(self, a: dict[str, Any]) -> Any:
        who = caller()
        if who is None:
            return {"identity": None, "groups": [], "access_control": False}
        return {"identity": who.subject, "groups": list(who.groups), "access_control": True}


    # -- edge sites (SPEC §8) -------------------------------------------------------------
    async def _edge_token_create(self, a: dict[str, Any]) -> Any:
        """A join token: an admin operation on the whole federation (a site it admits may
        own volumes anywhere), pinning this controller's CA, as the etcd path pins the
        client's."""
        site = _str(a, "site")
        ttl = a.get("ttl", 3600.0)
        hub = a.get("hub")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
            raise InvalidInput("EdgeTokenCreate: ttl must be a number of seconds")
        if hub is not None and not isinstance(hub, str):
            raise InvalidInput("EdgeTokenCreate: hub must be a cluster name")
        return await self._admin("edge.token.create", ["/"], self.client.edge_token_create, site,
                                 ttl=float(ttl), hub=hub)

    async def _edge_list(self, a: dict[str, Any]) -> Any:
        # Like the cluster list: visible to every authenticated identity.
        return await self._run(self.client.edge_sites)


def _str(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str):
        raise InvalidInput(f"missing or invalid {key!r}")
    return value


def _plain(obj: Any) -> Any:
    """What the client's result models say as JSON (``federation.remote`` reads it back)."""
    from pydantic import BaseModel

    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return to_json()
    as_dict = getattr(obj, "as_dict", None)  # namespace.acl.Grant
    if callable(as_dict):
        return as_dict()
    if isinstance(obj, BaseModel):
        return obj.model_dump()
    if isinstance(obj, (list, tuple)):
        return [_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
