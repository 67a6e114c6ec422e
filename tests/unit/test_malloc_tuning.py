"""``federation.malloc_tuning``: the allocator settings every ``gns`` process asks glibc for.

What they save is measured where it shows, on real downloads through a tunnel
(``tests/integration/test_tunnel.py``); here, that glibc takes them, in a process of its own
(they are process-wide, and this test process is not a ``gns`` one).
"""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's")
@pytest.mark.parametrize("call", ["tune_malloc(arenas=2)", "tune_for_command('get')", "tune_for_command('ls')",
                                  "tune_for_command('fuse')"])
def test_glibc_takes_every_setting(call: str) -> None:
    code = f"from federation.malloc_tuning import tune_malloc, tune_for_command; print({call})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


Call = tuple[str, dict[str, int]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Call | str]:
    """What happens, in order: ("tuned", its settings) for each call of ``tune_malloc``
    (recorded, not run)."""
    from federation import malloc_tuning

    happened: list[Call | str] = []

    def tune(**settings: int) -> bool:
        happened.append(("tuned", settings))
        return True

    monkeypatch.setattr(malloc_tuning, "tune_malloc", tune)
    return happened


TRANSFER = {"arenas": 1, "keep_free": 64 << 20}
MOUNT = {"keep_free": 64 << 20}  # glibc's arenas kept: a mount's stat calls run on many threads


@pytest.mark.parametrize(("argv", "settings"), [
    (["ls", "/"], {}),
    ([], {}),
    (["--json", "get", "/a", "b"], TRANSFER),
    (["--etcd", "http://127.0.0.1:1", "put", "-", "/a"], TRANSFER),
    (["--controller=127.0.0.1:1", "cat", "/a"], TRANSFER),
    (["--identity", "get", "ls", "/"], {}),  # an option's value is not the command
    (["fuse", "/mnt", "get"], MOUNT),
    (["--json", "fuse", "/mnt"], MOUNT),
    (["controller", "--cluster", "get"], {}),
])
def test_the_gns_command_tunes_its_process_for_its_command_before_it_runs(
        calls: list[Call | str], monkeypatch: pytest.MonkeyPatch, argv: list[str], settings: dict[str, int]) -> None:
    from federation.cli import main as cli_main

    def run(argv: list[str] | None = None) -> int:
        calls.append("ran")
        return 0

    monkeypatch.setattr(cli_main, "run", run)
    monkeypatch.setattr(sys, "argv", ["gns", *argv])
    with pytest.raises(SystemExit) as stop:
        cli_main.main()
    assert stop.value.code == 0
    assert calls == [("tuned", settings), "ran"]


def test_a_refused_setting_does_not_keep_the_others_from_being_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for libc (ctypes.CDLL) that refuses the first setting: the others are
    still asked for, and the answer says not everything was taken."""
    import ctypes

    from federation.malloc_tuning import tune_malloc

    asked: list[tuple[int, int]] = []

    class Mallopt:
        argtypes: object = None

        def __call__(self, param: int, value: int) -> int:
            asked.append((param, value))
            return 0 if len(asked) == 1 else 1

    class Libc:
        mallopt = Mallopt()

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    assert tune_malloc(arenas=2) is False
    assert [value for _, value in asked] == [32 << 20, 16 << 20, 2]
    assert len({param for param, _ in asked}) == 3
    asked.clear()
    assert tune_malloc() is False  # without a cap the arenas are not asked about
    assert len(asked) == 2


def test_a_csi_spare_tunes_the_process_it_keeps_warm(calls: list[Call | str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSI driver's warm spare becomes a ``gns fuse`` process without going through the
    command's ``main``; it tunes itself as ``main`` would for ``fuse`` (here it is told to
    stop at once: an empty stdin)."""
    import io

    from federation.csi import spare

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert spare.main() == 0
    assert calls == [("tuned", MOUNT)]
