"""Processes: up, down, controller, certs."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import click

from federation.cli.output import DURATION, Env, common, emit_json


def register(cli: click.Group) -> None:
    cli.add_command(up)
    cli.add_command(down)
    cli.add_command(controller)


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML: clusters, etcd, lease_ttl, tls.")
@click.option("--detach", is_flag=True, help="Return once every cluster is Ready.")
@common
def up(env: Env, config_file: str | None, detach: bool) -> None:
    """Start etcd and one controller per cluster on this machine (GNS_HOME).

    On a federation that is already running, start again only what of it has stopped."""
    from federation.local.runner import LocalFederation, load_config

    config = load_config(config_file)
    fed = LocalFederation()
    state = fed.up(config, etcd_override=env.etcd)
    restarted = state.get("restarted")
    if restarted is not None:  # it was running already
        click.echo(f"federation already running (GNS_HOME={fed.home}); "
                   + (f"restarted {', '.join(restarted)}" if restarted else "nothing to restart"), err=True)
    _print_status(env, state["etcd"])
    if detach:
        return
    click.echo(f"federation up (GNS_HOME={fed.home}); Ctrl-C stops it", err=True)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"] and fed.running():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    fed.down(quiet=True)
    click.echo("federation stopped", err=True)


def _print_status(env: Env, etcd: str) -> None:
    from federation.cli.commands_namespace import status

    ctx = click.get_current_context()
    ctx.invoke(status, etcd=etcd, as_json=env.as_json, tls_dir=env.tls_dir)


@click.command()
@common
def down(env: Env) -> None:
    """Stop what `gns up` started; data stays under GNS_HOME."""
    from federation.local.runner import LocalFederation

    stopped = LocalFederation().down()
    if env.as_json:
        emit_json({"stopped": stopped})
    else:
        click.echo(f"stopped {', '.join(stopped) if stopped else 'nothing (already down)'}")


@click.command()
@click.option("--cluster", "cluster_id", required=True, metavar="ID")
@click.option("--listen", required=True, metavar="HOST:PORT")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--provider", default="onprem", show_default=True)
@click.option("--region", default="")
@click.option("--label", "labels", multiple=True, metavar="K=V")
@click.option("--lease-ttl", type=DURATION, default="10s", show_default=True, metavar="DURATION",
              help="How long the cluster stays Ready after its controller stops renewing "
              "(whole seconds: 10s, 1m or 10).")
@click.option("--advertise", default="", metavar="HOST:PORT", help="Endpoint others dial.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None)
@click.option("--tunnel", default="auto", show_default=True, metavar="HOST:PORT|auto|off",
              help="Where clients entering here (--via) open bulk tunnels to owners; auto: the "
              "listen host on a free port; off: forwarded streams are relayed as gRPC messages.")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --listen without TLS.")
@click.option("--audit-log", "audit_log", type=click.Path(dir_okay=False), default=None,
              help="Access-control audit log, JSON lines (default: DATA_DIR/audit.log).")
@click.option("--kubernetes", is_flag=True, help="Reconcile MirrorPolicy and GlobalMount resources "
              "(kubeconfig in-cluster or from KUBECONFIG).")
@common
def controller(env: Env, cluster_id: str, listen: str, data_dir: str, provider: str, region: str,
               labels: tuple[str, ...], lease_ttl: float, advertise: str, metrics_port: int | None,
               insecure: bool, kubernetes: bool = False, audit_log: str | None = None,
               tunnel: str = "auto") -> None:
    """Run one cluster's federation controller (what a Kubernetes Deployment runs)."""
    from federation.client import find_etcd
    from federation.controller.config import ControllerConfig, parse_labels
    from federation.controller.process import run_controller
    from namespace.etcd import EtcdConfig

    if lease_ttl != int(lease_ttl):
        from namespace.errors import InvalidInput

        raise InvalidInput(f"invalid --lease-ttl {lease_ttl:g}s: an etcd lease lasts whole seconds")
    tls_dir = Path(env.tls_dir) if env.tls_dir else None
    if tls_dir is not None:
        from federation.tls import check_tls_dir

        check_tls_dir(tls_dir, cluster_id)
    config = ControllerConfig(
        cluster=cluster_id, listen=listen, data_dir=Path(data_dir),
        etcd=EtcdConfig.parse(find_etcd(env.etcd, None)), provider=provider, region=region,
        labels=parse_labels(labels), lease_ttl=int(lease_ttl), advertise=advertise,
        metrics_port=metrics_port, tls_dir=tls_dir, insecure=insecure, kubernetes=kubernetes,
        audit_log=Path(audit_log) if audit_log else None, tunnel=tunnel,
    )
    if kubernetes:  # a missing or broken kubeconfig is refused before anything starts
        from federation.kube.api import KubeConfig

        KubeConfig.load()
    run_controller(config)
