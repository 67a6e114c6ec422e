"""The parts of tests/integration/test_cli_user_findings.py that need no federation: an
interrupt inside a local write, closed standard streams, the token TTL bound, how a path
that is not UTF-8 is shown, stat's time for people."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from federation.cli.commands_edge import TOKEN_TTL
from federation.cli.main import Terminated, run
from federation.cli.output import utc_time
from federation.client import streams
from federation.controller.rpc_errors import ErrorInterceptor
from namespace.edge import MAX_TOKEN_TTL
from namespace.errors import InvalidInput
from namespace.paths import normalize


def test_an_interrupt_inside_a_local_write_stays_an_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One Ctrl-C in three during ``gns get`` printed ``BufferError: cannot close exported
    pointers exist`` (exit 1) instead of "aborted" (130): the interrupt landed in
    ``os.write`` while a view of the staging mmap was alive in that frame, and closing the
    mmap on the way out raised over the interrupt."""
    real_write = os.write

    def interrupted(fd: int, data: Any) -> int:
        if len(data) == streams._STAGE:  # a whole staged block: what the download writes
            raise KeyboardInterrupt
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        streams.write_local_file(tmp_path / "f.bin", [b"x" * streams._STAGE])


def test_output_lost_to_a_closed_stdout_is_a_write_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdout", None)  # what Python gives for `gns ... >&-`
    assert run(["--version"]) == 1
    assert capsys.readouterr().err == "gns: error: write error: Bad file descriptor (stdout is closed)\n"
    assert sys.stdout is None  # the stand-in is gone with the command


@pytest.mark.parametrize(("raised", "code", "line"), [
    (KeyboardInterrupt, 130, "gns: error: aborted\n"),
    (Terminated, 143, "gns: error: aborted (SIGTERM)\n"),
])
def test_an_interrupted_command_says_one_line(raised: type[BaseException], code: int, line: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C or SIGTERM in a command: its one error line, not an empty line first (click's
    main ended the line of a prompt that gns never shows)."""
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise raised

    from federation.cli import commands_data

    monkeypatch.setattr(commands_data, "_client", interrupted)
    assert run(["--etcd", "http://127.0.0.1:1", "stat", "/x"]) == code
    assert capsys.readouterr().err == line


@pytest.mark.parametrize(("argv", "line"), [
    (["put", "", "/x"], "gns: error: empty source path\n"),
    (["get", "/x", ""], "gns: error: empty destination path\n"),
])
def test_an_empty_local_path_is_invalid_before_any_call(argv: list[str], line: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``gns get /x ''`` wrote ./x (exit 0), ``put '' /x`` said etcd was unreachable: both
    are exit 2 now, before anything is asked (etcd here answers nothing)."""
    assert run(["--etcd", "http://127.0.0.1:1", *argv]) == 2
    assert capsys.readouterr().err == line


def test_a_closed_stderr_leaves_the_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", None)  # `gns ... 2>&-`
    assert run(["--no-such-option"]) == 2


def test_token_ttl_bound_is_the_one_tokens_have() -> None:
    assert TOKEN_TTL.most == MAX_TOKEN_TTL


@pytest.mark.parametrize(("path", "shown"), [
    ("/a/\udcff\udcfe", r"'/a/\xff\xfe'"),  # bytes from argv, as Python decodes them
    ("/a/caf\u00e9/\udcff", r"'/a/café/\xff'"),  # valid UTF-8 stays as it reads
])
def test_a_path_that_is_not_utf8_is_shown_as_its_bytes(path: str, shown: str) -> None:
    with pytest.raises(InvalidInput) as err:
        normalize(path)
    assert str(err.value) == f"path {shown} is not valid UTF-8"


def test_utc_time_is_iso_8601() -> None:
    assert utc_time(1796657044.9526463) == "2026-12-07T15:24:04.952646Z"
    assert utc_time(0.0) == ""  # no time at all (a directory the mount table makes)


def _grpc_logs(method: str) -> None:
    """What grpc.aio logs when a reply of ``method`` cannot be sent (``_handle_exceptions``)."""
    try:
        raise RuntimeError('Failed "execute_batch"')  # grpc's ExecuteBatchError, in its place
    except RuntimeError:
        logging.getLogger("grpc._cython.cygrpc").exception(
            f"ExecuteBatchError raised in core by servicer method [{method}]")  # as grpc formats it


def test_a_read_whose_client_went_away_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    """`gns cat big | head -c10` left an ERROR traceback in the owner's log every time."""
    ErrorInterceptor()  # what every controller and edge site serves with
    with caplog.at_level(logging.WARNING):
        _grpc_logs("/gns.federation.v1.Federation/Read")
        _grpc_logs("/gns.federation.v1.Federation/Write")  # not a reader: still an error
    assert [(r.levelname, r.exc_info is not None) for r in caplog.records] == [("ERROR", True)]
    assert caplog.records[0].getMessage().endswith("Federation/Write]")
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        _grpc_logs("/gns.federation.v1.Federation/Read")
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records] == [
        ("DEBUG", "Federation/Read: the client went away before its reply was sent", None)]
