"""Data commands: put, get, cat, ls, stat, rm, mv."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from federation.cli.output import (
    DURATION,
    Env,
    check_staleness_applies,
    common,
    emit_json,
    progress_bar,
    show,
    to_plain,
    utc_time,
)
from namespace.paths import normalize

if TYPE_CHECKING:
    from federation.client import Client

CONSISTENCY = click.Choice(["owner", "any"])
EPOCH = click.IntRange(1, 2**64 - 1)
"""A volume's epoch travels as a uint64: a larger one is refused here, as a usage error."""


def register(cli: click.Group) -> None:
    for cmd in (put, get, cat, ls, stat, rm, mv):
        cli.add_command(cmd)


def via(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--via``: writes take only this (they always go to the owner)."""
    return click.option("--via", metavar="CLUSTER", help="Enter through this cluster's controller.")(f)


def routing(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--via`` plus the read-only choices: may a replica answer, and how stale."""
    f = via(f)
    f = click.option("--consistency", type=CONSISTENCY, default="owner", show_default=True,
                     help="'any' lets a replica within --max-staleness answer reads.")(f)
    f = click.option("--max-staleness", type=DURATION, default="60s", show_default=True,
                     metavar="DURATION", help="Bound on replica lag for --consistency any "
                     "(30s, 5m, 1h or plain seconds).")(f)
    return f


def _client(env: Env, via: str | None, consistency: str = "owner", max_staleness: float = 60.0) -> Client:
    check_staleness_applies(consistency)
    return env.client(via=via, consistency=consistency, max_staleness=max_staleness, watch=False)


def _local_path_given(path: str, what: str) -> None:
    """An empty local path names no file (``cp '' x`` fails as well); before any call."""
    if not path:
        from namespace.errors import InvalidInput

        raise InvalidInput(f"empty {what} path")


@click.command()
@click.argument("src", metavar="SRC")
@click.argument("path")
@click.option("--epoch", type=EPOCH, default=None,
              help="Refuse the write unless the volume is still at this epoch.")
@via
@common
def put(env: Env, src: str, path: str, epoch: int | None, via: str | None) -> None:
    """Write local file SRC ('-' = stdin) to global PATH, atomically.

    If PATH is an existing directory (a volume root, a directory in a volume), SRC is
    written into it under its own name, as cp does: `gns put day.csv /health/sensors`
    writes /health/sensors/day.csv. A directory that only holds mount points takes no
    files (exit 3); stdin has no name, so give it the file's path (exit 2 otherwise).
    An identity that may write but not read PATH cannot see that it is a directory: end
    it with / (`gns put day.csv /drop/`). Any other PATH is the file to create or
    replace. --json prints the file written."""
    _local_path_given(src, "source")
    with _client(env, via) as c:
        path = c.into_dir(path, None if src == "-" else os.path.basename(os.path.abspath(src)))
        if src == "-":
            info = c.put(sys.stdin.buffer, path, epoch=epoch)
        else:
            size = os.path.getsize(src) if os.path.isfile(src) else None
            with progress_bar(env, size, f"put {path}") as advance:
                info = c.put(src, path, epoch=epoch, progress=advance)
    if env.as_json:
        emit_json(info)


@click.command()
@click.argument("path")
@click.argument("dst", metavar="DST")
@routing
@common
def get(env: Env, path: str, dst: str, via: str | None, consistency: str, max_staleness: float) -> None:
    """Copy global PATH to local DST ('-' = stdout)."""
    _local_path_given(dst, "destination")
    with _client(env, via, consistency, max_staleness) as c:
        if dst == "-":
            c.get(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        info = c.stat(path)
        if info.is_dir:
            from namespace.errors import InvalidInput

            raise InvalidInput(f"{path} is a directory; gns get copies one file")
        with progress_bar(env, info.size, f"get {path}") as advance:
            c.get(path, dst, progress=advance)
    if env.as_json:
        emit_json(info)


@click.command()
@click.argument("path")
@routing
@common
def cat(env: Env, path: str, via: str | None, consistency: str, max_staleness: float) -> None:
    """Print global PATH to stdout."""
    with _client(env, via, consistency, max_staleness) as c:
        c.get(path, sys.stdout.buffer)
        sys.stdout.buffer.flush()


@click.command()
@click.argument("path", default="/")
@routing
@common
def ls(env: Env, path: str, via: str | None, consistency: str, max_staleness: float) -> None:
    """List a directory of the global namespace."""
    with _client(env, via, consistency, max_staleness) as c:
        entries = c.ls(path)
    if env.as_json:
        emit_json(entries)
        return
    for e in entries:
        click.echo(f"{e.type[0]} {e.size:>12} {e.name}{'/' if e.is_dir else ''}")


@click.command()
@click.argument("path")
@routing
@common
def stat(env: Env, path: str, via: str | None, consistency: str, max_staleness: float) -> None:
    """Size, mtime, sha256 and version of global PATH."""
    with _client(env, via, consistency, max_staleness) as c:
        info = to_plain(c.stat(path))
    if not env.as_json:  # people read a time; JSON keeps the number (SPEC 4)
        info["mtime"] = utc_time(info["mtime"])
    show(env, info)


@click.command()
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a directory and everything below.")
@click.option("--epoch", type=EPOCH, default=None,
              help="Refuse unless the volume is still at this epoch.")
@via
@common
def rm(env: Env, path: str, recursive: bool, epoch: int | None, via: str | None) -> None:
    """Remove global PATH (-r for directories)."""
    with _client(env, via) as c:
        version = c.rm(path, recursive, epoch=epoch)
    if env.as_json:
        # The path as the namespace knows it (`//a//b/` -> `/a/b`), not as typed.
        emit_json({"path": normalize(path), "version": version})


@click.command()
@click.argument("src", metavar="SRC")
@click.argument("dst", metavar="DST")
@via
@common
def mv(env: Env, src: str, dst: str, via: str | None) -> None:
    """Rename global SRC to DST (file or directory) atomically, within one volume.

    If DST is an existing directory, SRC moves into it under its own name, as mv does:
    `gns mv /v/a.csv /v/dir` makes /v/dir/a.csv. What that name already holds is
    replaced as rename(2) would (a file by a file, an empty directory by a directory),
    anything else is a conflict (exit 4). A directory never moves into itself (exit 2);
    across volumes is exit 4. --json prints the new path as dst."""
    src = normalize(src)
    with _client(env, via) as c:
        name = src.rpartition("/")[2]
        if name:  # "/" has none; c.mv says what is wrong with moving it
            dst = c.into_dir(dst, name)
        version = c.mv(src, dst)
    if env.as_json:
        emit_json({"src": src, "dst": normalize(dst), "version": version})
