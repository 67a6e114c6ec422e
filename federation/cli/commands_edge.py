"""``gns edge``: join tokens, running an edge site, and the list of sites (SPEC §8)."""
from __future__ import annotations

import os
import sys

import click

from federation.cli.output import DURATION, BoundedDuration, Env, common, emit_json, table

SITE_COLS = ["site", "hub", "state", "connected_since", "backlog"]
TOKEN_TTL = BoundedDuration(30 * 86400.0, "720h (30 days)")
"""A join token lives at most 30 days (``namespace.edge.MAX_TOKEN_TTL``, not imported here:
it would load the etcd client for every edge command's start)."""


def register(cli: click.Group) -> None:
    cli.add_command(edge)


@click.group()
def edge() -> None:
    """Edge sites: join tokens, the edge controller, the list of sites."""


@edge.group("token")
def token() -> None:
    """Single-use join tokens."""


@token.command("create")
@click.option("--site", required=True, metavar="NAME", help="The site the token is for (DNS-1123 label).")
@click.option("--ttl", type=TOKEN_TTL, default="1h", show_default=True, metavar="DURATION",
              help="How long the token stays valid (at most 720h).")
@click.option("--hub", metavar="CLUSTER", help="The hub cluster (default: the leader, else the first Ready).")
@common
def token_create(env: Env, site: str, ttl: float, hub: str | None) -> None:
    """Print a single-use, site-bound, expiring token that pins this federation's CA (JSON)."""
    with env.control_client(watch=False) as c:
        emit_json(c.edge_token_create(site, ttl=ttl, hub=hub))


@edge.command("join")
@click.option("--hub", "hubs", required=True, metavar="HOST:PORT[,HOST:PORT...]", help="Hub controllers, tried in order.")
@click.option("--token", metavar="T", help="Join token (only needed until the site has its identity).")
@click.option("--site", required=True, metavar="NAME", help="This site's cluster id.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False), help="Identity, volumes, journal.")
@click.option("--listen", default="127.0.0.1:7090", show_default=True, metavar="HOST:PORT",
              help="Where apps at the site reach it (--controller).")
@click.option("--heartbeat", type=DURATION, default="10s", show_default=True, help="Heartbeat period; Down after three missed.")
@click.option("--tls-dir", metavar="DIR", help="Mutual TLS to the hubs (env GNS_TLS_DIR); its CA must be the one the token pins.")
@click.option("--identity", default="client", show_default=True, metavar="NAME", help="Certificate of --tls-dir to use.")
def join(hubs: str, token: str | None, site: str, data_dir: str, listen: str, heartbeat: float,
         tls_dir: str | None, identity: str) -> None:
    """Run this edge site's controller in pull mode (dials out to a hub only)."""
    # The edge controller is its own layer (edge/, above federation): run it as its own
    # program, in this process. The token travels in the environment, not in argv (ps).
    env = dict(os.environ)
    if token is not None:
        env["GNS_EDGE_TOKEN"] = token
    argv = [sys.executable, "-m", "edge", "--hub", hubs, "--site", site, "--data-dir", data_dir,
            "--listen", listen, "--heartbeat", repr(heartbeat), "--identity", identity]
    tls_dir = tls_dir or os.environ.get("GNS_TLS_DIR")
    if tls_dir:
        argv += ["--tls-dir", tls_dir]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


@edge.command("list")
@common
def edge_list(env: Env) -> None:
    """Sites with their hub, state, connected-since and backlog."""
    with env.control_client(watch=False) as c:
        sites = c.edge_sites()
    if env.as_json:
        emit_json(sites)
        return
    table("edge sites", SITE_COLS, [
        [s.site, s.hub, s.state, _when(s.connected_since),
         f"{s.backlog.versions} versions, {s.backlog.bytes} bytes"
         + (f" (as of {_when(s.backlog_as_of)})" if s.backlog_as_of else "")] for s in sites])


def _when(epoch: float | None) -> str:
    """An epoch time for people (the JSON keeps the number): local time, to the second."""
    if not epoch:
        return ""
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
