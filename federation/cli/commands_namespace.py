"""Registry, volumes, mounts, resolve and status."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from federation.cli.output import Env, common, emit_json, removed, show, table, to_plain
from namespace.paths import normalize

if TYPE_CHECKING:
    from federation.client import Divergence

CLUSTER_COLS = ["id", "provider", "region", "state", "endpoint", "labels"]
VOLUME_COLS = ["name", "owner", "epoch", "version", "state"]
MOUNT_COLS = ["path", "volume", "subpath"]


def register(cli: click.Group) -> None:
    cli.add_command(cluster)
    cli.add_command(volume)
    cli.add_command(mount)
    cli.add_command(resolve)
    cli.add_command(status)


@click.group()
def cluster() -> None:
    """The cluster registry."""


@cluster.command("list")
@common
def cluster_list(env: Env) -> None:
    """List clusters with their state (Ready while the controller's lease lives)."""
    with env.control_client(watch=False) as c:
        show(env, c.clusters(), CLUSTER_COLS, "clusters")


@cluster.command("show")
@click.argument("cluster_id", metavar="ID")
@common
def cluster_show(env: Env, cluster_id: str) -> None:
    """Show one cluster."""
    with env.control_client(watch=False) as c:
        show(env, c.cluster(cluster_id))


@cluster.command("remove")
@click.argument("cluster_id", metavar="ID")
@common
def cluster_remove(env: Env, cluster_id: str) -> None:
    """Remove a cluster from the registry (refused while it owns volumes)."""
    with env.control_client(watch=False) as c:
        c.remove_cluster(cluster_id)
    removed(env, cluster_id, f"removed cluster {cluster_id}")


@click.group()
def volume() -> None:
    """Volumes: named trees of files, each owned by one cluster."""


@volume.command("create")
@click.argument("name")
@click.option("--cluster", "cluster_id", required=True, metavar="ID", help="Owning cluster.")
@click.option("--label", "labels", multiple=True, metavar="K=V",
              help="A label kept with the volume (repeatable; set once, at creation).")
@common
def volume_create(env: Env, name: str, cluster_id: str, labels: tuple[str, ...]) -> None:
    """Create volume NAME owned by --cluster."""
    from federation.controller.config import parse_labels
    from namespace.models import check_labels

    wanted = check_labels(parse_labels(labels))  # before any connection: bad input is exit 2
    with env.control_client(watch=False) as c:
        show(env, c.create_volume(name, cluster_id, wanted))


@volume.command("list")
@common
def volume_list(env: Env) -> None:
    """List volumes with owner, epoch and version."""
    with env.control_client(watch=False) as c:
        show(env, c.volumes(), VOLUME_COLS, "volumes")


@volume.command("show")
@click.argument("name")
@common
def volume_show(env: Env, name: str) -> None:
    """Show one volume."""
    with env.control_client(watch=False) as c:
        show(env, c.volume(name))


@volume.command("promote")
@click.argument("name")
@click.option("--to", "to", required=True, metavar="TARGET", help="Cluster id, or an object-store target URI of the volume's policy.")
@click.option("--force", is_flag=True, help="Hand over from a Ready owner (drain, final sync, switch).")
@common
def volume_promote(env: Env, name: str, to: str, force: bool) -> None:
    """Manual failover: make TARGET own volume NAME (epoch + 1)."""
    with env.control_client(watch=False) as c:
        show(env, c.promote(name, to, force=force))


@click.group()
def mount() -> None:
    """The mount table: global path prefixes to volume[:subpath]."""


@mount.command("add")
@click.argument("path")
@click.argument("target", metavar="VOLUME[:SUBPATH]")
@common
def mount_add(env: Env, path: str, target: str) -> None:
    """Mount VOLUME[:SUBPATH] at global PATH."""
    with env.control_client(watch=False) as c:
        show(env, c.add_mount(path, target))


@mount.command("list")
@common
def mount_list(env: Env) -> None:
    """List mounts."""
    with env.control_client(watch=False) as c:
        show(env, c.mounts(), MOUNT_COLS, "mounts")


@mount.command("remove")
@click.argument("path")
@common
def mount_remove(env: Env, path: str) -> None:
    """Remove the mount at PATH."""
    with env.control_client(watch=False) as c:
        c.remove_mount(path)
    # Report the mount table's own form of the path (`//data/` -> `/data`), not as typed.
    path = normalize(path)
    removed(env, path, f"unmounted {path}")


@click.command()
@click.argument("path")
@common
def resolve(env: Env, path: str) -> None:
    """Show which volume, owner and replicas serve global PATH (JSON)."""
    with env.control_client(watch=False) as c:
        emit_json(c.resolve(path))


@click.command()
@common
def status(env: Env) -> None:
    """Clusters, volumes, mounts and mirrors with health and lag."""
    with env.control_client(watch=False) as c:
        st = c.status()
    if env.as_json:
        emit_json(st)
        return
    table("clusters", CLUSTER_COLS, ([_s(getattr(x, k)) for k in CLUSTER_COLS] for x in st.clusters))
    table("volumes", VOLUME_COLS + ["diverged"],
          ([_s(getattr(x, k)) for k in VOLUME_COLS] + [_diverged(x.diverged)] for x in st.volumes))
    table("mounts", MOUNT_COLS, ([_s(getattr(x, k)) for k in MOUNT_COLS] for x in st.mounts))
    rows: list[list[Any]] = []
    for m in st.mirrors:
        for t in m.targets:
            rows.append([m.policy, m.volume, t.target, t.state, t.version,
                         t.lag_versions, t.lag_seconds, t.last_error or ""])
    table("mirrors", ["policy", "volume", "target", "state", "version", "lag_versions",
                      "lag_seconds", "last_error"], rows)


def _diverged(records: list[Divergence]) -> str:
    return "; ".join(f"{r.cluster} (epoch {r.epoch}): {len(r.paths)} path(s) kept" for r in records)


def _s(v: Any) -> str:
    v = to_plain(v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return "" if v is None else str(v)
