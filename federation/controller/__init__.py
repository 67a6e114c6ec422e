"""The federation controller: the one long-running process per cluster.

It registers its cluster (liveness lease), follows the namespace through a watch-fed cache,
serves the gRPC data plane for the volumes it owns, forwards requests for volumes owned
elsewhere (streaming, never buffering a whole file), fences itself when its lease may lapse,
and exports Prometheus metrics. One asyncio loop runs everything; blocking disk work goes to
a bounded thread pool.
"""
