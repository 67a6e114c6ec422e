"""``cloud_adapters.azure_direct`` sends the Put Blob azure-storage-blob itself sends, signed
as the SDK signs it.

A loopback HTTP server records the uploads of both, the SDK's (``upload_blob``, as
``AzureStore`` used it) and ours, and answers as the Blob service does; they must carry the
same path, headers and bytes, and our shared-key signature must be the one the SDK's own
``SharedKeyCredentialPolicy`` computes for the request we sent. With a token credential
(over HTTPS, against the same server with a test CA) the token is the one the SDK's own
pipeline holds, renewed as the SDK renews it, and a challenged token hands the upload to the
SDK. The conformance suite runs the shared-key path against Azurite, which checks every
signature.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Iterator
from typing import Any

import azure.core.exceptions as aex
import pytest
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobServiceClient
from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

from cloud_adapters.azure import _SDK_AFTER_CHALLENGE_S, AzureStore
from cloud_adapters.azure_direct import DirectAzure
from cloud_adapters.errors import PreconditionFailed
from cloud_adapters.registry import open_store
from cloud_adapters.uri import parse_uri
from tests.support.http_servers import QuietHandler, loopback_tls, serve_http

_ACCOUNT = "devstoreaccount1"
_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_SEEN: list[dict[str, Any]] = []
# Per request, not compared: they differ between any two requests.
_PER_REQUEST = {"x-ms-date", "x-ms-client-request-id", "authorization", "user-agent", "host",
                "accept-encoding", "connection"}


class _BlobService(QuietHandler):
    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _SEEN.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        headers = {"ETag": '"0x8DE3A1B2C3D4E5F"', "Last-Modified": "Thu, 03 Dec 2026 12:00:00 GMT"}
        code = ("ConditionNotMet" if self.path.endswith("/refuse")
                else "BlobAlreadyExists" if self.path.endswith("/taken") else "")
        if not code:
            self.answer(201, headers)
            return
        self.answer({"ConditionNotMet": 412, "BlobAlreadyExists": 409}[code],
                    {**headers, "x-ms-error-code": code, "Content-Type": "application/xml"},
                    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>' + code.encode()
                    + b"</Code><Message>The condition is not met.\nRequestId:1</Message></Error>")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with serve_http(_BlobService) as url:
        yield url


def _connection_string(endpoint: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={_ACCOUNT};AccountKey={_KEY};"
            f"BlobEndpoint={endpoint}/{_ACCOUNT};")


def _container(endpoint: str) -> Any:
    return BlobServiceClient.from_connection_string(
        _connection_string(endpoint), retry_total=0).get_container_client("cont")


def _direct(endpoint: str) -> DirectAzure:
    direct = DirectAzure.build(_container(endpoint), pool_size=2)
    assert direct is not None
    return direct


def _sdk_signature(seen: dict[str, Any], endpoint: str) -> str:
    """The Authorization the SDK's own policy computes for the request as recorded."""
    headers = {k: v for k, v in seen["headers"].items() if k.lower() != "authorization"}
    request = PipelineRequest(HttpRequest("PUT", endpoint + seen["path"], headers=headers),
                              PipelineContext(None))
    policy = SharedKeyCredentialPolicy(_ACCOUNT, _KEY)  # type: ignore[no-untyped-call]
    policy.on_request(request)  # type: ignore[no-untyped-call]
    return str(request.http_request.headers["Authorization"])


@pytest.mark.parametrize("key", ["plain/file.bin", "dir with space/é+~!*'(),=&?.txt", "日本/キー"])
@pytest.mark.parametrize("condition", ["none", "if_absent", "if_match"])
def test_put_is_the_sdks_own_and_signed_as_the_sdk_signs(endpoint: str, key: str,
                                                         condition: str) -> None:
    data = b"\x00\xff some bytes\r\n" * 50
    sha = hashlib.sha256(data).hexdigest()
    etag = '"0x8DE0000000000AA"'
    conditions: dict[str, dict[str, Any]] = {
        "none": {},
        "if_absent": {"match_condition": MatchConditions.IfMissing},
        "if_match": {"etag": etag, "match_condition": MatchConditions.IfNotModified},
    }
    sdk_cond = conditions[condition]
    _SEEN.clear()
    _container(endpoint).get_blob_client(key).upload_blob(
        data, length=len(data), overwrite=True, metadata={"sha256": sha}, max_concurrency=1,
        **sdk_cond)
    got = _direct(endpoint).put_blob(key, data, sha, if_none_match=condition == "if_absent",
                                     if_match=etag if condition == "if_match" else None)
    sdk, ours = _SEEN
    assert ours["path"] == sdk["path"]
    assert ours["body"] == sdk["body"] == data

    def compared(seen: dict[str, Any]) -> dict[str, str]:
        return {k.lower(): v for k, v in seen["headers"].items() if k.lower() not in _PER_REQUEST}

    assert compared(ours) == compared(sdk)
    assert compared(ours)["x-ms-meta-sha256"] == sha
    assert ours["headers"]["authorization"] == _sdk_signature(ours, endpoint)
    assert ours["headers"]["authorization"].startswith(f"SharedKey {_ACCOUNT}:")
    assert got == ('"0x8DE3A1B2C3D4E5F"', 1796299200.0)  # Thu, 03 Dec 2026 12:00:00 GMT


