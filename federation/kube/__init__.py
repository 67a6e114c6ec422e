"""``gns controller --kubernetes``: the MirrorPolicy and GlobalMount custom resources, applied.

:mod:`api` is a small Kubernetes REST client (list, watch with resourceVersion, merge
patches with optimistic concurrency, the status subresource) over aiohttp; :mod:`informer`
lists and watches one resource and relists when the watch expires (HTTP 410) or the API
server goes away; :mod:`reconciler` runs the level-triggered loop (finalizers, status,
periodic resync); :mod:`policies` and :mod:`mounts` (around :mod:`handlers`) turn one
resource into what the CLI makes (a policy through :mod:`mirroring.policy_store`, a mount as
``gns mount add`` stores it); :mod:`ownership` records which resource made which policy or
mount, so a name made elsewhere, or made again elsewhere since, is reported as a
``Conflict`` and never changed or removed.
"""
