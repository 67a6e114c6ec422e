"""CLI problems a user found (SPEC §4 exit codes and one-line errors, §5):

* ``--epoch`` past uint64 is a usage error of the option (exit 2), not ``ValueError`` (1);
* a closed stdin (``put - P <&-``) is exit 2, "stdin is closed"; a closed stdout
  (``cat P >&-``, ``ls P >&-``) is exit 1, "write error: Bad file descriptor", as coreutils
  say it (``ls`` exited 0 with its listing lost); a reader leaving a pipe stays quiet;
  output to a full disk (``> /dev/full``) is "write error: No space left on device", and a
  local destination no file can be made at is named, not the temp file;
* ``get`` onto a local directory is exit 2 and changes nothing;
* SIGTERM during ``get`` removes the partial file, exits 143 ("aborted");
* a path that is not UTF-8 is shown as its bytes (``'/uf/\\xff'``);
* ``stat`` shows mtime as an ISO 8601 UTC time (JSON keeps the number);
* ``edge token create --ttl`` names its bound in units it takes (720h);
* ``--max-staleness`` without ``--consistency any`` is exit 2, not ignored;
* ``mv`` of a file below itself says that it is a file;
* a reader that cancels its ``Read`` is no ERROR in the owner's log.

Volume ``uf`` (onprem-a) at ``/uf``; onprem-b is the ``--via`` entry.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.local.etcd_server import EtcdCluster
from tests.fixtures.federation import Federation, assert_error, metric
from tests.support import wait_for

BIG = 128 << 20


@pytest.fixture(scope="module")
def fed(etcd_module: EtcdCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = Federation(etcd_module, tmp_path_factory.mktemp("findings"))
    try:
        f.add("onprem-a", wait=False)
        f.add("onprem-b", wait=False)
        for cid in f.controllers:
            f.wait_healthy(cid, timeout=30)
        _ok(f.gns("volume", "create", "uf", "--cluster", "onprem-a"))
        _ok(f.gns("mount", "add", "/uf", "uf"))
        _ok(f.gns("put", "-", "/uf/s1", input=b"s1"))
        _ok(f.gns_bytes("put", "-", "/uf/big.bin", input=os.urandom(1 << 20) * (BIG >> 20)))
        yield f
    finally:
        f.stop_all()


def _ok(proc: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]) -> None:
    assert proc.returncode == 0, proc.stderr


def _version(f: Federation) -> int:
    proc = f.gns("volume", "show", "uf", "--json")
    _ok(proc)
    return int(json.loads(proc.stdout)["version"])


def _shell(f: Federation, redirect: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``gns ARGS REDIRECT`` run by sh, as the user typed it (``<&-``, ``>&-``, ``| head``)."""
    script = f'"$0" -m federation.cli.main "$@" {redirect}'
    return subprocess.run(["sh", "-c", script, sys.executable, *args], capture_output=True,
                          env=f.env(), timeout=60)


# -- 1: --epoch is a uint64 ---------------------------------------------------------------------
@pytest.mark.parametrize("args", [("put", "-", "/uf/e1"), ("rm", "/uf/s1")])
@pytest.mark.parametrize("epoch", ["99999999999999999999999", str(2**64)])
def test_an_epoch_past_uint64_is_a_usage_error(fed: Federation, args: tuple[str, ...], epoch: str) -> None:
    before = _version(fed)
    assert_error(fed.gns(*args, "--epoch", epoch, input=b"x"), 2, "--epoch")
    assert _version(fed) == before


# -- 2: closed and broken standard streams ----------------------------------------------------
def test_put_from_a_closed_stdin_says_so(fed: Federation) -> None:
    before = _version(fed)
    assert_error(_shell(fed, "<&-", "put", "-", "/uf/s3"), 2, "stdin is closed")
    assert _version(fed) == before


@pytest.mark.parametrize("args", [("cat", "/uf/s1"), ("get", "/uf/s1", "-"), ("ls", "/uf"),
                                  ("ls", "/uf", "--json"), ("stat", "/uf/s1"), ("mount", "list")])
