"""A warmed-up ``gns`` process that waits for its command line on stdin.

Most of what NodePublishVolume waits for is a new Python process importing gRPC, pydantic,
pyfuse3 and the client before ``gns fuse`` can mount anything. The publisher keeps one of
these ready: it has done the imports already, and when it receives ``{"argv": [...],
"log": PATH}`` it sends its output to ``PATH`` and runs exactly the CLI
(``federation.cli.main.run(argv)``), so the mount is the same ``gns fuse TARGET --root PATH``
the driver would otherwise start cold. An empty stdin (the driver stopping) ends it.
"""
from __future__ import annotations

import importlib
import json
import os
import sys


def main() -> int:
    from federation.cli import main as cli
    from federation.malloc_tuning import tune_for_command

    tune_for_command("fuse")  # what the gns command's main does for the process it becomes
    try:  # the FUSE layer's own imports, so that nothing is left to load after the request
        for name in ("pyfuse3", "trio"):  # what gns fuse imports at mount time
            importlib.import_module(name)
        import federation.cli.commands_fuse
        import federation.client
        import federation.fuse.cache
        import federation.fuse.mount
        import federation.fuse.operations
        import federation.fuse.staging
        import federation.fuse.watch  # noqa: F401
    except ImportError:  # gns fuse unavailable: the CLI reports it when asked
        pass
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    request = json.loads(line)
    fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return cli.run(list(request["argv"]))


if __name__ == "__main__":
    sys.exit(main())
