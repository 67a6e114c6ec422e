"""Mirror targets implemented inside ``mirroring``: object-store prefixes (and ``file://``).

Cluster targets (a replica volume pushed over gRPC) live in ``federation``, which passes them
in as ``MirrorTarget``s; nothing here may import ``federation``.
"""

from mirroring.targets.objectstore import MANIFEST_KEY, PASS_KEY, ObjectStoreTarget

__all__ = ["MANIFEST_KEY", "PASS_KEY", "ObjectStoreTarget"]
