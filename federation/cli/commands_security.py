"""Identities and access control: ``gns certs init/issue/rotate`` and ``gns acl ...`` (SPEC §10)."""
from __future__ import annotations

from pathlib import Path

import click

from federation.cli.output import DURATION, Env, common, emit_json, removed, show


def register(cli: click.Group) -> None:
    cli.add_command(certs)
    cli.add_command(acl)


@click.group()
def certs() -> None:
    """Certificates for mutual TLS: the CA, clusters, users."""


def _written(env: Env, out_dir: str, written: list[Path]) -> None:
    if env.as_json:
        emit_json({"dir": out_dir, "written": [str(p) for p in written]})
    else:
        for p in written:
            click.echo(f"wrote {p}")


@certs.command("init")
@click.option("--dir", "out_dir", required=True, type=click.Path(file_okay=False), help="Where to write.")
@click.option("--cluster", "clusters", multiple=True, metavar="ID", help="A cluster to issue for (repeat).")
@click.option("--host", "hosts", multiple=True, help="Extra SAN host or IP (repeat).")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@common
def certs_init(env: Env, out_dir: str, clusters: tuple[str, ...], hosts: tuple[str, ...], days: int) -> None:
    """Make a CA, per-cluster certificates and the administrator `client`."""
    from federation.certs import init_certs

    written = init_certs(Path(out_dir), clusters, days=days, hosts=("127.0.0.1", "localhost", *hosts))
    _written(env, out_dir, written)


@certs.command("issue")
@click.argument("name")
@click.option("--dir", "out_dir", required=True, type=click.Path(file_okay=False), help="The CA's directory.")
@click.option("--group", "groups", multiple=True, metavar="G", help="A group the user belongs to (repeat).")
@click.option("--ttl", type=DURATION, default="8760h", show_default=True, metavar="DURATION",
              help="How long the certificate is valid.")
@common
def certs_issue(env: Env, name: str, out_dir: str, groups: tuple[str, ...], ttl: float) -> None:
    """Issue a user certificate NAME.crt/NAME.key (identity user:NAME, in group:G...)."""
    from federation.certs import issue_user

    written = issue_user(Path(out_dir), name, groups=groups, ttl_seconds=ttl)
    _written(env, out_dir, written)


@certs.command("rotate")
@click.argument("cluster")
@click.option("--dir", "out_dir", required=True, type=click.Path(file_okay=False), help="The CA's directory.")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@common
def certs_rotate(env: Env, cluster: str, out_dir: str, days: int) -> None:
    """Replace CLUSTER's key and certificate; its controller picks them up without a restart."""
    from federation.certs import rotate_cluster

    written = rotate_cluster(Path(out_dir), cluster, days=days)
    _written(env, out_dir, written)


@click.group()
def acl() -> None:
    """Grants on global paths: read, write, admin for user:, group:, cluster: or *."""


@acl.command("grant")
@click.argument("path")
@click.argument("subject")
@click.argument("perms")
@common
def acl_grant(env: Env, path: str, subject: str, perms: str) -> None:
    """Give SUBJECT the PERMS (comma list of read,write,admin) on PATH and below."""
    from namespace.acl import check_subject, parse_perms
    from namespace.paths import normalize

    normalize(path), check_subject(subject), parse_perms(perms)  # refuse before connecting
    with env.control_client(watch=False) as c:
        show(env, c.acl_grant(path, subject, perms))


@acl.command("revoke")
@click.argument("path")
@click.argument("subject")
@common
def acl_revoke(env: Env, path: str, subject: str) -> None:
    """Remove SUBJECT's grant on exactly PATH."""
    from namespace.acl import check_subject
    from namespace.paths import normalize

    path = normalize(path)
    check_subject(subject)
    with env.control_client(watch=False) as c:
        c.acl_revoke(path, subject)
    removed(env, f"{subject} on {path}", f"revoked {subject} on {path}")


@acl.command("list")
@click.argument("path", required=False)
@common
def acl_list(env: Env, path: str | None) -> None:
    """Grants (on PATH, above it and below it when given)."""
    from namespace.paths import normalize

    if path is not None:
        path = normalize(path)
    with env.control_client(watch=False) as c:
        show(env, c.acl_list(path), columns=["path", "subject", "perms"], title="grants")


@acl.command("check")
@click.argument("path")
@click.option("--as", "subject", required=True, metavar="SUBJECT", help="user:NAME, group:NAME, cluster:ID or *.")
@click.option("--group", "groups", multiple=True, metavar="G", help="Groups SUBJECT belongs to (repeat).")
@common
def acl_check(env: Env, path: str, subject: str, groups: tuple[str, ...]) -> None:
    """What SUBJECT may do on PATH, and the grants that say so."""
    from namespace.acl import ADMIN_SUBJECT, check_principal, check_subject
    from namespace.paths import normalize

    path = normalize(path)
    check_subject(subject)
    for g in groups:
        check_principal("group", g)
    with env.control_client(watch=False) as c:
        report = c.acl_check(path, subject, list(groups))
    if env.as_json:
        emit_json(report)
    else:
        perms = ",".join(report.perms) or "nothing"
        why = ""
        if report.admin_by_default:
            why = (" (the administrator identity)" if subject == ADMIN_SUBJECT
                   else " (a controller of this federation)")
        click.echo(f"{subject} may {perms} on {path}{why}")
