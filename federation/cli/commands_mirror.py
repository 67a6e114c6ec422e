"""``gns mirror``: apply, list, status, sync, verify and remove mirror policies (SPEC §4, §6).

Argument parsing and printing only: each command is one call of a
:class:`federation.client.Client` ``mirror_*`` method.
"""
from __future__ import annotations

from typing import IO, TYPE_CHECKING

import click

from federation.cli.output import Env, common, emit_json, progress_bar, removed, show, table
from namespace.errors import GnsError, InvalidInput, Unavailable

if TYPE_CHECKING:
    from federation.client import FailoverSettings, MirrorStatus

LIST_COLS = ["name", "volume", "mode", "interval", "targets", "failover", "maxLag"]
STATUS_COLS = ["policy", "volume", "target", "state", "version", "lag_versions", "lag_seconds",
               "bytes", "files", "last_error"]


def register(cli: click.Group) -> None:
    cli.add_command(mirror)


@click.group()
def mirror() -> None:
    """Mirror policies: which volume is copied to which clusters and object stores."""


@mirror.command("apply")
@click.option("-f", "--filename", "source", required=True, type=click.File("rb"), metavar="FILE",
              help="Policy document, YAML or JSON ('-' reads stdin).")
@click.option("--dry-run", is_flag=True, help="Validate and show what would be copied; store nothing.")
@common
def mirror_apply(env: Env, source: IO[bytes], dry_run: bool) -> None:
    """Create or update the mirror policy in FILE (refused, with every problem listed, if invalid)."""
    raw = source.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{source.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    with env.control_client(watch=False) as c:
        result = c.mirror_apply(text, dry_run=dry_run)
    if env.as_json:
        emit_json(result)
        return
    targets = ", ".join(result.targets)
    moved = ""
    if result.previous_volume is not None:
        moved = (f"; moved from volume {result.previous_volume}, which it "
                 f"{'would no longer mirror' if dry_run else 'no longer mirrors'}")
    if dry_run:
        click.echo(f"dry run: mirror policy {result.policy} would be {result.change or 'applied'} "
                   f"(volume {result.volume} -> {targets}{moved}); nothing stored")
        if result.plan:
            table("would copy", ["target", "files", "bytes"],
                  ([p.target, p.files, p.bytes] for p in result.plan))
    else:
        click.echo(f"mirror policy {result.policy} {result.action} "
                   f"(volume {result.volume} -> {targets}{moved})")


@mirror.command("list")
@common
def mirror_list(env: Env) -> None:
    """List mirror policies."""
    with env.control_client(watch=False) as c:
        rows = c.mirror_list()
    if env.as_json:
        emit_json(rows)
        return
    show(env, [{**r.to_json(), "failover": _failover(r.failover)} for r in rows], LIST_COLS,
         "mirror policies")


def _failover(f: FailoverSettings) -> str:
    if not f.automatic:
        return "manual"
    text = f"automatic after {f.after}"
    if f.promote_to:
        text += f", promote to {f.promote_to}"
    return text


def _status_table(env: Env, statuses: list[MirrorStatus]) -> None:
    if env.as_json:
        emit_json(statuses)
        return
    if not statuses:
        click.echo("no mirror policies")
        return
    rows = []
    for p in statuses:
        for t in p.targets:
            rows.append([p.policy, p.volume, t.target, t.state, t.version, t.lag_versions,
                         t.lag_seconds, t.bytes, t.files, t.last_error])
    table(None, STATUS_COLS, rows)


@mirror.command("status")
@click.argument("name", required=False)
@common
def mirror_status(env: Env, name: str | None) -> None:
    """Per-target state, mirrored version, lag, bytes and files moved, last error."""
    with env.control_client(watch=False) as c:
        _status_table(env, c.mirror_status(name))


@mirror.command("sync")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until every target holds the current version.")
@common
def mirror_sync(env: Env, name: str, wait: bool) -> None:
    """Start a pass of policy NAME now (any mode); with --wait, until it is done."""
    with env.control_client(watch=False) as c:
        if wait:
            with progress_bar(env, None, f"sync {name}") as progress:
                result = c.mirror_sync(name, wait=True, progress=progress)
        else:
            result = c.mirror_sync(name, wait=False, progress=None)
    if not env.as_json and not wait:
        click.echo(f"sync of {name} requested")
    _status_table(env, result)


@mirror.command("verify")
@click.argument("name")
@click.option("--no-repair", "no_repair", is_flag=True,
              help="Only report differences; do not re-copy what is wrong.")
@click.option("--deep", is_flag=True,
              help="Also re-read every file on every target and hash its bytes, not only "
                   "compare the sha256 its metadata or catalog records (object stores are read "
                   "back here; a cluster target hashes its own disk and sets aside what no "
                   "longer matches, so that it is never served and the repair replaces it).")
@common
def mirror_verify(env: Env, name: str, no_repair: bool, deep: bool) -> None:
    """Compare every target of NAME with the volume by sha256, and repair differences."""
    with env.control_client(watch=False) as c:
        reports = c.mirror_verify(name, repair=not no_repair, deep=deep)
    show(env, reports, title="targets")
    # Like diff or rclone check: the report on stdout, and an exit status a script can test.
    failed = [r.target for r in reports if r.error]
    if failed:
        raise Unavailable(f"mirror verify {name}: could not check {', '.join(failed)}")
    left = [r.target for r in reports if not r.ok and not r.repaired]
    if left:
        raise GnsError(f"mirror verify {name}: {', '.join(left)} differ from the volume (not repaired)")


@mirror.command("remove")
@click.argument("name")
@common
def mirror_remove(env: Env, name: str) -> None:
    """Delete policy NAME and its status (data already on targets stays)."""
    with env.control_client(watch=False) as c:
        c.mirror_remove(name)
    removed(env, name, f"removed mirror policy {name}")
