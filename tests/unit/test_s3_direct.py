"""``cloud_adapters.s3_direct`` signs exactly as botocore does.

The S3 servers the integration tests run (moto, SeaweedFS ``weed mini``) accept any
signature, so a signing mistake would pass there and fail only against AWS. Here a loopback
HTTP server records what ``DirectS3`` sends and botocore's own ``S3SigV4Auth`` recomputes
the signature from the recorded request: they must be equal.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import boto3
import botocore.exceptions as bex
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud_adapters import http1
from cloud_adapters.s3_direct import DirectS3
from tests.support.http_servers import loopback_tls, serve_http

_SEEN: list[dict[str, Any]] = []


class _Recorder(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        _SEEN.append({"method": self.command, "path": self.path,
                      "headers": {k.lower(): v for k, v in self.headers.items()},
                      "body": body})
        if unquote(self.path).endswith("/refuse"):
            err = (b"<?xml version='1.0'?><Error><Code>PreconditionFailed</Code>"
                   b"<Message>At least one of the pre-conditions you specified did not hold"
                   b"</Message></Error>")
            self.send_response(412)
            self.send_header("Content-Length", str(len(err)))
            self.end_headers()
            self.wfile.write(err)
            return
        self.send_response(200)
        self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", "0" if self.command == "PUT" else "5")
        self.send_header("Last-Modified", "Thu, 03 Dec 2026 12:00:00 GMT")
        self.send_header("x-amz-meta-sha256", "f" * 64)
        self.end_headers()

    do_PUT = _answer
    do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with serve_http(_Recorder) as url:
        yield url


def _direct(endpoint: str, token: str | None = None) -> tuple[DirectS3, Credentials]:
    session = boto3.session.Session(aws_access_key_id="AKIDEXAMPLE",
                                    aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCY",
                                    aws_session_token=token, region_name="eu-west-3")
    client = session.client("s3", endpoint_url=endpoint)
    direct = DirectS3.build(client, session, "bkt", pool_size=4)
    assert direct is not None
    creds = session.get_credentials()
    assert creds is not None
    return direct, creds


def _botocore_signature(endpoint: str, seen: dict[str, Any], creds: Credentials) -> str:
    """What botocore's signer makes of the recorded request (same time, same headers)."""
    h = seen["headers"]
    names = h["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    req = AWSRequest(method=seen["method"], url=endpoint + seen["path"], data=seen["body"],
                     headers={k: h[k] for k in names})
    req.context["timestamp"] = h["x-amz-date"]
    auth = S3SigV4Auth(creds.get_frozen_credentials(), "s3", "eu-west-3")
    canonical = auth.canonical_request(req)
    return str(auth.signature(auth.string_to_sign(req, canonical), req))


@pytest.mark.parametrize("key", ["plain/file.bin", "dir with space/é-ü+~!*'(),.txt",
                                 "prefix/日本語/x=y&z"])
@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEXAMPLE//token=="])
def test_put_signature_equals_botocore(endpoint: str, key: str, token: str | None) -> None:
    direct, creds = _direct(endpoint, token)
    body = b"some bytes \x00\xff" * 100
    sha = hashlib.sha256(body).hexdigest()
    _SEEN.clear()
    r = direct.put_object(key, body, sha, {"IfNoneMatch": "*"})
    assert r.status == 200 and r.etag == '"abc"'
    seen = _SEEN[0]
    assert seen["body"] == body
    # the same object through botocore itself lands on the same request path
    boto3.session.Session(aws_access_key_id="a", aws_secret_access_key="b",
                          region_name="eu-west-3").client(
        "s3", endpoint_url=endpoint).put_object(Bucket="bkt", Key=key, Body=body)
    assert _SEEN[-1]["path"] == seen["path"] and unquote(seen["path"]) == "/bkt/" + key
    h = seen["headers"]
    assert h["x-amz-meta-sha256"] == sha and h["x-amz-content-sha256"] == sha
    assert h["if-none-match"] == "*"
    assert (h.get("x-amz-security-token") == token)
    assert h["authorization"].endswith("Signature=" + _botocore_signature(endpoint, seen, creds))


