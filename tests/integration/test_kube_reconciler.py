"""``gns controller --kubernetes`` against a FAKE Kubernetes API server
(federation/local/fake_kube_apiserver.py: real REST + watch protocol with resourceVersion, generation,
the status subresource, finalizers and 410 Gone; no kube-apiserver can run here), with a
real etcd and real controller processes.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.local.etcd_server import EtcdCluster
from federation.local.fake_kube_apiserver import FakeKube
from tests.fixtures.federation import Federation
from tests.support import wait_for


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    k = FakeKube().start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, kube: FakeKube,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("kube-fed")
    kubeconfig = kube.kubeconfig(root / "kubeconfig")
    f = Federation(etcd_module, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBECONFIG", str(kubeconfig))
        try:
            f.add("onprem-b", wait=False)
            f.add("onprem-a", wait=False, extra=["--kubernetes"])
            for cid in f.controllers:
                f.wait_healthy(cid, timeout=30)
            assert f.gns("volume", "create", "sensors", "--cluster", "onprem-a").returncode == 0
            yield f
        finally:
            f.stop_all()


def _cond(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = ((obj or {}).get("status") or {}).get("conditions") or []
    for c in conditions:
        if c["type"] == type_:
            return c
    return None


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition ``type_`` of ``obj``, which must have one."""
    c = _cond(obj, type_)
    assert c is not None, (type_, obj)
    return c


def _status_for(kube: FakeKube, kind: str, name: str, generation: int | None = None,
                ready: str | None = None, reason: str | None = None) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kube.get(kind, name)
        if obj is None:
            return None
        st = obj.get("status") or {}
        if generation is not None and st.get("observedGeneration") != generation:
            return None
        c = _cond(obj, "Ready")
        if c is None or (ready is not None and c["status"] != ready) \
                or (reason is not None and c["reason"] != reason):
            return None
        return obj
    found = wait_for(check, 15, f"{kind} {name} status (gen {generation}, Ready={ready} {reason})")
    assert found is not None  # wait_for returns only a truthy value
    return found


def policy(name: str, volume: str = "sensors", targets: list[dict[str, str]] | None = None,
           mode: str = "continuous") -> dict[str, Any]:
    return {"apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": name},
            "spec": {"volume": volume, "mode": mode,
                     "targets": targets or [{"cluster": "onprem-b"}]}}


def mount(name: str, path: str, volume: str = "sensors", subpath: str = "") -> dict[str, Any]:
    spec = {"path": path, "volume": volume}
    if subpath:
        spec["subpath"] = subpath
    return {"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount", "metadata": {"name": name},
            "spec": spec}


