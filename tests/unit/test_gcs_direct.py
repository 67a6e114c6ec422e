"""``cloud_adapters.gcs_direct`` sends the upload google-cloud-storage itself sends.

A loopback HTTP server records the multipart uploads of both, the library's
(``Blob.upload_from_string``, as ``GCSStore`` used it) and ours, and answers as the JSON API
does; they must carry the same object resource, bytes, query and credentials. The
conformance suite runs the same path against fake-gcs-server.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import google.api_core.exceptions as gex
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2.credentials import Credentials as TokenCredentials

from cloud_adapters.gcs import GCSStore
from cloud_adapters.gcs_direct import DirectGCS
from cloud_adapters.registry import open_store
from tests.support.http_servers import QuietHandler, serve_http

_SEEN: list[dict[str, Any]] = []


class _JsonApi(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"content-type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + body)
        meta_part, data_part = list(message.iter_parts())
        meta, data = meta_part.get_payload(decode=True), data_part.get_payload(decode=True)
        assert isinstance(meta, bytes) and isinstance(data, bytes)
        resource = json.loads(meta)
        url = urlsplit(self.path)
        _SEEN.append({"path": url.path, "query": dict(parse_qsl(url.query)), "resource": resource,
                      "data": data, "data_type": data_part.get_content_type(),
                      "authorization": self.headers.get("authorization")})
        if resource["name"].endswith("/refuse"):
            answer = json.dumps({"error": {"code": 412, "message": "At least one of the pre-conditions you specified did not hold."}}).encode()
            status = 412
        else:
            answer = json.dumps({**resource, "bucket": "bkt", "generation": "1764763200123456",
                                 "size": str(len(data)), "updated": "2026-12-03T12:00:00.123456789Z"}).encode()
            status = 200
        self.answer(status, {"Content-Type": "application/json"}, answer)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with serve_http(_JsonApi) as url:
        yield url


def _client(endpoint: str, credentials: Any = None) -> storage.Client:
    return storage.Client(project="p", credentials=credentials or AnonymousCredentials(),
                          client_options={"api_endpoint": endpoint})


def _direct(endpoint: str, credentials: Any = None) -> DirectGCS:
    direct = DirectGCS.build(_client(endpoint, credentials), "bkt", pool_size=2)
    assert direct is not None
    return direct


@pytest.mark.parametrize("key", ["plain/file.bin", "dir with space/é+~!*'(),=&?.txt"])
@pytest.mark.parametrize("generation", [None, 0, 1764763200000001])
def test_upload_is_the_librarys_own(endpoint: str, key: str, generation: int | None) -> None:
    data = b"--not a boundary\r\n\x00\xff" * 50
    sha = hashlib.sha256(data).hexdigest()
    _SEEN.clear()
    blob = _client(endpoint).bucket("bkt").blob(key)
    blob.metadata = {"sha256": sha}
    cond = {} if generation is None else {"if_generation_match": generation}
    blob.upload_from_string(data, content_type="application/octet-stream", checksum=None,
                            retry=None, **cond)
    resource = _direct(endpoint).put_object(key, data, sha, generation)
    library, ours = _SEEN
    assert ours == library
    assert ours["resource"] == {"name": key, "metadata": {"sha256": sha}}
    assert ours["data"] == data and ours["data_type"] == "application/octet-stream"
    assert ours["path"] == "/upload/storage/v1/b/bkt/o"
    assert ours["query"] == {"uploadType": "multipart",
                             **({} if generation is None else {"ifGenerationMatch": str(generation)})}
    assert resource["generation"] == "1764763200123456" and resource["name"] == key


def test_the_store_uploads_through_it_and_reports_the_resource(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    store = open_store("gs://bkt/pre")
    assert isinstance(store, GCSStore) and store._fast is not None
    _SEEN.clear()
    info = store.put("x.bin", b"abc", sha256=hashlib.sha256(b"abc").hexdigest())
    assert _SEEN[0]["resource"]["name"] == "pre/x.bin"
    assert (info.key, info.size, info.etag) == ("x.bin", 3, "1764763200123456")
    assert info.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert info.mtime == pytest.approx(1796299200.123456)


def test_a_refusal_is_the_librarys_exception(endpoint: str) -> None:
    with pytest.raises(gex.PreconditionFailed, match="pre-conditions"):
        _direct(endpoint).put_object("a/refuse", b"1", hashlib.sha256(b"1").hexdigest(), 0)


def test_credentials_are_applied_by_google_auth(endpoint: str) -> None:
    _SEEN.clear()
    _direct(endpoint, TokenCredentials(token="ya29.test-token")).put_object(
        "k", b"1", hashlib.sha256(b"1").hexdigest(), None)
    assert _SEEN[0]["authorization"] == "Bearer ya29.test-token"


def test_a_proxied_endpoint_keeps_the_library(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "")
    assert DirectGCS.build(_client(endpoint), "bkt", pool_size=2) is None


def test_an_unmodelled_client_keeps_the_library() -> None:
    class Odd:
        _http = object()

    assert DirectGCS.build(Odd(), "bkt", pool_size=2) is None
