"""One duration parser for flags, policies and tokens (``namespace.durations``), and the
``DURATION`` click type every CLI flag that takes a time uses."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from federation.cli.output import DURATION
from namespace.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("1h", 3600.0), ("90s", 90.0), ("1h30m", 5400.0), ("500ms", 0.5), ("0", 0.0), ("1.5s", 1.5),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(text, bare_seconds=True) == seconds


@pytest.mark.parametrize("text", ["1.5", "90", "5"])
def test_plain_seconds_only_on_flags(text: str) -> None:
    assert parse_duration(text, bare_seconds=True) == float(text)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["5 minutes", "-1s", "", "1x", "h", "1h-5m", "1e3s", " - 5s"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text, bare_seconds=True)


@click.command()
@click.option("--wait", type=DURATION, default="60s")
def _cmd(wait: float) -> None:
    click.echo(repr(wait))


@pytest.mark.parametrize(("arg", "out"), [("1h", "3600.0"), ("90s", "90.0"), ("1.5", "1.5"), (None, "60.0")])
def test_duration_flag(arg: str | None, out: str) -> None:
    result = CliRunner().invoke(_cmd, ["--wait", arg] if arg else [])
    assert result.exit_code == 0 and result.output.strip() == out


@pytest.mark.parametrize("arg", ["5 minutes", "-1s", "soon"])
def test_bad_duration_flag_is_a_usage_error(arg: str) -> None:
    result = CliRunner().invoke(_cmd, ["--wait", arg])
    assert result.exit_code == 2 and "--wait" in result.output


@pytest.mark.parametrize(("ttl", "fragment"), [("1.5", "whole seconds"), ("1h30m", "2..3600"),
                                               ("5 minutes", "invalid duration")])
def test_controller_lease_ttl_is_a_duration(tmp_path: object, ttl: str, fragment: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from federation.cli.main import run

    code = run(["controller", "--cluster", "c1", "--listen", "127.0.0.1:0", "--data-dir",
                str(tmp_path), "--etcd", "http://127.0.0.1:9", "--lease-ttl", ttl])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1
