"""Shared test set-up: the fixture plugins that start real servers (each stopped by PID), and
the guard that makes CI fail when a test skips for a reason nobody expected.

A test whose prerequisite is missing skips with the reason (a developer's machine may lack
FUSE or an emulator). In CI (``GNS_FAIL_ON_SKIP=1``, set by ``scripts/test.sh``) every
prerequisite is installed, so a skip means something is broken: the run fails unless the
reason matches :data:`EXPECTED_SKIPS`.
"""
from __future__ import annotations

import os
import re

import pytest

pytest_plugins = [
    "tests.fixtures.etcd",
    "tests.fixtures.federation",
    "tests.fixtures.objectstores",
    "tests.fixtures.storage",
]

EXPECTED_SKIPS: tuple[str, ...] = (
    # CI runs as root (FUSE needs it); this one checks what a non-root user is refused.
    r"root reads files whatever their mode",
)

_unexpected: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped or getattr(report, "wasxfail", None) is not None:
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    if not any(re.search(p, reason) for p in EXPECTED_SKIPS):
        _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected and os.environ.get("GNS_FAIL_ON_SKIP") == "1" and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected and os.environ.get("GNS_FAIL_ON_SKIP") == "1":
        terminalreporter.section("unexpected skips (GNS_FAIL_ON_SKIP=1)", red=True)
        for line in _unexpected:
            terminalreporter.line(line)
