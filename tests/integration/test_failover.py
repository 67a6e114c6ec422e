"""Failover with real controller processes: kill -9, SIGSTOP partitions, failback, hand-over."""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.federation import Federation, assert_error
from tests.support import holds_for, wait_for, wait_synced

AFTER = 2.0


def policy(name: str, volume: str, mode: str, targets: list[dict[str, str]], *,
           automatic: bool = True, after: str = "2s", promote_to: str | None = None,
           priority: list[str] | None = None) -> str:
    failover: dict[str, Any] = {"automatic": automatic, "after": after}
    if promote_to:
        failover["promoteTo"] = promote_to
    if priority:
        failover["priority"] = priority
    return json.dumps({
        "apiVersion": "gns.io/v1alpha1", "kind": "MirrorPolicy", "metadata": {"name": name},
        "spec": {"volume": volume, "mode": mode, "targets": targets, "failover": failover},
    })


def apply(fed: Federation, doc: str) -> None:
    out = fed.gns("mirror", "apply", "-f", "-", input=doc.encode())
    assert out.returncode == 0, out.stderr


def mirrored(fed: Federation, volume: str, mode: str, targets: list[dict[str, str]], **kw: Any) -> None:
    """Volume ``volume`` on onprem-a, mounted at ``/<volume>``, with policy ``<volume>-dr``."""
    assert fed.gns("volume", "create", volume, "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", f"/{volume}", volume).returncode == 0
    apply(fed, policy(f"{volume}-dr", volume, mode, targets, **kw))


def owner(fed: Federation, volume: str) -> dict[str, Any]:
    out = fed.gns("volume", "show", volume, "--json")
    assert out.returncode == 0, out.stderr
    found: dict[str, Any] = json.loads(out.stdout)
    return found


class Writer:
    """Steady writes through a client; remembers what was acknowledged."""

    def __init__(self, fed: Federation, prefix: str, rate: float = 20.0) -> None:
        self.fed, self.prefix, self.period = fed, prefix, 1.0 / rate
        self.acked: dict[str, bytes] = {}
        self.failed = 0
        self.first_ack_after: float | None = None
        self._stop = threading.Event()
        self._mark: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def mark(self) -> None:
        """From now on, note the time of the first acknowledged write."""
        self._mark = time.monotonic()
        self.first_ack_after = None

    def _run(self) -> None:
        i = 0
        with self.fed.client() as c:
            while not self._stop.is_set():
                path = f"{self.prefix}/w{i:05d}"
                data = f"write {i}".encode()
                try:
                    c.put(data, path)
                    self.acked[path] = data
                    if self._mark is not None and self.first_ack_after is None:
                        self.first_ack_after = time.monotonic() - self._mark
                except Exception:
                    self.failed += 1
                i += 1
                time.sleep(self.period)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.thread.join(30)


@pytest.fixture
def fed3(federation: Federation) -> Federation:
    federation.lease_ttl = 3
    for cid in ("onprem-a", "onprem-b", "aws-1"):
        federation.add(cid, wait=False)
    for cid in federation.controllers:
        federation.wait_healthy(cid, 30)
    return federation


def test_kill9_owner_with_sync_target_loses_no_acked_write(fed3: Federation) -> None:
    fed = fed3
    fed.gns("volume", "create", "sy", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/sy", "sy")
    apply(fed, policy("sy-dr", "sy", "sync", [{"cluster": "onprem-b"}], priority=["onprem-b"]))
    wait_synced(fed, "sy-dr")
    with Writer(fed, "/sy") as w:
        wait_for(lambda: len(w.acked) >= 30, 30, "30 acknowledged writes")
        w.mark()
        killed = time.monotonic()
        fed.kill("onprem-a", signal.SIGKILL)
        promoted = wait_for(lambda: owner(fed, "sy")["owner"] != "onprem-a" or None, 20, "promotion")
        took = time.monotonic() - killed
        wait_for(lambda: w.first_ack_after is not None, 20, "a write on the new owner")
    assert promoted is True or owner(fed, "sy")["owner"] == "onprem-b"
    vol = owner(fed, "sy")
    assert vol["owner"] == "onprem-b" and vol["epoch"] == 2
    # kill -> promotion within lease TTL + after + slack (the leader also probes owners)
    assert took <= fed.lease_ttl + AFTER + 2.0, took
    with fed.client() as c:
        lost = [p for p, data in w.acked.items() if c.cat(p) != data]
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:5]}"
    assert fed.gns_bytes("put", "-", "/sy/after", input=b"new owner").returncode == 0


