"""Mirror policy documents (SPEC §6): parsing, every invalid form, all problems at once."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mirroring.policy import (
    Duration,
    MirrorPolicy,
    load_and_validate,
    parse_duration,
    parse_policy,
    validate_document,
    validate_policy,
)
from namespace.cache import NamespaceView
from namespace.errors import InvalidInput
from namespace.models import HUB_LABEL, ClusterSpec, Volume, VolumeState

SPEC_EXAMPLE = """\
apiVersion: gns.io/v1alpha1
kind: MirrorPolicy
metadata:
  name: sensors-dr
spec:
  volume: sensors
  mode: continuous          # continuous | interval | manual | sync
  interval: 5m              # for mode: interval
  targets:
    - cluster: onprem-b     # a replica volume held by that cluster's controller
    - uri: s3://dr-bucket/sensors
    - uri: gs://dr-bucket/sensors
    - uri: az://dr-container/sensors
    - uri: file:///mnt/nfs/sensors   # a path on an on-prem node
  failover:
    automatic: true
    after: 30s              # owner Down this long -> promote
    priority: [onprem-b, s3://dr-bucket/sensors]
    promoteTo: aws-1        # cluster that takes over when an object-store target is chosen
  maxLag: 60s
"""

CLUSTERS = ("onprem-a", "onprem-b", "aws-1")


def make_view() -> NamespaceView:
    return NamespaceView(
        clusters={c: ClusterSpec(id=c) for c in CLUSTERS} | {
            # A site joined through a hub, and a controller run with --provider edge.
            "store-1": ClusterSpec(id="store-1", provider="edge", labels={HUB_LABEL: "onprem-a"}),
            "far-1": ClusterSpec(id="far-1", provider="edge"),
        },
        volumes={
            "sensors": Volume(name="sensors", owner="onprem-a"),
            "logs": Volume(name="logs", owner="aws-1"),
        },
        volstates={"sensors": VolumeState(version=7), "logs": VolumeState(version=0)},
    )


def doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "gns.io/v1alpha1",
        "kind": "MirrorPolicy",
        "metadata": {"name": "p1"},
        "spec": {"volume": "sensors", "targets": [{"cluster": "onprem-b"}]},
    }
    base["spec"].update(spec)
    return base


def problems_of(document: dict[str, Any] | str) -> str:
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    with pytest.raises(InvalidInput) as info:
        load_and_validate(text, make_view())
    return str(info.value)


# -- valid documents --------------------------------------------------------------------------


def test_spec_example_parses_with_defaults_and_names() -> None:
    p = load_and_validate(SPEC_EXAMPLE, make_view())
    assert p.name == "sensors-dr"
    assert p.spec.mode == "continuous"
    assert p.spec.failover.automatic is True
    assert p.spec.failover.after.seconds == 30.0
    assert p.spec.max_lag.seconds == 60.0
    assert p.spec.failover.promote_to == "aws-1"
    assert p.target_names == [
        "onprem-b", "s3://dr-bucket/sensors", "gs://dr-bucket/sensors",
        "az://dr-container/sensors", "file:///mnt/nfs/sensors",
    ]
    assert p.target("onprem-b").is_cluster
    assert p.target("s3://dr-bucket/sensors").store.container == "dr-bucket"


def test_defaults_and_camel_case_on_the_wire() -> None:
    p = load_and_validate(json.dumps(doc()), make_view())
    assert p.spec.mode == "continuous"
    assert p.spec.interval is None
    assert p.spec.failover.automatic is False
    assert str(p.spec.failover.after) == "30s"
    assert str(p.spec.max_lag) == "60s"
    stored = json.loads(p.to_json())
    assert stored["apiVersion"] == "gns.io/v1alpha1"
    assert stored["spec"]["maxLag"] == "60s"
    assert "promoteTo" not in stored["spec"]["failover"]  # unset optionals left out
    assert "uri" not in stored["spec"]["targets"][0]


def test_trailing_slash_is_stripped_from_target_name() -> None:
    p = load_and_validate(json.dumps(doc(targets=[{"uri": "s3://dr-bucket/x/"}])), make_view())
    assert p.target_names == ["s3://dr-bucket/x"]
    assert json.loads(p.to_json())["spec"]["targets"] == [{"uri": "s3://dr-bucket/x/"}]


def test_interval_mode_keeps_the_original_duration_text() -> None:
    p = load_and_validate(json.dumps(doc(mode="interval", interval="1h30m")), make_view())
    assert p.spec.interval == "1h30m" and p.spec.interval is not None
    assert p.spec.interval.seconds == 5400.0
    assert json.loads(p.to_json())["spec"]["interval"] == "1h30m"


def test_stored_round_trip_and_view_dict() -> None:
    p = load_and_validate(SPEC_EXAMPLE, make_view())
    assert MirrorPolicy.from_stored(p.to_json()) == p
    assert MirrorPolicy.from_stored(json.loads(p.to_json())) == p
    assert copy.deepcopy(p) == p
    assert copy.deepcopy(p).spec.failover.after.seconds == 30.0


def test_kubernetes_object_drops_status_and_server_metadata() -> None:
    obj = yaml.safe_load(SPEC_EXAMPLE)
    obj["metadata"].update(uid="abc", resourceVersion="12", generation=3, namespace="gns")
    obj["status"] = {"targets": []}
    p = validate_document(MirrorPolicy.from_kubernetes(obj), make_view())
    assert p.metadata.namespace == "gns"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0),
     ("1.5h", 5400.0), ("2h45m30s", 9930.0), ("100us", 1e-4)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert Duration(text).seconds == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "30", "5x", "m5", "-1s", "1h 30m", "1d", "s"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)
    message = problems_of(doc(maxLag=bad))
    assert "spec.maxLag:" in message


@pytest.mark.parametrize(("number", "text"), [
    (30, "30s"), (300, "300s"), (1.5, "1.5s"), (0.001, "0.001s"), (1e-7, "0.0000001s"),
    (1e20, "100000000000000000000s"), (60.0, "60s"),
])
def test_a_number_is_seconds_in_every_duration_field(number: float, text: str) -> None:
    """As the CSI parameters take ``failoverAfter: 30``; kept as Go-style text, so the stored
    policy reads the same whichever way it was written."""
    p = load_and_validate(yaml.safe_dump(doc(mode="interval", interval=number, maxLag=number,
                                              failover={"after": number})), make_view())
    for value in (p.spec.interval, p.spec.max_lag, p.spec.failover.after):
        assert value == text and value is not None and value.seconds == pytest.approx(number)
    spec = json.loads(p.to_json())["spec"]
    assert (spec["interval"], spec["maxLag"], spec["failover"]["after"]) == (text, text, text)
    assert MirrorPolicy.from_stored(p.to_json()) == p


def test_yaml_numbers_as_a_user_writes_them() -> None:
    text = SPEC_EXAMPLE.replace("interval: 5m", "interval: 300").replace("after: 30s", "after: 30")
    p = load_and_validate(text, make_view())
    assert p.spec.interval == "300s" and p.spec.failover.after.seconds == 30.0


@pytest.mark.parametrize(("value", "fragment"), [
    (-30, "must not be negative"), (True, "number of seconds or a string"),
    (float("inf"), "finite"), ("30", "as a string, a number needs a unit ('30s')"),
    ([30], "number of seconds or a string"),
])
def test_durations_that_are_not_a_number_of_seconds(value: Any, fragment: str) -> None:
    message = problems_of(doc(failover={"after": value}))
    assert "spec.failover.after:" in message and fragment in message


@pytest.mark.parametrize("zero", ["0", "0s", "0ms", "0h0m", 0, 0.0])
def test_zero_interval_or_failover_delay_is_refused(zero: Any) -> None:
    message = problems_of(json.dumps(doc(mode="interval", interval=zero,
                                          failover={"automatic": True, "after": zero})))
    assert "spec.interval: must be longer than 0" in message
    assert "spec.failover.after: must be longer than 0" in message


def test_zero_is_refused_on_apply_only_and_max_lag_may_be_zero() -> None:
    """A policy stored before zero was refused still loads (the scheduler must keep it); a
    zero maxLag means any lag is reported, which makes sense."""
    p = load_and_validate(json.dumps(doc(maxLag=0)), make_view())
    assert p.spec.max_lag.seconds == 0
    stored = json.dumps(doc(mode="interval", interval="0s", failover={"after": "0s"}))
    assert MirrorPolicy.from_stored(stored).spec.failover.after.seconds == 0


# -- every invalid form -----------------------------------------------------------------------


def test_unknown_volume() -> None:
    assert "spec.volume: unknown volume 'nope'" in problems_of(doc(volume="nope"))


@pytest.mark.parametrize("uri", ["ftp://host/x", "http://bucket/x", "bucket/x", "s3://"])
def test_bad_scheme_or_malformed_uri(uri: str) -> None:
    assert "spec.targets[0].uri:" in problems_of(doc(targets=[{"uri": uri}]))


def test_file_root_is_refused() -> None:
    assert "filesystem root" in problems_of(doc(targets=[{"uri": "file:///"}]))


def test_duplicate_targets() -> None:
    msg = problems_of(doc(targets=[{"cluster": "onprem-b"}, {"cluster": "onprem-b"}]))
    assert "spec.targets[1]: duplicate target onprem-b" in msg
    msg = problems_of(doc(targets=[{"uri": "s3://dr-bucket/a"}, {"uri": "s3://dr-bucket/a/"}]))
    assert "spec.targets[1]: duplicate target" in msg


def test_nested_store_targets_clash() -> None:
    msg = problems_of(doc(targets=[{"uri": "s3://dr-bucket/a"}, {"uri": "s3://dr-bucket/a/b"}]))
    assert "lies inside target s3://dr-bucket/a" in msg


def test_target_equal_to_owner() -> None:
    assert "'onprem-a' is the owner of volume 'sensors'" in problems_of(
        doc(targets=[{"cluster": "onprem-a"}])
    )


def test_target_that_became_the_owner_by_failover_is_refused_like_any_other() -> None:
    """The stored policy named onprem-b; a failover made onprem-b the owner and onprem-a a
    former owner. Whatever the history, a document naming the owner is refused with every
    problem listed; naming the former owner instead is the valid form."""
    view = make_view()
    view.volumes["sensors"] = Volume(name="sensors", owner="onprem-b", epoch=2, former_owners=["onprem-a"])
    view.policies["p1"] = doc(targets=[{"cluster": "onprem-b"}, {"uri": "s3://dr-bucket/sensors"}])
    for targets in (
        [{"cluster": "onprem-b"}, {"uri": "s3://dr-bucket/sensors"}],  # the unchanged document
        [{"cluster": "onprem-b"}, {"cluster": "onprem-a"}, {"uri": "s3://dr-bucket/sensors"}],
    ):
        again = doc(targets=targets, bogus=1)
        with pytest.raises(InvalidInput) as info:
            load_and_validate(yaml.safe_dump(again), view)
        msg = str(info.value)
        assert "spec.targets[0].cluster: 'onprem-b' is the owner of volume 'sensors'" in msg
        assert "spec.bogus: unknown field" in msg
    swapped = doc(targets=[{"cluster": "onprem-a"}, {"uri": "s3://dr-bucket/sensors"}])
    assert load_and_validate(yaml.safe_dump(swapped), view).target_names == [
        "onprem-a", "s3://dr-bucket/sensors"]


def test_unknown_target_cluster() -> None:
    assert "spec.targets[0].cluster: unknown cluster 'gcp-9'" in problems_of(
        doc(targets=[{"cluster": "gcp-9"}])
    )


def test_an_edge_site_is_no_target_and_takes_over_nothing() -> None:
    """The core never dials in to a joined site (SPEC §8): a policy naming one as a target
    kept its replica on the site's hub, reported Synced, while the site held nothing."""
    problems = problems_of(doc(targets=[{"cluster": "store-1"}, {"uri": "s3://dr-bucket/a"}],
                               failover={"automatic": True, "promoteTo": "store-1"}))
    assert "spec.targets[0].cluster: 'store-1' is an edge site, which only dials out" in problems
    assert "spec.failover.promoteTo: 'store-1' is an edge site" in problems
    # A controller run with --provider edge holds etcd credentials and is dialled as any.
    policy = load_and_validate(yaml.safe_dump(doc(targets=[{"cluster": "far-1"}])), make_view())
    assert policy.target_names == ["far-1"]


def test_target_needs_exactly_one_of_cluster_or_uri() -> None:
    assert "spec.targets[0]: a target needs exactly one of" in problems_of(doc(targets=[{}]))
    assert "spec.targets[0]: a target needs exactly one of" in problems_of(
        doc(targets=[{"cluster": "onprem-b", "uri": "s3://dr-bucket/x"}])
    )


@pytest.mark.parametrize("target", [
    {"cluster": "onprem-b", "uri": "ftp://dr-bucket/x"},   # the uri is bad too
    {"cluster": "Bad_Name", "uri": "s3://dr-bucket/x"},    # the cluster is bad too
    {"cluster": "onprem-b", "uri": 5},
    {"cluster": "onprem-b", "uri": "s3://dr-bucket/x", "bucket": "y"},  # and an unknown field
])
def test_both_cluster_and_uri_is_reported_beside_the_fields_own_problems(target: dict[str, Any]) -> None:
    for parse in (problems_of, _structure_problems):
        msg = parse(doc(targets=[{"cluster": "aws-1"}, target]))
        parts = msg.removeprefix("invalid mirror policy 'p1': ").split("; ")
        assert parts.count("spec.targets[1]: a target needs exactly one of 'cluster' or 'uri'") == 1, msg
        assert len(parts) == 2, msg  # and the field's own problem


def _structure_problems(document: dict[str, Any]) -> str:
    with pytest.raises(InvalidInput) as info:
        parse_policy(yaml.safe_dump(document))
    return str(info.value)


def test_a_header_names_both_api_version_and_kind() -> None:
    d = doc()
    d["kind"] = "Deployment"
    del d["apiVersion"]
    msg = problems_of(d)
    assert "kind: must be 'MirrorPolicy'" in msg and "apiVersion: required field missing" in msg
    d = doc()
    del d["apiVersion"]
    assert "apiVersion: required field missing" in problems_of(d)
    assert "apiVersion: required field missing" in _structure_problems(d)
    d = doc()
    del d["kind"]
    assert "kind: required field missing" in problems_of(d)
    # Neither: the bare metadata + spec form, accepted and stored with the full header.
    d = doc()
    del d["kind"], d["apiVersion"]
    stored = json.loads(load_and_validate(yaml.safe_dump(d), make_view()).to_json())
    assert (stored["apiVersion"], stored["kind"]) == ("gns.io/v1alpha1", "MirrorPolicy")


def test_unknown_field_top_level_and_nested() -> None:
    d = doc()
    d["spek"] = {}
    assert "spek: unknown field" in problems_of(d)
    assert "spec.target: unknown field" in problems_of(doc(target=[]))
    assert "spec.targets[0].bucket: unknown field" in problems_of(
        doc(targets=[{"cluster": "onprem-b", "bucket": "x"}])
    )
    assert "spec.failover.promote_to: unknown field" in problems_of(
        doc(failover={"promote_to": "aws-1"})  # camelCase only on the wire
    )
    d = doc()
    d["metadata"]["owner"] = "me"
    assert "metadata.owner: unknown field" in problems_of(d)


def test_sync_to_object_store() -> None:
    msg = problems_of(doc(mode="sync", targets=[{"cluster": "onprem-b"}, {"uri": "gs://dr-bucket/x"}]))
    assert "spec.targets[1].uri: mode 'sync' needs cluster targets" in msg
    load_and_validate(json.dumps(doc(mode="sync")), make_view())  # clusters only: fine


@pytest.mark.parametrize("text", ["a: [1", "key: 'open", "\tx: 1\n y", "@", ":"])
def test_not_yaml(text: str) -> None:
    with pytest.raises(InvalidInput, match="not valid YAML or JSON"):
        load_and_validate(text, make_view())


@pytest.mark.parametrize("text", ["", "just a string", "- a\n- b", "42", "null"])
def test_not_a_mapping(text: str) -> None:
    with pytest.raises(InvalidInput, match="must be a YAML or JSON mapping"):
        parse_policy(text)


def test_duplicate_yaml_key() -> None:
    with pytest.raises(InvalidInput, match="duplicate key 'targets'"):
        parse_policy("metadata: {name: a}\nspec:\n  targets: []\n  targets: []\n")


def test_interval_required_for_interval_mode_and_unused_otherwise() -> None:
    assert "spec.interval: required when mode is 'interval'" in problems_of(doc(mode="interval"))
    # SPEC §6's own example carries `interval: 5m` beside `mode: continuous`.
    assert "interval" not in problems_of(doc(interval="5m", bogus=True))



def test_the_spec_example_is_valid() -> None:
    policy = load_and_validate(SPEC_EXAMPLE, make_view())
    assert policy.target_names == [
        "onprem-b", "s3://dr-bucket/sensors", "gs://dr-bucket/sensors",
        "az://dr-container/sensors", "file:///mnt/nfs/sensors"]
    assert policy.spec.failover.after.seconds == 30 and policy.spec.max_lag.seconds == 60


def test_bad_mode_and_api_version() -> None:
    assert "spec.mode: must be" in problems_of(doc(mode="hourly"))
    d = doc()
    d["apiVersion"] = "gns.io/v2"
    assert "apiVersion: must be" in problems_of(d)


def test_priority_entries_must_be_targets() -> None:
    msg = problems_of(doc(failover={"priority": ["onprem-b", "aws-1", "onprem-b"]}))
    assert "spec.failover.priority[1]: 'aws-1' is not one of the policy's targets" in msg
    assert "spec.failover.priority[2]: 'onprem-b' is listed twice" in msg
    # A URI may be named with or without its trailing '/'.
    load_and_validate(json.dumps(doc(
        targets=[{"uri": "s3://dr-bucket/a/"}],
        failover={"priority": ["s3://dr-bucket/a"]},
    )), make_view())


def test_promote_to() -> None:
    store = [{"uri": "s3://dr-bucket/a"}]
    assert "spec.failover.promoteTo: required when failover is automatic" in problems_of(
        doc(targets=store, failover={"automatic": True})
    )
    assert "spec.failover.promoteTo: unknown cluster 'gcp-9'" in problems_of(
        doc(targets=store, failover={"automatic": True, "promoteTo": "gcp-9"})
    )
    assert "already owns volume" in problems_of(doc(failover={"promoteTo": "onprem-a"}))
    # Cluster targets only, or not automatic: promoteTo is not needed.
    load_and_validate(json.dumps(doc(failover={"automatic": True})), make_view())
    load_and_validate(json.dumps(doc(targets=store)), make_view())


def test_no_targets() -> None:
    assert "spec.targets: no targets" in problems_of(doc(targets=[]))
    d = doc()
    del d["spec"]["targets"]
    assert "spec.targets: required field missing" in problems_of(d)


def test_bad_names() -> None:
    d = doc(volume="Sensors_1")
    d["metadata"]["name"] = "a/b"
    msg = problems_of(d)
    assert "metadata.name: invalid policy name 'a/b'" in msg
    assert "spec.volume: invalid volume name" in msg


def test_every_problem_is_listed_together() -> None:
    d = doc(
        volume="sensors",
        mode="sync",
        interval="5m",
        bogus=True,
        targets=[
            {"cluster": "onprem-a"},          # the owner
            {"uri": "ftp://dr-bucket/x"},     # bad scheme
            {"cluster": "onprem-b"},
            {"cluster": "onprem-b"},          # duplicate
            {"uri": "s3://dr-bucket/x"},      # sync to an object store
            {"cluster": "nowhere"},           # unknown cluster
        ],
        failover={"automatic": True, "after": "soon", "priority": ["aws-1"], "extra": 1},
        maxLag="1x",
    )
    d["kindd"] = "typo"
    msg = problems_of(d)
    assert msg.startswith("invalid mirror policy 'p1': ")
    expected = [
        "kindd: unknown field",
        "spec.bogus: unknown field",
        "spec.failover.extra: unknown field",
        "spec.targets[1].uri:",
        "spec.failover.after: invalid duration 'soon'",
        "spec.maxLag: invalid duration '1x'",
        "spec.targets[0].cluster: 'onprem-a' is the owner",
        "spec.targets[3]: duplicate target onprem-b",
        "spec.targets[4].uri: mode 'sync' needs cluster targets",
        "spec.targets[5].cluster: unknown cluster 'nowhere'",
        "spec.failover.priority[0]: 'aws-1' is not one of the policy's targets",
        "spec.failover.promoteTo: required when failover is automatic",
    ]
    for fragment in expected:
        assert fragment in msg, f"{fragment!r} missing from {msg!r}"
    parts = msg.removeprefix("invalid mirror policy 'p1': ").split("; ")
    assert len(parts) == len(expected), parts


def test_unknown_volume_listed_with_structural_problems() -> None:
    d = doc(volume="nope", extra=1)
    msg = problems_of(d)
    assert "spec.extra: unknown field" in msg and "unknown volume 'nope'" in msg


def test_validate_policy_returns_a_list() -> None:
    p = parse_policy(json.dumps(doc(targets=[{"cluster": "onprem-a"}, {"cluster": "x"}])))
    problems = validate_policy(p, make_view())
    assert len(problems) == 2
    assert validate_policy(load_and_validate(SPEC_EXAMPLE, make_view()), make_view()) == []


# -- property: valid documents survive storing ------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
durations = st.builds(
    lambda parts: "".join(f"{n}{u}" for n, u in parts),
    st.lists(st.tuples(st.integers(0, 999), st.sampled_from(["ms", "s", "m", "h"])), min_size=1, max_size=3),
)
positive_durations = durations.filter(lambda d: parse_duration(d) > 0)  # interval, after
store_uris = st.builds(
    lambda scheme, bucket, path, slash: f"{scheme}://{bucket}/{path}{'/' if slash else ''}",
    st.sampled_from(["s3", "gs", "az"]),
    st.from_regex(r"[a-z0-9]{3,12}", fullmatch=True),
    st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True),
    st.booleans(),
)


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["continuous", "interval", "manual", "sync"]))
    clusters = draw(st.lists(st.sampled_from(["onprem-b", "aws-1"]), unique=True, max_size=2))
    uris = [] if mode == "sync" else draw(st.lists(store_uris, max_size=3, unique_by=lambda u: u.split("/")[2]))
    if not clusters and not uris:
        clusters = ["onprem-b"]
    targets = [{"cluster": c} for c in clusters] + [{"uri": u} for u in uris]
    names_ = [t.get("cluster") or t["uri"].rstrip("/") for t in targets]
    spec: dict[str, Any] = {"volume": "sensors", "targets": targets}
    if draw(st.booleans()) or mode != "continuous":
        spec["mode"] = mode
    if mode == "interval":
        spec["interval"] = draw(positive_durations)
    if draw(st.booleans()):
        spec["maxLag"] = draw(durations)
    if draw(st.booleans()):
        failover: dict[str, Any] = {"automatic": draw(st.booleans())}
        if draw(st.booleans()):
            failover["after"] = draw(positive_durations)
        failover["priority"] = draw(st.permutations(names_))[: draw(st.integers(0, len(names_)))]
        if uris and failover["automatic"] or draw(st.booleans()):
            failover["promoteTo"] = "aws-1"
        spec["failover"] = failover
    return {"metadata": {"name": draw(names)}, "spec": spec}


