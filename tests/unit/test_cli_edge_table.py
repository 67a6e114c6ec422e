"""``gns edge list`` for people: connected-since as a time, not an epoch float."""
from __future__ import annotations

import datetime as dt

from federation.cli.commands_edge import _when


def test_connected_since_is_shown_as_a_local_time() -> None:
    shown = _when(1796424845.7)
    assert dt.datetime.fromisoformat(shown).timestamp() == 1796424845
    assert _when(None) == "" and _when(0.0) == ""
