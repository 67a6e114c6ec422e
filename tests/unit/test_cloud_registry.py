"""Registry: lazy imports, install hints, no I/O in constructors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud_adapters import registry
from cloud_adapters.errors import InvalidURI, MissingDependency, PermissionDenied
from cloud_adapters.local import LocalStore


def test_import_is_lazy() -> None:
    code = ("import sys, cloud_adapters.registry as r; r.open_store('file:///tmp');"
            "print(any(m.split('.')[0] in ('boto3','azure') or m.startswith('google.cloud')"
            " for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_open_store_schemes_without_io(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for uri, cls in [("s3://bucket-x/p", "S3Store"), ("gs://bucket-x/p", "GCSStore"),
                     ("az://bucket-x/p", "AzureStore"), ("file:///nonexistent/dir", "LocalStore")]:
        store = registry.open_store(uri)
        assert type(store).__name__ == cls and store.uri == uri
    assert registry.SCHEMES == ("s3", "gs", "az", "file")


@pytest.mark.parametrize(("uri", "sdk", "extra"), [("s3://bkt", "boto3", "s3"),
                                                   ("gs://bkt", "google", "gcs"),
                                                   ("az://bkt", "azure", "azure")])
def test_missing_sdk_gives_install_hint(
    monkeypatch: pytest.MonkeyPatch, uri: str, sdk: str, extra: str
) -> None:
    mod = {"s3": "cloud_adapters.s3", "gs": "cloud_adapters.gcs",
           "az": "cloud_adapters.azure"}[uri[:2]]
    monkeypatch.delitem(sys.modules, mod, raising=False)
    for name in list(sys.modules):
        if name == sdk or name.startswith(sdk + "."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, sdk, None)
    with pytest.raises(MissingDependency) as ei:
        registry.open_store(uri)
    assert f"pip install 'gns[{extra}]'" in str(ei.value) and uri in str(ei.value)
    assert isinstance(ei.value, ImportError)


def test_register_custom_scheme() -> None:
    registry.register("mem", "cloud_adapters.local:LocalStore")
    try:
        assert registry.implementation("mem") is LocalStore
        with pytest.raises(InvalidURI):  # LocalStore serves file:// only
            registry.open_store("mem://bucket/x")
    finally:
        registry._REGISTRY.pop("mem")
        from cloud_adapters import uri as u
        u._extra_schemes.discard("mem")


def test_unknown_scheme() -> None:
    with pytest.raises(InvalidURI, match="unknown scheme"):
        registry.open_store("hdfs://x/y")


def test_missing_credentials_name_the_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Azure: nothing configured -> refused before any request.
    for v in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_URL",
              "AZURE_STORAGE_ACCOUNT"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(PermissionDenied, match="az://bkt-a/p"):
        registry.open_store("az://bkt-a/p").stat("k")
    # GCS: no emulator, ADC pointing at a missing file -> no network, clear error.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(PermissionDenied, match="gs://bkt-g/p"):
        registry.open_store("gs://bkt-g/p").stat("k")
    # S3: no credentials anywhere (IMDS disabled, profiles absent); endpoint is a dead port.
    for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
              "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "nocfg"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "nocreds"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(PermissionDenied, match="s3://bkt-s/p"):
        registry.open_store("s3://bkt-s/p").stat("k")
