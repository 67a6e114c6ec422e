"""The typed Python API of gns: what apps call, and what every CLI command is a thin layer on.

``Client`` routes data requests itself: it resolves global paths from a watch-fed copy of
the mount table (no etcd round trip per request) and talks straight to the owning
controller, or enters through ``via`` and lets that controller forward. Files stream in
chunks both ways; nothing here holds a whole file in memory.

One job per module: :mod:`.discovery` finds etcd and TLS material; :mod:`.connection`
holds the loop thread, etcd connection, namespace cache and channels; :mod:`.control` has
the control commands; :mod:`.routing` picks the controller for a path; :mod:`.streams` has
the file objects and the change stream; :mod:`.facade` is the :class:`Client` (data
commands) built from those; :mod:`.models` has what its methods return (``FileInfo``,
``DirEntry``, ``Resolution``, ``MirrorStatus``, ...), each with the ``to_json()`` the CLI prints.
"""
from __future__ import annotations

from federation.client.discovery import find_etcd, find_tls_dir
from federation.client.facade import Client
from federation.client.models import (
    AccessReport,
    CallerIdentity,
    Change,
    DirEntry,
    Divergence,
    EdgeBacklog,
    EdgeSite,
    EdgeToken,
    FailoverSettings,
    FileInfo,
    MirrorApplyResult,
    MirrorPlanEntry,
    MirrorPolicySummary,
    MirrorStatus,
    MirrorTargetStatus,
    MirrorVerifyReport,
    Replica,
    Resolution,
    Status,
    VolumeOwner,
    VolumeStatus,
)
from federation.client.streams import ChangeStream, Progress

__all__ = [
    "AccessReport", "CallerIdentity", "Change", "ChangeStream", "Client", "DirEntry", "Divergence",
    "EdgeBacklog", "EdgeSite", "EdgeToken", "FailoverSettings", "FileInfo", "MirrorApplyResult",
    "MirrorPlanEntry", "MirrorPolicySummary", "MirrorStatus", "MirrorTargetStatus",
    "MirrorVerifyReport", "Progress", "Replica", "Resolution", "Status", "VolumeOwner",
    "VolumeStatus", "find_etcd", "find_tls_dir",
]
