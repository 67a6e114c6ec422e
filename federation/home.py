"""``GNS_HOME``: where ``gns up`` keeps its etcd, controllers' data and ``federation.json``.

Commands without ``--etcd`` read ``federation.json`` to find the local federation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STATE_FILE = "federation.json"


def home_dir(home: str | Path | None = None) -> Path:
    return Path(home or os.environ.get("GNS_HOME") or ".gns").absolute()


def read_state(home: str | Path | None = None) -> dict[str, Any] | None:
    path = home_dir(home) / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    except FileNotFoundError:
        return None
    except ValueError:
        return None


def write_state(state: dict[str, Any], home: str | Path | None = None) -> None:
    d = home_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, d / STATE_FILE)