def test_output_to_a_closed_stdout_is_a_write_error(fed: Federation, args: tuple[str, ...]) -> None:
    assert_error(_shell(fed, ">&-", *args), 1, "write error: Bad file descriptor")


@pytest.mark.parametrize("args", [("cat", "/uf/s1"), ("ls", "/uf"), ("get", "/uf/s1", "-"),
                                  ("get", "/uf/s1", "/dev/full")])
def test_output_to_a_full_disk_is_a_write_error(fed: Federation, args: tuple[str, ...]) -> None:
    """As coreutils say it (``cat f > /dev/full``: "write error: No space left on device"),
    not ``OSError: [Errno 28] ...``."""
    assert_error(_shell(fed, "> /dev/full", *args), 1, "write error: No space left on device")


def test_get_to_a_place_no_file_can_be_made_names_it(fed: Federation) -> None:
    """The temp file's name (``/proc/.version.gns-partial``) was the one the error named."""
    proc = fed.gns("get", "/uf/s1", "/proc/version")
    assert_error(proc, 1, "/proc/version: No such file or directory")
    assert "gns-partial" not in proc.stderr


def test_a_command_that_prints_nothing_does_not_mind_a_closed_stdout(fed: Federation) -> None:
    _ok(_shell(fed, "</dev/null >&-", "put", "-", "/uf/quiet"))


def test_a_reader_leaving_the_pipe_is_no_error(fed: Federation) -> None:
    proc = _shell(fed, "| head -c10", "cat", "/uf/big.bin")
    assert len(proc.stdout) == 10
    assert proc.stderr == b"", proc.stderr  # no "write error", no "Exception ignored"


# -- 3: get onto a local directory --------------------------------------------------------------
def test_get_onto_a_local_directory_changes_nothing(fed: Federation, tmp_path: Path) -> None:
    (tmp_path / "ldir" / "s1").mkdir(parents=True)
    assert_error(fed.gns("get", "/uf/s1", str(tmp_path / "ldir")), 2, "local directory")
    assert [p.name for p in (tmp_path / "ldir").iterdir()] == ["s1"]
    assert list((tmp_path / "ldir" / "s1").iterdir()) == []
    # a parent that is not there: a clear "not found", as before
    assert_error(fed.gns("get", "/uf/s1", str(tmp_path / "nonexistent-dir" / "x")), 3, "does not exist")


