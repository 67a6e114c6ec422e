"""Access control on a controller (SPEC §10): who is calling, may they, and the audit trail.

Installed wherever TLS is (a controller with ``--tls-dir``). :class:`AuthzInterceptor` wraps
every method of every service on the controller's server:

* **Who**: the identity TLS proved (the peer certificate in ``context.auth_context()``).
  A *controller* of this federation may act for someone else by sending
  ``gns-on-behalf-of`` metadata (:func:`forward_metadata` builds it for forwarded calls);
  from any other peer that claim is refused, so a user cannot borrow another identity and
  ``--via`` cannot launder one. A controller acting for itself holds etcd credentials
  anyway and is trusted (:meth:`Authorizer.trusted`).
* **Edge sites are not controllers.** A site that joins with a token gets a *cluster*
  certificate (``cluster:<site>``, :mod:`edge.sitecert`), but its key lives on a machine
  far from the core, in a data directory whose files are all it takes to use it. So a
  cluster identity that the registry records as an edge site (``provider: edge`` and the
  label naming its hub, which only a hub writes: ``HUB_LABEL``) is checked like a
  user's: against grants (``cluster:<site>`` may be granted, SPEC §10),
  audited when denied, and its ``gns-on-behalf-of`` claims are refused when it dials a
  controller directly. A site legitimately dials its hub only for ``EdgeLink``
  (``Join``, ``Link``), which authenticates the site itself; everything else it does rides
  the link and arrives from its hub (a controller) with ``gns-on-behalf-of: edge:<site>``.
  Such a relayed call gets, beyond grants, exactly what a site needs for its own volumes:
  ``Replication`` of a volume it owns (shipping to its mirror targets; each header of a
  stream is checked, not only the first) and reads (``Stat``/``List``/``Read``) of a volume
  it owns or used to own (following its new owner after a forced promotion). The
  object-store relay checks its callers itself (:mod:`federation.object_relay`). What
  still rests on trust: the hub believes the *users* a site names for its apps' calls
  (``edge_hub._acting_as``), so a site's key can act for any user through its link. A
  site's certificate says it is one (``EDGE_SITE_ROLE``, put there by the hub that signs
  it), so a site the registry does not hold (joined but never linked, or removed) is no
  controller either; only certificates signed before that mark rest on the registry.
* **May they**: data RPCs map to a permission by method name (``Stat``/``List``/``Read``/
  ``Resolve`` read, any other ``Federation`` method carrying a ``Target`` writes), on the
  global path of each ``Target`` in the request; a target named by volume and relative
  path is mapped to global paths through the mount table (permission on any of them
  suffices: the same bytes are reachable there). Internal services (replication,
  mirroring, failover) are for controllers; users may ask a mirror sync/verify or a
  promotion with ``admin`` on the volume. The ``Control`` service checks each operation
  itself with :meth:`Authorizer.require` on the paths it touches.
* **Audit**: every denial and every admin operation becomes one JSON line in the audit log
  (time, identity, action, path, result) and a Prometheus counter.

The caller's identity travels with the request in a context variable, so handlers and
forwarding code can read it without new parameters.
"""
from __future__ import annotations

import contextvars
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.api.errors import kind_of, trailing_metadata
from federation.channels import MAX_PUT_BATCH
from federation.controller.rpc_errors import put_failure
from federation.tls import Identity, identity_of_pem
from namespace.acl import ADMIN_SUBJECT, AclCache, Grants, check_principal, check_subject
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput, PermissionDenied
from namespace.paths import normalize, normalize_relative

log = logging.getLogger(__name__)

ON_BEHALF_OF = "gns-on-behalf-of"
"""Metadata a forwarding controller sets: ``user:NAME[,group:G...]`` (believed from controllers only)."""
EDGE_PREFIX = "edge:"
"""How a hub names the site whose own call it relays (``gns-on-behalf-of: edge:<site>``)."""
SITE_PREFIX = "site:"
"""How a controller passes on an edge site that dialled it directly (``site:<site>``): the
next controller must know it is a site, not take ``cluster:<site>`` for a controller."""
EDGE_PROVIDER: Final = "edge"

