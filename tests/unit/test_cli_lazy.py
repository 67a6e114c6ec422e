"""The CLI's start-up stays lean (issue 14): one command loads its own module, and nothing
heavy is imported before a command needs it."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import click

from federation.cli.main import COMMAND_MODULES


def test_command_table_matches_what_each_module_registers() -> None:
    for module, names in COMMAND_MODULES.items():
        group = click.Group()
        importlib.import_module(f"federation.cli.{module}").register(group)
        assert sorted(group.commands) == sorted(names), module
    every = [n for names in COMMAND_MODULES.values() for n in names]
    assert len(every) == len(set(every)), "a command name in two modules"


def _modules_after(*argv: str) -> set[str]:
    code = (
        "import json, sys\n"
        "from federation.cli.main import run\n"
        f"code = run({list(argv)!r})\n"
        "sys.__stdout__.write('\\n' + json.dumps([code, sorted(sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    rc, modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0, out.stderr
    return set(modules)


def test_help_imports_no_heavy_dependency() -> None:
    loaded = _modules_after("--help")
    for heavy in ("pydantic", "rich", "grpc", "aetcd", "federation.client", "pyfuse3", "aiohttp",
                  "mirroring", "federation.kube", "federation.csi", "edge"):
        assert heavy not in loaded, heavy


def test_one_command_loads_only_its_own_module() -> None:
    loaded = _modules_after("stat", "--help")
    cli_modules = {m for m in loaded if m.startswith("federation.cli.commands_")}
    assert cli_modules == {"federation.cli.commands_data"}
    assert "rich" not in loaded and "pydantic" not in loaded
