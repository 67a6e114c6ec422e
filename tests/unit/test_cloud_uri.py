"""URI parsing and validation: no servers."""

from __future__ import annotations

import pytest

from cloud_adapters.errors import InvalidURI
from cloud_adapters.uri import StoreURI, parse_uri, validate_key


@pytest.mark.parametrize(
    ("uri", "expected", "normal"),
    [
        ("s3://my-bucket", StoreURI("s3", "my-bucket", ""), "s3://my-bucket"),
        ("s3://my.bucket.1/a//b/", StoreURI("s3", "my.bucket.1", "a/b"), "s3://my.bucket.1/a/b"),
        ("gs://dr_bucket/sensors", StoreURI("gs", "dr_bucket", "sensors"), "gs://dr_bucket/sensors"),
        ("az://dr-container/x/y", StoreURI("az", "dr-container", "x/y"), "az://dr-container/x/y"),
        ("file:///mnt/nfs/sensors/", StoreURI("file", "", "/mnt/nfs/sensors"),
         "file:///mnt/nfs/sensors"),
        ("file://localhost/tmp", StoreURI("file", "", "/tmp"), "file:///tmp"),
        ("S3://abc", StoreURI("s3", "abc", ""), "s3://abc"),
    ],
)
def test_valid(uri: str, expected: StoreURI, normal: str) -> None:
    assert parse_uri(uri) == expected
    assert str(parse_uri(uri)) == normal


@pytest.mark.parametrize(
    "uri",
    [
        "", "bucket/key", "http://x/y", "ftp://abc", "s3://", "s3:///prefix", "s3://ab",
        "s3://" + "a" * 64, "s3://Upper", "s3://under_score", "s3://-abc", "s3://abc-",
        "s3://a..b", "s3://192.168.1.1", "s3://xn--abc", "s3://abc-s3alias",
        "gs://goog-bucket", "gs://my-google-bucket", "gs://ab", "gs://Bad",
        "az://a--b", "az://ab", "az://under_score", "az://-abc",
        "file://relative/path", "file:relative", "file://host/abs",
        "s3://bucket/a/../b", "s3://bucket/./x", "file:///mnt/../etc",
        "s3://bucket/p?x=1", "s3://bucket/p#frag", "s3://bucket/a\x00b",
    ],
)
def test_invalid_names_the_uri(uri: str) -> None:
    with pytest.raises(InvalidURI) as ei:
        parse_uri(uri)
    err = ei.value
    assert err.exit_code == 2 and isinstance(err, ValueError)
    assert err.uri and (uri.split("?")[0][:20] in str(err) or repr(uri) in str(err))


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/", "../x", "a/./b", "a\nb"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidURI, match="s3://b"):
        validate_key(key, "s3://b")


def test_valid_keys() -> None:
    assert validate_key(".gns/manifest.json", "s3://b") == ".gns/manifest.json"
    assert validate_key("ü b/c", "s3://b") == "ü b/c"
