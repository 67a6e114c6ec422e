"""Azure with a token credential, against Azurite over HTTPS with OAuth on.

The store runs as it does with ``DefaultAzureCredential`` (workload or managed identity):
small puts go through ``cloud_adapters.azure_direct`` with the SDK's own bearer token, big
ones through the SDK. Azurite (``--oauth basic``) checks every token's issuer, audience and
times, so a token it would refuse is refused on the direct path too. The tokens are made
here: Azurite does not check a token's signature, and no identity provider runs on this
machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient

from cloud_adapters.azure import AzureStore
from cloud_adapters.errors import PermissionDenied, PreconditionFailed
from cloud_adapters.uri import parse_uri
from federation.local.emulators import ServerHandle

MiB = 2**20


def _b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class _Tokens:
    """JWTs as Entra ID issues them for storage (audience, issuer, times), unsigned."""

    def __init__(self, audience: str = "https://storage.azure.com", life_s: int = 3600) -> None:
        self.audience = audience
        self.life_s = life_s
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        now = int(time.time())
        claims = {"aud": self.audience, "iss": "https://sts.windows.net/0f0e0d0c-0000-4000-8000-000000000001/",
                  "iat": now - 60, "nbf": now - 60, "exp": now + self.life_s, "oid": "gns-test",
                  "scp": " ".join(scopes)}
        token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"
        return AccessToken(token, now + self.life_s)


def _token_store(srv: ServerHandle, monkeypatch: pytest.MonkeyPatch, tokens: _Tokens) -> AzureStore:
    """A store on a fresh container (made with the account key), reached with ``tokens``."""
    uri = srv.new_store_uri("tok")
    store = AzureStore(parse_uri(uri))
    monkeypatch.setattr(store, "_make_service", lambda: BlobServiceClient(
        srv.endpoint, credential=tokens, retry_total=0))
    return store


def test_a_token_store_round_trips_through_the_direct_path(
        azurite_https: ServerHandle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", azurite_https.env_vars["REQUESTS_CA_BUNDLE"])
    tokens = _Tokens()
    store = _token_store(azurite_https, monkeypatch, tokens)
    small = os.urandom(4096)
    info = store.put("a/small é+~.bin", small, if_absent=True)
    assert store._direct is not None and store._direct._token_policy is not None
    with pytest.raises(PreconditionFailed):
        store.put("a/small é+~.bin", b"again", if_absent=True)
    over = store.put("a/small é+~.bin", b"over", if_match=info.etag)
    with pytest.raises(PreconditionFailed):
        store.put("a/small é+~.bin", b"stale", if_match=info.etag)
    st = store.stat("a/small é+~.bin")
    assert (st.etag, st.size, st.sha256) == (over.etag, 4, hashlib.sha256(b"over").hexdigest())
    big = os.urandom(5 * MiB + 17)
    store.put("a/big.bin", big, part_size=5 * MiB)  # blocks: the SDK, with the same token
    assert store.read_bytes("a/big.bin", verify=True) == big
    assert sorted(o.key for o in store.list("a/")) == ["a/big.bin", "a/small é+~.bin"]
    assert tokens.calls == 1  # one token, cached and shared by both paths


@pytest.mark.parametrize("tokens", [_Tokens(audience="https://vault.azure.net"), _Tokens(life_s=-120)],
                         ids=["wrong-audience", "expired"])
def test_a_token_azurite_refuses_is_refused_on_the_direct_path(
        azurite_https: ServerHandle, monkeypatch: pytest.MonkeyPatch, tokens: _Tokens) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", azurite_https.env_vars["REQUESTS_CA_BUNDLE"])
    store = _token_store(azurite_https, monkeypatch, tokens)
    store._sdk  # noqa: B018 - builds the direct path
    assert store._direct is not None
    with pytest.raises(PermissionDenied):
        store.put("refused", b"x")
    with azurite_https.env():  # the account key sees nothing written
        keyed = AzureStore(parse_uri(store.uri))
        assert not keyed.exists("refused")
