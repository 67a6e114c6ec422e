"""Pins: a reader (a mirror pass) holds a version's blobs until it lets go.

While any pin is held, garbage collection unlinks nothing (``gc.py`` asks ``held``), and the
journal is never truncated above the oldest pinned version (``journal.py`` asks ``oldest``),
so every blob of a pinned version, and the journal rows that describe it, stay readable.

This registry is in memory only: pins do not survive a restart (nor does the pass holding
them). Callers hold the volume's lock around every call.
"""

from __future__ import annotations

import itertools

from namespace.errors import InvalidInput


class Pins:
    """Tokens of the pins held, each with the version it pins."""

    def __init__(self, volume_name: str) -> None:
        self._name = volume_name
        self._held: dict[object, int] = {}
        self._ids = itertools.count(1)

    def add(self, version: int) -> object:
        """Pin ``version``; returns the token that ``remove`` takes."""
        token = next(self._ids)
        self._held[token] = version
        return token

    def remove(self, token: object) -> None:
        if self._held.pop(token, None) is None:
            raise InvalidInput(f"volume {self._name!r}: unknown pin {token!r}")

    @property
    def held(self) -> bool:
        return bool(self._held)

    def versions(self) -> list[int]:
        """The pinned versions (the journal keeps rows from the oldest of them)."""
        return list(self._held.values())
