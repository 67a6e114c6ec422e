"""deploy/ (SPEC §9): kustomize renders, the CRDs are current, structural and agree with the
pydantic models, the examples are valid, the scripts fail cleanly without Docker.

No API server runs here: the CRD schemas are checked with ``jsonschema``, made *closed* the
way the API server treats a structural schema (unknown fields pruned, and refused by
``kubectl apply``'s default strict field validation).
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirroring.policy import parse_policy
from namespace.errors import InvalidInput
from namespace.models import Mount

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = {
    "onprem-a": {"GNS_PROVIDER": "onprem", "GNS_REGION": "dc1"},
    "aws-1": {"GNS_PROVIDER": "aws", "GNS_REGION": "us-east-1"},
}
KUSTOMIZATIONS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]
SCRIPTS = ["kind/up.sh", "kind/down.sh", "emulators/start.sh", "emulators/stop.sh"]


# -- helpers ----------------------------------------------------------------------------------


def _gen_crds() -> Any:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "scripts" / "gen-crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_crds = _gen_crds()


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@functools.cache
def _render(kustomization: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomizations")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / kustomization)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _crd(name: str) -> dict[str, Any]:
    (doc,) = _load_all(DEPLOY / "crds" / f"{name}.yaml")
    return doc


def _openapi(name: str) -> dict[str, Any]:
    (version,) = _crd(name)["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema that validates like the API server does with a structural schema:
    objects with ``properties`` refuse other fields (unless they preserve unknown fields) and
    ``nullable`` admits null."""
    s = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
            return
        if not isinstance(node, dict):
            return
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
        if node.get("type") == "object" and "properties" in node and not preserve:
            node.setdefault("additionalProperties", False)
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    walk(sub)
            elif key in ("items", "additionalProperties", "oneOf", "anyOf", "allOf", "not"):
                walk(value)

    walk(s)
    return s


@functools.cache
def _validator(crd_name: str) -> Any:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed: add it to the 'test' extras"
    )
    schema = _closed(_openapi(crd_name))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(crd_name: str, doc: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator(crd_name).iter_errors(doc)]


