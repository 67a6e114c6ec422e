"""Go-style durations (``500ms``, ``30s``, ``5m``, ``1h30m``): the one parser for every flag,
policy field and token TTL, so ``--max-staleness 1h`` means what ``maxLag: 1h`` means.

Policies keep to the strict Go form; command-line flags also take plain seconds (``90``,
``1.5``), as users of ``sleep`` and ``timeout`` expect. Negative lengths of time are refused.
"""
from __future__ import annotations

import re

__all__ = ["parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_SECONDS = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str, *, bare_seconds: bool = False) -> float:
    """Seconds in a Go-style duration (``"1h30m"`` -> 5400.0); ``"0"`` is zero.

    With ``bare_seconds`` a plain number (``"90"``, ``"1.5"``) is read as seconds too.
    Raises ``ValueError`` naming the text and the accepted forms.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"duration must be a string such as '30s', '5m' or '1h30m', not {text!r}"
        )
    s = text.strip()
    if s == "0":
        return 0.0
    if s.startswith("-"):
        raise ValueError(f"duration {text!r} must not be negative")
    if bare_seconds and _SECONDS.fullmatch(s):
        return float(s)
    if not _DURATION.fullmatch(s):
        extra = " or plain seconds" if bare_seconds else ""
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ns, us, ms, s, m, h){extra}, "
            "e.g. '500ms', '30s', '5m', '1h30m'"
        )
    return sum(float(n) * _UNITS[u] for n, u in _TERM.findall(s))