def test_sync_target_that_missed_an_acked_write_is_no_failover_candidate(fed3: Federation) -> None:
    """A frozen sync target leaves the sync set and the write is acknowledged without it
    (after the sync timeout): the owner records that first, so when the owner dies the
    leader does not promote the target that lacks it (nor does a plain promote), and it is
    a candidate again once it caught up."""
    fed = fed3
    mirrored(fed, "ss", "sync", [{"cluster": "onprem-b"}])
    assert fed.gns("put", "-", "/ss/one", input=b"one").returncode == 0
    wait_synced(fed, "ss-dr")
    fed.kill("onprem-b", signal.SIGSTOP)
    try:
        acked = fed.gns("put", "-", "/ss/acked", input=b"acknowledged")
        assert acked.returncode == 0, acked.stderr  # after the sync timeout, without onprem-b
        fed.kill("onprem-a", signal.SIGKILL)
    finally:
        fed.kill("onprem-b", signal.SIGCONT)
    fed.wait_state("onprem-a", "Down", 30)
    holds_for(lambda: owner(fed, "ss")["owner"] == "onprem-a", AFTER + 4, "no promotion to onprem-b")
    assert_error(fed.gns("volume", "promote", "ss", "--to", "onprem-b"), 4, "out of sync")

    fed.start("onprem-a")  # back: onprem-b catches up, and may take over again
    wait_for(lambda: fed.gns("cat", "/ss/acked").stdout == "acknowledged", 30, "the write readable")
    wait_synced(fed, "ss-dr")
    fed.kill("onprem-a", signal.SIGKILL)
    wait_for(lambda: owner(fed, "ss")["owner"] == "onprem-b", 30, "promotion to onprem-b")
    out = fed.gns("cat", "/ss/acked")
    assert out.returncode == 0 and out.stdout == "acknowledged", out.stderr


def replicated(fed: Federation, volume: str, *, lease_ttl: int) -> Federation:
    """onprem-a, onprem-b and aws-1 up with leases of ``lease_ttl`` s; ``volume`` on
    onprem-a, mirrored continuously to onprem-b (no automatic failover), holding ``/VOLUME/f``
    (``mirrored``), synced."""
    fed.lease_ttl = lease_ttl
    for cid in ("onprem-a", "onprem-b", "aws-1"):
        fed.add(cid, wait=False)
    for cid in fed.controllers:
        fed.wait_healthy(cid, 30)
    mirrored(fed, volume, "continuous", [{"cluster": "onprem-b"}], automatic=False)
    assert fed.gns("put", "-", f"/{volume}/f", input=b"mirrored").returncode == 0
    wait_synced(fed, f"{volume}-dr")
    return fed


