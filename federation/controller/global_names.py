"""Errors about paths inside a volume, said with the global paths the caller named.

Storage knows only volume-relative paths (``day.csv``); the user typed
``/health/sensors/day.csv``. A request that names a global path carries it to the owner
(``Target.global_path``, also when a client or a forwarding controller resolved it), so the
owner, which runs the storage call, re-says the error (``GnsError.renamed``) before it
crosses gRPC. Clients never rewrite messages: nothing is decided from message text.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from namespace.cache import NamespaceView
from namespace.errors import GnsError, InvalidInput
from namespace.paths import normalize, shown_at

Anchor = tuple[str, str]
"""(volume-relative path, the global path the caller named it by)."""


@contextlib.contextmanager
def named_globally(view: NamespaceView, volume: str, *anchors: Anchor) -> Iterator[None]:
    """Around storage calls on ``volume``: an error naming paths there names them by the
    anchors' global paths (one without a global path, or of a volume-only request, passes
    as it is)."""
    try:
        yield
    except GnsError as exc:
        if not exc.paths:
            raise
        known = [(rel, path) for rel, path in map(_normal, anchors) if path]
        if not known:
            raise
        raise exc.renamed(_namer(view, volume, known)) from None


def _normal(anchor: Anchor) -> Anchor:
    """The anchor with its global path in normal form; none if it is not a path at all."""
    rel, path = anchor
    try:
        return rel, normalize(path) if path else ""
    except InvalidInput:
        return rel, ""


def _namer(view: NamespaceView, volume: str, anchors: list[Anchor]) -> Callable[[str], str]:
    """Names a volume-relative path by the first anchor whose mount shows it; left as it is
    when none does."""
    where = [(rel, path, _mount_of(view, volume, rel, path)) for rel, path in anchors]

    def name(relative: str) -> str:
        for rel, path, mount in where:
            shown = shown_at(relative, rel, path, mount)
            if shown is not None:
                return shown
        return relative

    return name


def _mount_of(view: NamespaceView, volume: str, rel: str, path: str) -> str:
    """The mount point that shows ``volume``'s ``rel`` at ``path``; ``path`` itself (names
    nothing above it) when this view resolves it elsewhere (the caller's view was newer or
    older than ours)."""
    res = view.resolve(path)
    if res is None or res.volume != volume or res.relative_path != rel:
        return path
    return res.mount
