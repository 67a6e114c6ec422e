"""A loopback HTTP server on a free port, in a thread, for the direct object-store paths'
unit tests: it records what a client sends and answers as the store would."""
from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler],
               tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 (TLS with ``tls``) until the block ends; yields its
    base URL."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def loopback_tls(where: Path) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for 127.0.0.1 from a fresh test CA made in ``where``, and the
    path of that CA's certificate (the bundle a client must trust)."""
    from federation.certs import init_certs

    init_certs(where, ["server"])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(where / "server.crt", where / "server.key")
    return tls, str(where / "ca.crt")


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A handler that logs nothing, with ``answer`` to send one whole response."""

    def answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass
