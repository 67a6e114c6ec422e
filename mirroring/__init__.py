"""Mirroring: policies, the change-journal engine, targets, the scheduler and failover.

Sits above ``namespace`` and ``cloud_adapters`` and below ``federation``. What it needs
from higher up (a volume's journal and files, pushing to another cluster over gRPC) it
declares as small protocols (``VolumeSource``, ``MirrorTarget``) that ``federation``
implements and passes in; it never imports ``federation``.
"""
