"""A second automatic failover: the owner that took over from an object store goes Down too.

After the first failover the old owner is a mirror target of the new one (SPEC §7) though
no policy names it, and ``promoteTo`` names the new owner itself. Both facts once left the
leader with no candidate at all: the volume stayed Down for good.
"""
from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.fixtures.federation import Federation
from tests.integration.test_failover import apply, owner, policy
from tests.support import wait_for, wait_synced


def test_second_failover_promotes_the_former_owner(
        federation: Federation, moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in moto_s3.env_vars.items():
        monkeypatch.setenv(k, v)
    uri = moto_s3.new_store_uri("second")
    fed = federation
    fed.lease_ttl = 3
    fed.add("aws-1", provider="aws")
    fed.add("onprem-b")
    assert fed.gns("volume", "create", "hv", "--cluster", "aws-1").returncode == 0
    assert fed.gns("mount", "add", "/hv", "hv").returncode == 0
    for i in range(3):
        assert fed.gns_bytes("put", "-", f"/hv/f{i}", input=f"v{i}".encode()).returncode == 0
    apply(fed, policy("hv-dr", "hv", "continuous", [{"uri": uri}], promote_to="onprem-b"))
    wait_synced(fed, "hv-dr", 3)

    # First failover: aws-1 freezes, onprem-b loads the volume from S3.
    fed.kill("aws-1", signal.SIGSTOP)
    try:
        wait_for(lambda: owner(fed, "hv")["owner"] == "onprem-b", 30, "hydration onto onprem-b")
    finally:
        fed.kill("aws-1", signal.SIGCONT)
    assert owner(fed, "hv")["epoch"] == 2
    assert fed.gns_bytes("put", "-", "/hv/on-b", input=b"b").returncode == 0
    # aws-1 fails back and becomes a target of onprem-b (the policy still names only S3).
    wait_synced(fed, "hv-dr", 4, targets=[uri, "aws-1"], timeout=60)

    # Second failover: onprem-b freezes; promoteTo names it, so S3 cannot be loaded onto
    # it, but aws-1 holds everything and is Ready.
    fed.kill("onprem-b", signal.SIGSTOP)
    try:
        vol = wait_for(lambda: (lambda o: o if o["owner"] == "aws-1" else None)(owner(fed, "hv")),
                       fed.lease_ttl + 2 + 20, "promotion of the former owner aws-1")
        assert vol is not None and vol["epoch"] == 3 and vol["state"] == "Ready", vol
        for i in range(3):
            assert fed.gns("cat", f"/hv/f{i}").stdout == f"v{i}"
        assert fed.gns("cat", "/hv/on-b").stdout == "b"
        assert fed.gns_bytes("put", "-", "/hv/on-aws", input=b"a").returncode == 0
    finally:
        fed.kill("onprem-b", signal.SIGCONT)
