"""Full disks as the layers below gns report them, for the tests of how gns reports them:
SQLite's own "database or disk is full" and an error raised from ``ENOSPC``."""
from __future__ import annotations

import errno
import sqlite3


def sqlite_full() -> sqlite3.OperationalError:
    """SQLite's own "database or disk is full", from a database capped at a few pages."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("PRAGMA max_page_count = 8")
        db.execute("CREATE TABLE t (x BLOB)")
        while True:
            db.execute("INSERT INTO t VALUES (?)", (b"x" * 4096,))
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        db.close()


def chained_enospc() -> Exception:
    """What a handler may raise after meeting a full disk: another error, from ENOSPC."""
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as exc:
        try:
            raise RuntimeError("ingest failed") from exc
        except RuntimeError as outer:
            return outer