@settings(max_examples=150, deadline=None)
@given(valid_documents(), st.booleans())
def test_round_trip_of_valid_documents(document: dict[str, Any], as_yaml: bool) -> None:
    text = yaml.safe_dump(document) if as_yaml else json.dumps(document)
    view = make_view()
    p = load_and_validate(text, view)
    stored = p.to_json()
    again = MirrorPolicy.from_stored(stored)
    assert again == p
    assert again.to_json() == stored
    # The stored form is itself a valid document, and re-validates to the same policy.
    assert load_and_validate(stored.decode(), view) == p
    # Every field given is kept as written.
    spec = json.loads(stored)["spec"]
    for key, value in document["spec"].items():
        if isinstance(value, dict):
            assert {k: spec[key][k] for k in value} == value
        else:
            assert spec[key] == value


def test_the_crd_takes_a_number_wherever_the_model_does() -> None:
    """``kubectl apply`` must not refuse what the controller accepts: each duration field of
    the committed CRD is Kubernetes' int-or-string, never negative."""
    from pathlib import Path

    crd = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "crds"
                          / "mirrorpolicies.gns.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    fields = spec["properties"]
    for node in (fields["interval"], fields["maxLag"], fields["failover"]["properties"]["after"]):
        assert node.get("x-kubernetes-int-or-string") is True and "type" not in node, node
        assert node["minimum"] == 0 and node["pattern"]
