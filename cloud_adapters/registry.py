"""URI scheme -> ``ObjectStore`` implementation, imported only when a scheme is used.

Modelled on fsspec's registry: the table holds import paths, not classes, so ``import
cloud_adapters`` never imports boto3, google-cloud-storage or azure-storage-blob, and a
missing SDK only matters to whoever opens that scheme, who gets a ``MissingDependency``
carrying the exact ``pip install`` command.
"""

from __future__ import annotations

import importlib

from cloud_adapters import uri as _uri
from cloud_adapters.base import ObjectStore
from cloud_adapters.errors import InvalidURI, MissingDependency
from cloud_adapters.uri import SCHEMES, parse_uri

__all__ = ["open_store", "register", "SCHEMES", "implementation"]

_REGISTRY: dict[str, str] = {
    "s3": "cloud_adapters.s3:S3Store",
    "gs": "cloud_adapters.gcs:GCSStore",
    "az": "cloud_adapters.azure:AzureStore",
    "file": "cloud_adapters.local:LocalStore",
}

# scheme -> (top-level SDK modules, pip extra)
_SDKS: dict[str, tuple[tuple[str, ...], str]] = {
    "s3": (("boto3", "botocore", "s3transfer"), "s3"),
    "gs": (("google",), "gcs"),
    "az": (("azure",), "azure"),
}


def register(scheme: str, import_path: str) -> None:
    """Map ``scheme`` to ``"package.module:Class"`` (or ``"package.module.Class"``).

    Registering an existing scheme replaces its implementation (e.g. for tests)."""
    scheme = scheme.lower()
    if not scheme.isidentifier():
        raise ValueError(f"invalid scheme {scheme!r}")
    if ":" not in import_path and "." not in import_path:
        raise ValueError(f"import path must be 'module:Class', got {import_path!r}")
    _REGISTRY[scheme] = import_path
    if scheme not in SCHEMES:
        _uri._extra_schemes.add(scheme)


def implementation(scheme: str, *, uri: str | None = None) -> type[ObjectStore]:
    """Import and return the class registered for ``scheme``."""
    path = _REGISTRY.get(scheme)
    if path is None:
        raise InvalidURI(f"no object store registered for {scheme}://", uri=uri)
    mod_name, _, cls_name = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        roots, extra = _SDKS.get(scheme, ((), ""))
        missing = (exc.name or "").split(".")[0]
        if extra and (missing in roots or (exc.name or "").startswith(roots)):
            raise MissingDependency(
                f"{scheme}:// needs the {exc.name} package: pip install 'gns[{extra}]'",
                uri=uri,
            ) from exc
        if exc.name == mod_name:
            raise MissingDependency(
                f"{scheme}:// implementation {mod_name} is not installed", uri=uri
            ) from exc
        raise
    cls = getattr(module, cls_name)
    if not (isinstance(cls, type) and issubclass(cls, ObjectStore)):
        raise TypeError(f"{path} is not an ObjectStore")
    return cls


def open_store(uri: str) -> ObjectStore:
    """The store for ``uri`` (validated; no I/O happens until first use)."""
    parsed = parse_uri(uri)
    return implementation(parsed.scheme, uri=str(parsed))(parsed)
