"""``gns fuse MOUNTPOINT``: mount the global namespace (SPEC §12); a thin layer over
:mod:`federation.fuse.mount` and :class:`federation.client.Client`."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click

from federation.cli.output import DURATION, Env, check_staleness_applies, common
from federation.fuse.cache import DEFAULT_MAX_ENTRIES

CONSISTENCY = click.Choice(["owner", "any"])


def register(cli: click.Group) -> None:
    cli.add_command(fuse)


@click.command()
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option("--root", "root", default="/", show_default=True, metavar="PATH",
              help="Mount only the subtree at this global path.")
@click.option("--read-only", is_flag=True, help="Refuse every change (EROFS).")
@click.option("--via", metavar="CLUSTER", help="Enter through this cluster's controller.")
@click.option("--consistency", type=CONSISTENCY, default="owner", show_default=True,
              help="'any' lets a replica within --max-staleness answer reads.")
@click.option("--max-staleness", type=DURATION, default="60s", show_default=True,
              metavar="DURATION", help="Bound on replica lag for --consistency any.")
@click.option("--daemon", is_flag=True, help="Return once mounted; serve in the background.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where writes are staged until close (default ~/.cache/gns/fuse).")
@click.option("--timeout", type=DURATION, default="30s", show_default=True, metavar="DURATION",
              help="Longest any one call may take before the operation fails with EIO.")
@click.option("--cache-entries", type=click.IntRange(min=1), default=DEFAULT_MAX_ENTRIES,
              show_default=True, metavar="N",
              help="Bound on cached attributes and listed names (about 300 bytes each).")
@click.option("--allow-non-empty", is_flag=True,
              help="Mount over a directory that holds files (hidden while mounted).")
@common
def fuse(env: Env, mountpoint: Path, root: str, read_only: bool, via: str | None,
         consistency: str, max_staleness: float, daemon: bool, cache_dir: Path | None,
         timeout: float, cache_entries: int, allow_non_empty: bool) -> None:
    """Mount the global namespace (or --root PATH) at MOUNTPOINT through FUSE."""
    from federation.client.discovery import find_tls_dir
    from federation.fuse.mount import MountConfig, daemonize, run
    from federation.fuse.mountinfo import clear_stale
    from federation.fuse.staging import default_cache_dir
    from federation.tls import check_tls_dir
    from namespace.errors import InvalidInput
    from namespace.paths import check_name, normalize

    check_staleness_applies(consistency)
    root = normalize(root)
    if via is not None:
        check_name("cluster", via)
    if timeout <= 0:
        raise InvalidInput("--timeout must be positive")
    tls_dir = find_tls_dir(env.tls_dir, None)
    if tls_dir is not None:
        # As every other command refuses it (exit 2, the file named), and not as a mount
        # whose every call then fails with EINVAL: a missing or expired identity.
        check_tls_dir(tls_dir, env.identity or "client")
    mountpoint = mountpoint.absolute()
    clear_stale(mountpoint)  # bad mount points fail here, before anything starts
    if not allow_non_empty:
        with os.scandir(mountpoint) as entries:
            if next(entries, None) is not None:  # as rclone and s3fs refuse: files would hide
                raise InvalidInput(f"mount point {mountpoint} is not empty (its files would be "
                                   "hidden while mounted; --allow-non-empty mounts over them)")
    staging = cache_dir.absolute() if cache_dir else default_cache_dir()
    try:
        staging.mkdir(parents=True, exist_ok=True)
        if not os.access(staging, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        raise InvalidInput(f"--cache-dir {staging}: {exc.strerror}") from None
    config = MountConfig(mountpoint=mountpoint, root=root, read_only=read_only,
                         cache_dir=staging, timeout=timeout,
                         cache_entries=cache_entries)

    def serve(ready: Callable[[], None] | None = None) -> None:
        with env.client(via=via, consistency=consistency, max_staleness=max_staleness,
                        put_timeout=timeout) as c:  # a close fails (EIO), never hangs (§12)
            run(config, c, ready)

    if daemon:
        log_file = staging / f"gns-fuse-{os.getpid()}.log"
        daemonize(serve, log_file)
        click.echo(f"mounted {root} at {mountpoint}")
        return
    serve()