# -- (1) kustomize renders --------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_kustomization_renders_everything(kustomization: str) -> None:
    docs = _render(kustomization)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for want in [
        ("CustomResourceDefinition", "mirrorpolicies.gns.io"),
        ("CustomResourceDefinition", "globalmounts.gns.io"),
        ("Namespace", "gns-system"),
        ("ServiceAccount", "gns-controller"),
        ("ClusterRole", "gns-controller"),
        ("ClusterRoleBinding", "gns-controller"),
        ("PersistentVolumeClaim", "gns-data"),
        ("Deployment", "gns-controller"),
        ("Service", "gns-controller"),
    ]:
        assert want in kinds, f"{kustomization}: no {want[0]} {want[1]}"
    # the rendered CRDs are the generated files, unchanged
    for name in ("mirrorpolicies.gns.io", "globalmounts.gns.io"):
        rendered = _one(docs, "CustomResourceDefinition", name)
        assert rendered["spec"] == _crd(name)["spec"]
        assert "namespace" not in rendered["metadata"]
    cluster_scoped = {"CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding",
                      "CSIDriver"}
    for d in docs:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"].get("namespace") == "gns-system", (d["kind"], d["metadata"])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_deployment_runs_the_controller_with_its_data_volume(kustomization: str) -> None:
    docs = _render(kustomization)
    deploy = _one(docs, "Deployment", "gns-controller")
    pvc = _one(docs, "PersistentVolumeClaim")
    config = _one(docs, "ConfigMap")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"]["type"] == "Recreate"  # one controller per cluster id
    assert container["image"] == "ghcr.io/gns-io/gns:0.1.0"
    assert pod["serviceAccountName"] == "gns-controller"

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "secret" in volumes[mounts["/tls"]]

    args = container["command"][1:] + container["args"]
    assert container["command"][0] == "gns" and args[0] == "controller"
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert flags["--cluster"] == "$(GNS_CLUSTER)"
    assert flags["--listen"] == "0.0.0.0:7443"
    assert flags["--data-dir"] == "/data"
    assert flags["--tls-dir"] == "/tls"
    assert flags["--metrics-port"] == "9090"
    assert flags["--tunnel"] == "0.0.0.0:7444"

    env = {e["name"]: e for e in container["env"]}
    for var in ("GNS_ETCD", "GNS_CLUSTER"):
        ref = env[var]["valueFrom"]["configMapKeyRef"]
        assert ref["name"] == config["metadata"]["name"]  # the generated (hashed) name
        assert ref["key"] in config["data"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] == "grpc"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 7443, "metrics": 9090, "tunnel": 7444}
    service = _one(docs, "Service", "gns-controller")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert all(p["targetPort"] in ports for p in service["spec"]["ports"])
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_command_line_parses_as_gns_controller(kustomization: str) -> None:
    """The Deployment's arguments, with the ConfigMap's values substituted as the kubelet
    does, are a valid ``gns controller`` command line (flags exist, types and ranges)."""
    from federation.cli.commands_run import controller

    docs = _render(kustomization)
    data = _one(docs, "ConfigMap")["data"]
    (container,) = _one(docs, "Deployment", "gns-controller")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: data[e["valueFrom"]["configMapKeyRef"]["key"]]
           if "valueFrom" in e else e["value"] for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"][1:]]
    ctx = controller.make_context("controller", args)
    assert ctx.params["data_dir"] == "/data"
    assert ctx.params["metrics_port"] == 9090
    assert ctx.params["etcd"] == data["GNS_ETCD"]
    assert ctx.params["tls_dir"] == "/tls"
    assert not ctx.params["insecure"]  # TLS, not --insecure
    if kustomization != "base":
        name = kustomization.rsplit("/", 1)[1]
        assert ctx.params["cluster_id"] == name
        assert ctx.params["provider"] == OVERLAYS[name]["GNS_PROVIDER"]
        assert ctx.params["region"] == OVERLAYS[name]["GNS_REGION"]
        assert ctx.params["labels"], "overlay adds a --label"
        assert ctx.params["advertise"] == f"gns-{name}-control-plane:30743"


def test_rbac_covers_both_crds_and_their_status() -> None:
    docs = _render("base")
    rules = _one(docs, "ClusterRole", "gns-controller")["rules"]
    granted: dict[str, set[str]] = {}
    for rule in rules:
        assert rule["apiGroups"] == ["gns.io"]
        for res in rule["resources"]:
            granted.setdefault(res, set()).update(rule["verbs"])
    for res in ("mirrorpolicies", "globalmounts"):
        assert {"get", "list", "watch", "update", "patch"} <= granted[res]
        assert {"update", "patch"} <= granted[f"{res}/status"]
    binding = _one(docs, "ClusterRoleBinding", "gns-controller")
    assert binding["roleRef"]["name"] == "gns-controller"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gns-controller", "namespace": "gns-system"}
    ]


# -- (2) the CRDs are current ----------------------------------------------------------------


def test_committed_crds_match_the_generator() -> None:
    generated = gen_crds.generate()
    assert {p.name for p in generated} == {"mirrorpolicies.gns.io.yaml", "globalmounts.gns.io.yaml"}
    for path, text in generated.items():
        assert path.exists(), f"{path} missing: run python scripts/gen-crds.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is stale: run python scripts/gen-crds.py"
        )
    assert gen_crds.generate() == generated  # deterministic


