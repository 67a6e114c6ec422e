"""Kubernetes: ``gns csi`` (the CSI driver ``csi.gns.io``, SPEC §9)."""
from __future__ import annotations

from pathlib import Path

import click

from federation.cli.output import Env, common


def register(cli: click.Group) -> None:
    cli.add_command(csi)


@click.command()
@click.option("--endpoint", required=True, metavar="unix://PATH",
              help="The Unix socket kubelet and the CSI sidecars dial.")
@click.option("--node-id", required=True, metavar="ID", help="This node's name (NodeGetInfo).")
@click.option("--cluster", "cluster_id", metavar="ID",
              help="This node's gns cluster: the default owner of new volumes and the "
                   "topology.gns.io/cluster topology.")
@click.option("--state-dir", type=click.Path(file_okay=False), default="/var/lib/gns-csi",
              show_default=True, help="Where publications are recorded across restarts.")
@common
def csi(env: Env, endpoint: str, node_id: str, cluster_id: str | None, state_dir: str) -> None:
    """Serve the CSI Identity, Controller and Node services on a Unix socket."""
    from federation.csi.server import CsiConfig, run_csi

    run_csi(CsiConfig(endpoint=endpoint, node_id=node_id, cluster=cluster_id, etcd=env.etcd,
                      tls_dir=env.tls_dir, controller=env.controller, identity=env.identity,
                      state_dir=Path(state_dir)))
