"""A deadline on every call the driver makes to a volume's owner.

An owner that is frozen (SIGSTOP, a hung host) is not Down until its lease runs out, and
until gRPC's keepalive gives up the client's calls to it wait: a call that checks a volume
(NodePublishVolume, ValidateVolumeCapabilities) took over a minute to fail, holding one of
the server's few threads and the caller's. CSI callers retry, so a prompt UNAVAILABLE is
what they need. A call runs on a thread of its own and is answered UNAVAILABLE after
:data:`OWNER_DEADLINE` seconds, or as soon as the owner shows Down; the abandoned call ends
on its own (gRPC's keepalive).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from federation.client import Client
from namespace.errors import InvalidInput, NotFound, Unavailable

OWNER_DEADLINE = 20.0
"""Seconds a call to an owner may take (kubelet and the external-provisioner wait longer)."""
_POLL = 0.25

T = TypeVar("T")


def within(seconds: float, what: str, call: Callable[[], T],
           give_up: Callable[[], str | None] | None = None) -> T:
    """``call()``, or Unavailable naming ``what`` after ``seconds``, or as soon as
    ``give_up`` returns a reason."""
    result: list[T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread below
            error.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="csi-owner-call", daemon=True).start()
    end = time.monotonic() + seconds
    while not done.wait(_POLL):
        reason = give_up() if give_up is not None else None
        if reason is not None:
            raise Unavailable(f"{what}: {reason}")
        if time.monotonic() >= end:
            raise Unavailable(f"{what}: no answer within {seconds:g} s")
    if error:
        raise error[0]
    return result[0]


def owner_down(client: Client, path: str) -> Callable[[], str | None]:
    """A ``give_up`` for calls about global ``path``: the reason once its volume's owner is
    Down (None while it is not, or when no volume holds the path)."""

    def reason() -> str | None:
        try:
            view = client.view()
            volume = client.volume_of(path)
        except (NotFound, Unavailable):  # no volume there, or no view (--controller)
            return None
        found = view.volumes.get(volume)
        if found is None or found.owner in view.alive:
            return None
        return f"cluster {found.owner}, the owner of volume {volume}, is Down"

    return reason


def at_owner(client: Client, path: str, what: str, call: Callable[[], T]) -> T:
    """``call()`` (which reaches the owner of the volume at global ``path``), bounded by
    :data:`OWNER_DEADLINE` and by the owner being Down."""
    return within(OWNER_DEADLINE, what, call, owner_down(client, path))


def check_directory(client: Client, path: str) -> None:
    """That volume id ``path`` names a directory of the global namespace (a mount, a
    directory in one, or one above mounts such as ``/k8s``), asked of its owner within the
    deadline: NOT_FOUND, or INVALID_ARGUMENT for a file, naming what is wrong."""
    try:
        info = at_owner(client, path, f"checking volume {path}", lambda: client.stat(path))
    except NotFound:
        raise NotFound(f"volume {path} not found: no such directory in the global "
                       "namespace") from None
    if not info.is_dir:
        raise InvalidInput(f"volume_id {path} is a file; a volume is a directory")
