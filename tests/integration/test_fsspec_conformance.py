"""fsspec's own abstract test suite (copy, get, put, open, pipe) against ``gns://`` on a
real federation, as s3fs, gcsfs and adlfs run it against their emulators (issue 10).

One module-scoped federation (three controllers, volume ``fss`` mounted at ``/fss``); each
test works under a fresh directory of its own.
"""
from __future__ import annotations

import posixpath
import uuid
from typing import Any

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from federation.fs import GnsFileSystem
from tests.fixtures.federation import Federation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gns_fs(federation3: Federation) -> Any:
    f = federation3
    assert f.gns("volume", "create", "fss", "--cluster", "onprem-a").returncode == 0
    assert f.gns("mount", "add", "/fss", "fss").returncode == 0
    fs = GnsFileSystem(etcd=f.etcd_urls, skip_instance_cache=True)
    yield fs
    fs.client.close()


class GnsFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, gns_fs: Any) -> Any:
        return gns_fs

    @pytest.fixture
    def fs_join(self) -> Any:
        return posixpath.join

    @pytest.fixture
    def fs_path(self) -> str:
        return f"/fss/t-{uuid.uuid4().hex[:10]}"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return True


class TestGnsCopy(AbstractCopyTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsGet(AbstractGetTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsPut(AbstractPutTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsOpen(AbstractOpenTests, GnsFixtures):  # type: ignore[misc]
    pass


class TestGnsPipe(AbstractPipeTests, GnsFixtures):  # type: ignore[misc]
    pass


def test_errors_are_builtins(gns_fs: Any) -> None:
    with pytest.raises(FileNotFoundError):
        gns_fs.info("/fss/definitely/missing")
    with pytest.raises(FileNotFoundError):
        gns_fs.rm("/fss/definitely/missing", recursive=True)
    gns_fs.pipe_file("/fss/err/x", b"1")
    with pytest.raises(FileExistsError):
        gns_fs.pipe_file("/fss/err/x", b"2", mode="create")
    gns_fs.mkdir("/fss/err/empty")
    assert gns_fs.isdir("/fss/err/empty") and gns_fs.ls("/fss/err/empty") == []
    gns_fs.mv("/fss/err/x", "/fss/err/y")
    assert gns_fs.cat_file("/fss/err/y") == b"1"
    gns_fs.rm("/fss/err", recursive=True)
    assert not gns_fs.exists("/fss/err")
