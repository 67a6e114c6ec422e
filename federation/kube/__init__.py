"""``gns controller --kubernetes``: the MirrorPolicy and GlobalMount custom resources, applied.

:mod:`api` is a small Kubernetes REST client (list, watch with resourceVersion, merge
patches with optimistic concurrency, the status subresource) over aiohttp; :mod:`informer`
lists and watches one resource and relists when the watch expires (HTTP 410) or the API
server goes away; :mod:`reconciler` runs the level-triggered loop (finalizers, status,
periodic resync); :mod:`handlers` turn one resource into the same namespace operations the
CLI performs (:class:`namespace.control.ControlPlane`, :mod:`mirroring.policy_store`);
:mod:`ownership` records which resource made which policy or mount, so a name made
elsewhere is reported as a ``Conflict`` instead of being taken over.
"""
