"""The federation: one controller process per cluster, its gRPC API, volume storage, the client.

Top layer of gns. ``federation.controller`` is the long-running process (registration,
fencing, the gRPC data plane, forwarding); ``federation.storage`` keeps volumes on disk with
their change journal; ``federation.client`` is the typed Python API that apps and the CLI
(``federation.cli``) share; ``federation.fs`` registers ``gns://`` with fsspec.
Generated gRPC code lives apart in ``federation.api._gen``; nothing edits it by hand.
"""