def test_head_signature_and_fields(endpoint: str) -> None:
    direct, creds = _direct(endpoint)
    _SEEN.clear()
    r = direct.head_object("a/b.bin")
    (seen,) = _SEEN
    assert seen["headers"]["authorization"].endswith(
        "Signature=" + _botocore_signature(endpoint, seen, creds))
    assert r.headers["x-amz-meta-sha256"] == "f" * 64
    assert r.mtime == 1796299200.0


def test_error_keeps_botocore_shape(endpoint: str) -> None:
    direct, _ = _direct(endpoint)
    with pytest.raises(bex.ClientError) as ei:
        direct.put_object("x/refuse", b"1", hashlib.sha256(b"1").hexdigest(), {})
    assert ei.value.response["Error"]["Code"] == "PreconditionFailed"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_unmodelled_client_falls_back_to_botocore(endpoint: str) -> None:
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session(region_name="us-east-1")
    client = session.client("s3", endpoint_url=endpoint, config=Config(signature_version=UNSIGNED))
    assert DirectS3.build(client, session, "bkt", pool_size=4) is None


# -- connections ------------------------------------------------------------------------------


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; records each request's client port. A key ending in
    ``/hangup`` is answered, then the connection closed without a ``Connection: close``
    header, as a server does with an idle connection it times out."""

    protocol_version = "HTTP/1.1"
    ports: list[int] = []

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).ports.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.path.endswith("/hangup"):
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


def _plain(origin: str, ca_certs: str | None = None) -> DirectS3:
    return DirectS3(base_url=origin + "/bkt/", region="us-east-1",
                    credentials=Credentials("AKIDEXAMPLE", "secret"), ca_certs=ca_certs,
                    pool_size=2, connect_timeout=5, read_timeout=5)


def _put(direct: DirectS3, key: str) -> None:
    direct.put_object(key, b"x", hashlib.sha256(b"x").hexdigest(), {})


def test_requests_reuse_one_kept_alive_connection() -> None:
    _KeepAlive.ports = []
    with serve_http(_KeepAlive) as url:
        direct = _plain(url)
        for i in range(5):
            _put(direct, f"k{i}")
    assert len(_KeepAlive.ports) == 5 and len(set(_KeepAlive.ports)) == 1


def test_a_connection_the_server_closed_is_replaced_not_failed() -> None:
    _KeepAlive.ports = []
    with serve_http(_KeepAlive) as url:
        direct = _plain(url)
        _put(direct, "a/hangup")
        idle = direct._pool._idle[0]
        assert idle.sock is not None  # kept: the server never said it would close
        deadline = time.monotonic() + 5
        while not http1.dropped(idle) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the server's close reached this side
        _put(direct, "b")  # on a new connection, without an error
        _put(direct, "c")
    assert len(_KeepAlive.ports) == 3 and _KeepAlive.ports[1] != _KeepAlive.ports[0]
    assert _KeepAlive.ports[2] == _KeepAlive.ports[1]


def test_idle_connections_close_with_the_store() -> None:
    with serve_http(_KeepAlive) as url:
        direct = _plain(url)
        _put(direct, "k")
        (conn,) = direct._pool._idle
        del direct
        gc.collect()
        assert conn.sock is None


def test_https_verifies_the_server_against_the_ca_bundle(tmp_path: Path) -> None:
    tls, ca = loopback_tls(tmp_path)
    _KeepAlive.ports = []
    with serve_http(_KeepAlive, tls) as url:
        _put(_plain(url, ca_certs=ca), "k")
        assert len(_KeepAlive.ports) == 1
        with pytest.raises(bex.HTTPClientError, match="CERTIFICATE_VERIFY_FAILED"):
            _put(_plain(url), "k")  # the system's CAs did not issue it
    assert len(_KeepAlive.ports) == 1


# -- reading answers ----------------------------------------------------------------------------


@contextlib.contextmanager
def _canned(*answers: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """A loopback server that answers the n-th request on one connection with
    ``answers[n]`` (raw bytes, sent as they are) and closes the connection after the last
    answer. Records each request head."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    heads: list[bytes] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                buf = b""
                for answer in answers:
                    while b"\r\n\r\n" not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    heads.append(head)
                    declared = re.search(rb"content-length: (\d+)", head)
                    length = int(declared.group(1)) if declared else 0
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    buf = buf[length:]
                    conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", heads
    finally:
        listener.close()
        t.join(5)


