"""``federation.tls_files``: a client dials with an identity checked once per version of its
files, and a process that finds them checked does not import ``cryptography``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from federation import tls, tls_files
from namespace.errors import InvalidInput

RECORD = ".client.checked"


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tls"
    tls.init_certs(d, ["east"])
    return d


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the whole checks (``federation.tls.load_identity``) that run."""
    calls: list[str] = []
    real = tls.load_identity

    def counted(tls_dir: Path, name: str) -> Any:
        calls.append(name)
        return real(tls_dir, name)

    monkeypatch.setattr(tls, "load_identity", counted)
    return calls


def test_the_first_dial_checks_and_later_dials_do_not(tls_dir: Path, full_checks: list[str]) -> None:
    tls_files.channel_credentials(tls_dir)
    assert full_checks == ["client"]
    record = json.loads((tls_dir / RECORD).read_text())
    assert record["stamp"] == list(tls_files.identity_stamp(tls_dir, "client"))
    assert record["not_before"] <= time.time() < record["not_after"]
    assert "PRIVATE" not in (tls_dir / RECORD).read_text()
    tls_files.channel_credentials(tls_dir)
    tls_files.channel_credentials(tls_dir)
    assert full_checks == ["client"]
    tls_files.channel_credentials(tls_dir, "east")  # another identity: its own check
    assert full_checks == ["client", "east"]


def test_a_replaced_file_is_checked_again(tls_dir: Path) -> None:
    tls_files.channel_credentials(tls_dir)
    shutil.copy(tls_dir / "east.key", tls_dir / "client.key")  # a key of another identity
    with pytest.raises(InvalidInput, match="does not match"):
        tls_files.channel_credentials(tls_dir)


def test_a_copied_directory_is_checked_again(tls_dir: Path, tmp_path: Path, full_checks: list[str]) -> None:
    tls_files.channel_credentials(tls_dir)
    copy = tmp_path / "copy"
    shutil.copytree(tls_dir, copy)  # same bytes and times, record included; other inodes
    tls_files.channel_credentials(copy)
    assert full_checks == ["client", "client"]


@pytest.mark.parametrize("window", [(-7200.0, -1.0), (100.0, 7200.0)], ids=["expired", "not-yet-valid"])
def test_outside_the_certificates_window_the_whole_check_runs(
        tls_dir: Path, full_checks: list[str], window: tuple[float, float]) -> None:
    """The same files, but the record says the certificate is not valid now (as it will say
    once the certificate expires): the check runs, and its error would name the file."""
    tls_files.channel_credentials(tls_dir)
    record = json.loads((tls_dir / RECORD).read_text())
    now = time.time()
    record["not_before"], record["not_after"] = now + window[0], now + window[1]
    (tls_dir / RECORD).write_text(json.dumps(record))
    tls_files.channel_credentials(tls_dir)
    assert full_checks == ["client", "client"]


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"version": 1}', b'{"version": 99, "stamp": [],'
                                    b' "not_before": 0, "not_after": 1e12}', b"[1, 2]"])
def test_a_damaged_record_means_the_whole_check(
        tls_dir: Path, full_checks: list[str], damage: bytes) -> None:
    (tls_dir / RECORD).write_bytes(damage)
    tls_files.channel_credentials(tls_dir)
    assert full_checks == ["client"]
    assert json.loads((tls_dir / RECORD).read_text())["version"] == 1  # written anew


def test_a_directory_that_refuses_the_record_still_dials(
        tls_dir: Path, full_checks: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    tls_files.channel_credentials(tls_dir)
    tls_files.channel_credentials(tls_dir)
    assert full_checks == ["client", "client"]
    assert sorted(p.name for p in tls_dir.iterdir() if p.name.startswith(".")) == []


def test_files_replaced_during_the_check_are_not_recorded(
        tls_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tls.load_identity

    def rotated_meanwhile(d: Path, name: str) -> Any:
        checked = real(d, name)
        shutil.copy(tls_dir / "east.crt", tls_dir / "client.crt")
        return checked

    monkeypatch.setattr(tls, "load_identity", rotated_meanwhile)
    tls_files.channel_credentials(tls_dir)
    assert not (tls_dir / RECORD).exists()


@pytest.mark.parametrize("name", ["../tls/client", "", ".hidden", "a/b"])
def test_a_bad_identity_name_is_refused_before_any_file(tls_dir: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid identity"):
        tls_files.channel_credentials(tls_dir, name)


def test_a_missing_file_is_named_even_after_a_record(tls_dir: Path) -> None:
    tls_files.channel_credentials(tls_dir)
    (tls_dir / "client.crt").unlink()
    with pytest.raises(InvalidInput, match="client.crt is missing"):
        tls_files.channel_credentials(tls_dir)


def test_a_process_dialing_with_checked_files_does_not_import_cryptography(tls_dir: Path) -> None:
    """The point of the record: a CLI process's start-up without ``cryptography``."""
    probe = (
        "import sys; from pathlib import Path; from federation.channels import sync_channel; "
        f"sync_channel('127.0.0.1:1', Path({str(tls_dir)!r})).close(); "
        "print('cryptography' in sys.modules)"
    )

    def imports_cryptography() -> bool:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        return out.stdout.strip() == "True"

    assert imports_cryptography()  # the first: the whole check
    assert not imports_cryptography()  # then the record
    (tls_dir / "client.key").touch()  # a new version of a file: checked again
    assert imports_cryptography()