def test_an_empty_blob_is_signed_without_a_length(endpoint: str) -> None:
    _SEEN.clear()
    _direct(endpoint).put_blob("empty", b"", hashlib.sha256(b"").hexdigest())
    seen = _SEEN[0]
    assert seen["headers"]["content-length"] == "0" and seen["body"] == b""
    assert seen["headers"]["authorization"] == _sdk_signature(seen, endpoint)


def test_the_store_uploads_through_it_and_reports_the_answer(endpoint: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", _connection_string(endpoint))
    store = open_store("az://cont/pre")
    assert isinstance(store, AzureStore)
    _SEEN.clear()
    info = store.put("x.bin", b"abc", sha256=hashlib.sha256(b"abc").hexdigest())
    assert store._direct is not None
    assert _SEEN[0]["path"] == f"/{_ACCOUNT}/cont/pre/x.bin"
    assert (info.key, info.size, info.etag) == ("x.bin", 3, '"0x8DE3A1B2C3D4E5F"')
    assert info.mtime == 1796299200.0
    with pytest.raises(PreconditionFailed, match="409 BlobAlreadyExists"):
        store.put("taken", b"1", if_absent=True)


@pytest.mark.parametrize(("name", "status", "exc_type", "code"), [
    ("refuse", 412, aex.ResourceModifiedError, "ConditionNotMet"),
    ("taken", 409, aex.ResourceExistsError, "BlobAlreadyExists"),
])
def test_a_refusal_is_the_sdks_exception(endpoint: str, name: str, status: int,
                                         exc_type: type[Exception], code: str) -> None:
    with pytest.raises(exc_type, match="condition is not met") as caught:
        _direct(endpoint).put_blob(f"a/{name}", b"1", hashlib.sha256(b"1").hexdigest(),
                                   if_none_match=True)
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    assert caught.value.error_code == code  # type: ignore[attr-defined]


class _Tokens:
    """A token credential that hands out ``tok-1``, ``tok-2``, ... each living ``life_s``."""

    def __init__(self, life_s: float) -> None:
        self.life_s = life_s
        self.calls: list[dict[str, Any]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append({"scopes": scopes, **kwargs})
        return AccessToken(f"tok-{len(self.calls)}", int(time.time() + self.life_s))


class _ChallengingBlobService(_BlobService):
    """Challenges the first token (as Azure challenges a token of another tenant)."""

    def do_PUT(self) -> None:
        if self.headers.get("authorization") != "Bearer tok-1":
            super().do_PUT()
            return
        self.rfile.read(int(self.headers["content-length"]))
        _SEEN.append({"path": self.path, "headers": dict(self.headers.items()), "body": b""})
        self.answer(401, {"WWW-Authenticate": "Bearer authorization_uri=https://login.example/"
                          "tenant-2/oauth2/authorize resource_id=https://storage.azure.com"})


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    return loopback_tls(tmp_path_factory.mktemp("blob-tls"))


def _token_container(url: str, tokens: _Tokens) -> Any:
    return BlobServiceClient(f"{url}/{_ACCOUNT}", credential=tokens,
                             retry_total=0).get_container_client("cont")


def test_a_token_credential_sends_the_sdks_bearer_over_https(
        tls_files: tuple[ssl.SSLContext, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tls, ca = tls_files
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)  # the SDK's requests and our path verify alike
    data = b"token put"
    sha = hashlib.sha256(data).hexdigest()
    with serve_http(_BlobService, tls) as url:
        tokens = _Tokens(life_s=3600)
        container = _token_container(url, tokens)
        direct = DirectAzure.build(container, pool_size=2)
        assert direct is not None
        _SEEN.clear()
        container.get_blob_client("k").upload_blob(data, length=len(data), overwrite=True,
                                                   metadata={"sha256": sha}, max_concurrency=1)
        direct.put_blob("k", data, sha)
        direct.put_blob("k", data, sha)
    sdk, ours, again = _SEEN
    assert sdk["headers"]["Authorization"] == "Bearer tok-1"
    assert ours["headers"]["authorization"] == again["headers"]["authorization"] == "Bearer tok-1"
    assert len(tokens.calls) == 1  # the SDK's cached token, shared with our path
    assert tokens.calls[0]["scopes"] == ("https://storage.azure.com/.default",)
    assert ours["path"] == sdk["path"] and ours["body"] == sdk["body"] == data

    def compared(seen: dict[str, Any]) -> dict[str, str]:
        return {k.lower(): v for k, v in seen["headers"].items() if k.lower() not in _PER_REQUEST}

    assert compared(ours) == compared(sdk)


def test_a_token_near_its_end_is_renewed_as_the_sdk_renews_it(
        tls_files: tuple[ssl.SSLContext, str], monkeypatch: pytest.MonkeyPatch) -> None:
    tls, ca = tls_files
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    with serve_http(_BlobService, tls) as url:
        tokens = _Tokens(life_s=60)  # the SDK's policy renews within 300 s of the end
        direct = DirectAzure.build(_token_container(url, tokens), pool_size=2)
        assert direct is not None
        _SEEN.clear()
        for _ in range(2):
            direct.put_blob("k", b"1", hashlib.sha256(b"1").hexdigest())
    assert [s["headers"]["authorization"] for s in _SEEN] == ["Bearer tok-1", "Bearer tok-2"]


def test_a_challenged_token_hands_the_upload_to_the_sdk_for_a_while(
        tls_files: tuple[ssl.SSLContext, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A 401 challenge is the SDK's to answer (it asks for a token of the challenge's
    tenant and caches it): the store sends that upload, and those of the next minutes,
    through the SDK; then the direct path again, with the token the SDK got."""
    tls, ca = tls_files
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    with serve_http(_ChallengingBlobService, tls) as url:
        tokens = _Tokens(life_s=3600)
        store = AzureStore(parse_uri("az://cont/pre"))
        monkeypatch.setattr(store, "_make_service", lambda: BlobServiceClient(
            f"{url}/{_ACCOUNT}", credential=tokens, retry_total=0))
        _SEEN.clear()
        info = store.put("x.bin", b"abc")
        paused_for = store._direct_from - time.monotonic()
        store.put("y.bin", b"abc")  # paused: the SDK
        store._direct_from = time.monotonic()  # the pause is over
        store.put("z.bin", b"abc")  # the direct path again
    assert info.etag == '"0x8DE3A1B2C3D4E5F"'
    assert _SDK_AFTER_CHALLENGE_S - 5 < paused_for <= _SDK_AFTER_CHALLENGE_S
    # The SDK spells the header "Authorization", the direct path "authorization".
    assert [(s["path"].rsplit("/", 1)[-1], next(f"{k} {v}" for k, v in s["headers"].items()
                                               if k.lower() == "authorization")) for s in _SEEN] == [
        ("x.bin", "authorization Bearer tok-1"),  # ours, challenged
        ("x.bin", "Authorization Bearer tok-1"),  # the SDK's, challenged
        ("x.bin", "Authorization Bearer tok-2"),  # the SDK's answer to the challenge
        ("y.bin", "Authorization Bearer tok-2"),
        ("z.bin", "authorization Bearer tok-2"),  # ours, with the token the SDK cached
    ]
    assert len(tokens.calls) == 2 and tokens.calls[1].get("tenant_id") == "tenant-2"


def test_a_sas_keeps_the_sdk(endpoint: str) -> None:
    service = BlobServiceClient(f"{endpoint}/{_ACCOUNT}?sv=2025-01-05&sig=abc")
    assert DirectAzure.build(service.get_container_client("cont"), pool_size=2) is None


def test_a_proxied_endpoint_keeps_the_sdk(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "")
    assert DirectAzure.build(_container(endpoint), pool_size=2) is None
