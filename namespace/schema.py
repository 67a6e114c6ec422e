"""The versioned etcd key schema (drawn in ``namespace.__doc__``): one function per key."""
from __future__ import annotations

from urllib.parse import quote, unquote

ROOT = "/gns/v1/"

CLUSTERS = ROOT + "clusters/"
ALIVE = ROOT + "alive/"
VOLUMES = ROOT + "volumes/"
VOLSTATE = ROOT + "volstate/"
MOUNTS = ROOT + "mounts/"
POLICIES = ROOT + "policies/"
MIRRORS = ROOT + "mirrors/"
LEADER = ROOT + "leader"
DIVERGED = ROOT + "diverged/"


def cluster(cluster_id: str) -> bytes:
    return (CLUSTERS + cluster_id).encode()


def alive(cluster_id: str) -> bytes:
    return (ALIVE + cluster_id).encode()


def volume(name: str) -> bytes:
    return (VOLUMES + name).encode()


def volstate(name: str) -> bytes:
    return (VOLSTATE + name).encode()


def mount(path: str) -> bytes:
    # Percent-encoding every '/' keeps one mount's key from being a prefix range of another's.
    return (MOUNTS + quote(path, safe="")).encode()


def mount_path(key: bytes) -> str:
    return unquote(key.decode()[len(MOUNTS) :])


def policy(name: str) -> bytes:
    return (POLICIES + name).encode()


def mirror_status(policy_name: str, target: str) -> bytes:
    return (MIRRORS + policy_name + "/" + quote(target, safe="")).encode()


def mirror_status_prefix(policy_name: str) -> bytes:
    return (MIRRORS + policy_name + "/").encode()






def diverged(volume_name: str, cluster_id: str) -> bytes:
    return (DIVERGED + volume_name + "/" + cluster_id).encode()
