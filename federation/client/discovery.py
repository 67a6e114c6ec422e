"""Where a client finds its federation: etcd endpoints and TLS material (SPEC §4).

An explicit argument wins, then the environment (``GNS_ETCD``, ``GNS_TLS_DIR``), then the
state ``gns up`` left in the home directory; the CLI's ``run`` uses the same lookup.
"""
from __future__ import annotations

import os
from pathlib import Path

from federation.home import home_dir, read_state
from namespace.errors import Unavailable


def find_etcd(etcd: str | None, home: str | Path | None) -> str:
    """The etcd endpoints to use: explicit > ``GNS_ETCD`` > the local federation's."""
    if etcd:
        return etcd
    if os.environ.get("GNS_ETCD"):
        return os.environ["GNS_ETCD"]
    state = read_state(home)
    if state and state.get("etcd"):
        return str(state["etcd"])
    raise Unavailable(
        f"no federation to talk to: pass --etcd URL or set GNS_ETCD, or run `gns up` "
        f"(looked for {home_dir(home) / 'federation.json'})"
    )


def find_tls_dir(tls_dir: str | Path | None, home: str | Path | None) -> Path | None:
    if tls_dir:
        return Path(tls_dir)
    if os.environ.get("GNS_TLS_DIR"):
        return Path(os.environ["GNS_TLS_DIR"])
    state = read_state(home)
    if state and state.get("tls_dir"):
        return Path(state["tls_dir"])
    return None
