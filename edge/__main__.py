"""``python -m edge``: the edge controller program that ``gns edge join`` becomes.

Reports errors the way the ``gns`` CLI does (one ``gns: error:`` line, SPEC §4 exit codes).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def main(argv: list[str] | None = None) -> int:
    from edge.agent import EdgeConfig, run_edge
    from federation.api.errors import exit_code_for
    from namespace.errors import GnsError

    logging.basicConfig(level=os.environ.get("GNS_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="gns edge join")
    parser.add_argument("--hub", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--listen", default="127.0.0.1:7090")
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--tls-dir")
    parser.add_argument("--identity", default="client")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir)
    fresh = not data_dir.exists()
    try:
        cfg = EdgeConfig(site=args.site, hubs=EdgeConfig.parse_hubs(args.hub), data_dir=data_dir,
                         token=os.environ.pop("GNS_EDGE_TOKEN", None) or None, listen=args.listen,
                         heartbeat=args.heartbeat, tls_dir=Path(args.tls_dir) if args.tls_dir else None,
                         identity=args.identity)
        run_edge(cfg)
        return 0
    except GnsError as exc:
        if fresh:
            _unclaim(data_dir)
        sys.stderr.write(f"gns: error: {' '.join(str(exc).split())}\n")
        return exit_code_for(exc)
    except KeyboardInterrupt:
        return 130


def _unclaim(data_dir: Path) -> None:
    """Undo what start-up wrote to a ``--data-dir`` this run created, if the site never
    joined: a refused join changes nothing (SPEC §4), and a leftover lock and node id would
    make the dir look like a site's. Only those files go; anything else keeps the dir."""
    from edge.bootstrap import identity_path

    if identity_path(data_dir).exists():
        return
    for name in ("controller.lock", "node-id", "node-id.tmp"):
        (data_dir / name).unlink(missing_ok=True)
    try:
        data_dir.rmdir()
    except OSError:  # not empty (or already gone): leave it as it is
        pass


if __name__ == "__main__":
    sys.exit(main())
