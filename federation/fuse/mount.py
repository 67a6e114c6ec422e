"""Mounting and unmounting ``gns fuse``: stale mounts, signals, ``--daemon``.

A mount left behind by a crashed process ("Transport endpoint is not connected") is
cleared before mounting again (:func:`federation.fuse.mountinfo.clear_stale`). SIGTERM,
SIGINT and SIGHUP end the FUSE loop; the mount is then unmounted, staged files that were
never closed are dropped (never committed), and the staging directory is removed. With
``--daemon`` the command returns once the file system is mounted; the mount lives on in a
detached child.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from federation.api.errors import error_of_kind, kind_of
from federation.fuse.cache import DEFAULT_MAX_ENTRIES
from federation.fuse.mountinfo import clear_stale, device_of
from namespace.errors import GnsError, InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from federation.client import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MountConfig:
    """What ``gns fuse`` was asked to do (validated before anything is mounted)."""

    mountpoint: Path
    """Existing empty directory to mount on."""
    root: str = "/"
    """Global path shown at the mount point (``--root``)."""
    read_only: bool = False
    """Refuse every change with EROFS (``--read-only``)."""
    cache_dir: Path | None = None
    """Where staged writes live (``--cache-dir``); default ~/.cache/gns/fuse."""
    max_staging_bytes: int = 0
    """Bound on staged bytes (0 = the disk is the bound)."""
    timeout: float = 30.0
    """Seconds any one call may take before the operation fails with EIO."""
    cache_entries: int = DEFAULT_MAX_ENTRIES
    """Bound on the metadata cache (``--cache-entries``): attributes plus listed names."""
    read_ahead_kib: int = 1024
    """What the kernel reads ahead of a sequential reader (see :func:`tune_read_ahead`)."""
    attr_timeout: float = 1.0
    """Seconds the kernel may cache attributes and entries without asking."""


def run(config: MountConfig, client: Client, ready: Callable[[], None] | None = None) -> None:
    """Mount, serve until unmounted or signalled, then unmount cleanly (blocking)."""
    try:
        import pyfuse3
        import trio
    except ImportError as exc:
        raise Unavailable(
            f"gns fuse needs pyfuse3 ({exc.name} is not installed): apt-get install fuse3 "
            "libfuse3-dev pkg-config && pip install 'gns[fuse]'"
        ) from None

    from federation.fuse.cache import MetaCache
    from federation.fuse.operations import GnsOperations
    from federation.fuse.staging import Staging, default_cache_dir
    from federation.fuse.watch import Watcher

    if not os.path.exists("/dev/fuse"):
        raise Unavailable("/dev/fuse is missing: FUSE is not available on this machine")
    clear_stale(config.mountpoint)
    staging = Staging(config.cache_dir or default_cache_dir(), config.max_staging_bytes)
    staging.open()
    ops = GnsOperations(client, config.root, staging, read_only=config.read_only,
                        timeout=config.timeout, attr_timeout=config.attr_timeout,
                        cache=MetaCache(max_entries=config.cache_entries))
    try:
        if client.via is not None:
            # Every call enters through --via: a cluster that does not exist would mount a
            # file system where every access fails with ENOENT. Refuse as `gns cat` does.
            client.cluster(client.via)
        top = ops.remote_attrs("")
        if top is None:
            raise NotFound(f"{config.root} is not in the global namespace")
        if top.kind != "dir":
            raise InvalidInput(f"--root {config.root} is a file, not a directory")
    except BaseException:
        staging.close()
        raise
    options = set(pyfuse3.default_options)
    options |= {"fsname=gns", "subtype=gns", "noatime"}
    if os.getuid() == 0:
        options.add("allow_other")  # pods and other users see it (the CSI case)
    if config.read_only:
        options.add("ro")
    pyfuse3.init(ops, str(config.mountpoint), options)
    abandon = _abandon_on_cancel()
    watcher = Watcher(ops, client)
    ops.watcher = watcher
    watcher.follow_mount_table()
    log.info("gns fuse: %s mounted at %s", config.root, config.mountpoint)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                    async for _sig in sigs:
                        pyfuse3.terminate()
                        return

            async def read_ahead_once_served() -> None:
                # The kernel applies the INIT reply's read-ahead after mounting, over any set
                # before; a stat of the mount point returns only once INIT is done.
                try:
                    await trio.to_thread.run_sync(os.stat, config.mountpoint, **abandon)
                except OSError:
                    return
                tune_read_ahead(config.mountpoint, config.read_ahead_kib)

            async def expire_kept_staging() -> None:
                while True:
                    await trio.sleep(staging.keep_idle / 2)
                    staging.sweep()

            nursery.start_soon(on_signal)
            nursery.start_soon(read_ahead_once_served)
            nursery.start_soon(expire_kept_staging)
            if ready is not None:
                ready()
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    try:
        trio.run(serve)
    finally:
        watcher.stop()
        ops.close()
        pyfuse3.close(unmount=True)
        staging.close()
        log.info("gns fuse: %s unmounted", config.mountpoint)


def _abandon_on_cancel() -> dict[str, bool]:
    """trio's keyword for "a cancelled thread call returns at once" (renamed in trio 0.23)."""
    import inspect

    import trio

    params = inspect.signature(trio.to_thread.run_sync).parameters
    return {"abandon_on_cancel": True} if "abandon_on_cancel" in params else {"cancellable": True}


