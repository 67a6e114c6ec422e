"""Shared CLI plumbing: the options every command takes, output, progress, errors."""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from federation.client import Client

# pydantic and rich cost about a third of a short command's start-up, and most commands
# print neither a model nor a table: they are imported where they are used (issue 14).


if TYPE_CHECKING:
    _ParamType = click.ParamType[float]
else:  # click < 8.2 has no generic ParamType (pyproject allows 8.1)
    _ParamType = click.ParamType


class DurationParam(_ParamType):
    """A flag that takes a length of time: ``30s``, ``5m``, ``1h30m`` or plain seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        from namespace.durations import parse_duration

        try:
            return parse_duration(value, bare_seconds=True)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationParam()
"""Every CLI flag that takes a time uses this, so all of them read the same forms."""


class BoundedDuration(DurationParam):
    """A duration more than 0 and at most ``most`` seconds, which the error names as
    ``shown`` (durations have no unit of days: "720h (30 days)", not "30 days")."""

    def __init__(self, most: float, shown: str) -> None:
        self.most, self.shown = most, shown

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = super().convert(value, param, ctx)
        if not 0 < seconds <= self.most:
            self.fail(f"must be more than 0 and at most {self.shown}, not {value!r}", param, ctx)
        return seconds


def check_staleness_applies(consistency: str) -> None:
    """Refuse ``--max-staleness`` given without ``--consistency any``: it bounds only the
    lag of a replica that answers, and none does otherwise (ignoring it hid the mistake)."""
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("max_staleness") in (
        click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    if given and consistency != "any":
        raise click.UsageError("--max-staleness applies only with --consistency any", ctx)


def utc_time(epoch: float) -> str:
    """An epoch time for people as ISO 8601 UTC (0, no time at all, as nothing)."""
    if not epoch:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Env:
    etcd: str | None
    as_json: bool
    tls_dir: str | None
    controller: str | None = None
    """``--controller``: send every command to this controller, none to etcd (SPEC §4)."""
    identity: str | None = None

    def client(self, **kw: Any) -> Client:
        from federation.client import Client

        if self.controller:
            from federation.remote import find_controller

            kw.setdefault("controller", find_controller(self.controller))
        return Client(self.etcd, tls_dir=self.tls_dir, identity=self.identity, **kw)

    def control_client(self, **kw: Any) -> Client:
        """A client for a control command (volume, mount, mirror, acl, cluster, edge,
        status, resolve). One acting as a user (``--identity`` other than the
        administrator ``client``, TLS on) sends it through a controller even without
        ``--controller``, so that the user's grants decide it as SPEC §10 says: from etcd
        directly it ran with etcd's credentials, which hold every right, and `gns
        --identity alice acl grant / user:alice admin` succeeded (exit 4 through a
        controller). A process with etcd credentials can still do that by other means:
        only ``--controller`` clients are bound by grants."""
        if not self.controller and self._as_user():
            from federation.remote import a_controller

            kw.setdefault("controller", a_controller(self.etcd))
        return self.client(**kw)

    def _as_user(self) -> bool:
        from federation.client.discovery import find_tls_dir

        identity = self.identity or os.environ.get("GNS_IDENTITY") or "client"
        return identity != "client" and find_tls_dir(self.tls_dir, None) is not None


def common(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--etcd``, ``--json`` and ``--tls-dir`` to a command and pass an :class:`Env`."""

    @click.option("--etcd", "etcd", metavar="URL[,URL...]",
                  help="etcd endpoints (default: the federation `gns up` started under GNS_HOME).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
    @click.option("--tls-dir", "tls_dir", metavar="DIR",
                  help="Client certificates for mutual TLS (see `gns certs init`).")
    @click.option("--controller", "controller", metavar="HOST:PORT",
                  help="Send every command to this controller instead of etcd (env GNS_CONTROLLER).")
    @click.option("--etcd-ca", "etcd_ca", metavar="FILE", help="CA of etcd's TLS (env GNS_ETCD_CA).")
    @click.option("--etcd-cert", "etcd_cert", metavar="FILE", help="Client certificate for etcd (env GNS_ETCD_CERT).")
    @click.option("--etcd-key", "etcd_key", metavar="FILE", help="Its key (env GNS_ETCD_KEY).")
    @click.option("--etcd-user", "etcd_user", metavar="NAME", help="etcd user (env GNS_ETCD_USER).")
    @click.option("--etcd-password-file", "etcd_password_file", metavar="FILE",
                  help="File holding the etcd user's password (env GNS_ETCD_PASSWORD_FILE).")
    @click.option("--identity", "identity", metavar="NAME",
                  help="Which certificate of --tls-dir to use (env GNS_IDENTITY; default client).")
    @functools.wraps(f)
    def wrapper(*args: Any, etcd: str | None, as_json: bool, tls_dir: str | None,
                controller: str | None = None, identity: str | None = None,
                etcd_ca: str | None = None, etcd_cert: str | None = None, etcd_key: str | None = None,
                etcd_user: str | None = None, etcd_password_file: str | None = None, **kw: Any) -> Any:
        # etcd security travels in the environment, so every EtcdConfig this process (and the
        # controllers `gns up` spawns) builds picks it up (namespace.etcd_tls).
        for var, value in (("GNS_ETCD_CA", etcd_ca), ("GNS_ETCD_CERT", etcd_cert), ("GNS_ETCD_KEY", etcd_key),
                           ("GNS_ETCD_USER", etcd_user), ("GNS_ETCD_PASSWORD_FILE", etcd_password_file)):
            if value:
                os.environ[var] = value
        ctx = click.get_current_context()
        root = ctx.find_root().obj or {}
        # Precedence: the command's flag, then the root's flag, then the environment.
        env = Env(
            etcd=etcd or root.get("etcd") or os.environ.get("GNS_ETCD") or None,
            as_json=as_json or bool(root.get("as_json")),
            tls_dir=tls_dir or root.get("tls_dir") or os.environ.get("GNS_TLS_DIR") or None,
            controller=controller or root.get("controller") or os.environ.get("GNS_CONTROLLER") or None,
            identity=identity or root.get("identity") or os.environ.get("GNS_IDENTITY") or None,
        )
        return f(env, *args, **kw)

    return wrapper


def removed(env: Env, what: str, sentence: str) -> None:
    """The outcome of a ``remove`` command: ``{"removed": what}`` or a sentence."""
    if env.as_json:
        emit_json({"removed": what})
    else:
        click.echo(sentence)


def to_plain(obj: Any) -> Any:
    """JSON-ready data: client results (``federation.client.models``) as their ``to_json()``,
    an access grant as its ``as_dict()``, pydantic records as ``model_dump()``."""
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return to_json()
    as_dict = getattr(obj, "as_dict", None)
    if callable(as_dict):
        return as_dict()
    # A model can only exist once pydantic has been imported by whoever built it.
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return obj.model_dump()
    if isinstance(obj, (list, tuple)):
        return [to_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(to_plain(obj), indent=2, sort_keys=False))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    # Piped output is read by people later (or grep): don't squeeze it to 80 columns.
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(t)


def show(env: Env, obj: Any, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print ``obj`` as JSON (``--json``) or as a table/key-value list for people."""
    plain = to_plain(obj)
    if env.as_json:
        emit_json(plain)
        return
    if isinstance(plain, list):
        cols = list(columns or (plain[0].keys() if plain else []))
        if not plain:
            click.echo(f"no {title or 'entries'}")
            return
        table(None, cols, ([_cell(row.get(c)) for c in cols] for row in plain))
    elif isinstance(plain, dict):
        width = max((len(k) for k in plain), default=0)
        for k, v in plain.items():
            click.echo(f"{k.ljust(width)}  {_cell(v)}")
    else:
        click.echo(plain)


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v)
    return "" if v is None else str(v)


class progress_bar:
    """A rich progress bar on a terminal; nothing when piped or with ``--json``.

    Drawn on stderr, and only when stdout is a terminal too: ``gns get F out | cat`` or a
    script capturing stdout is piped (SPEC 4), whatever stderr is."""

    def __init__(self, env: Env, total: int | None, label: str) -> None:
        self.enabled = not env.as_json and sys.stderr.isatty() and sys.stdout.isatty()
        self.total, self.label = total, label
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=self.total or None)
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
