"""Mirror policies as users make and read them: a volume and its mount, a policy document
applied with ``gns mirror apply``, and waiting on ``gns mirror status``."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from federation.client import MirrorTargetStatus
from tests.fixtures.federation import Federation
from tests.support.waiting import wait_for


def cli_status(fed: Federation, policy: str) -> dict[str, dict[str, Any]]:
    """target name -> status of ``policy``, from ``gns mirror status --json``."""
    out = fed.gns("mirror", "status", policy, "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert [p["policy"] for p in found] == [policy]
    return {t["target"]: t for t in found[0]["targets"]}


def _fast_status(fed: Federation, policy: str) -> dict[str, MirrorTargetStatus]:
    """The same statuses, read in-process (cheaper to poll than a CLI process)."""
    with fed.client(watch=False) as c:
        return {t.target: t for p in c.mirror_status(policy) for t in p.targets}


def wait_synced(fed: Federation, policy: str, head: int | None = None, *, timeout: float = 30.0,
                targets: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Until every target of ``policy`` (or just ``targets``) is Synced (at version ``head``
    if given); returns the CLI's status at that point, which must agree."""
    last: dict[str, MirrorTargetStatus] = {}

    def done() -> bool:
        nonlocal last
        last = _fast_status(fed, policy)
        names = targets or list(last)
        return bool(names) and all(
            last[t].state == "Synced" and (head is None or last[t].version == head)
            for t in names)

    what = f"{policy} Synced" + (f" at v{head}" if head is not None else "")
    try:
        wait_for(done, timeout, what, every=0.2)
    except AssertionError as exc:
        shown = {name: t.to_json() for name, t in last.items()}
        raise AssertionError(f"{exc}; last status {json.dumps(shown, indent=1)}") from None
    st = cli_status(fed, policy)
    for t in targets or list(st):
        assert st[t]["state"] == "Synced", st[t]
        if head is not None:
            assert (st[t]["version"], st[t]["lag_versions"]) == (head, 0), st[t]
    return st


def policy_doc(name: str, volume: str, mode: str, targets: list[str], *,
               interval: str | None = None, max_lag: str = "60s") -> str:
    """A MirrorPolicy document; a target with ``://`` is a store URI, else a cluster."""
    lines = [
        "apiVersion: gns.io/v1alpha1", "kind: MirrorPolicy", "metadata:", f"  name: {name}",
        "spec:", f"  volume: {volume}", f"  mode: {mode}",
    ]
    if interval:
        lines.append(f"  interval: {interval}")
    lines.append("  targets:")
    for t in targets:
        key = "uri" if "://" in t else "cluster"
        lines.append(f"    - {key}: {t}")
    lines.append(f"  maxLag: {max_lag}")
    return "\n".join(lines) + "\n"


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """A CLI run's output, once it exited 0."""
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    return proc.stdout


def apply_policy(fed: Federation, tmp: Path, text: str) -> None:
    path = tmp / f"policy-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    ok(fed.gns("mirror", "apply", "-f", str(path)))


def make_volume(fed: Federation, name: str, owner: str, at: str | None = None) -> None:
    """Volume ``name`` owned by ``owner``, mounted at ``at`` (default ``/<name>``)."""
    ok(fed.gns("volume", "create", name, "--cluster", owner))
    ok(fed.gns("mount", "add", at or f"/{name}", name))
