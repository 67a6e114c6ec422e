"""A small kept-alive HTTP/1.1 client for the object stores' hot small requests.

Why: a mirror pass sends one request per small file, and what a Python process can send is
bounded by the CPU each request costs in it. The stores' SDKs go through ``requests`` or
urllib3, on ``http.client``: per request a prepared-request pipeline, an environment scan
for proxies, a file object made per answer, and a header parse through the ``email``
package. Here a request is written in one send on a kept-alive connection and its answer
read with one buffered parse (measured in :mod:`cloud_adapters.s3_direct`).

It reads the answers object stores give: a status line, headers, and a body by
``Content-Length``, by chunks, or up to the server's close; 1xx interim answers are skipped;
a connection is kept as HTTP/1.1 and 1.0 say. An idle connection the server has closed is
noticed before use (it polls readable) and replaced, as urllib3 does. No redirects, no
proxies, no HTTP/2: a caller builds on this only where its store's configuration needs
none of those (the ``build`` functions of the ``*_direct`` modules decide).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import urllib.request
import weakref
from email.utils import parsedate_to_datetime
from urllib.parse import SplitResult

__all__ = ["BadResponse", "Conn", "Connections", "dropped", "host_header", "http_date",
           "proxied", "requests_ca_bundle"]


class BadResponse(ConnectionError):
    """The server's answer is not HTTP/1.x as this module reads it: the connection is
    unusable, as after a network error (hence a ``ConnectionError``)."""


_MAX_HEAD = 64 << 10  # a store's answer head is a few hundred bytes
_READ = 64 << 10


class Conn:
    """One kept-alive HTTP/1.1 connection: its socket (None once closed) and what has been
    read beyond the last answer."""

    __slots__ = ("sock", "_buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self._buf = bytearray()

    @property
    def unread(self) -> bool:
        """Bytes arrived beyond the last answer (which nothing asked for)."""
        return bool(self._buf)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, method: str, head: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send one request, read its answer: status, headers (lower-case names), body.
        Closes the connection after an answer that ends it."""
        sock = self.sock
        assert sock is not None
        if len(body) <= _READ:
            sock.sendall(head + body)  # one segment for a small request
        else:
            sock.sendall(head)
            sock.sendall(body)
        status, keep, headers = self._read_head()
        while 100 <= status < 200:  # interim answers (100 Continue): the final one follows
            status, keep, headers = self._read_head()
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            data = self._read_chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise BadResponse(f"bad Content-Length {headers['content-length']!r}") from None
            data = self._read_exact(length)
        else:  # the body runs until the server closes
            data, keep = self._read_to_close(), False
        if not keep:
            self.close()
        return status, headers, data

    def _read_head(self) -> tuple[int, bool, dict[str, str]]:
        lines = self._read_until(b"\r\n\r\n", "answer headers").decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise BadResponse(f"bad status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        name = ""
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation
                headers[name] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise BadResponse(f"bad header line {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        tokens = headers.get("connection", "").lower()
        keep = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        return int(code), keep, headers

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(_READ)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-answer")
        self._buf += chunk

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _read_until(self, sep: bytes, what: str) -> bytes:
        """The bytes before the next ``sep`` (consumed with it), at most 64 KiB of them."""
        buf = self._buf
        end = buf.find(sep)
        while end < 0:
            if len(buf) > _MAX_HEAD:
                raise BadResponse(f"{what} over 64 KiB")
            seen = len(buf)
            self._fill()
            end = buf.find(sep, max(0, seen - len(sep) + 1))  # sep may straddle the reads
        found = bytes(buf[:end])
        del buf[: end + len(sep)]
        return found

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_field = self._read_until(b"\r\n", "chunk line").split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise BadResponse(f"bad chunk size {size_field[:20]!r}") from None
            if size == 0:
                while self._read_until(b"\r\n", "chunk trailer"):  # up to the blank line
                    pass
                return b"".join(parts)
            parts.append(self._read_exact(size))
            if self._read_until(b"\r\n", "chunk end"):
                raise BadResponse("chunk not followed by CRLF")

    def _read_to_close(self) -> bytes:
        assert self.sock is not None
        while chunk := self.sock.recv(_READ):
            self._buf += chunk
        data = bytes(self._buf)
        self._buf.clear()
        return data


def proxied(origin: SplitResult) -> bool:
    """The environment sends requests to ``origin`` through a proxy, which this client does
    not speak (then a store keeps its SDK)."""
    proxies = urllib.request.getproxies()
    return origin.scheme in proxies and not urllib.request.proxy_bypass(origin.hostname or "")


def requests_ca_bundle(session_verify: object = None) -> str:
    """The CA bundle ``requests`` verifies with, in its own order: the environment's
    (``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``), then a session's ``verify`` path, then
    certifi's. For the stores whose SDK sends through ``requests`` (GCS, Azure)."""
    import requests  # (only those stores' SDKs bring it)

    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or (session_verify if isinstance(session_verify, str) else None)
            or requests.utils.DEFAULT_CA_BUNDLE_PATH)


def http_date(value: str | None) -> float | None:
    """The time an HTTP date header (``Last-Modified``) names, or None if absent or
    malformed."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def host_header(parts: SplitResult) -> str:
    """The Host header botocore signs and a client sends: no port where it is the scheme's
    default, an IPv6 address in brackets."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class Connections:
    """Idle kept-alive connections to one origin, most recently used first; at most
    ``size`` are kept (a burst beyond that opens more, closed when given back)."""

    def __init__(self, origin: SplitResult, ca_certs: str | None, size: int,
                 connect_timeout: float, read_timeout: float) -> None:
        self._host = origin.hostname or ""
        self._port = origin.port or (443 if origin.scheme == "https" else 80)
        self._tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            self._tls = ssl.create_default_context(cafile=ca_certs)  # verifies the host name
        self._size = size
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[Conn] = []
        self._lock = threading.Lock()
        # Like urllib3's pools: connections still idle when the store goes are closed,
        # not left to the garbage collector (which warns about unclosed sockets).
        weakref.finalize(self, _close_all, self._idle)

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, dict[str, str], bytes]:
        """One request on a kept-alive connection: its answer's status, headers (lower-case
        names) and body. ``headers`` are sent as given, with ``content-length`` added for a
        body (and for any PUT or POST). Raises ``ValueError`` for a header value holding a
        line break, before anything is sent, and ``ConnectionError`` (``BadResponse``
        included; TLS and name-resolution failures become one, as in requests) or
        ``TimeoutError`` for the wire; a connection that failed is closed, never reused."""
        if any("\r" in v or "\n" in v for v in headers.values()):  # (an etag a server gave)
            raise ValueError(f"{method} {target!r}: a header value holds a line break")
        lines = [f"{method} {target} HTTP/1.1\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items())]
        if body or method in ("PUT", "POST"):
            lines.append(f"content-length: {len(body)}\r\n")
        lines.append("\r\n")
        conn: Conn | None = None
        try:
            conn = self.take()
            answer = conn.exchange(method, "".join(lines).encode("latin-1"), body)
        except OSError as exc:
            if conn is not None:
                conn.close()  # in an unknown state
            if isinstance(exc, (ConnectionError, TimeoutError)):
                raise
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        self.give(conn)  # closed by exchange() if the server said it closes
        return answer

    def take(self) -> Conn:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if not dropped(conn):
                return conn
            conn.close()

    def give(self, conn: Conn) -> None:
        if conn.sock is None:  # the answer said the server closes it
            return
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> Conn:
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=self._connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
        except OSError:
            if sock is not None:
                sock.close()
            raise
        return Conn(sock)


def dropped(conn: Conn) -> bool:
    """An idle connection with something to read has been closed by the server (or holds
    bytes nobody asked for): either way it cannot carry the next request."""
    if conn.sock is None or conn.unread:
        return True
    poller = select.poll()
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(0))


def _close_all(conns: list[Conn]) -> None:
    for conn in conns:
        conn.close()
    conns.clear()


