"""deploy/monitoring: every metric the Grafana dashboard and the alert rules query is exported
by a running controller (read from its live /metrics), and the alerts issue 12 names exist.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.federation import Federation

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
# Series Prometheus makes itself (scrape health), not the controllers.
PROMETHEUS_OWN = {"up"}
_IDENT = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|\s|$|==|>|<)")
_PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "delta", "irate",
    "histogram_quantile", "and", "or", "unless", "on", "ignoring", "group_left", "offset",
    "label_values", "bool", "le",
}


def _dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    return [r for g in doc["spec"]["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names and values, functions and keywords
    stripped)."""
    expr = re.sub(r'"[^"]*"', '""', expr)           # label values
    expr = re.sub(r"\{[^}]*\}", "{}", expr)           # label matchers
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)          # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)[^)]*\)", r"\1", expr)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in _PROMQL_WORDS and not n.startswith("__")
            and not re.fullmatch(r"\d.*", n)} - {"job", "instance"}


def exported(text: str) -> set[str]:
    """Series names a /metrics page exports, including each declared family's samples
    (a labelled counter shows its samples only once an event happened)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":
                names |= {name + "_total", name + "_created"}
            elif kind == "histogram":
                names |= {name + s for s in ("_bucket", "_sum", "_count", "_created")}
            elif kind == "summary":
                names |= {name + s for s in ("_sum", "_count", "_created")}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, method) '
                        '(rate(gns_request_seconds_bucket{job=~"$job"}[5m])))') == {
        "gns_request_seconds_bucket"}
    assert metric_names('max by (policy, target) (gns_mirror_lag_seconds) > 60') == {
        "gns_mirror_lag_seconds"}
    assert metric_names('increase(gns_fences_total{reason="sync_target_dropped"}[10m]) > 0') == {
        "gns_fences_total"}


def test_alerts_cover_what_operators_need() -> None:
    alerts = {r["alert"]: r for r in _rules()}
    for name in ("GnsControllerDown", "GnsControllerFenced", "GnsMirrorTargetLagging",
                 "GnsSyncTargetDropped", "GnsFencingEvents", "GnsVolumePromoted", "GnsDataDirAlmostFull"):
        assert name in alerts, name
        assert alerts[name]["labels"]["severity"] in ("critical", "warning", "info")
        assert alerts[name]["annotations"]["summary"]


def test_kustomize_renders_monitoring() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kinds = {d["kind"]: d for d in yaml.safe_load_all(out.stdout) if d}
    assert set(kinds) == {"ConfigMap", "PrometheusRule", "ServiceMonitor"}
    assert kinds["ConfigMap"]["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(kinds["ConfigMap"]["data"]["grafana-dashboard.json"])


def test_every_queried_metric_is_exported_by_a_live_controller(federation: Federation) -> None:
    c = federation.add("onprem-a")
    with urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics", timeout=10) as r:
        live = exported(r.read().decode())
    queried: dict[str, set[str]] = {}
    for expr in _dashboard_exprs():
        for name in metric_names(expr):
            queried.setdefault(name, set()).add("dashboard")
    for rule in _rules():
        for name in metric_names(rule["expr"]):
            queried.setdefault(name, set()).add(rule["alert"])
    assert {n for n in queried if n.startswith("gns_")}, "nothing queried?"
    missing = {n: sorted(where) for n, where in queried.items()
               if n not in live and n not in PROMETHEUS_OWN}
    assert missing == {}, f"queried but not exported by a controller: {missing}"