def test_consistency_any_reads_a_replica_while_a_killed_owner_still_shows_ready(federation: Federation) -> None:
    """A killed owner stays Ready in etcd until its lease expires (15 s here): reads with
    --consistency any went to it and failed, exit 5, though a replica within
    --max-staleness could answer (SPEC §5). An owner that does not answer is passed over
    for that replica now; without --consistency any the read still fails."""
    fed = replicated(federation, "ca", lease_ttl=15)
    fed.kill("onprem-a", signal.SIGKILL)
    anyc = ("--consistency", "any", "--max-staleness", "1h")
    # Both ways: directly, and through a controller that holds no replica (aws-1).
    for way in ((), ("--controller", fed.controllers["aws-1"].endpoint)):
        out = fed.gns("cat", "/ca/f", *anyc, *way)
        assert (out.returncode, out.stdout) == (0, "mirrored"), (way, out.stderr)
        stat = fed.gns("stat", "/ca/f", "--json", *anyc, *way)
        assert stat.returncode == 0 and json.loads(stat.stdout)["size"] == 8, (way, stat.stderr)
        ls = fed.gns("ls", "/ca", "--json", *anyc, *way)
        assert ls.returncode == 0 and [e["name"] for e in json.loads(ls.stdout)] == ["f"], (way, ls.stderr)
    assert fed.state("onprem-a") == "Ready"  # all of it within the lease's last seconds
    for way in ((), ("--controller", fed.controllers["aws-1"].endpoint)):
        assert_error(fed.gns("cat", "/ca/f", *way), 5)


def test_consistency_any_stat_and_ls_pass_a_frozen_owner_within_seconds(federation: Federation) -> None:
    """An owner that does not answer at all (frozen; a partition that drops packets) and is
    still Ready: a --consistency any stat or ls waited out its whole deadline (30 s) before
    asking the replica. The owner now gets HEDGE_AFTER_S (2 s), then the replica answers,
    directly and through a controller that holds no replica; without --consistency any,
    no replica is asked."""
    fed = replicated(federation, "fr", lease_ttl=30)  # the frozen owner stays Ready throughout
    anyc = ("--consistency", "any", "--max-staleness", "1h")
    fed.kill("onprem-a", signal.SIGSTOP)
    try:
        for way in ((), ("--controller", fed.controllers["aws-1"].endpoint)):
            t0 = time.monotonic()
            stat = fed.gns("stat", "/fr/f", "--json", *anyc, *way)
            ls = fed.gns("ls", "/fr", "--json", *anyc, *way)
            took = time.monotonic() - t0
            assert stat.returncode == 0 and json.loads(stat.stdout)["size"] == 8, (way, stat.stderr)
            assert ls.returncode == 0 and [e["name"] for e in json.loads(ls.stdout)] == ["f"], (way, ls.stderr)
            assert took < 15, f"{way}: stat and ls took {took:.1f}s"  # 30 s each before
        assert fed.state("onprem-a") == "Ready"
    finally:
        fed.kill("onprem-a", signal.SIGCONT)


def test_a_returning_owner_resyncs_under_a_manual_policy_without_a_new_write(fed3: Federation) -> None:
    """The old owner comes back as a continuous replica of the new one (SPEC §7), also when
    the policy is manual; its worker waited for the next write (kicked by the policy's
    mode), and mirror status showed it Syncing at version 0 meanwhile."""
    fed = fed3
    mirrored(fed, "mn", "manual", [{"cluster": "onprem-b"}])
    for i in range(3):
        assert fed.gns("put", "-", f"/mn/f{i}", input=b"x").returncode == 0
    assert fed.gns("mirror", "sync", "mn-dr", "--wait").returncode == 0
    fed.kill("onprem-a", signal.SIGKILL)
    wait_for(lambda: owner(fed, "mn")["owner"] == "onprem-b", 30, "promotion to onprem-b")
    fed.start("onprem-a")

    def returned() -> dict[str, Any] | None:
        out = fed.gns("mirror", "status", "mn-dr", "--json")
        targets = {t["target"]: t for t in json.loads(out.stdout)[0]["targets"]} if out.returncode == 0 else {}
        a = targets.get("onprem-a")
        return a if a is not None and a["state"] == "Synced" else None

    back = wait_for(returned, 30, "the old owner resynced, with no write since")
    assert back is not None and back["version"] == owner(fed, "mn")["version"] and back["lag_versions"] == 0


