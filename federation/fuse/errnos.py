"""The one table from the gns error tree (``namespace.errors``) to errno values.

FUSE operations raise ``pyfuse3.FUSEError(errno)``; everything a ``Client`` call can raise
passes through :func:`errno_for` exactly once. ``Conflict`` means different things to
different operations (exists, not empty, busy), so the caller names which errno fits.
"""
from __future__ import annotations

import errno

from namespace.errors import (
    Conflict,
    FileNotFound,
    GnsError,
    InvalidInput,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    StaleEpoch,
    Unavailable,
)

# Most specific first: PermissionDenied and StaleEpoch are Conflicts, FileNotFound a NotFound.
_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (PermissionDenied, errno.EACCES),
    (StaleEpoch, errno.EAGAIN),
    (FileNotFound, errno.ENOENT),
    (NotFound, errno.ENOENT),
    (Unavailable, errno.EIO),
    (OutOfSpace, errno.ENOSPC),  # the owner's disk is full: what cp and editors know to say
    (InvalidInput, errno.EINVAL),
    (Conflict, errno.EEXIST),
    (GnsError, errno.EIO),
)


def errno_for(exc: BaseException, *, conflict: int = errno.EEXIST,
              invalid: int = errno.EINVAL) -> int:
    """The errno for ``exc``; ``conflict``/``invalid`` say what those mean for this call."""
    for kind, code in _TABLE:
        if isinstance(exc, kind):
            if code == errno.EEXIST:
                return conflict
            if code == errno.EINVAL:
                return invalid
            return code
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO
