"""The Kubernetes CSI driver ``csi.gns.io`` (SPEC §9): pods get volumes in the global namespace.

One gRPC server on a Unix socket carries the three CSI services, one module each (kadalu's
layout): :mod:`identity`, :mod:`controller` (dynamic provisioning: a volume, its mount and its
mirror policy per PersistentVolumeClaim) and :mod:`node` (publishing a global path into a
pod through ``gns fuse``, supervised by :mod:`publisher`). Every RPC is a thin adapter over
:class:`federation.client.Client`; :mod:`errors` is the one table from the gns error tree to
CSI's gRPC codes.
"""
