"""Volume labels: validated wherever they enter, kept through a promotion's copy, and shown
only where a volume has some."""
from __future__ import annotations

import pytest

from namespace.errors import InvalidInput
from namespace.models import Volume, VolumeView, check_labels


@pytest.mark.parametrize("labels", [
    {}, {"team": "data"}, {"csi.gns.io/path": "/k8s/apps/data"}, {"a": ""},
    {"A_b.c-1": "x y"}, {"k" * 63: "v" * 1024}, {f"{'p' * 63}.{'q' * 63}.io/n": "v"},
])
def test_well_formed_labels(labels: dict[str, str]) -> None:
    assert check_labels(labels) == labels
    assert Volume(name="v", owner="c", labels=labels).labels == labels


@pytest.mark.parametrize(("labels", "fragment"), [
    ({"": "v"}, "invalid label key"),
    ({"-a": "v"}, "invalid label key"),
    ({"a-": "v"}, "invalid label key"),
    ({"a b": "v"}, "invalid label key"),
    ({"k" * 64: "v"}, "invalid label key"),
    ({"UPPER.io/k": "v"}, "invalid label key"),
    ({"/k": "v"}, "invalid label key"),
    ({"a/b/c": "v"}, "invalid label key"),
    ({"io/": "v"}, "invalid label key"),
    ({"k": "a\nb"}, "printable"),
    ({"k": "v" * 1025}, "1024"),
    ({"k": 1}, "must be a string"),
    ({1: "v"}, "invalid label key"),
    ({f"k{i}": "v" for i in range(65)}, "at most 64"),
    (["k=v"], "map"),
])
def test_malformed_labels_are_refused_with_every_problem(labels: object, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        check_labels(labels)


def test_every_problem_is_named() -> None:
    with pytest.raises(InvalidInput) as info:
        check_labels({"bad key": "v", "k": "\x00"})
    assert "'bad key'" in str(info.value) and "label k:" in str(info.value)


def test_labels_follow_a_promotion_and_read_back_from_etcd_json() -> None:
    vol = Volume(name="v", owner="a", labels={"csi.gns.io/path": "/k8s/x"})
    moved = vol.model_copy(update={"owner": "b", "epoch": 2})
    assert Volume.model_validate_json(moved.dump()).labels == {"csi.gns.io/path": "/k8s/x"}
    # a record from before labels reads as unlabelled
    assert Volume.model_validate_json(b'{"name": "v", "owner": "a"}').labels == {}


def test_view_json_has_labels_only_where_there_are_some() -> None:
    bare = VolumeView(name="v", owner="a", epoch=1, version=0, state="Ready")
    assert set(bare.model_dump()) == {"name", "owner", "epoch", "version", "state"}
    tagged = bare.model_copy(update={"labels": {"team": "x"}})
    assert tagged.model_dump()["labels"] == {"team": "x"}
    assert VolumeView.model_validate(bare.model_dump()).labels == {}
