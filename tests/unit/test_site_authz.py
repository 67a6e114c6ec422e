"""An edge site's access control (SPEC §10): it decides for the paths on its own volumes, on
the grants its hub sent with its slice, and leaves what it forwards to where it lands."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from federation.api._gen.gns.federation.v1 import federation_pb2 as pb
from federation.controller.authz import SiteAuthorizer
from federation.controller.edge_hub import site_slice
from federation.tls import Identity
from namespace.acl import Grant, Grants
from namespace.cache import NamespaceView
from namespace.errors import PermissionDenied
from namespace.models import Volume

CAROL, HUB = Identity("user", "carol", ("field",)), Identity("cluster", "onprem-a")


@dataclass
class _Slice:
    """What ``edge.site.LocalNamespace`` holds: the hub's last slice, applied."""

    view: NamespaceView = field(default_factory=NamespaceView)
    grants: Grants | None = None


def _namespace(*grants: Grant) -> _Slice:
    view = NamespaceView()
    view.volumes["sitevol"] = Volume(name="sitevol", owner="edge-t")
    view.volumes["core"] = Volume(name="core", owner="onprem-a")
    view.mounts.set("/site", "sitevol", "")
    view.mounts.set("/core", "core", "")
    held = Grants()
    for g in grants:
        held.set(g)
    return _Slice(view, held)


def _stat(path: str = "", volume: str = "", rel: str = "") -> pb.StatRequest:
    return pb.StatRequest(target=pb.Target(global_path=path, volume=volume, relative_path=rel))


def _put(path: str) -> pb.PutRequest:
    return pb.PutRequest(header=pb.WriteHeader(target=pb.Target(global_path=path)), data=b"x")


def test_own_paths_are_decided_on_the_grants_from_the_hub() -> None:
    ns = _namespace(Grant("/site/in", "group:field", frozenset({"read"})))
    authz = SiteAuthorizer("edge-t", ns)
    authz.check_message(CAROL, "Federation", "Stat", _stat("/site/in/a"))
    authz.check_message(CAROL, "Federation", "Stat", _stat(volume="sitevol", rel="in/a"))
    authz.check_message(CAROL, "Federation", "Resolve", pb.ResolveRequest(path="/site/in/a"))
    for denied in (_stat("/site/out"), _stat(volume="sitevol", rel="out")):
        with pytest.raises(PermissionDenied):
            authz.check_message(CAROL, "Federation", "Stat", denied)
    with pytest.raises(PermissionDenied):  # read is not write
        authz.check_message(CAROL, "Federation", "Put", _put("/site/in/a"))
    with pytest.raises(PermissionDenied):  # one put of a batch she may not write
        authz.check_message(CAROL, "Federation", "PutBatch", pb.PutBatchRequest(puts=[_put("/site/in/a")]))
    authz.check_message(HUB, "Federation", "Put", _put("/site/out"))  # a cluster acts for itself
    # A new slice replaces the grants: the site decides on the hub's latest word.
    ns.grants = _namespace(Grant("/site", "user:carol", frozenset({"write"}))).grants
    authz.check_message(CAROL, "Federation", "Put", _put("/site/out"))


def test_what_it_forwards_is_left_to_where_it_lands() -> None:
    authz = SiteAuthorizer("edge-t", _namespace())
    authz.check_message(CAROL, "Federation", "Stat", _stat("/core/x"))  # the hub and owner decide
    authz.check_message(CAROL, "Federation", "Stat", _stat("/nowhere"))
    authz.check_message(CAROL, "Federation", "Rename",  # not all of it is the site's: forwarded
                        pb.RenameRequest(target=pb.Target(global_path="/site/a"), destination="/core/a"))
    with pytest.raises(PermissionDenied):
        authz.check_message(CAROL, "Federation", "Rename",
                            pb.RenameRequest(target=pb.Target(global_path="/site/a"), destination="/site/b"))
    authz.check_message(CAROL, "Control", "ListVolumes", object())  # control calls go to the hub
    # No grants in the slice (access control off at the hub, or a hub before this): none decided.
    open_site = _namespace()
    open_site.grants = None
    SiteAuthorizer("edge-t", open_site).check_message(CAROL, "Federation", "Put", _put("/site/a"))


def test_the_slice_carries_the_grants_on_the_sites_paths_only() -> None:
    ns = _namespace(Grant("/", "user:client", frozenset({"admin"})),
                    Grant("/site/in", "group:field", frozenset({"read"})),
                    Grant("/core", "user:carol", frozenset({"read"})))
    sliced = site_slice(ns.view, "edge-t", ns.grants)
    assert [(g["path"], g["subject"]) for g in sliced["grants"]] == [("/", "user:client"),
                                                                     ("/site/in", "group:field")]
    assert "grants" not in site_slice(ns.view, "edge-t")  # access control off: nothing to send
