"""The global namespace: paths, the mount table, the etcd schema and the cluster registry.

This package is the bottom layer of gns. It owns everything that lives in etcd (the
control plane) and knows nothing about file data, gRPC, mirroring or object stores.

etcd key schema, version 1 (every key lives under ``/gns/v1/``; values are JSON):

===============================  ===========================================================
key                              value
===============================  ===========================================================
``clusters/<id>``                cluster spec: id, provider, region, labels, endpoint
``alive/<id>``                   bound to the controller's lease; present <=> ``Ready``
``volumes/<name>``               name, owner, epoch, created; epoch +1 at every owner change
``volstate/<name>``              version published by the owner (batched, never per file)
``mounts/<quoted path>``         path, volume, subpath (path percent-encoded, so no key of a
                                 mount is the prefix of another mount's key)
``policies/<name>``              a mirror policy document (mirroring owns its meaning)
``mirrors/<policy>/<target>``    per-target mirror status, written once per pass
``leader``                       the federation leader's id, bound to its lease
``diverged/<volume>/<cluster>``  writes a former owner kept aside at failback (reported)
===============================  ===========================================================

Every change that touches several keys is one etcd transaction. etcd never holds per-file
metadata: that stays with the owning controller.
"""
