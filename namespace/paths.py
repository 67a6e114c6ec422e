"""Global paths (SPEC §3): normalisation and validation, and the names of things.

A global path is absolute, UTF-8 and '/'-separated; ``//`` collapses and a trailing '/' is
dropped. Relative paths, ``.``/``..`` components, control characters, components over 255
bytes and paths over 4096 bytes are refused with :class:`InvalidInput`. This module must stay
pure (no I/O): the resolver calls it on every lookup.
"""
from __future__ import annotations

import re

from namespace.errors import InvalidInput

MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255

# Control characters (C0, DEL, C1): never valid anywhere in a global path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A path that is already in normal form and needs no rewriting: the common case, checked
# with one regex (no empty, '.' or '..' components, no control characters) so that
# resolving stays in the microseconds.
_ALREADY_NORMAL = re.compile(r"/|(?:/(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f-\x9f]+)+").fullmatch
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize(path: str) -> str:
    """Return the normal form of global ``path`` or raise :class:`InvalidInput`."""
    if not isinstance(path, str):
        raise InvalidInput(f"path must be a string, not {type(path).__name__}")
    if (
        path[:1] == "/" and path[-1:] != "/" and "//" not in path and "/." not in path
        and path.isprintable()
    ):
        # Common case, in C string scans: absolute, no empty or dot-led components, no
        # control characters (isprintable is false for every Cc and for lone surrogates).
        normal = path
    elif _ALREADY_NORMAL(path):
        normal = path
    else:
        normal = _rewrite(path)
    _check_lengths(normal)
    return normal


def _rewrite(path: str) -> str:
    if not path:
        raise InvalidInput("empty path")
    if not path.startswith("/"):
        raise InvalidInput(f"path {path!r} is relative; global paths start with '/'")
    bad = _CONTROL.search(path)
    if bad:
        raise InvalidInput(f"path {path!r} contains control character {bad.group()!r}")
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise InvalidInput(f"path {path!r} contains a {part!r} component")
    return "/" + "/".join(parts)


def _shown_bytes(path: str) -> str:
    """``path`` quoted for a message with its bytes that are not UTF-8 as ``\\xff``, as the
    user typed them: Python decodes such bytes (argv, file names) to surrogates, which
    repr() would show as ``\\udcff``."""
    quoted = path.replace("\\", "\\\\").replace("'", "\\'")
    try:
        raw = quoted.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte decodes to (from a str, not from bytes)
        raw = quoted.encode("utf-8", "surrogatepass")
    return "'" + raw.decode("utf-8", "backslashreplace") + "'"


def _check_lengths(normal: str) -> None:
    if len(normal) > MAX_PATH_BYTES // 4 or not normal.isascii():
        encoded = normal.encode("utf-8", "surrogatepass")
        try:
            normal.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"path {_shown_bytes(normal)} is not valid UTF-8") from None
        if len(encoded) > MAX_PATH_BYTES:
            raise InvalidInput(f"path is {len(encoded)} bytes; the limit is {MAX_PATH_BYTES}")
        components = normal.split("/")
    elif len(normal) > MAX_COMPONENT_BYTES:
        components = normal.split("/")
    else:
        return
    for part in components:
        size = len(part.encode("utf-8"))
        if size > MAX_COMPONENT_BYTES:
            raise InvalidInput(
                f"path component {part[:40]!r}... is {size} bytes; the limit is {MAX_COMPONENT_BYTES}"
            )


def join(base: str, relative: str) -> str:
    """Join a normal global path and a volume-relative path ('' means ``base`` itself)."""
    if not relative:
        return base
    return base.rstrip("/") + "/" + relative


def shown_at(relative: str, anchor: str, path: str, mount: str) -> str | None:
    """The global path of volume-relative ``relative``, knowing that the volume's ``anchor``
    is normal global ``path`` under mount point ``mount``: at or below the anchor, or above
    it up to the mount point. None where that mount does not show ``relative`` (another
    branch of the volume, or above the mount's subpath)."""
    if relative == anchor:
        return path
    if not anchor or relative.startswith(anchor + "/"):
        return join(path, relative[len(anchor):].lstrip("/"))
    if relative and not anchor.startswith(relative + "/"):
        return None
    shown = path
    for _ in range((anchor[len(relative) + 1:] if relative else anchor).count("/") + 1):
        if shown == mount:
            return None
        shown = shown.rsplit("/", 1)[0] or "/"
    return shown


def relative_to(path: str, prefix: str) -> str:
    """The part of normal ``path`` below normal ``prefix`` ('' when equal)."""
    if prefix == "/":
        return path[1:]
    return path[len(prefix) + 1 :]


def normalize_relative(subpath: str) -> str:
    """Normalise a volume-relative path (a mount's subpath, a path inside a volume).

    '' and '/' mean the volume root; the result has no leading or trailing '/'.
    """
    if subpath in ("", "/"):
        return ""
    return normalize("/" + subpath.lstrip("/"))[1:]


def check_writable_name(rel: str, shown: str = "") -> None:
    """InvalidInput if volume-relative ``rel`` is a name gns keeps for itself: ``.gns`` at a
    volume's root (diverged files, SPEC §7; and, in a mirror of it, the commit point,
    SPEC §6: a user's ``.gns/manifest.json`` stopped every object-store mirror), ``.gns-locks``
    there and ``.NAME.gns-meta`` anywhere (a ``file://`` mirror's lock files and sidecars).
    Reading and removing what is there stays open (diverged files are for people to
    review and clear). ``shown``: the path to name (the caller's global one)."""
    first, _, _ = rel.partition("/")
    last = rel.rpartition("/")[2]
    if first in (".gns", ".gns-locks") or (last.startswith(".") and last.endswith(".gns-meta")):
        raise InvalidInput(f"cannot write {shown or rel!r}: {first if first.startswith('.gns') else last!r} "
                           "is a name gns keeps for itself (its own files and its mirrors')")


def check_name(kind: str, name: str) -> str:
    """Validate a cluster, volume or policy name: a DNS-1123 label (1–63 chars)."""
    if not isinstance(name, str) or not _DNS1123_LABEL.fullmatch(name):
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def ancestors(path: str) -> list[str]:
    """``/a/b`` → ``["/", "/a", "/a/b"]`` (``path`` must be normal)."""
    if path == "/":
        return ["/"]
    out = ["/"]
    end = path.find("/", 1)
    while end != -1:
        out.append(path[:end])
        end = path.find("/", end + 1)
    out.append(path)
    return out