def test_crd_identity_and_printer_columns() -> None:
    for name, kind in (("mirrorpolicies.gns.io", "MirrorPolicy"), ("globalmounts.gns.io", "GlobalMount")):
        crd = _crd(name)
        spec = crd["spec"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert spec["group"] == "gns.io" and spec["scope"] == "Namespaced"
        assert spec["names"]["kind"] == kind
        assert f"{spec['names']['plural']}.gns.io" == name
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
    (mp,) = _crd("mirrorpolicies.gns.io")["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in mp["additionalPrinterColumns"]}
    assert columns["Volume"] == ".spec.volume"
    assert columns["Mode"] == ".spec.mode"
    assert columns["Targets"].startswith(".spec.targets")


# -- (3) examples and invalid documents -------------------------------------------------------


def test_example_mirrorpolicy_is_valid_for_the_crd_and_the_model() -> None:
    text = (DEPLOY / "examples" / "mirrorpolicy.yaml").read_text(encoding="utf-8")
    (doc,) = yaml.safe_load_all(text)
    assert _errors("mirrorpolicies.gns.io", doc) == []
    policy = parse_policy(text)
    assert policy.name == "sensors-dr"
    assert policy.target_names == [
        "onprem-b", "s3://dr-bucket/sensors", "gs://dr-bucket/sensors",
        "az://dr-container/sensors", "file:///mnt/nfs/sensors",
    ]
    assert policy.spec.failover.promote_to == "aws-1"
    # and what the controller stores validates against the CRD too
    assert _errors("mirrorpolicies.gns.io", policy.to_dict()) == []


def test_example_globalmount_is_valid_for_the_crd_and_the_model() -> None:
    (doc,) = _load_all(DEPLOY / "examples" / "globalmount.yaml")
    assert doc["apiVersion"] == "gns.io/v1alpha1" and doc["kind"] == "GlobalMount"
    assert _errors("globalmounts.gns.io", doc) == []
    mount = Mount(**doc["spec"])
    assert (mount.path, mount.volume, mount.subpath) == ("/health/sensors", "sensors", "raw")


def _example() -> dict[str, Any]:
    (doc,) = _load_all(DEPLOY / "examples" / "mirrorpolicy.yaml")
    return doc


def _broken(change: str) -> dict[str, Any]:
    doc = _example()
    spec = doc["spec"]
    if change == "unknown spec field":
        spec["replicas"] = 2
    elif change == "unknown target field":
        spec["targets"][0]["region"] = "dc2"
    elif change == "unknown failover field":
        spec["failover"]["delay"] = "30s"
    elif change == "bad mode":
        spec["mode"] = "eventually"
    elif change == "missing volume":
        del spec["volume"]
    elif change == "missing targets":
        del spec["targets"]
    elif change == "bad volume name":
        spec["volume"] = "Sensors_1"
    elif change == "bad cluster name":
        spec["targets"][0]["cluster"] = "onprem.b"
    elif change == "target with cluster and uri":
        spec["targets"][0]["uri"] = "s3://other-bucket/x"
    elif change == "empty target":
        spec["targets"][0] = {}
    elif change == "bad duration":
        spec["maxLag"] = "one minute"
    elif change == "negative duration":
        spec["failover"]["after"] = "-5s"
    elif change == "negative number for a duration":
        spec["maxLag"] = -60  # a plain number is seconds (int-or-string), never negative
    elif change == "string for a boolean":
        spec["failover"]["automatic"] = "yes"
    elif change == "bad policy name":
        doc["metadata"]["name"] = "Sensors.DR"
    else:  # pragma: no cover
        raise AssertionError(change)
    return doc


BROKEN = [
    "unknown spec field", "unknown target field", "unknown failover field", "bad mode",
    "missing volume", "missing targets", "bad volume name", "bad cluster name",
    "target with cluster and uri", "empty target", "bad duration", "negative duration",
    "negative number for a duration", "string for a boolean", "bad policy name",
]


@pytest.mark.parametrize("change", BROKEN)
def test_invalid_mirrorpolicy_refused_by_crd_and_model(change: str) -> None:
    doc = _broken(change)
    assert _errors("mirrorpolicies.gns.io", doc), f"CRD schema accepted: {change}"
    with pytest.raises(InvalidInput):
        parse_policy(yaml.safe_dump(doc))


PATHS = [
    "/", "/a", "/a/b", "/a//b/", "//a", "/.hidden", "/..x", "/x..", "/...", "/a b/ü",
    "", "a", "a/b", "/.", "/..", "/a/./b", "/a/../b", "/a/..", "/a\x01b", "/a\x7fb", "/a\x9fb",
]
SUBPATHS = ["", "/", "raw", "raw/2024", "/raw/", "a//b", ".", "..", "a/../b", "a/\x00"]
NAMES = ["a", "sensors", "a-1", "0", "x" * 63, "", "-a", "a-", "A", "a_b", "a.b", "x" * 64, "ü"]


def _model_accepts(**kw: str) -> bool:
    try:
        Mount(**{"path": "/m", "volume": "v", **kw})
    except (InvalidInput, ValueError):
        return False
    return True


@pytest.mark.parametrize("path", PATHS)
def test_globalmount_path_schema_agrees_with_the_model(path: str) -> None:
    doc = {"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount", "metadata": {"name": "m"},
           "spec": {"path": path, "volume": "v"}}
    assert (not _errors("globalmounts.gns.io", doc)) == _model_accepts(path=path)


@pytest.mark.parametrize("subpath", SUBPATHS)
def test_globalmount_subpath_schema_agrees_with_the_model(subpath: str) -> None:
    doc = {"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount", "metadata": {"name": "m"},
           "spec": {"path": "/m", "volume": "v", "subpath": subpath}}
    assert (not _errors("globalmounts.gns.io", doc)) == _model_accepts(subpath=subpath)


@pytest.mark.parametrize("name", NAMES)
def test_name_patterns_agree_with_check_name(name: str) -> None:
    mount = {"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount", "metadata": {"name": "m"},
             "spec": {"path": "/m", "volume": name}}
    policy = _example()
    policy["spec"]["volume"] = name
    model_ok = _model_accepts(volume=name)
    assert (not _errors("globalmounts.gns.io", mount)) == model_ok
    assert (not _errors("mirrorpolicies.gns.io", policy)) == model_ok


def test_globalmount_invalid_documents() -> None:
    base = {"apiVersion": "gns.io/v1alpha1", "kind": "GlobalMount", "metadata": {"name": "m"},
            "spec": {"path": "/m", "volume": "v"}}
    for spec in ({"path": "/m"}, {"volume": "v"}, {"path": "/m", "volume": "v", "owner": "x"}):
        assert _errors("globalmounts.gns.io", {**base, "spec": spec}), spec
    assert _errors("globalmounts.gns.io", {k: v for k, v in base.items() if k != "spec"})


def test_defaults_in_the_crd_are_the_models_defaults() -> None:
    props = _openapi("mirrorpolicies.gns.io")["properties"]["spec"]["properties"]
    minimal = parse_policy(
        "apiVersion: gns.io/v1alpha1\nkind: MirrorPolicy\nmetadata: {name: p}\n"
        "spec: {volume: v, targets: [{cluster: c}]}\n"
    )
    assert props["mode"]["default"] == minimal.spec.mode
    assert props["maxLag"]["default"] == str(minimal.spec.max_lag)
    failover = props["failover"]["properties"]
    assert failover["after"]["default"] == str(minimal.spec.failover.after)
    assert failover["automatic"]["default"] is minimal.spec.failover.automatic


# -- (4) structural schemas --------------------------------------------------------------------

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")


def _check_structural(node: dict[str, Any], where: str, problems: list[str]) -> None:
    for bad in ("$ref", "$defs", "definitions", "title", "const", "$schema"):
        if bad in node:
            problems.append(f"{where}: has {bad}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{where}: no type")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties together")
    for name, sub in node.get("properties", {}).items():
        _check_structural(sub, f"{where}.{name}", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _check_structural(node["additionalProperties"], f"{where}.*", problems)
    if "items" in node:
        _check_structural(node["items"], f"{where}[]", problems)
    if node.get("type") == "array" and "items" not in node:
        problems.append(f"{where}: array without items")
    for junctor in _JUNCTORS:
        branches = node.get(junctor, [])
        for i, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            _check_junctor_branch(branch, node, f"{where}.{junctor}[{i}]", problems)


def _check_junctor_branch(branch: Any, parent: dict[str, Any], where: str, problems: list[str]) -> None:
    if not isinstance(branch, dict):
        return
    for key in _FORBIDDEN_IN_JUNCTORS:
        if key in branch:
            problems.append(f"{where}: sets {key}")
    for name in branch.get("properties", {}):
        if name not in parent.get("properties", {}):
            problems.append(f"{where}: property {name} not specified outside the junctor")
    for name in branch.get("required", []):
        if name not in parent.get("properties", {}):
            problems.append(f"{where}: requires {name}, not a property")


def _defaults(node: dict[str, Any], where: str) -> list[tuple[str, Any, dict[str, Any]]]:
    out = [(where, node["default"], node)] if "default" in node else []
    for name, sub in node.get("properties", {}).items():
        out += _defaults(sub, f"{where}.{name}")
    if "items" in node:
        out += _defaults(node["items"], f"{where}[]")
    return out


@pytest.mark.parametrize("name", ["mirrorpolicies.gns.io", "globalmounts.gns.io"])
def test_crd_schema_is_structural(name: str) -> None:
    schema = _openapi(name)
    problems: list[str] = []
    _check_structural(schema, "openAPIV3Schema", problems)
    assert problems == []
    assert schema["type"] == "object"
    props = schema["properties"]
    assert props["apiVersion"] == {"type": "string"}
    assert props["kind"] == {"type": "string"}
    # metadata: only restrictions on name/generateName are allowed
    assert props["metadata"]["type"] == "object"
    assert set(props["metadata"]) <= {"type", "properties"}
    assert set(props["metadata"].get("properties", {})) <= {"name", "generateName"}
    # preserve-unknown-fields only where it is needed: status
    text = yaml.safe_dump(schema)
    assert text.count("x-kubernetes-preserve-unknown-fields") == 1
    assert props["status"]["x-kubernetes-preserve-unknown-fields"] is True
    # defaults must be valid for their own field (the API server checks this)
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed: add it to the 'test' extras"
    )
    for where, value, node in _defaults(schema, "openAPIV3Schema"):
        errors = list(jsonschema.Draft7Validator(_closed(node)).iter_errors(value))
        assert not errors, f"{where}: default {value!r} invalid: {errors[0].message}"


def test_generator_refuses_what_kubernetes_cannot_express() -> None:
    with pytest.raises(ValueError, match="anyOf"):
        gen_crds.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})
    with pytest.raises(ValueError, match="keyword"):
        gen_crds.structural({"type": "object", "patternProperties": {}}, {})
    inlined = gen_crds.structural(
        {"type": "object", "title": "T", "additionalProperties": False,
         "properties": {"x": {"$ref": "#/$defs/X"}}},
        {"X": {"type": "string", "title": "X"}},
    )
    assert inlined == {"type": "object", "properties": {"x": {"type": "string"}}}