_OK = b"HTTP/1.1 200 OK\r\nETag: \"e1\"\r\nContent-Length: 0\r\n\r\n"


def test_a_chunked_error_answer_is_read_whole() -> None:
    xml = (b"<?xml version='1.0'?><Error><Code>PreconditionFailed</Code>"
           b"<Message>no</Message></Error>")
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in (xml[:10], xml[10:])) + b"0\r\nX-T: 1\r\n\r\n"
    answer = b"HTTP/1.1 412 Precondition Failed\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    with _canned(answer, _OK) as (url, heads):
        direct = _plain(url)
        with pytest.raises(bex.ClientError) as ei:
            _put(direct, "a")
        assert ei.value.response["Error"]["Code"] == "PreconditionFailed"
        _put(direct, "b")  # the same connection, positioned after the chunked body
    assert len(heads) == 2


def test_interim_answers_folded_and_repeated_headers() -> None:
    answer = (b"HTTP/1.1 100 Continue\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nETag: \"e2\"\r\nX-Amz-Meta-Sha256: abc\r\n def\r\n"
              b"Vary: Origin\r\nVary: Accept\r\nContent-Length: 0\r\n\r\n")
    with _canned(answer) as (url, _):
        r = _plain(url).put_object("k", b"x", hashlib.sha256(b"x").hexdigest(), {})
    assert r.status == 200 and r.etag == '"e2"'
    assert r.headers["x-amz-meta-sha256"] == "abc def" and r.headers["vary"] == "Origin, Accept"


def test_head_answer_has_no_body_whatever_its_length_says() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLast-Modified: Thu, 03 Dec 2026 12:00:00 GMT\r\n\r\n"
    with _canned(head, head) as (url, heads):
        direct = _plain(url)
        assert direct.head_object("a").mtime == 1796299200.0
        assert direct.head_object("b").headers["content-length"] == "5"  # kept alive, in step
    assert [h.split(b" ")[0] for h in heads] == [b"HEAD", b"HEAD"]
    assert all(b"content-length" not in h for h in heads)


def test_an_answer_without_length_runs_to_the_close_and_ends_the_connection() -> None:
    answer = b"HTTP/1.0 500 Internal Error\r\n\r\n<Error><Code>InternalError</Code></Error>"
    with _canned(answer) as (url, _):
        direct = _plain(url)
        with pytest.raises(bex.ClientError) as ei:
            _put(direct, "a")
        assert ei.value.response["Error"]["Code"] == "InternalError"
        assert direct._pool._idle == []  # not kept: the server ended it


@pytest.mark.parametrize("answer", [
    b"SPDY/3 200 OK\r\n\r\n",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 << 10),
])
def test_a_malformed_or_cut_answer_fails_the_request_and_drops_the_connection(answer: bytes) -> None:
    with _canned(answer) as (url, _):
        direct = _plain(url)
        with pytest.raises(bex.HTTPClientError):
            _put(direct, "a")
        assert direct._pool._idle == []


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    with _canned(_OK) as (url, heads):
        direct = _plain(url)
        with pytest.raises(ValueError, match="line break"):
            direct.put_object("k", b"x", hashlib.sha256(b"x").hexdigest(),
                              {"IfMatch": '"e"\r\nx-evil: 1'})
        _put(direct, "k")
    assert len(heads) == 1 and b"x-evil" not in heads[0]

