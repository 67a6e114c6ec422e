"""``gns``: the root command, its groups, and the one mapping of errors to exit codes."""
from __future__ import annotations

import os

# gRPC's C core logs handshake failures to stderr; the CLI reports errors in one line itself.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import contextlib
import errno
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from federation.cli.stdio import (
    StdinClosed,
    StdoutClosed,
    plug_closed_descriptors,
    standard_streams,
)

EXIT_USAGE = 2

COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "commands_run": ("up", "down", "controller"),
    "commands_namespace": ("cluster", "volume", "mount", "resolve", "status"),
    "commands_data": ("put", "get", "cat", "ls", "stat", "rm", "mv"),
    "commands_kube": ("csi",),
    "commands_fuse": ("fuse",),
    "commands_edge": ("edge",),
    "commands_security": ("certs", "acl"),
    "commands_mirror": ("mirror",),
}
"""Each ``federation.cli`` module and the top-level commands its ``register`` adds.

A hint only: a name missing here is still found (every module is then loaded), so a new
command works before this table learns of it; tests/unit/test_cli_lazy.py keeps it exact."""


class LazyGroup(click.Group):
    """The root group: a command's module is imported when that command is asked for.

    ``gns stat`` then loads ``commands_data`` alone, not the other seven modules; listings
    (``--help``, completion) load them all, so what they print is unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: set[str] = set()

    def _load(self, module: str) -> None:
        if module in self._loaded:
            return
        self._loaded.add(module)
        try:
            mod = importlib.import_module(f"federation.cli.{module}")
        except ImportError:  # pragma: no cover - mirroring commands arrive with the mirroring package
            if module != "commands_mirror":
                raise
            return
        mod.register(self)

    def _load_all(self) -> None:
        for module in COMMAND_MODULES:
            self._load(module)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            holders = [m for m, names in COMMAND_MODULES.items() if cmd_name in names]
            for module in holders:
                self._load(module)
            if cmd_name not in self.commands:
                self._load_all()
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # click's main would first print an empty line (to end a prompt's): gns prints
            # its one error line only (SPEC §4); a progress bar ends its own line.
            raise click.Abort() from exc


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--etcd", metavar="URL[,URL...]", help="etcd endpoints (env GNS_ETCD).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--tls-dir", metavar="DIR", help="Client TLS certificates (env GNS_TLS_DIR).")
@click.option("--controller", metavar="HOST:PORT", help="Every command via this controller, no etcd (env GNS_CONTROLLER).")
@click.option("--identity", metavar="NAME", help="Certificate of --tls-dir to use (env GNS_IDENTITY).")
@click.version_option("0.1.0", prog_name="gns")
@click.pass_context
def cli(ctx: click.Context, etcd: str | None, as_json: bool, tls_dir: str | None,
        controller: str | None, identity: str | None) -> None:
    """gns: a global namespace over federated clusters."""
    ctx.obj = {"etcd": etcd, "as_json": as_json, "tls_dir": tls_dir,
               "controller": controller, "identity": identity}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so that the same clean-ups run
    (a download's partial file is removed, an upload cancelled) instead of the process
    dying in the middle of them; gns then exits 143 (128 + SIGTERM)."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while a command runs. A parent that set it to be
    ignored is obeyed; commands that stop on SIGTERM in their own way (``up``,
    ``controller``, ``fuse``, ``csi``) install their handlers over this one."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (and gets signals)
        return

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated()

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _aborted(exc: BaseException) -> int:
    """Ctrl-C (130) or SIGTERM (143): click turns both into ``Abort``, the interrupt its
    cause; one raised outside click's main arrives as it is."""
    if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
        return _fail("aborted (SIGTERM)", 128 + signal.SIGTERM)
    return _fail("aborted", 130)


def _fail(message: str, code: int) -> int:
    # One line, always: collapse whatever the error carried.
    line = " ".join(str(message).split())
    try:
        sys.stderr.write(f"gns: error: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr is closed or read-only (`2>&-`): the exit code still tells
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (what tests call)."""
    logging.basicConfig(
        level=os.environ.get("GNS_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with standard_streams(), _sigterm_interrupts():
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        result: Any = cli.main(args=argv, prog_name="gns", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
        return EXIT_USAGE
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        return _fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.Abort, Terminated) as exc:
        return _aborted(exc)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except StdinClosed as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StdoutClosed as exc:
        # as coreutils say it (`ls >&-`: "write error: Bad file descriptor", exit 1)
        return _fail(f"write error: {exc.strerror} (stdout is closed)", 1)
    except BrokenPipeError:
        # `gns cat big | head`: the reader left; not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1
    except Exception as exc:
        # Imported only on the way out: they pull in grpc, which `--help` and usage errors
        # never need (neither error tree derives from BrokenPipeError, so the order holds).
        from cloud_adapters.errors import ObjectStoreError
        from federation.api.errors import exit_code_for
        from namespace.errors import GnsError

        if isinstance(exc, (GnsError, ObjectStoreError)):
            return _fail(str(exc), exit_code_for(exc))
        if os.environ.get("GNS_DEBUG"):
            raise
        if isinstance(exc, OSError) and exc.strerror:
            return _fail(_local_error(exc), 1)
        return _fail(f"{type(exc).__name__}: {exc}", 1)


def _local_error(exc: OSError) -> str:
    """A local file's or stream's error as coreutils say it: ``PATH: reason``, and for a
    stream with no name (stdout to a full disk, ``> /dev/full``) ``write error: reason``."""
    if exc.filename is not None:
        return f"{os.fsdecode(exc.filename)}: {exc.strerror}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"write error: {exc.strerror}"
    return str(exc.strerror)


def command_of(argv: list[str]) -> str | None:
    """The top-level command ``argv`` runs (None for none: ``gns --help``), found as click
    finds it, past the root's options and their values, without parsing the rest."""
    takes_value = {opt for param in cli.params if isinstance(param, click.Option) and not param.is_flag
                   for opt in param.opts}
    args = iter(argv)
    for arg in args:
        if arg in takes_value:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def main() -> None:
    """The ``gns`` process (the console script, and ``python -m federation.cli.main``, which
    starts controllers): glibc tuned for what it runs first, unlike :func:`run`, which tests
    call inside their own process."""
    from federation.malloc_tuning import tune_for_command

    plug_closed_descriptors()
    tune_for_command(command_of(sys.argv[1:]))
    sys.exit(run())


if __name__ == "__main__":
    main()