# -- kind configs and scripts ----------------------------------------------------------------


def test_kind_configs_name_the_overlays_clusters() -> None:
    names = set()
    for f in ("cluster-a.yaml", "cluster-b.yaml"):
        (doc,) = _load_all(DEPLOY / "kind" / f)
        assert doc["kind"] == "Cluster" and doc["apiVersion"] == "kind.x-k8s.io/v1alpha4"
        names.add(doc["name"])
        for node in doc["nodes"]:
            for mapping in node.get("extraPortMappings", []):
                assert mapping["listenAddress"] == "127.0.0.1"
    assert names == {f"gns-{o}" for o in OVERLAYS}


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_bash(script: str) -> None:
    path = DEPLOY / script
    assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
    assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    bash = shutil.which("bash") or "/bin/bash"
    out = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr


def _run_up(path_dir: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, str(DEPLOY / "kind" / "up.sh")],
        capture_output=True, text=True, timeout=20,
        env={"PATH": str(path_dir), "HOME": str(path_dir), "GNS_KIND_STATE": str(path_dir / "state")},
    )


def test_up_sh_exits_2_without_docker(tmp_path: Path) -> None:
    out = _run_up(tmp_path)
    assert out.returncode == 2
    assert "docker is not installed" in out.stderr
    assert not (tmp_path / "state").exists()  # nothing changed


