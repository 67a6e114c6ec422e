"""A mount point is the mount table's, not a directory of the volume behind it (HDFS's router
refuses the same). ``gns rm -r`` of a mount of ``volb:sub`` emptied ``sub`` in volb and left
the mount pointing at nothing; ``gns rm`` of a mount of a file deleted the file; ``mv`` moved
the data away from under the mount. Each is refused now (exit 2, nothing changed), whichever
controller the command enters at."""
from __future__ import annotations

import pytest

from tests.fixtures.federation import Federation, assert_error


@pytest.mark.parametrize("via", [None, "onprem-a"])
def test_a_mount_point_is_not_removed_or_moved_as_a_directory(federation: Federation, via: str | None) -> None:
    federation.add("onprem-a")
    federation.add("onprem-b")
    for args in (("volume", "create", "vola", "--cluster", "onprem-a"), ("mount", "add", "/a", "vola"),
                 ("volume", "create", "volb", "--cluster", "onprem-b"), ("mount", "add", "/b", "volb"),
                 ("mount", "add", "/a/nested", "volb:sub"), ("mount", "add", "/m2", "vola:file2"),
                 ("mount", "add", "/a/n2", "vola:dir2")):
        assert federation.gns(*args).returncode == 0, args
    for path, data in (("/b/sub/h.txt", "behind the mount"), ("/a/file2", "a file mounted"),
                       ("/a/x", "beside"), ("/a/dir2/f", "in the same volume")):
        assert federation.gns("put", "-", path, input=data.encode()).returncode == 0
    at: tuple[str, ...] = ("--via", via) if via else ()
    for cmd in (("rm", "-r", "/a/nested"), ("rm", "/a/nested"), ("rm", "/m2"), ("rm", "-r", "/a"),
                ("mv", "/a/n2", "/a/moved"), ("mv", "/m2", "/a/file3"), ("mv", "/a/x", "/m2")):
        assert_error(federation.gns(*cmd, *at), 2, "mount point")
    assert federation.gns("cat", "/a/nested/h.txt").stdout == "behind the mount"
    assert federation.gns("cat", "/b/sub/h.txt").stdout == "behind the mount"
    assert federation.gns("cat", "/m2").stdout == "a file mounted"
    assert federation.gns("cat", "/a/x").stdout == "beside"
    assert federation.gns("cat", "/a/n2/f").stdout == "in the same volume"
    # What lies below a mount point is the volume's as ever, and the mount goes by its command.
    assert federation.gns("rm", "/a/nested/h.txt", *at).returncode == 0
    assert federation.gns("mount", "remove", "/a/nested").returncode == 0
