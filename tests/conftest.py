"""Shared test set-up: the fixture plugins that start real servers (each stopped by PID)."""
pytest_plugins = [
    "tests.fixtures.etcd",
    "tests.fixtures.federation",
    "tests.fixtures.objectstores",
]