def test_up_sh_exits_2_when_no_docker_engine_answers(tmp_path: Path) -> None:
    # stand-ins: `docker info` fails as it does without an engine; kind/kubectl must not run
    for tool, body in (("docker", "exit 1"), ("kind", "echo kind ran >&2; exit 99"),
                       ("kubectl", "echo kubectl ran >&2; exit 99")):
        stub = tmp_path / tool
        stub.write_text(f"#!{shutil.which('bash') or '/bin/bash'}\n{body}\n")
        stub.chmod(0o755)
    out = _run_up(tmp_path)
    assert out.returncode == 2, out.stderr
    assert "no Docker engine answers" in out.stderr
    assert "ran" not in out.stderr
    assert not (tmp_path / "state").exists()


def test_emulator_scripts_use_loopback_and_pid_files() -> None:
    start = (DEPLOY / "emulators" / "start.sh").read_text(encoding="utf-8")
    stop = (DEPLOY / "emulators" / "stop.sh").read_text(encoding="utf-8")
    assert "HOST=127.0.0.1" in start
    for flag in ("-ip.bind=", "-master.telemetry=false", "-external-url",
                 "--skipApiVersionCheck", "--disableTelemetry", "--inMemoryPersistence"):
        assert flag in start, flag
    assert ".pid" in start and ".pid" in stop
    for broad in ("pkill", "killall"):
        assert broad not in start + stop
    assert os.access(DEPLOY / "emulators" / "stop.sh", os.X_OK)


