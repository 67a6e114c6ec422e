"""Edge sites: join tokens, the pull-mode edge agent and store-and-forward of changes.

Beside ``federation``: an edge site talks to its hub only through federation's public
client over gRPC and never dials etcd.
"""