# -- 4: SIGTERM during get -------------------------------------------------------------------
def test_sigterm_during_get_removes_the_partial_file(fed: Federation, tmp_path: Path) -> None:
    dst = tmp_path / "keep.bin"
    partial = tmp_path / ".keep.bin.gns-partial"
    owner = fed.controllers["onprem-a"].pid
    proc = subprocess.Popen([sys.executable, "-m", "federation.cli.main", "get", "/uf/big.bin", str(dst)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fed.env())
    try:
        wait_for(lambda: _size(partial) > 0 or proc.poll() is not None, 30, "the download to begin",
                 every=0.005)
        # Both stopped, the download is surely still in flight when the signal lands.
        proc.send_signal(signal.SIGSTOP)
        os.kill(owner, signal.SIGSTOP)
        try:
            assert proc.poll() is None, "the download ended before the signal"
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            _, err = proc.communicate(timeout=30)
        finally:
            os.kill(owner, signal.SIGCONT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert_error(subprocess.CompletedProcess(proc.args, proc.returncode, b"", err), 143, "aborted")
    assert list(tmp_path.iterdir()) == []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- 5: paths that are not UTF-8 ------------------------------------------------------------
def test_a_path_that_is_not_utf8_is_shown_as_its_bytes(fed: Federation) -> None:
    proc = subprocess.run([sys.executable, "-m", "federation.cli.main", "stat", b"/uf/\xff\xfe"],
                          capture_output=True, env=fed.env(), timeout=60)
    assert_error(proc, 2, "not valid UTF-8")
    assert b"'/uf/\\xff\\xfe'" in proc.stderr, proc.stderr


# -- 6: stat's mtime for people -------------------------------------------------------------
def test_stat_shows_mtime_as_utc_iso_8601(fed: Federation) -> None:
    as_json = json.loads(fed.gns("stat", "/uf/s1", "--json").stdout)
    assert isinstance(as_json["mtime"], float)  # SPEC: JSON keeps the number
    proc = fed.gns("stat", "/uf/s1")
    _ok(proc)
    fields = dict(line.split(None, 1) for line in proc.stdout.splitlines() if len(line.split()) == 2)
    shown = fields["mtime"]
    assert shown.endswith("Z"), shown
    when = dt.datetime.fromisoformat(shown.replace("Z", "+00:00"))
    assert when.utcoffset() == dt.timedelta(0)
    assert abs(when.timestamp() - as_json["mtime"]) < 1e-3, (shown, as_json["mtime"])


# -- 7: edge token lifetime -----------------------------------------------------------------
def test_token_ttl_bound_is_named_in_units_it_takes(fed: Federation) -> None:
    for ttl in ("800h", "0"):
        proc = fed.gns("edge", "token", "create", "--site", "uf-site", "--ttl", ttl)
        assert_error(proc, 2, "at most 720h (30 days)")
    _ok(fed.gns("edge", "token", "create", "--site", "uf-site", "--ttl", "720h"))


# -- 8: --max-staleness needs --consistency any -------------------------------------------
@pytest.mark.parametrize("args", [("ls", "/uf"), ("cat", "/uf/s1"), ("stat", "/uf/s1"),
                                  ("get", "/uf/s1", "-")])
def test_max_staleness_without_consistency_any_is_refused(fed: Federation, args: tuple[str, ...]) -> None:
    assert_error(fed.gns(*args, "--max-staleness", "5s"), 2,
                 "--max-staleness applies only with --consistency any")
    assert_error(fed.gns(*args, "--max-staleness", "5s", "--consistency", "owner"), 2, "--max-staleness")
    _ok(fed.gns(*args, "--max-staleness", "5s", "--consistency", "any"))
    _ok(fed.gns(*args))


# -- 9: mv of a file below itself -----------------------------------------------------------
def test_mv_of_a_file_below_itself_says_it_is_a_file(fed: Federation) -> None:
    _ok(fed.gns("put", "-", "/uf/file2", input=b"2"))
    _ok(fed.gns("put", "-", "/uf/dir/f", input=b"f"))
    before = _version(fed)
    assert_error(fed.gns("mv", "/uf/file2", "/uf/file2/x"), 2,
                 "'/uf/file2' is a file: cannot move it to '/uf/file2/x'")
    assert_error(fed.gns("mv", "/uf/dir", "/uf/dir/x"), 2, "below itself")  # a directory: as before
    assert_error(fed.gns("mv", "/uf/nosuch", "/uf/nosuch/x"), 3)
    assert _version(fed) == before


# -- 10: a reader that goes away ------------------------------------------------------------
def _reads(f: Federation) -> float:
    return metric(f, "onprem-a", "gns_requests_total", method="Federation/Read")


def test_a_cancelled_read_is_no_error_in_the_owners_log(fed: Federation) -> None:
    log = fed.controllers["onprem-a"].log
    start, before = log.stat().st_size, _reads(fed)
    n = 8
    with fed.client() as c:
        for _ in range(n):
            views = c.read_views("/uf/big.bin")
            next(views)  # one chunk, then the reader leaves (`gns cat big | head -c10`)
            views.close()
    wait_for(lambda: _reads(fed) >= before + n, 30, "the owner to finish the cancelled reads")
    with log.open("rb") as fh:
        fh.seek(start)
        added = fh.read().decode(errors="replace")
    assert " ERROR " not in added, added[-3000:]