# -- (5) the reconciler, the CSI driver, images, examples (issue 12) ---------------------------


def _substituted(container: dict[str, Any], data: dict[str, str]) -> list[str]:
    """The container's args with $(VAR) replaced as the kubelet does (fieldRefs by name)."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = data[e["valueFrom"]["configMapKeyRef"]["key"]]
        else:
            env[e["name"]] = f"<{e['name'].lower()}>"
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_controller_runs_the_reconciler(kustomization: str) -> None:
    from federation.cli.commands_run import controller

    docs = _render(kustomization)
    data = _one(docs, "ConfigMap")["data"]
    (container,) = _one(docs, "Deployment", "gns-controller")["spec"]["template"]["spec"]["containers"]
    ctx = controller.make_context("controller", _substituted(container, data)[1:])
    assert ctx.params["kubernetes"] is True


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [c for c in pod["containers"] if c["name"] == name]
    return found


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_csi_driver_controller_and_node_plugin(kustomization: str) -> None:
    from federation.cli.commands_kube import csi

    docs = _render(kustomization)
    data = _one(docs, "ConfigMap")["data"]
    driver = _one(docs, "CSIDriver", "csi.gns.io")
    assert driver["spec"]["attachRequired"] is False
    assert driver["spec"]["volumeLifecycleModes"] == ["Persistent"]

    ctl = _one(docs, "Deployment", "gns-csi-controller")["spec"]["template"]["spec"]
    prov = _container(ctl, "csi-provisioner")
    assert prov["image"].startswith("registry.k8s.io/sig-storage/csi-provisioner:v")
    assert "--extra-create-metadata" in prov["args"]
    assert "--csi-address=/csi/csi.sock" in prov["args"]

    node = _one(docs, "DaemonSet", "gns-csi-node")["spec"]["template"]["spec"]
    reg = _container(node, "node-driver-registrar")
    assert reg["image"].startswith("registry.k8s.io/sig-storage/csi-node-driver-registrar:v")
    assert "--kubelet-registration-path=/var/lib/kubelet/plugins/csi.gns.io/csi.sock" in reg["args"]
    plugin = _container(node, "gns-csi")
    assert plugin["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in node["volumes"]}
    mounts = {m["mountPath"]: m for m in plugin["volumeMounts"]}
    assert volumes[mounts["/dev/fuse"]["name"]]["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    pods = mounts["/var/lib/kubelet/pods"]
    assert pods["mountPropagation"] == "Bidirectional"
    assert volumes[pods["name"]]["hostPath"]["path"] == "/var/lib/kubelet/pods"
    assert volumes[mounts["/csi"]["name"]]["hostPath"]["path"] == "/var/lib/kubelet/plugins/csi.gns.io"
    # a persistent state dir, so a restarted plugin re-attaches what its predecessor mounted
    assert volumes[mounts["/var/lib/gns-csi"]["name"]]["hostPath"]["path"] == "/var/lib/gns-csi"

    for pod in (ctl, node):
        container = _container(pod, "gns-csi")
        assert container["command"] == ["gns"]
        args = _substituted(container, data)
        assert args[0] == "csi"
        ctx = csi.make_context("csi", args[1:])
        assert ctx.params["endpoint"] == "unix:///csi/csi.sock"
        assert ctx.params["cluster_id"] == data["GNS_CLUSTER"]
        assert ctx.params["etcd"] == data["GNS_ETCD"]
        if kustomization != "base":
            assert ctx.params["cluster_id"] == kustomization.rsplit("/", 1)[1]


def test_csi_provisioner_rbac() -> None:
    docs = _render("base")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in _one(docs, "ClusterRole", "gns-csi-provisioner")["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.setdefault((group, res), set()).update(rule["verbs"])
    assert {"create", "delete", "get", "list", "watch"} <= granted[("", "persistentvolumes")]
    assert {"get", "list", "watch", "update"} <= granted[("", "persistentvolumeclaims")]
    assert {"get", "list", "watch"} <= granted[("storage.k8s.io", "storageclasses")]
    assert {"create", "patch"} <= granted[("", "events")]
    binding = _one(docs, "ClusterRoleBinding", "gns-csi-provisioner")
    assert binding["subjects"][0]["name"] == "gns-csi-controller"
    ctl = _one(docs, "Deployment", "gns-csi-controller")["spec"]["template"]["spec"]
    assert ctl["serviceAccountName"] == "gns-csi-controller"


@pytest.mark.parametrize("kustomization", [*KUSTOMIZATIONS, "csi"])
def test_every_image_is_named_with_a_tag(kustomization: str) -> None:
    for doc in _render(kustomization):
        pod = doc.get("spec", {}).get("template", {}).get("spec")
        if not pod:
            continue
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = c["image"].rpartition(":")
            assert name and "/" in name and tag and tag != "latest", c["image"]


def test_examples_render_and_validate() -> None:
    from federation.csi.params import MODES, plan

    docs = _render("examples")
    crd_of = {"MirrorPolicy": "mirrorpolicies.gns.io", "GlobalMount": "globalmounts.gns.io"}
    typed = [d for d in docs if d["kind"] in crd_of]
    assert {d["kind"] for d in typed} == set(crd_of)
    for doc in typed:
        assert _errors(crd_of[doc["kind"]], doc) == [], doc["metadata"]["name"]
    classes = [d for d in docs if d["kind"] == "StorageClass"]
    modes = set()
    for sc in classes:
        assert sc["provisioner"] == "csi.gns.io"
        params = {k: str(v) for k, v in sc["parameters"].items()}
        made = plan("pvc-0000", {**params, "csi.storage.k8s.io/pvc/namespace": "apps",
                                 "csi.storage.k8s.io/pvc/name": "data"}, "onprem-a")
        assert made.policy is not None
        modes.add(made.policy["spec"]["mode"])
    assert modes == set(MODES)  # one class per mirror mode
    pv = _one(docs, "PersistentVolume")
    assert pv["spec"]["csi"]["driver"] == "csi.gns.io"
    assert pv["spec"]["csi"]["volumeHandle"].startswith("/")
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"]
