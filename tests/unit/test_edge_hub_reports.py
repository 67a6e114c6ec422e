"""What a hub takes from a site's heartbeat report: the backlog as Prometheus gauges per
site (gone with the link), and diverged-write reports named for the reporting site only."""
from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from federation.controller.edge_hub import BacklogMetrics, _diverged_record


def test_backlog_gauges_per_site_and_gone_with_the_link() -> None:
    registry = CollectorRegistry()
    m = BacklogMetrics(registry)
    m.set("edge-1", 7, 7000)
    m.set("edge-2", 1, 10)
    text = generate_latest(registry).decode()
    assert 'gns_edge_backlog_changes{site="edge-1"} 7.0' in text
    assert 'gns_edge_backlog_bytes{site="edge-1"} 7000.0' in text
    m.set("edge-1", 9, 9000)
    assert 'gns_edge_backlog_changes{site="edge-1"} 9.0' in generate_latest(registry).decode()
    m.forget("edge-1")
    m.forget("edge-1")  # twice: no error
    text = generate_latest(registry).decode()
    assert 'site="edge-1"' not in text and 'gns_edge_backlog_changes{site="edge-2"} 1.0' in text


def test_diverged_record_names_the_reporting_site_whatever_the_report_says() -> None:
    report = {"kind": "diverged", "volume": "sensors", "cluster": "someone-else", "epoch": 3,
              "paths": [".gns/diverged/3/a", 5], "at": 12.5}
    rec = json.loads(_diverged_record("edge-1", report))
    assert rec == {"volume": "sensors", "cluster": "edge-1", "epoch": 3,
                   "paths": [".gns/diverged/3/a", "5"], "at": 12.5}
    many = json.loads(_diverged_record("edge-1", {"volume": "v", "paths": ["p"] * 20_000}))
    assert len(many["paths"]) == 10_000 and many["epoch"] == 0