def test_kill9_owner_with_continuous_target_loses_at_most_the_lag(fed3: Federation) -> None:
    fed = fed3
    fed.gns("volume", "create", "co", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/co", "co")
    apply(fed, policy("co-dr", "co", "continuous", [{"cluster": "onprem-b"}]))
    wait_synced(fed, "co-dr")
    with Writer(fed, "/co", rate=20) as w:
        wait_for(lambda: len(w.acked) >= 40, 30, "40 acknowledged writes")
        st = json.loads(fed.gns("mirror", "status", "co-dr", "--json").stdout)[0]["targets"][0]
        lag_versions = st["lag_versions"]
        fed.kill("onprem-a", signal.SIGKILL)
        acked_at_kill = dict(w.acked)
        wait_for(lambda: owner(fed, "co")["owner"] == "onprem-b", 20, "promotion")
    with fed.client() as c:
        lost = [p for p, data in acked_at_kill.items() if _read(c, p) != data]
    # Lost writes are bounded by what was in flight to the mirror: the measured lag
    # (versions behind when sampled) plus the writes of one pass period (20/s for ~1 s).
    assert len(lost) <= lag_versions + 20, (len(lost), lag_versions)


def _read(c: Any, path: str) -> bytes | None:
    try:
        data: bytes = c.cat(path)
        return data
    except Exception:
        return None


def test_partition_of_owner_then_failback_keeps_diverged_writes(fed3: Federation) -> None:
    fed = fed3
    fed.gns("volume", "create", "pv", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/pv", "pv")
    apply(fed, policy("pv-dr", "pv", "continuous", [{"cluster": "onprem-b"}]))
    for i in range(3):
        assert fed.gns_bytes("put", "-", f"/pv/base{i}", input=b"base").returncode == 0
    wait_synced(fed, "pv-dr")
    # The replica freezes, so the owner's next writes reach no mirror.
    fed.kill("onprem-b", signal.SIGSTOP)
    try:
        for i in range(2):
            assert fed.gns_bytes("put", "-", f"/pv/lonely{i}", input=b"only on A").returncode == 0
        # Now the owner is partitioned away (frozen) and the replica comes back.
        fed.kill("onprem-a", signal.SIGSTOP)
    finally:
        fed.kill("onprem-b", signal.SIGCONT)
    try:
        wait_for(lambda: owner(fed, "pv")["owner"] == "onprem-b", 30, "promotion of onprem-b")
        assert owner(fed, "pv")["epoch"] == 2
        assert fed.gns_bytes("put", "-", "/pv/on-b", input=b"new epoch").returncode == 0
    finally:
        fed.kill("onprem-a", signal.SIGCONT)
    # The old owner accepts nothing for its old epoch...
    assert_error(fed.gns_bytes("put", "-", "/pv/x", "--epoch", "1", input=b"stale"), 4, "epoch")
    # ...rejoins as a replica, keeps its diverged writes aside and reports them.
    def reported() -> Any:
        st = json.loads(fed.gns("status", "--json").stdout)
        vol = next(v for v in st["volumes"] if v["name"] == "pv")
        return vol["diverged"] or None
    diverged = wait_for(reported, 30, "diverged writes reported")
    assert diverged[0]["cluster"] == "onprem-a" and diverged[0]["epoch"] == 1
    assert sorted(diverged[0]["paths"]) == [".gns/diverged/1/lonely0", ".gns/diverged/1/lonely1"]
    kept = fed.controllers["onprem-a"].data_dir / "volumes" / "pv" / ".gns" / "diverged" / "1"
    assert (kept / "lonely0").read_bytes() == b"only on A"
    # and resyncs to the new owner's state (the lonely writes are not in it)
    def a_synced() -> bool:
        st = json.loads(fed.gns("mirror", "status", "pv-dr", "--json").stdout)[0]["targets"]
        return any(t["target"] == "onprem-a" and t["state"] == "Synced" for t in st)
    wait_for(a_synced, 30, "old owner resynced")
    names = [e["name"] for e in json.loads(fed.gns("ls", "/pv", "--json").stdout)]
    assert names == ["base0", "base1", "base2", "on-b"]


def test_leader_dies_during_failover(fed3: Federation) -> None:
    fed = fed3
    fed.gns("volume", "create", "ld", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/ld", "ld")
    apply(fed, policy("ld-dr", "ld", "sync", [{"cluster": "onprem-b"}, {"cluster": "aws-1"}],
                      priority=["aws-1", "onprem-b"]))
    assert fed.gns_bytes("put", "-", "/ld/f", input=b"x").returncode == 0
    wait_synced(fed, "ld-dr")
    with fed.client() as c:
        leader = c.view().leader
    assert leader is not None
    victims = {"onprem-a", leader}
    for v in victims:
        fed.kill(v, signal.SIGKILL)
    survivors = [c for c in fed.controllers if c not in victims]
    vol = wait_for(lambda: (lambda o: o if o["owner"] in survivors else None)(owner(fed, "ld")),
                   30, "promotion by a new leader")
    assert vol is not None and vol["state"] == "Ready" and vol["epoch"] == 2
    assert fed.gns("cat", "/ld/f").stdout == "x"
    # still exactly one owner after things settle
    holds_for(lambda: owner(fed, "ld")["owner"] == vol["owner"], 3, "one owner", every=0.5)


def test_planned_promote_force_loses_nothing(fed3: Federation) -> None:
    fed = fed3
    fed.gns("volume", "create", "pl", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/pl", "pl")
    apply(fed, policy("pl-dr", "pl", "continuous", [{"cluster": "onprem-b"}], automatic=False))
    assert_error(fed.gns("volume", "promote", "pl", "--to", "onprem-b"), 4, "Ready")
    with Writer(fed, "/pl", rate=30) as w:
        wait_for(lambda: len(w.acked) >= 20, 30, "writes")
        out = fed.gns("volume", "promote", "pl", "--to", "onprem-b", "--force", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["owner"] == "onprem-b"
        n = len(w.acked)
        wait_for(lambda: len(w.acked) >= n + 10, 30, "writes on the new owner")
    with fed.client() as c:
        lost = [p for p, data in w.acked.items() if _read(c, p) != data]
    assert not lost, lost[:5]
    vol = owner(fed, "pl")
    assert (vol["owner"], vol["epoch"]) == ("onprem-b", 2)


def test_planned_promote_of_a_volume_never_written(fed3: Federation) -> None:
    """A volume just created (by the CSI driver, say) hands over empty: it was exit 3, "no
    storage at <the owner's data dir>"."""
    fed = fed3
    assert fed.gns("volume", "create", "fresh", "--cluster", "aws-1").returncode == 0
    out = fed.gns("volume", "promote", "fresh", "--to", "onprem-b", "--force")
    assert out.returncode == 0, out.stderr
    assert (owner(fed, "fresh")["owner"], owner(fed, "fresh")["epoch"]) == ("onprem-b", 2)
    fed.gns("mount", "add", "/fresh", "fresh")
    assert fed.gns("put", "-", "/fresh/a", input=b"a").returncode == 0
    assert fed.gns("cat", "/fresh/a").stdout == "a"


def test_promoted_lagging_replica_shows_its_own_version(fed3: Federation) -> None:
    """After a promotion onto a replica that lags, ``volume show`` reports the version the
    new owner serves, not the lost owner's last one (it showed v5 while v3 was served)."""
    fed = fed3
    assert fed.gns("volume", "create", "lag", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/lag", "lag").returncode == 0
    apply(fed, policy("lag-dr", "lag", "manual", [{"cluster": "onprem-b"}], automatic=False))
    for i in range(3):
        assert fed.gns("put", "-", f"/lag/f{i}", input=b"synced").returncode == 0
    assert fed.gns("mirror", "sync", "lag-dr", "--wait", timeout=120).returncode == 0
    for i in range(3, 5):
        assert fed.gns("put", "-", f"/lag/f{i}", input=b"never mirrored").returncode == 0
    wait_for(lambda: owner(fed, "lag")["version"] == 5, 10, "volume show at v5")
    fed.kill("onprem-a", signal.SIGKILL)
    fed.wait_state("onprem-a", "Down", timeout=fed.lease_ttl + 10)
    out = fed.gns("volume", "promote", "lag", "--to", "onprem-b")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (o := owner(fed, "lag"))["owner"] == "onprem-b" and o["version"] == 3, 10,
             "volume show at the promoted replica's version")
    assert fed.gns("put", "-", "/lag/after", input=b"x").returncode == 0
    wait_for(lambda: owner(fed, "lag")["version"] == 4, 10, "the next write is v4")


def mirror_targets(fed: Federation, name: str) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(``mirror list`` targets of policy ``name``, ``mirror status`` of its targets by name)."""
    listed = fed.gns("mirror", "list", "--json")
    status = fed.gns("mirror", "status", name, "--json")
    assert listed.returncode == 0 and status.returncode == 0, listed.stderr + status.stderr
    row = next(p for p in json.loads(listed.stdout) if p["name"] == name)
    return row["targets"], {t["target"]: t for t in json.loads(status.stdout)[0]["targets"]}


def test_mirror_list_and_status_after_promotion(fed3: Federation) -> None:
    """After a failover the policy still names the new owner as a target: ``mirror list`` and
    ``mirror status`` show what is mirrored now (SPEC §7): the new owner is the source, not
    a target of itself, and the old owner is a target of the new one (Down, then resynced)."""
    fed = fed3
    assert fed.gns("volume", "create", "ml", "--cluster", "onprem-a").returncode == 0
    assert fed.gns("mount", "add", "/ml", "ml").returncode == 0
    apply(fed, policy("ml-dr", "ml", "continuous", [{"cluster": "onprem-b"}, {"cluster": "aws-1"}],
                      automatic=False))
    for i in range(3):
        assert fed.gns("put", "-", f"/ml/f{i}", input=b"x").returncode == 0
    wait_synced(fed, "ml-dr", 3)
    listed, status = mirror_targets(fed, "ml-dr")
    assert listed == ["onprem-b", "aws-1"] and list(status) == listed

    fed.kill("onprem-a", signal.SIGKILL)
    fed.wait_state("onprem-a", "Down", timeout=fed.lease_ttl + 10)
    out = fed.gns("volume", "promote", "ml", "--to", "onprem-b")
    assert out.returncode == 0, out.stderr
    listed, status = mirror_targets(fed, "ml-dr")
    assert listed == ["aws-1", "onprem-a"], listed
    assert list(status) == listed, status

    def old_owner_down() -> bool:  # once the new owner has tried it
        st = mirror_targets(fed, "ml-dr")[1]["onprem-a"]
        return st["state"] == "Error" and "Down" in (st["last_error"] or "")
    wait_for(old_owner_down, 15, "the old owner shown as a target that is Down")
    table = fed.gns("mirror", "list")
    assert table.returncode == 0 and "onprem-b" not in table.stdout and "onprem-a" in table.stdout, table.stdout

    # The old owner comes back as a replica of the new one and catches up.
    fed.start("onprem-a")
    assert fed.gns("put", "-", "/ml/on-b", input=b"y").returncode == 0
    wait_synced(fed, "ml-dr", 4, targets=["aws-1", "onprem-a"])
    listed, status = mirror_targets(fed, "ml-dr")
    assert listed == ["aws-1", "onprem-a"] and list(status) == listed
    # A document naming the new owner is refused whatever the history (the unchanged one
    # applied again too), and nothing changes.
    for pname in ("ml-dr", "ml-dr2"):
        other = fed.gns("mirror", "apply", "-f", "-", input=policy(
            pname, "ml", "continuous", [{"cluster": "onprem-b"}, {"cluster": "aws-1"}], automatic=False).encode())
        assert other.returncode == 2 and "is the owner of volume" in other.stderr, other.stderr
    assert mirror_targets(fed, "ml-dr")[0] == ["aws-1", "onprem-a"]
    # The policy edited to drop the new owner (a target equal to the owner is refused): the
    # old owner is still a target, and its status is kept, not reset to "nothing mirrored".
    apply(fed, policy("ml-dr", "ml", "continuous", [{"cluster": "aws-1"}], automatic=False))
    holds_for(lambda: (lambda st: st["onprem-a"]["state"] == "Synced" and st["onprem-a"]["version"] == 4)(
        mirror_targets(fed, "ml-dr")[1]), 2, "the old owner's status")


def test_promote_bad_input(fed3: Federation) -> None:
    fed = fed3
    fed.gns("volume", "create", "pb", "--cluster", "onprem-a")
    for args, code, frag in [
        (("volume", "promote", "nope", "--to", "onprem-b"), 3, "not found"),
        (("volume", "promote", "pb", "--to", "Bad_Id"), 2, "invalid cluster name"),
        (("volume", "promote", "pb", "--to", "ghost", "--force"), 3, "ghost"),
        (("volume", "promote", "pb", "--to", "ghost"), 3, "ghost"),  # not-found before "owner is Ready"
        (("volume", "promote", "pb", "--to", "onprem-a", "--force"), 4, "already owns"),
        (("volume", "promote", "pb"), 2, "--to"),
    ]:
        assert_error(fed.gns(*args), code, frag)
    assert owner(fed, "pb")["epoch"] == 1


def test_failover_to_s3_hydrates_promote_to(federation: Federation, moto_s3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import hashlib
    import os

    for k, v in moto_s3.env_vars.items():
        monkeypatch.setenv(k, v)
    uri = moto_s3.new_store_uri("hydrate")
    fed = federation
    fed.lease_ttl = 3
    fed.add("onprem-a")
    fed.add("aws-1", provider="aws")
    fed.gns("volume", "create", "hy", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/hy", "hy")
    files = {f"/hy/d{i}/f{i}.bin": os.urandom(1000 * (i + 1)) for i in range(12)}
    files["/hy/big.bin"] = os.urandom(3 << 20)
    with fed.client() as c:
        for p, data in files.items():
            c.put(data, p)
    apply(fed, policy("hy-dr", "hy", "continuous", [{"uri": uri}], promote_to="aws-1"))
    wait_synced(fed, "hy-dr")
    fed.kill("onprem-a", signal.SIGKILL)
    wait_for(lambda: owner(fed, "hy")["owner"] == "aws-1", 30, "hydration onto aws-1")
    with fed.client() as c:
        for p, data in files.items():
            assert c.stat(p).sha256 == hashlib.sha256(data).hexdigest(), p
            assert c.cat(p) == data
    assert fed.gns_bytes("put", "-", "/hy/new", input=b"after hydration").returncode == 0


def test_promote_onto_a_cluster_without_store_credentials_exits_2(
        federation: Federation, moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object store's own error crosses both hops (promoteTo cluster -> entry -> CLI)
    as itself: missing credentials are the user's to fix (exit 2), not "unavailable" (5)."""
    for k, v in moto_s3.env_vars.items():
        monkeypatch.setenv(k, v)
    uri = moto_s3.new_store_uri("nocreds")
    fed = federation
    fed.lease_ttl = 3
    fed.add("onprem-a")  # the owner mirrors with credentials
    # The cluster that would hydrate finds none (and never asks an instance-metadata service).
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    fed.add("aws-1", provider="aws")
    fed.gns("volume", "create", "nc", "--cluster", "onprem-a")
    fed.gns("mount", "add", "/nc", "nc")
    assert fed.gns_bytes("put", "-", "/nc/f", input=b"x").returncode == 0
    apply(fed, policy("nc-dr", "nc", "continuous", [{"uri": uri}], automatic=False,
                      promote_to="aws-1"))
    wait_synced(fed, "nc-dr")
    fed.kill("onprem-a", signal.SIGKILL)
    fed.wait_state("onprem-a", "Down", timeout=fed.lease_ttl + 10)
    assert_error(fed.gns("volume", "promote", "nc", "--to", uri), 2, "credentials")
    assert owner(fed, "nc")["owner"] == "onprem-a"
