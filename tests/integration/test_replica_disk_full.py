"""A replica whose disk fills in the middle of a blob fails the mirror pass at once.

Replication's ``PutBlob`` feeds a large blob from the gRPC stream to ``ingest_blob`` on a
pool thread. It used to do that through a bounded queue alone: when the write failed
(``ENOSPC``), nothing emptied the queue, the handler waited for room in it, and the owner's
push waited with it, for the call's deadline of an hour. Now the failure ends the call
(``federation.stream_feed``), the owner's pass reports it, and the replica keeps nothing of
the blob.

Real parts: etcd, two controller processes; the replica's data directory is a small tmpfs
(root mounts it, as the FUSE tests need root too).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.fixtures.federation import Federation
from tests.support import cli_status, wait_for
from tests.support.mirrors import apply_policy, make_volume, policy_doc
from tests.support.small_disk import NEEDS_SMALL_DISKS, on_small_disk
from tests.support.stored_blobs import blob_files

pytestmark = [pytest.mark.slow, *NEEDS_SMALL_DISKS]


def test_a_replica_out_of_space_mid_blob_fails_the_pass_at_once(federation: Federation, tmp_path: Path) -> None:
    fed = federation
    fed.add("onprem-a")
    with on_small_disk(fed, "onprem-b", 24) as replica:
        make_volume(fed, "full", "onprem-a")
        apply_policy(fed, tmp_path, policy_doc("full-dr", "full", "continuous", ["onprem-b"]))
        data = os.urandom(40 << 20)  # more than the replica's disk holds
        (tmp_path / "big.bin").write_bytes(data)
        assert fed.gns("put", str(tmp_path / "big.bin"), "/full/big.bin").returncode == 0
        # The pass fails within moments, and says why (it hung for an hour before).
        t = wait_for(lambda: (t := cli_status(fed, "full-dr")["onprem-b"])["last_error"] and t, 60,
                     "the pass to fail")
        assert "cluster onprem-b has no space left on its disk" in str(t["last_error"]), t
        # The replica holds nothing of the blob (a retry's temporary file may be on its way).
        volume = replica.data_dir / "volumes" / "full"
        assert hashlib.sha256(data).hexdigest() not in (blob_files(volume) if volume.exists() else set())
