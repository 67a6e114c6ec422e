"""The reconciler's small pieces without servers: kubeconfig loading, conditions, paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from federation.kube.api import GLOBAL_MOUNTS, KubeConfig
from federation.kube.conditions import condition, merge
from federation.kube.mounts import mount_problems
from namespace.errors import InvalidInput


def _doc(user: dict[str, object], server: str = "http://127.0.0.1:8080") -> dict[str, object]:
    return {"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": user}]}


def test_kubeconfig_token_and_token_file(tmp_path: Path) -> None:
    cfg = KubeConfig.from_kubeconfig(_doc({"token": "abc"}), tmp_path)
    assert cfg.server == "http://127.0.0.1:8080" and cfg.headers() == {"Authorization": "Bearer abc"}
    (tmp_path / "tok").write_text("rotated\n")
    cfg = KubeConfig.from_kubeconfig(_doc({"tokenFile": "tok"}), tmp_path)
    assert cfg.headers() == {"Authorization": "Bearer rotated"}
    (tmp_path / "tok").write_text("again")
    assert cfg.headers() == {"Authorization": "Bearer again"}  # read per request


@pytest.mark.parametrize(("doc", "fragment"), [
    ({}, "current-context"),
    ({"current-context": "x", "contexts": []}, "context named 'x'"),
    (_doc({}, server="ftp://x"), "http"),
])
def test_broken_kubeconfigs(doc: dict[str, object], fragment: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        KubeConfig.from_kubeconfig(doc, tmp_path)


def test_resource_paths() -> None:
    assert GLOBAL_MOUNTS.path() == "/apis/gns.io/v1alpha1/globalmounts"
    assert GLOBAL_MOUNTS.path("ns", "m", "status") == \
        "/apis/gns.io/v1alpha1/namespaces/ns/globalmounts/m/status"


def test_transition_time_kept_while_status_unchanged() -> None:
    first = merge(None, [condition("Ready", True, "Applied", "ok")])
    stamp = first[0]["lastTransitionTime"]
    again = merge(first, [condition("Ready", True, "Applied", "still ok")])
    assert again[0]["lastTransitionTime"] == stamp and again[0]["message"] == "still ok"
    flipped = merge([{**first[0], "lastTransitionTime": "2000-01-01T00:00:00Z"}],
                    [condition("Ready", False, "Invalid", "bad")])
    assert flipped[0]["lastTransitionTime"] != "2000-01-01T00:00:00Z"


def test_mount_problems_lists_every_one() -> None:
    problems, mount = mount_problems({"path": "rel", "volume": "Bad_Name", "subpath": "../x",
                                      "owner": "c"}, set())
    assert mount is None
    text = "; ".join(problems)
    for part in ("spec.owner", "spec.path", "spec.volume", "spec.subpath"):
        assert part in text
    problems, mount = mount_problems({"path": "/a//b/", "volume": "v"}, {"v"})
    assert problems == [] and mount is not None and mount.path == "/a/b"
    assert mount_problems({"path": "/a", "volume": "v"}, set())[0] == ["spec.volume: volume 'v' not found"]
    assert mount_problems(None, set())[0] == ["spec is required"]


def test_an_unknown_volume_is_listed_beside_the_other_problems() -> None:
    """The volume is looked up whenever its name is well formed, whatever else is wrong."""
    problems, mount = mount_problems({"path": "relative/p", "volume": "nosuch"}, {"v"})
    assert mount is None
    assert [p.split(":")[0] for p in problems] == ["spec.path", "spec.volume"], problems
    assert "volume 'nosuch' not found" in problems[1]
    # a malformed name is reported as such, not also as missing
    problems, _ = mount_problems({"path": "/p", "volume": "Bad_Name", "x": 1}, set())
    assert len(problems) == 2 and not any("not found" in p for p in problems)
