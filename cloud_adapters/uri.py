"""Parse and validate store URIs (``s3://``, ``gs://``, ``az://``, ``file://``) up front.

Bad input must fail here, before any network or disk I/O, with one ``InvalidURI`` that names
the URI. Validation follows each provider's published naming rules so that a typo is
reported by us rather than as an opaque HTTP 400 from a server. This module never imports
an SDK.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote

from cloud_adapters.errors import InvalidURI

__all__ = ["StoreURI", "parse_uri", "SCHEMES", "validate_key"]

SCHEMES = ("s3", "gs", "az", "file")
"""The schemes that ship with gns (``registry.register`` may add more)."""

_extra_schemes: set[str] = set()  # filled by registry.register(); generic validation only

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_AZ_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class StoreURI:
    """A validated store location.

    ``file:///mnt/x`` has ``container == ""`` and ``prefix == "/mnt/x"`` (absolute); for the
    object stores ``prefix`` is relative, '/'-separated, without leading or trailing '/'.
    """

    scheme: str
    container: str
    prefix: str

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.prefix}"
        return f"{self.scheme}://{self.container}" + (f"/{self.prefix}" if self.prefix else "")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_bucket(scheme: str, name: str, uri: str) -> None:
    if not name:
        raise InvalidURI("missing bucket/container name", uri=uri)
    if scheme == "s3":
        if not _S3_BUCKET.match(name) or ".." in name or _is_ip(name):
            raise InvalidURI(
                f"invalid S3 bucket name {name!r}: 3-63 characters, lowercase letters, digits,"
                " '.' and '-', starting and ending with a letter or digit, not an IP address",
                uri=uri,
            )
        if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
            raise InvalidURI(f"invalid S3 bucket name {name!r}: reserved prefix/suffix", uri=uri)
    elif scheme == "gs":
        parts = name.split(".")
        if (
            not _GCS_BUCKET.match(name)
            or (len(name) > 63 and "." not in name)
            or any(not p or len(p) > 63 for p in parts)
            or _is_ip(name)
            or name.startswith("goog")
            or "google" in name
        ):
            raise InvalidURI(
                f"invalid GCS bucket name {name!r}: 3-63 characters (222 with dots), lowercase"
                " letters, digits, '-', '_' and '.', starting and ending with a letter or digit,"
                " no 'goog' prefix",
                uri=uri,
            )
    elif scheme == "az":
        if not _AZ_CONTAINER.match(name):
            raise InvalidURI(
                f"invalid Azure container name {name!r}: 3-63 characters, lowercase letters,"
                " digits and single '-', starting and ending with a letter or digit",
                uri=uri,
            )


def _clean_components(path: str, uri: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise InvalidURI(f"'{p}' path components are not allowed", uri=uri)
    return parts


def parse_uri(uri: str) -> StoreURI:
    """Parse ``uri`` into a :class:`StoreURI` or raise :class:`InvalidURI` naming it."""
    if not isinstance(uri, str):
        raise InvalidURI(f"store URI must be a string, not {type(uri).__name__}", uri=repr(uri))
    if _CONTROL.search(uri):
        raise InvalidURI("control characters are not allowed", uri=repr(uri))
    m = _SCHEME.match(uri.strip())
    if not m:
        raise InvalidURI(
            "not a store URI; expected one of " + ", ".join(f"{s}://" for s in SCHEMES),
            uri=uri or repr(uri),
        )
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme not in SCHEMES and scheme not in _extra_schemes:
        raise InvalidURI(
            f"unknown scheme {scheme!r}; expected one of "
            + ", ".join(f"{s}://" for s in (*SCHEMES, *sorted(_extra_schemes))),
            uri=uri,
        )
    if "?" in rest or "#" in rest:
        raise InvalidURI("query strings and fragments are not allowed", uri=uri)
    rest = unquote(rest)
    if scheme == "file":
        host, sep, path = rest.partition("/")
        if host not in ("", "localhost") or not sep:
            raise InvalidURI("file:// URIs must be absolute: file:///abs/dir", uri=uri)
        parts = _clean_components(path, uri)
        return StoreURI("file", "", "/" + "/".join(parts))
    container, _, path = rest.partition("/")
    _check_bucket(scheme, container, uri)
    return StoreURI(scheme, container, "/".join(_clean_components(path, uri)))


def validate_key(key: str, uri: str) -> str:
    """Return ``key`` if it is a clean relative object key, else raise ``InvalidURI``."""
    if not isinstance(key, str) or not key:
        raise InvalidURI(f"invalid key {key!r}: must be a non-empty string", uri=uri)
    if key.startswith("/") or key.endswith("/") or "//" in key or _CONTROL.search(key):
        raise InvalidURI(
            f"invalid key {key!r}: relative, '/'-separated, no empty components", uri=uri
        )
    if any(p in (".", "..") for p in key.split("/")):
        raise InvalidURI(f"invalid key {key!r}: '.' and '..' components are not allowed", uri=uri)
    return key