def tune_read_ahead(mountpoint: Path, kib: int) -> bool:
    """Ask the kernel to read ahead ``kib`` on this mount (its BDI's ``read_ahead_kb``); whether
    it took. Linux gives a FUSE mount 128 KiB and lets the file system only lower it; so a
    sequential read came in 128 KiB requests, each a trip through this process. At 1 MiB,
    ``bench.posix``'s sequential read went from 456 to 592 MiB/s (medians of six alternated
    pairs, faster in each; 2 MiB was slower again in a separate run). Only root may write
    it: an unprivileged mount keeps the kernel's default."""
    dev = device_of(mountpoint)
    if dev is None:
        return False
    try:
        Path(f"/sys/class/bdi/{dev}/read_ahead_kb").write_text(f"{kib}\n")
    except OSError as exc:
        log.debug("gns fuse: read-ahead left at the kernel's default (%s)", exc)
        return False
    return True


def daemonize(child: Callable[[Callable[[], None]], None], log_file: Path) -> None:
    """Run ``child(ready)`` in a detached process; return once it called ``ready()``, or
    raise its error (with its exit code) if it failed first. Fork happens before any
    thread or gRPC channel exists in this process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        chunks = []
        while data := os.read(r, 4096):
            chunks.append(data)
        os.close(r)
        msg = b"".join(chunks).decode(errors="replace")
        if msg.startswith("ok"):
            return
        exit_code, _, rest = msg.partition("\t")
        if not exit_code:
            os.waitpid(pid, 0)
            raise GnsError(f"gns fuse exited before mounting (see {log_file})")
        # The child's error as the parent raises it: the CLI picks the exit code from the
        # error's kind, so the kind must come back, not only the code.
        kind, _, text = rest.partition("\t")
        raise error_of_kind(kind, text)
    # The child: own session, no terminal, logs to a file.
    try:
        os.close(r)
        os.setsid()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        def ready() -> None:
            os.write(w, b"ok")
            os.close(w)

        child(ready)
        code = 0
    except GnsError as exc:
        try:
            os.write(w, f"{exc.exit_code}\t{kind_of(exc).name}\t{exc}".encode())
        except OSError:
            log.error("gns fuse failed: %s", exc)
        code = exc.exit_code
    except BaseException:
        log.exception("gns fuse failed")
        code = 1
    os._exit(code)
