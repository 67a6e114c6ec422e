"""``gns fuse``: the global namespace as a POSIX file system (SPEC §12), on libfuse 3.

Why pyfuse3 (async, Cython over libfuse 3's low-level API) and not mfusepy (ctypes,
high-level path API): the change stream must drop the kernel's cached attributes, pages
and entries of files changed elsewhere, which only the low-level API's notifications
(``invalidate_inode``/``invalidate_entry``) can do; inode-based ``rename``/``forget``
keep open files right across renames; and one trio loop serves many requests at once while
blocking gRPC calls run in worker threads. Raw speed did not decide it: on a null file
system (``python -m bench.fuse_null``) the two are within this shared machine's noise
(sequential reads 465 vs 413 MiB/s in one run, 844 vs 1441 in the next).

Modules, one job each (after S3QL, by pyfuse3's author):

* ``operations`` - the file-system operations: a thin adapter over
  :class:`federation.client.Client`; no etcd, no storage, no gRPC here;
* ``inodes``     - the inode <-> path table and kernel lookup counts;
* ``handles``    - open files: streamed reads with read-ahead, writes staged on disk;
* ``staging``    - the on-disk staging area (bounded, cleaned at unmount and after a crash);
* ``cache``      - attributes and directory listings, invalidated by the change stream;
* ``errnos``     - the one table from the gns error tree to errno;
* ``mount``      - mount/unmount, signals, ``--daemon``;
* ``mountinfo``  - the kernel's mount table and clearing stale mounts (CSI uses it too).
"""
