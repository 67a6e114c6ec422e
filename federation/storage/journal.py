"""The change journal seen from outside: entries, net changes, past states, truncation.

Every committed mutation appends journal rows (``catalog.put_file`` and friends); this module
answers what mirroring and replication ask of them. Each answer comes from one read snapshot,
and costs what changed, not the volume's size. ``truncate_journal`` keeps rows back to the
oldest pin; ``diverge`` (after a failover) keeps the changes a lost owner made aside as files.

Long answers are streams holding their own read transaction (``VolumeState.stream``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator

from namespace.errors import Conflict, InvalidInput

from . import catalog as cat
from .models import FileMeta, JournalEntry
from .pins import Pins
from .state import VolumeState

log = logging.getLogger(__name__)

DIVERGED_DIR = ".gns/diverged"


class Journal:
    """Queries and maintenance of one volume's journal."""

    def __init__(self, state: VolumeState, pins: Pins) -> None:
        self._state = state
        self._pins = pins

    def _check_floor(self, conn: sqlite3.Connection, after_version: int) -> int:
        floor = int(cat.read_meta(conn)["journal_floor"])
        if after_version < floor:
            raise Conflict(
                f"volume {self._state.name!r}: journal truncated (floor {floor}, "
                f"asked after {after_version})"
            )
        return floor

    def entries(self, after_version: int) -> Iterator[JournalEntry]:
        """Journal entries with version > ``after_version``, in commit order."""

        def setup(conn: sqlite3.Connection) -> Iterator[JournalEntry]:
            self._check_floor(conn, after_version)
            cur = conn.execute(
                "SELECT version, op, path, size, sha256, mtime, kind, src, mode FROM journal "
                "WHERE version > ? ORDER BY seq",
                (after_version,),
            )
            return (
                JournalEntry(
                    version=r[0], op=r[1], path=r[2], size=r[3], sha256=r[4], mtime=r[5],
                    kind=r[6] or "", src=r[7] or "", mode=r[8] or 0,
                )
                for r in cur
            )

        return self._state.stream(setup)

    def existed_at(self, after_version: int, upto_version: int) -> set[str]:
        """Of the paths changed in (after, upto], those that existed at ``after``."""
        with self._state.read_txn() as conn:
            return {row[0] for row in cat.net_changes(conn, after_version, upto_version)
                    if row[6]}

    def changes_since(
        self, after_version: int, upto_version: int
    ) -> tuple[list[FileMeta], list[str]]:
        """Net effect of versions (after, upto]: files to copy (as of upto) and paths deleted."""
        copies: list[FileMeta] = []
        deleted: list[str] = []
        with self._state.read_txn() as conn:
            self._check_floor(conn, after_version)
            current = self._state.txn_version(conn)
            if upto_version > current or upto_version < after_version:
                raise InvalidInput(
                    f"volume {self._state.name!r}: bad version range ({after_version}, "
                    f"{upto_version}] (current {current})"
                )
            for path, op, size, sha, mtime, ver, existed, mode in cat.net_changes(
                conn, after_version, upto_version
            ):
                if op == "put":
                    copies.append(
                        FileMeta(
                            path=path, size=size, sha256=sha, mtime=mtime, version=ver,
                            mode=cat.DEFAULT_FILE_MODE if mode is None else mode,
                        )
                    )
                elif existed:
                    deleted.append(path)
        return copies, deleted

    def snapshot_files(self, version: int) -> Iterator[FileMeta]:
        """The files as of ``version`` by path: current rows merged with the journal's
        ``prev_*`` of paths changed since."""
        name = self._state.name

        def setup(conn: sqlite3.Connection) -> Iterator[FileMeta]:
            meta = cat.read_meta(conn)
            floor, current = int(meta["journal_floor"]), int(meta["version"])
            if version > current:
                raise InvalidInput(
                    f"volume {name!r}: version {version} is in the future ({current})"
                )
            if version == current:
                return cat.iter_files(conn, "")
            if version < floor:
                raise Conflict(
                    f"volume {name!r}: version {version} is older than the journal "
                    f"floor {floor}"
                )
            return merge_states(cat.iter_files(conn, ""), cat.states_before(conn, version))

        return self._state.stream(setup)

    def truncate(self, upto_version: int) -> None:
        """Drop journal rows up to ``upto_version``; kept back to the oldest pin if any."""
        state = self._state
        with state.lock:
            limit = min([upto_version, state.version, *self._pins.versions()])
            if limit <= state.floor:
                return
            with state.write_txn() as conn:
                conn.execute("DELETE FROM journal WHERE version <= ?", (limit,))
                cat.set_meta(conn, "journal_floor", limit)
            state.floor = limit

    def diverge(self, after_version: int, epoch: int) -> list[str]:
        """Copy every file changed after ``after_version`` to ``.gns/diverged/<epoch>/``,
        sharing the same blobs, as ONE new version; returns the new paths."""
        state = self._state
        out: list[str] = []
        with state.lock:
            with state.write_txn() as conn:
                current = state.txn_version(conn)
                floor = int(cat.read_meta(conn)["journal_floor"])
                if after_version < floor:
                    raise Conflict(
                        f"volume {state.name!r}: journal truncated at {floor}, "
                        f"cannot tell what changed after {after_version}"
                    )
                if after_version > current:
                    raise InvalidInput(
                        f"volume {state.name!r}: version {after_version} is in the future "
                        f"(current {current})"
                    )
                changed = [
                    row
                    for row in cat.net_changes(conn, after_version, current)
                    if row[1] == "put" and not row[0].startswith(".gns/")
                ]
                if not changed:
                    return []
                v = current + 1
                for path, _op, size, sha, mtime, _ver, _existed, mode in changed:
                    target = f"{DIVERGED_DIR}/{epoch}/{path}"
                    cat.check_put_shape(conn, target)
                    cat.put_file(conn, target, size, sha, mtime, v, mode)
                    out.append(target)
                cat.set_meta(conn, "version", v)
            state.version = v
        log.warning(
            "volume %s: kept %d diverged files aside under %s/%d/",
            state.name,
            len(out),
            DIVERGED_DIR,
            epoch,
        )
        return out


def merge_states(
    current: Iterator[FileMeta], before: Iterator[tuple[str, FileMeta | None]]
) -> Iterator[FileMeta]:
    """Merge two path-ordered streams; ``before`` (a path's older state) wins on a tie."""
    a = next(current, None)
    b = next(before, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.path < b[0]):
            assert a is not None
            yield a
            a = next(current, None)
        else:
            if a is not None and a.path == b[0]:
                a = next(current, None)
            if b[1] is not None:
                yield b[1]
            b = next(before, None)