_CALLER: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("gns_caller", default=None)
_FORWARD: contextvars.ContextVar[str | None] = contextvars.ContextVar("gns_forward", default=None)
"""What the current caller is passed on as (``""``: nothing, a controller acting for itself)."""

READ_METHODS = frozenset({"Stat", "List", "Read", "Resolve", "Watch"})
OPEN_METHODS = frozenset({"Health", "VolumeState"})
"""Federation methods any authenticated peer may call (no file data, no change)."""
INTERNAL_SERVICES = frozenset({"Replication", "Mirroring", "Failover"})
USER_INTERNAL = {("Mirroring", "Sync"), ("Mirroring", "Verify"), ("Failover", "Promote")}


def caller() -> Identity | None:
    """The identity the current request acts as (None outside an authorized request)."""
    return _CALLER.get()


def forward_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current caller to the next controller (empty if the caller
    is a controller acting for itself or access control is off). An edge site goes on as
    what it was here (``edge:<site>`` relayed by its hub, else ``cluster:<site>``), so the
    controller that serves the call decides on the site, never on the forwarder."""
    who = _CALLER.get()
    if who is None:
        return ()
    claim = _FORWARD.get()
    if claim is None:  # set outside the interceptor
        claim = "" if who.is_cluster and not who.edge_site else encode_identity(who)
    return ((ON_BEHALF_OF, claim),) if claim else ()


def encode_identity(who: Identity) -> str:
    if who.edge_site:
        return SITE_PREFIX + who.name
    return ",".join([who.subject, *(f"group:{g}" for g in who.groups)])


def decode_identity(value: str) -> Identity:
    """``user:NAME[,group:G...]`` → an :class:`Identity`; InvalidInput if malformed."""
    subject, *rest = value.split(",")
    edge_site = subject.startswith((EDGE_PREFIX, SITE_PREFIX))
    if edge_site:
        # A site's own call (relayed by its hub as ``edge:<site>``, or passed on by a
        # controller it dialled as ``site:<site>``): its identity is its certificate's,
        # ``cluster:<site>``, and it is no controller.
        subject = "cluster:" + subject.partition(":")[2]
        if rest:
            raise InvalidInput(f"an edge site has no groups in {ON_BEHALF_OF}")
    check_subject(subject)
    if subject == "*":
        raise InvalidInput("cannot act on behalf of '*'")
    kind, _, name = subject.partition(":")
    if kind == "group":
        raise InvalidInput("cannot act on behalf of a group")
    groups = []
    for g in rest:
        gk, _, gname = g.partition(":")
        if gk != "group":
            raise InvalidInput(f"invalid group {g!r} in {ON_BEHALF_OF}")
        groups.append(check_principal("group", gname))
    return Identity(kind, name, tuple(groups), edge_site=edge_site)


def volume_paths(view: NamespaceView, volume: str, rel: str | None = None) -> list[str]:
    """The global paths where ``volume`` (or ``rel`` inside it) appears in the mount table."""
    return view.paths_of(volume, rel)


class AuditLog:
    """JSON lines appended with one ``write`` each (whole lines even with several writers)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, identity: str, action: str, path: str, result: str) -> None:
        line = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "identity": identity, "action": action, "path": path, "result": result,
        }, sort_keys=False) + "\n"
        with self._lock:
            try:
                os.write(self._fd, line.encode())
            except OSError:
                log.warning("audit log %s: write failed", self.path, exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class Authorizer:
    """Decides, on the controller's watch-fed grants and mount table, and records."""

    def __init__(
        self,
        acl: AclCache | Grants,
        view: Callable[[], NamespaceView],
        audit: AuditLog | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._acl = acl
        self._view = view
        self.audit = audit
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {"registry": None}
        self.denials = Counter("gns_authz_denials", "requests refused by access control",
                               ["action"], **kw)
        self.admin_ops = Counter("gns_audit_admin_ops", "admin operations by action and result",
                                 ["action", "result"], **kw)

    @property
    def grants(self) -> Grants:
        return self._acl.grants if isinstance(self._acl, AclCache) else self._acl

    def trusted(self, who: Identity) -> bool:
        """True if ``who`` is a controller of this federation: a cluster identity that is not
        an edge site's, by its certificate (``Identity.edge_site``) or, for a certificate
        signed before sites' were marked, by the registry (``HUB_LABEL``). An edge site's
        certificate names a cluster too, but it is checked on grants like any identity
        (module docstring)."""
        if not who.is_cluster or who.edge_site:
            return False
        spec = self._view().clusters.get(who.name)
        return spec is None or not spec.linked_site

    def may_read(self, paths: list[str]) -> bool:
        """Whether the current caller may read any of ``paths`` (none: ``/``): what a
        change stream shows it, change by change."""
        who = _CALLER.get()
        if who is None or self.trusted(who) or who.subject == ADMIN_SUBJECT:
            return True
        return self.allowed(who, "read", paths or ["/"])

    def allowed(self, who: Identity, perm: str, paths: Iterable[str]) -> bool:
        """True if ``who`` holds ``perm`` on any of ``paths`` (an empty list: on ``/``)."""
        if self.trusted(who):
            return True
        subjects = who.subjects
        check = self.grants.allowed
        seen = False
        for p in paths:
            seen = True
            if check(subjects, p, perm):
                return True
        return not seen and check(subjects, "/", perm)

    def require(self, perm: str, paths: Iterable[str], action: str, *, every: bool = False) -> Identity | None:
        """Raise PermissionDenied (and audit it) unless the current caller holds ``perm`` on
        one of ``paths`` (on all of them with ``every``). None when access control is off."""
        who = _CALLER.get()
        if who is None:
            return None
        listed = list(paths) or ["/"]
        if every:  # the denial names the path that is missing, not the first one asked
            missing = next((p for p in listed if not self.allowed(who, perm, [p])), None)
            if missing is not None:
                self.deny(who, action, missing, perm)
        elif not self.allowed(who, perm, listed):
            self.deny(who, action, listed[0], perm)
        return who

    def deny(self, who: Identity, action: str, path: str, perm: str) -> None:
        self.denials.labels(action).inc()
        if self.audit is not None:
            self.audit.write(who.subject, action, path, f"denied: no {perm}")
        raise PermissionDenied(f"permission denied: {who.subject} has no {perm} on {path}")

    def admin_done(self, action: str, path: str, result: str) -> None:
        """Record one admin operation (after it ran, successfully or not)."""
        who = _CALLER.get()
        self.admin_ops.labels(action, "ok" if result == "ok" else "error").inc()
        if self.audit is not None and who is not None:
            self.audit.write(who.subject, action, path, result)

    # -- request → (permission, paths) ---------------------------------------------------
    def target_paths(self, target: Any) -> list[str]:
        """Global paths a ``Target`` touches (the volume + relative path wins: it is what
        the owner serves)."""
        if target.volume:
            rel = normalize_relative(target.relative_path)
            paths = volume_paths(self._view(), target.volume, rel) or ["/"]
            try:  # the path the caller named first: a denial names it, not another mount
                named = normalize(target.global_path) if target.global_path else ""
            except InvalidInput:
                named = ""
            return [named, *(p for p in paths if p != named)] if named in paths else paths
        if target.global_path:
            return [normalize(target.global_path)]
        return ["/"]

    def _path_groups(self, targets: list[Any], request: Any) -> list[list[str]]:
        """The global paths a data request touches: for each target the paths it reaches
        (permission on any one of them suffices), then a rename's destination (a global
        path beside its target)."""
        groups = [self.target_paths(t) for t in targets]
        dest = getattr(request, "destination", "")
        if isinstance(dest, str) and dest:
            groups.append([normalize(dest)])
        # What the owner moves to when the target names a volume: checked as the target is
        # (a destination path beside it proves nothing about this one).
        dest_rel = getattr(request, "destination_relative", "")
        if isinstance(dest_rel, str) and dest_rel:
            volume = targets[0].volume if targets else ""
            shown = volume_paths(self._view(), volume, normalize_relative(dest_rel)) if volume else []
            groups.append(shown or ["/"])  # seen under no mount: the root's to grant
        return groups

    def check_message(self, who: Identity, service: str, method: str, request: Any, *,
                      relayed: bool = False) -> None:
        """Raise PermissionDenied (audited) unless ``who`` may make this call. ``relayed``:
        an edge site's own call, relayed by its hub (``edge:<site>``)."""
        trusted = self.trusted(who)
        site = who.name if relayed and who.is_cluster and not trusted else ""
        if service == "Federation":
            if method in OPEN_METHODS:
                return
            if method == "Resolve":
                self._check(who, "read", [normalize(request.path)], f"{service}/{method}")
                return
            if method == "PutBatch":
                # Each put as if it came alone (the interceptor lets the allowed ones through
                # and answers the denied ones each with its own outcome: ``_put_batch``).
                for put in request.puts:
                    self.check_message(who, service, "Put", put, relayed=relayed)
                return
            perm = "read" if method in READ_METHODS else "write"
            targets = list(_targets(request))
            if site and perm == "read" and self._site_reads(site, targets):
                return
            if not targets:
                if trusted:
                    return
                self.deny(who, f"{service}/{method}", "/", perm)
            for paths in self._path_groups(targets, request):
                self._check(who, perm, paths, f"{service}/{method}")
            return
        if service in INTERNAL_SERVICES:
            if trusted:
                return
            if site and service == "Replication" and self._site_replicates(site, request):
                return
            if (service, method) in USER_INTERNAL:
                volume = getattr(request, "volume", "") or self._policy_volume(getattr(request, "policy", ""))
                # A volume mounted nowhere (or none named) is the root's to administer, as
                # Control's commands judge it: the administrator may promote, sync or
                # verify it; nobody else may for want of a path.
                paths = (volume_paths(self._view(), volume) if volume else []) or ["/"]
                if not all(self.allowed(who, "admin", [p]) for p in paths):
                    self.deny(who, f"{service}/{method}", paths[0], "admin")
                if self.audit is not None:
                    self.audit.write(who.subject, f"{service}/{method}", paths[0], "allowed")
                return
            self.deny(who, f"{service}/{method}", "/", "controller identity")

    def _site_reads(self, site: str, targets: list[Any]) -> bool:
        """A site reading, by volume, one it owns or used to own: how it follows the new
        owner of a volume promoted away while it was gone (``edge.follow``)."""
        view = self._view()
        for t in targets:
            vol = view.volumes.get(t.volume) if t.volume else None
            if vol is None or (vol.owner != site and site not in vol.former_owners):
                return False
        return bool(targets)

    def _site_replicates(self, site: str, request: Any) -> bool:
        """A site shipping a volume it owns to this replica (``edge.shipping``), as itself."""
        volume, source = _replica_target(request)
        vol = self._view().volumes.get(volume) if volume else None
        return vol is not None and vol.owner == site and source in (None, site)

    def _policy_volume(self, policy: str) -> str:
        doc = self._view().policies.get(policy) if policy else None
        spec = (doc or {}).get("spec") or {}
        return str(spec.get("volume") or "")

    def _check(self, who: Identity, perm: str, paths: list[str], action: str) -> None:
        if self.allowed(who, perm, paths):
            return
        aliases = self._aliases(paths)
        if aliases and self.allowed(who, perm, aliases):
            return
        self.deny(who, action, paths[0], perm)

    def _aliases(self, paths: list[str]) -> list[str]:
        """The other global paths showing what a path named alone shows (its volume
        mounted again): a grant on any of them reaches the same bytes, as a target named
        by volume is judged, so the answer does not hang on the path a request names (it
        did: a user granted /alias read /data/team/a directly from the owner, and was
        refused through --controller). Asked only for a denial."""
        return self._view().aliases_of(paths[0]) if len(paths) == 1 else []


_TARGET_FIELDS: dict[str, tuple[tuple[str, str | None], ...]] = {}


class SiteNamespace(Protocol):
    """What an edge site knows of the namespace: its hub's last slice (``edge.site``)."""

    @property
    def view(self) -> NamespaceView: ...

    @property
    def grants(self) -> Grants | None: ...


class SiteAuthorizer(Authorizer):
    """An edge site's ``--listen`` server: decides for the paths the site serves itself.

    Its hub sends, with the site's slice of the namespace, the grants on the site's mount
    paths (kept on disk with it, so they hold while the site is away). A data call whose
    every path is on one of the site's own volumes is checked on them as any controller
    checks (SPEC §10: the controller that serves a request decides). What the site forwards
    it leaves to where it lands: the identity TLS proved travels with it
    (``forward_metadata``), and the hub and the owner hold every grant. A slice without
    grants (a hub of an older release) leaves the site deciding nothing, as before."""

    def __init__(self, site: str, namespace: SiteNamespace, audit: AuditLog | None = None) -> None:
        super().__init__(Grants(), lambda: namespace.view, audit)
        self.site = site
        self._namespace = namespace

    @property
    def grants(self) -> Grants:
        return self._namespace.grants or Grants()

    def trusted(self, who: Identity) -> bool:
        """The site itself (calls its hub relays down the link enter its server with the
        site's own certificate) is its own controller, though its slice says it is a site."""
        return who.is_cluster and (who.name == self.site or super().trusted(who))

    def check_message(self, who: Identity, service: str, method: str, request: Any, *,
                      relayed: bool = False) -> None:
        if service != "Federation" or method in OPEN_METHODS or self._namespace.grants is None:
            return
        if method == "PutBatch":
            for put in request.puts:
                self.check_message(who, service, "Put", put, relayed=relayed)
            return
        if method == "Resolve":
            paths = [normalize(request.path)]
        else:
            paths = [p for group in self._path_groups(list(_targets(request)), request) for p in group]
        if paths and all(self._serves(p) for p in paths):
            super().check_message(who, service, method, request, relayed=relayed)

    def _serves(self, path: str) -> bool:
        """True if ``path`` is on a volume this site owns (it answers for it itself)."""
        view = self._namespace.view
        res = view.resolve(path)
        vol = view.volumes.get(res.volume) if res is not None else None
        return vol is not None and vol.owner == self.site


def _target_fields(descriptor: Any) -> tuple[tuple[str, str | None], ...]:
    """(field, subfield) pairs that hold a ``Target`` in a message type: top level, or one
    level down (a write header), worked out once per type from its descriptor."""
    found = _TARGET_FIELDS.get(descriptor.full_name)
    if found is None:
        pairs: list[tuple[str, str | None]] = []
        for fd in descriptor.fields:
            mt = fd.message_type
            if mt is None or fd.is_repeated:  # no request carries a list of targets
                continue
            if mt.name == "Target":
                pairs.append((fd.name, None))
            else:
                pairs += [(fd.name, sub.name) for sub in mt.fields
                          if sub.message_type is not None and sub.message_type.name == "Target"]
        found = _TARGET_FIELDS[descriptor.full_name] = tuple(pairs)
    return found


def _targets(message: Any) -> Iterable[Any]:
    """Every ``Target`` set in a request."""
    if not hasattr(message, "DESCRIPTOR"):
        # A Write relayed as raw data bytes (write_relay) names no target: refused below
        # unless a cluster forwards it, and then the handler refuses a headerless stream.
        return []
    out = []
    for name, sub in _target_fields(message.DESCRIPTOR):
        if not message.HasField(name):
            continue
        value = getattr(message, name)
        if sub is None:
            out.append(value)
        elif value.HasField(sub):
            out.append(getattr(value, sub))
    return out


def _has(message: Any, field: str) -> bool:
    """True if ``message`` (parsed, not raw bytes) has message field ``field`` set."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    return descriptor is not None and field in descriptor.fields_by_name and message.HasField(field)


def _replica_target(request: Any) -> tuple[str, str | None]:
    """(volume, source) of a ``Replication`` request: a stream message's header, or the
    request's own ``volume`` (no source named)."""
    if _has(request, "header"):
        return str(request.header.volume), str(request.header.source)
    return str(getattr(request, "volume", "") or ""), None


def peer_identity(context: grpc.aio.ServicerContext) -> Identity | None:
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert")
    if not pems:
        return None
    return identity_of_pem(bytes(pems[0]))


class AuthzInterceptor(grpc.aio.ServerInterceptor):
    """Establish the caller for every call, and check the data and internal services."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authz = authorizer
        # full method name -> (the inner handler, our wrapper of it). The wrapper checks the
        # caller on every call; only building it (four closures, a handler) is done once.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        full = details.method
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]
        # "/gns.federation.v1.Federation/Read" -> ("Federation", "Read")
        service, _, method = str(full).rpartition("/")
        service = service.rsplit(".", 1)[-1]
        wrapped = self._wrap(handler, service, method)
        self._wrapped[full] = (handler, wrapped)
        return wrapped

    def _who(self, context: grpc.aio.ServicerContext) -> tuple[Identity, bool]:
        """Who the call acts as, and whether it is an edge site's own call relayed by its hub
        (``edge:<site>``). Only a controller's ``gns-on-behalf-of`` is believed: a user's,
        or an edge site's dialling directly, is refused and audited."""
        peer = peer_identity(context)
        if peer is None:
            raise PermissionDenied("permission denied: no client certificate")
        claimed = None
        for key, value in context.invocation_metadata() or ():
            if key == ON_BEHALF_OF:
                claimed = value
        if claimed is None:
            return peer, False
        if not self.authz.trusted(peer):
            self.authz.denials.labels("on-behalf-of").inc()
            if self.authz.audit is not None:
                self.authz.audit.write(peer.subject, "on-behalf-of", "/", f"denied: claimed {claimed}")
            site = " (an edge site, not a controller)" if peer.is_cluster else ""
            raise PermissionDenied(
                f"permission denied: {peer.subject}{site} may not act on behalf of another identity"
            )
        try:
            return decode_identity(str(claimed)), str(claimed).startswith(EDGE_PREFIX)
        except InvalidInput as exc:
            raise PermissionDenied(f"permission denied: bad {ON_BEHALF_OF}: {exc}") from None

    def _enter(self, who: Identity, relayed: bool) -> None:
        """Make ``who`` the current request's caller, and what it is forwarded as."""
        _CALLER.set(who)
        if self.authz.trusted(who):
            _FORWARD.set("")
        elif who.is_cluster:  # an edge site: the next controller decides on it too
            _FORWARD.set(EDGE_PREFIX + who.name if relayed else SITE_PREFIX + who.name)
        else:
            _FORWARD.set(encode_identity(who))

    def _put_batch(
        self,
        fn: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
        refuse: Callable[[Exception, grpc.aio.ServicerContext], Awaitable[None]],
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """``PutBatch``: each put checked as a lone ``Put`` would be. A denied put is its own
        outcome (denied once, audited once) and the rest go on to the handler, as a client
        sending them one by one would see; only an unknown caller refuses the whole call."""
        authz = self.authz

        async def put_batch(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                who, relayed = self._who(context)
            except PermissionDenied as exc:
                await refuse(exc, context)
            self._enter(who, relayed)
            if len(request.puts) > MAX_PUT_BATCH:
                return await fn(request, context)  # refused whole, nothing written or checked
            denied: dict[int, PermissionDenied] = {}
            for i, put in enumerate(request.puts):
                try:
                    authz.check_message(who, "Federation", "Put", put, relayed=relayed)
                except PermissionDenied as exc:
                    denied[i] = exc
            if not denied:
                return await fn(request, context)
            allowed = pb.PutBatchRequest(puts=[p for i, p in enumerate(request.puts) if i not in denied])
            done = iter((await fn(allowed, context)).outcomes if allowed.puts else ())
            reply = pb.PutBatchReply()
            for i in range(len(request.puts)):
                reply.outcomes.append(put_failure(denied[i], "Federation/PutBatch") if i in denied else next(done))
            return reply

        return put_batch

    def _wrap(self, h: grpc.RpcMethodHandler, service: str, method: str) -> grpc.RpcMethodHandler:
        kw = {"request_deserializer": h.request_deserializer,
              "response_serializer": h.response_serializer}
        authz = self.authz

        async def refuse(exc: Exception, context: grpc.aio.ServicerContext) -> None:
            await context.abort(kind_of(exc).code, str(exc), trailing_metadata(exc))

        if (service, method) == ("Federation", "PutBatch") and h.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._put_batch(h.unary_unary, refuse), **kw)
        if h.unary_unary is not None or h.unary_stream is not None:
            fn = h.unary_unary or h.unary_stream

            def admit(request: Any, context: grpc.aio.ServicerContext) -> None:
                who, relayed = self._who(context)
                authz.check_message(who, service, method, request, relayed=relayed)
                self._enter(who, relayed)

            if inspect.isasyncgenfunction(fn):
                async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    try:
                        admit(request, context)
                    except PermissionDenied as exc:
                        await refuse(exc, context)
                    async for reply in fn(request, context):
                        yield reply

                return grpc.unary_stream_rpc_method_handler(stream, **kw) if h.unary_stream else \
                    grpc.unary_unary_rpc_method_handler(stream, **kw)

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    admit(request, context)
                except PermissionDenied as exc:
                    await refuse(exc, context)
                return await fn(request, context)

            if h.unary_unary is not None:
                return grpc.unary_unary_rpc_method_handler(unary, **kw)
            return grpc.unary_stream_rpc_method_handler(unary, **kw)

        fn = h.stream_unary or h.stream_stream

        async def admitted(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            """The request stream once its first message (which names the target) passed;
            checked before the handler sees anything, relayed untouched after that, except
            for an edge site: a later header in its stream (a replication stream carries
            one per blob or version) is checked as the first was."""
            try:
                who, relayed = self._who(context)
                self._enter(who, relayed)
                it = requests.__aiter__()
                try:
                    first = await it.__anext__()
                except StopAsyncIteration:
                    return _empty()
                authz.check_message(who, service, method, first, relayed=relayed)
            except PermissionDenied as exc:
                await refuse(exc, context)
            if who.is_cluster and not authz.trusted(who):
                return _headers_checked(first, it, lambda m: authz.check_message(
                    who, service, method, m, relayed=relayed))
            return _prepend(first, it)

        if h.stream_unary is not None:
            async def client_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                return await fn(await admitted(requests, context), context)

            return grpc.stream_unary_rpc_method_handler(client_stream, **kw)

        async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for reply in fn(await admitted(requests, context), context):
                yield reply

        return grpc.stream_stream_rpc_method_handler(bidi, **kw)


async def _empty() -> AsyncIterator[Any]:
    return
    yield  # an async generator that yields nothing


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for msg in rest:
        yield msg


async def _headers_checked(first: Any, rest: AsyncIterator[Any],
                           check: Callable[[Any], None]) -> AsyncIterator[Any]:
    """``_prepend``, with ``check`` run on every later message that carries a header (it
    raises PermissionDenied into the handler, before the message reaches it)."""
    yield first
    async for msg in rest:
        if _has(msg, "header"):
            check(msg)
        yield msg
