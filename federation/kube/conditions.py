"""Status conditions as the Kubernetes API conventions describe them.

``lastTransitionTime`` changes only when a condition's ``status`` changes, so a resync that
finds nothing new writes nothing (the caller compares the whole status before patching).
"""
from __future__ import annotations

import datetime
from typing import Any


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message}


def merge(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``new`` with each condition's lastTransitionTime carried over from ``old`` when its
    status did not change."""
    previous = {c.get("type"): c for c in old or [] if isinstance(c, dict)}
    out = []
    for c in new:
        before = previous.get(c["type"])
        if before is not None and before.get("status") == c["status"] and before.get("lastTransitionTime"):
            stamp = before["lastTransitionTime"]
        else:
            stamp = now()
        out.append({**c, "lastTransitionTime": stamp})
    return out
