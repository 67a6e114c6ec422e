"""``gns fuse``: the global namespace as a POSIX file system (SPEC §12), on libfuse 3.

Why pyfuse3 (async, Cython over libfuse 3) and not mfusepy (ctypes): on a null file system
on these machines pyfuse3 reads 1.3-1.4 GB/s and serves ~190k cached stats/s, mfusepy
single-threaded 0.4-0.6 GB/s (see ``bench/posix.py --null`` and the issue note). pyfuse3
runs every request on one trio loop; blocking gRPC calls go to worker threads.

Modules, one job each (after S3QL, by pyfuse3's author):

* ``operations`` - the file-system operations: a thin adapter over
  :class:`federation.client.Client`; no etcd, no storage, no gRPC here;
* ``inodes``     - the inode <-> path table and kernel lookup counts;
* ``handles``    - open files: streamed reads with read-ahead, writes staged on disk;
* ``staging``    - the on-disk staging area (bounded, cleaned at unmount and after a crash);
* ``cache``      - attributes and directory listings, invalidated by the change stream;
* ``errnos``     - the one table from the gns error tree to errno;
* ``mount``      - mount/unmount, signals, stale mounts, ``--daemon``.
"""