def _js(fed: Federation, *args: str) -> Any:
    out = fed.gns(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _policies(fed: Federation) -> dict[str, Any]:
    return {p["name"]: p for p in _js(fed, "mirror", "list")}


def _mounts(fed: Federation) -> dict[str, Any]:
    return {m["path"]: m for m in _js(fed, "mount", "list")}


def test_mirror_policy_create_update_delete(fed: Federation, kube: FakeKube) -> None:
    created = kube.apply(policy("sensors-dr"))
    obj = _status_for(kube, "MirrorPolicy", "sensors-dr", generation=1, ready="True")
    assert "gns.io/finalizer" in obj["metadata"]["finalizers"]
    assert _policies(fed)["sensors-dr"]["targets"] == ["onprem-b"]
    st = obj["status"]
    assert st["volume"] == "sensors" and st["mode"] == "continuous"
    assert [t["target"] for t in st["targets"]] == ["onprem-b"]
    for key in ("state", "version", "lag_versions", "lag_seconds", "bytes", "files", "last_error"):
        assert key in st["targets"][0]
    ready = _cond(obj, "Ready")
    assert ready is not None and ready["reason"] == "Applied" and ready["lastTransitionTime"]
    synced = wait_for(lambda: _cond(kube.get("MirrorPolicy", "sensors-dr"), "Synced")
                      if (_cond(kube.get("MirrorPolicy", "sensors-dr"), "Synced") or {}).get("status") == "True"
                      else None, 15, "Synced=True")
    assert synced is not None and synced["reason"] == "Synced"

    # a status-only change does not bump generation; a spec change does, and is applied
    updated = kube.apply(policy("sensors-dr", mode="manual"))
    assert updated["metadata"]["generation"] == created["metadata"]["generation"] + 1 == 2
    _status_for(kube, "MirrorPolicy", "sensors-dr", generation=2, ready="True")
    assert _policies(fed)["sensors-dr"]["mode"] == "manual"

    assert kube.delete("MirrorPolicy", "sensors-dr") == 200
    wait_for(lambda: kube.get("MirrorPolicy", "sensors-dr") is None, 15, "policy gone from Kubernetes")
    assert "sensors-dr" not in _policies(fed)


def test_invalid_mirror_policy_lists_every_problem(fed: Federation, kube: FakeKube) -> None:
    bad = policy("broken", volume="no-such-volume",
                 targets=[{"cluster": "nowhere"}, {"uri": "ftp://x/y"}, {"cluster": "nowhere"}])
    kube.apply(bad)
    obj = _status_for(kube, "MirrorPolicy", "broken", generation=1, ready="False", reason="Invalid")
    msg = _condition(obj, "Ready")["message"]
    for part in ("no-such-volume", "nowhere", "ftp"):
        assert part in msg, msg
    assert _condition(obj, "Synced")["status"] == "False"
    assert "broken" not in _policies(fed)
    # fixing it makes it Ready; deleting removes it
    kube.apply(policy("broken"))
    _status_for(kube, "MirrorPolicy", "broken", generation=2, ready="True")
    assert "broken" in _policies(fed)
    kube.delete("MirrorPolicy", "broken")
    wait_for(lambda: kube.get("MirrorPolicy", "broken") is None, 15, "deleted")
    assert "broken" not in _policies(fed)


def test_conflict_with_a_policy_made_elsewhere(fed: Federation, kube: FakeKube, tmp_path: Path) -> None:
    doc = tmp_path / "p.json"
    doc.write_text(json.dumps(policy("cli-made", targets=[{"cluster": "onprem-b"}], mode="manual")))
    assert fed.gns("mirror", "apply", "-f", str(doc)).returncode == 0
    kube.apply(policy("cli-made"))
    obj = _status_for(kube, "MirrorPolicy", "cli-made", ready="False", reason="Conflict")
    assert "gns mirror apply" in _condition(obj, "Ready")["message"]
    assert _policies(fed)["cli-made"]["mode"] == "manual"  # unchanged
    kube.delete("MirrorPolicy", "cli-made")
    wait_for(lambda: kube.get("MirrorPolicy", "cli-made") is None, 15, "deleted")
    assert "cli-made" in _policies(fed)  # not ours: left alone
    assert fed.gns("mirror", "remove", "cli-made").returncode == 0


def test_global_mount_create_update_delete_and_conflict(fed: Federation, kube: FakeKube) -> None:
    kube.apply(mount("health", "/health/sensors", subpath="raw"))
    obj = _status_for(kube, "GlobalMount", "health", generation=1, ready="True")
    assert obj["status"]["owner"] == "onprem-a"
    assert _mounts(fed)["/health/sensors"] == {"path": "/health/sensors", "volume": "sensors",
                                               "subpath": "raw"}
    # move it: the old path goes, the new one comes
    kube.apply(mount("health", "/health/all"))
    _status_for(kube, "GlobalMount", "health", generation=2, ready="True")
    ms = _mounts(fed)
    assert "/health/sensors" not in ms and ms["/health/all"]["subpath"] == ""

    # a path mounted elsewhere: Conflict, nothing changed
    assert fed.gns("mount", "add", "/taken", "sensors").returncode == 0
    kube.apply(mount("taken", "/taken", subpath="x"))
    _status_for(kube, "GlobalMount", "taken", ready="False", reason="Conflict")
    # a path another resource holds: Conflict too
    kube.apply(mount("twin", "/health/all"), namespace="other")
    _status_for_ns = wait_for(lambda: (
        c := _cond(kube.get("GlobalMount", "twin", "other"), "Ready")) and c["reason"] == "Conflict", 15, "twin conflict")
    assert _status_for_ns
    assert _mounts(fed)["/taken"]["subpath"] == ""

    # invalid: every problem listed
    kube.apply({"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount", "metadata": {"name": "bad"},
                "spec": {"path": "relative/p", "volume": "Bad_Name", "subpath": "../up"}})
    obj = _status_for(kube, "GlobalMount", "bad", ready="False", reason="Invalid")
    msg = _condition(obj, "Ready")["message"]
    for part in ("spec.path", "spec.volume", "spec.subpath"):
        assert part in msg, msg

    for name, ns in (("health", "default"), ("taken", "default"), ("twin", "other"), ("bad", "default")):
        kube.delete("GlobalMount", name, ns)
        wait_for(lambda: kube.get("GlobalMount", name, ns) is None, 15, f"{name} deleted")
    ms = _mounts(fed)
    assert "/health/all" not in ms
    assert "/taken" in ms  # made by the CLI: the Conflict resource removed nothing
    assert fed.gns("mount", "remove", "/taken").returncode == 0


def test_watch_expiry_410_and_api_server_restart(fed: Federation, kube: FakeKube) -> None:
    opened = kube.watches_opened
    kube.expire()  # every watch resuming from before now gets 410 Gone
    kube.apply(mount("after-410", "/after/410"))
    _status_for(kube, "GlobalMount", "after-410", generation=1, ready="True")
    assert "/after/410" in _mounts(fed)
    assert kube.watches_opened > opened
    assert ("GET", "/apis/gns.io/v1alpha1/globalmounts") in kube.requests  # relisted

    # API server restart: down for a while; a change made right after it returns is seen
    kube.stop()
    time.sleep(0.5)  # the reconciler notices the broken watch while the server is away
    kube.start()
    kube.apply(mount("after-restart", "/after/restart"))
    _status_for(kube, "GlobalMount", "after-restart", generation=1, ready="True")
    # and a restart that also lost history (410 on resume) is recovered by a relist
    kube.stop()
    kube.expire()
    kube.start()
    kube.apply(policy("after-both"))
    _status_for(kube, "MirrorPolicy", "after-both", generation=1, ready="True")
    for kind, name in (("GlobalMount", "after-410"), ("GlobalMount", "after-restart"),
                       ("MirrorPolicy", "after-both")):
        kube.delete(kind, name)
        wait_for(lambda: kube.get(kind, name) is None, 15, f"{name} deleted")
    assert "/after/410" not in _mounts(fed) and "after-both" not in _policies(fed)


def test_deleting_a_globalmount_leaves_what_the_cli_mounted_at_its_path(fed: Federation,
                                                                        kube: FakeKube) -> None:
    """The reported case, end to end: the resource goes Invalid (its mount stays), the CLI
    mounts another volume at the path, the resource is deleted: the CLI's mount and data
    stay."""
    assert fed.gns("volume", "create", "kvol2", "--cluster", "onprem-a").returncode == 0
    kube.apply(mount("gmx", "/gm/x"))
    _status_for(kube, "GlobalMount", "gmx", generation=1, ready="True")
    kube.apply(mount("gmx", "/gm/x", volume="Bad_Name"))
    _status_for(kube, "GlobalMount", "gmx", generation=2, ready="False", reason="Invalid")
    assert _mounts(fed)["/gm/x"]["volume"] == "sensors"
    assert fed.gns("mount", "remove", "/gm/x").returncode == 0
    assert fed.gns("mount", "add", "/gm/x", "kvol2").returncode == 0
    assert fed.gns("put", "-", "/gm/x/cli-data.txt", input=b"cli\n").returncode == 0
    kube.delete("GlobalMount", "gmx")
    wait_for(lambda: kube.get("GlobalMount", "gmx") is None, 15, "gmx deleted")
    assert _mounts(fed)["/gm/x"]["volume"] == "kvol2"
    got = fed.gns("get", "/gm/x/cli-data.txt", "-")
    assert got.returncode == 0 and got.stdout == "cli\n", got.stderr
    assert fed.gns("mount", "remove", "/gm/x").returncode == 0


def test_durations_as_numbers_and_zero_alike_from_kubernetes_and_the_cli(
        fed: Federation, kube: FakeKube, tmp_path: Path) -> None:
    """One document, two ways in: a YAML number is seconds in both; a zero interval or
    failover delay is refused by both (Invalid, exit 2), every problem listed."""
    numbers = policy("by-numbers", mode="interval")
    numbers["spec"].update(interval=300, failover={"after": 30})
    kube.apply(numbers)
    obj = _status_for(kube, "MirrorPolicy", "by-numbers", generation=1, ready="True")
    assert _condition(obj, "Ready")["message"] == "mirror policy by-numbers created"
    stored = _js(fed, "mirror", "list")
    assert any(p["name"] == "by-numbers" for p in stored)
    kube.delete("MirrorPolicy", "by-numbers")
    wait_for(lambda: kube.get("MirrorPolicy", "by-numbers") is None, 15, "deleted")

    doc = tmp_path / "p.yaml"
    doc.write_text(yaml.safe_dump(numbers))
    out = fed.gns("mirror", "apply", "-f", str(doc), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["action"] == "created"
    assert fed.gns("mirror", "remove", "by-numbers").returncode == 0

    zero = policy("by-zero", mode="interval")
    zero["spec"].update(interval=0, failover={"after": "0s"})
    kube.apply(zero)
    obj = _status_for(kube, "MirrorPolicy", "by-zero", generation=1, ready="False", reason="Invalid")
    message = _condition(obj, "Ready")["message"]
    assert "spec.interval: must be longer than 0" in message
    assert "spec.failover.after: must be longer than 0" in message
    doc.write_text(yaml.safe_dump(zero))
    out = fed.gns("mirror", "apply", "-f", str(doc))
    assert out.returncode == 2 and "spec.failover.after: must be longer than 0" in out.stderr
    assert "by-zero" not in _policies(fed)
    kube.delete("MirrorPolicy", "by-zero")
    wait_for(lambda: kube.get("MirrorPolicy", "by-zero") is None, 15, "deleted")
