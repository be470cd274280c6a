"""The standard-library S3 reader serving uses inside Lambda (nerkit.store.s3_reader).

Its signatures are checked against botocore's own S3 signer on the same request and clock;
its calls against moto's S3 over real HTTP (the store's serving path included); its failures
against a local HTTP server that answers what S3 answers when things go wrong.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from nerkit.errors import ModelNotFound, StoreUnavailable
from nerkit.store import ModelStore, open_source
from nerkit.store.s3 import AccessDenied, ObjectMissing, read_object, s3_errors
from nerkit.store.s3_reader import (
    Credentials,
    S3Reader,
    S3ResponseError,
    S3TransportError,
    canonical_query,
    from_environment,
)

NOW = datetime(2026, 11, 30, 12, 34, 56, tzinfo=UTC)
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "nerkit-serving",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "AWS_REGION": "eu-west-1",
}


# -- signatures -------------------------------------------------------------------------


def botocore_headers(
    reader: S3Reader, method: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """What botocore's S3 signer puts on the same request at ``NOW``."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    credentials = reader.credentials
    signer = botocore.auth.S3SigV4Auth(
        BotoCredentials(credentials.access_key, credentials.secret_key, credentials.token),
        "s3",
        reader.region,
    )
    request = AWSRequest(method=method, url=url)
    signer.add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjEBc//session+token="])
@pytest.mark.parametrize(
    ("endpoint", "bucket", "key", "query"),
    [
        (None, "nerkit-models", "models/LIVE", {}),
        (None, "nerkit-models", "models/v 1/model.tar.gz", {}),
        (None, "nerkit-models", "mödels/ünïcode+plus=~tilde*star.tar.gz", {}),
        (None, "dotted.bucket.name", "models/LIVE", {}),  # path-style: a dot breaks TLS
        (None, "nerkit-models", "", {"list-type": "2", "max-keys": "1", "prefix": "a b/+c~"}),
        ("http://127.0.0.1:5000", "nerkit-models", "models/LIVE", {}),
        ("https://s3.local.example/base", "nerkit-models", "k", {"prefix": "p/ü"}),
    ],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_signature_matches_botocores(
    method: str,
    endpoint: str | None,
    bucket: str,
    key: str,
    query: dict[str, str],
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = S3Reader("eu-west-1", Credentials("AKIDEXAMPLE", "secret/key+", token), endpoint)
    host, path = reader.address(bucket, key)
    query_string = canonical_query(query)
    ours = reader.signed_headers(method, host, path, query_string, NOW)
    url = f"{reader.endpoint.scheme}://{ours['host']}{path}"
    theirs = botocore_headers(
        reader, method, f"{url}?{query_string}" if query else url, monkeypatch
    )
    assert ours["authorization"] == theirs["authorization"]
    assert ours["x-amz-date"] == theirs["x-amz-date"]
    assert ours["x-amz-content-sha256"] == theirs["x-amz-content-sha256"]
    assert ours.get("x-amz-security-token") == theirs.get("x-amz-security-token")


def test_the_region_names_the_endpoint() -> None:
    credentials = Credentials("a", "b")
    assert S3Reader("eu-west-1", credentials).address("nerkit-models", "models/LIVE") == (
        "nerkit-models.s3.eu-west-1.amazonaws.com",
        "/models/LIVE",
    )
    assert S3Reader("cn-north-1", credentials).address("b-1", "k")[0] == (
        "b-1.s3.cn-north-1.amazonaws.com.cn"
    )
    assert S3Reader("us-east-1", credentials).address("my.bucket", "k") == (
        "s3.us-east-1.amazonaws.com",
        "/my.bucket/k",
    )


# -- when serving uses it ----------------------------------------------------------------


def test_only_inside_lambda_with_credentials_in_the_environment() -> None:
    reader = from_environment(LAMBDA_ENV)
    assert reader is not None
    assert reader.region == "eu-west-1"
    assert reader.endpoint.host == "s3.eu-west-1.amazonaws.com"
    assert reader.credentials.token is None
    with_token = from_environment({**LAMBDA_ENV, "AWS_SESSION_TOKEN": "t"})
    assert with_token is not None and with_token.credentials.token == "t"
    # Outside Lambda, or without credentials or region in the environment: botocore.
    for missing in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert from_environment({k: v for k, v in LAMBDA_ENV.items() if k != missing}) is None
    no_region = {k: v for k, v in LAMBDA_ENV.items() if k != "AWS_REGION"}
    assert from_environment(no_region) is None
    assert from_environment({**no_region, "AWS_DEFAULT_REGION": "us-east-2"}) is not None
    # Endpoint variants the reader does not name: botocore.
    for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        assert from_environment({**LAMBDA_ENV, name: "true"}) is None


def test_a_configured_endpoint_is_used_unless_ignored() -> None:
    configured = {**LAMBDA_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}
    reader = from_environment(configured)
    assert reader is not None
    assert reader.address("b-1", "k") == ("127.0.0.1", "/b-1/k")
    specific = from_environment({**configured, "AWS_ENDPOINT_URL_S3": "http://localhost:9000"})
    assert specific is not None and specific.endpoint.netloc == "localhost:9000"
    ignored = from_environment({**configured, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    assert ignored is not None and ignored.endpoint.host == "s3.eu-west-1.amazonaws.com"


# -- against moto's S3, over HTTP --------------------------------------------------------


@pytest.fixture
def bucket(moto_server: str, aws_credentials: None) -> tuple[Any, S3Reader]:
    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="nerkit-models")
    return s3, S3Reader("us-east-1", Credentials("testing", "testing"), moto_server)


def test_get_head_and_list_against_moto(bucket: tuple[Any, S3Reader]) -> None:
    s3, reader = bucket
    body = bytes(range(256)) * 5000
    key = "models/v 1/ünï+code.bin"
    put = s3.put_object(Bucket="nerkit-models", Key=key, Body=body, Metadata={"sha256": "abc"})
    got = reader.get_object(Bucket="nerkit-models", Key=key)
    assert got["ETag"] == put["ETag"]
    assert got["ContentLength"] == len(body)
    assert b"".join(got["Body"].iter_chunks(4096)) == body
    head = reader.head_object(Bucket="nerkit-models", Key=key)
    assert head["Metadata"] == {"sha256": "abc"}
    assert head["ContentLength"] == len(body)
    s3.put_object(Bucket="nerkit-models", Key="models/v 1/ünï+code.bin.extra", Body=b"")
    listed = reader.list_objects_v2(Bucket="nerkit-models", Prefix=key, MaxKeys=1)
    assert listed == {"Contents": [{"Key": key}]}
    assert reader.list_objects_v2(Bucket="nerkit-models", Prefix="none/") == {"Contents": []}


def test_missing_key_and_bucket_read_as_botocore_does(bucket: tuple[Any, S3Reader]) -> None:
    _, reader = bucket
    with pytest.raises(ObjectMissing), s3_errors("nerkit-models", "absent"):
        reader.get_object(Bucket="nerkit-models", Key="absent")
    with pytest.raises(ObjectMissing), s3_errors("nerkit-models", "absent"):
        reader.head_object(Bucket="nerkit-models", Key="absent")
    with pytest.raises(ModelNotFound, match="does not exist"), s3_errors("no-such", "k"):
        reader.get_object(Bucket="no-such", Key="k")


def test_the_store_serves_from_moto_through_the_reader(
    bucket: tuple[Any, S3Reader], tiny_artifact_tar: Path, tmp_path: Path
) -> None:
    s3, reader = bucket
    publisher = ModelStore("nerkit-models", "models", s3)
    version = publisher.upload(tiny_artifact_tar)
    source = open_source("s3://nerkit-models/models", tmp_path / "cache", s3=reader)
    pointer = source.live()
    assert pointer is None  # nothing published yet: LIVE is absent, not an error
    publisher.set_live(version)
    pointer = source.live()
    assert pointer is not None and pointer.version == version
    artifact = source.fetch(pointer)
    assert artifact.version == version
    assert (artifact.path / "manifest.json").is_file()
    by_version = ModelStore("nerkit-models", "models", reader).fetch(tmp_path / "c2", version)
    assert by_version.version == version


# -- failures, from a local server -------------------------------------------------------

Reply = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Traffic:
    """What the local server received: each request's path and Authorization header."""

    paths: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


@contextlib.contextmanager
def fake_s3(replies: list[Reply]) -> Iterator[tuple[S3Reader, Traffic]]:
    """A reader on a local server that answers the n-th request with ``replies[n]``; yields
    the reader and what the server received."""
    traffic = Traffic()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            traffic.paths.append(self.path)
            traffic.authorizations.append(self.headers.get("Authorization", ""))
            replies[len(traffic.paths) - 1](self)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    reader = S3Reader(
        "us-east-1", Credentials("a", "b"), endpoint, read_timeout=0.5, connect_timeout=0.5
    )
    try:
        yield reader, traffic
    finally:
        server.shutdown()
        server.server_close()


def error(status: int, code: str, region: str | None = None) -> Reply:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>"
        handler.send_response(status)
        if region:
            handler.send_header("x-amz-bucket-region", region)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body.encode())

    return reply


def ok(body: bytes, declared: int | None = None) -> Reply:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body) if declared is None else declared))
        handler.send_header("ETag", '"e"')
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def listing(*keys: str) -> Reply:
    contents = "".join(f"<Contents><Key>{key}</Key></Contents>" for key in keys)
    xmlns = "http://s3.amazonaws.com/doc/2006-03-01/"
    return ok(f'<ListBucketResult xmlns="{xmlns}">{contents}</ListBucketResult>'.encode())


def stall(handler: http.server.BaseHTTPRequestHandler) -> None:
    time.sleep(1.5)


def test_a_throttled_or_failed_request_is_tried_once_more() -> None:
    with fake_s3([error(503, "SlowDown"), ok(b"LIVE")]) as (reader, traffic):
        assert reader.get_object(Bucket="b-1", Key="k")["Body"].read() == b"LIVE"
    assert traffic.paths == ["/b-1/k", "/b-1/k"]
    failures = [error(500, "InternalError"), error(500, "InternalError")]
    with fake_s3(failures) as (reader, _), pytest.raises(S3ResponseError) as raised:
        reader.get_object(Bucket="b-1", Key="k")
    assert raised.value.code == "InternalError"


def test_a_bucket_in_another_region_is_followed_there() -> None:
    """S3 names the bucket's region on a 301 (or a 400 for a wrongly scoped signature); the
    request is signed for that region at once, and so is every later one for the bucket."""
    replies = [error(301, "PermanentRedirect", "eu-central-1"), ok(b"LIVE"), ok(b"again")]
    with fake_s3(replies) as (reader, traffic):
        assert reader.get_object(Bucket="b-1", Key="k")["Body"].read() == b"LIVE"
        assert reader.get_object(Bucket="b-1", Key="k")["Body"].read() == b"again"
    scopes = [auth.split("Credential=")[1].split(",")[0] for auth in traffic.authorizations]
    assert [scope.split("/")[2] for scope in scopes] == ["us-east-1", *["eu-central-1"] * 2]
    assert reader.region_of("b-1") == "eu-central-1"
    assert reader.region_of("other") == "us-east-1"
    # Without the endpoint configured, the bucket's region names the host too.
    plain = S3Reader("us-east-1", Credentials("a", "b"))
    plain._bucket_regions["b-1"] = "eu-central-1"
    assert plain.address("b-1", "k")[0] == "b-1.s3.eu-central-1.amazonaws.com"


def test_a_client_error_is_not_retried() -> None:
    denied = fake_s3([error(403, "AccessDenied")])
    with denied as (reader, traffic), pytest.raises(AccessDenied), s3_errors("b-1", "k"):
        reader.get_object(Bucket="b-1", Key="k")
    assert traffic.paths == ["/b-1/k"]


def test_a_denied_get_of_an_absent_key_reads_as_absent() -> None:
    """The roles may list only under a prefix condition, so S3 answers a GET of a missing key
    403; the list of exactly that key tells absence from a real denial."""
    replies = [error(403, "AccessDenied"), listing("k.other")]
    with fake_s3(replies) as (reader, traffic), pytest.raises(ObjectMissing):
        read_object(reader, "get_object", "b-1", "k")
    assert traffic.paths[1] == "/b-1/?list-type=2&max-keys=1&prefix=k"
    denied = fake_s3([error(403, "AccessDenied"), listing("k")])
    with denied as (reader, _), pytest.raises(AccessDenied):
        read_object(reader, "get_object", "b-1", "k")


def test_a_stalled_s3_fails_within_the_timeouts() -> None:
    unavailable = pytest.raises(StoreUnavailable, match="cannot reach S3")
    with fake_s3([stall, stall]) as (reader, traffic), unavailable, s3_errors("b-1", "k"):
        reader.get_object(Bucket="b-1", Key="k")
    assert len(traffic.paths) == 2  # each attempt waited one read timeout, then gave up


def test_a_body_cut_short_is_a_transport_error() -> None:
    with fake_s3([ok(b"abc", declared=10)]) as (reader, _):
        body = reader.get_object(Bucket="b-1", Key="k")["Body"]
        with pytest.raises(S3TransportError, match="7 bytes short"):
            b"".join(body.iter_chunks(4))
    with fake_s3([ok(b"abc", declared=10)]) as (reader, _), pytest.raises(S3TransportError):
        reader.get_object(Bucket="b-1", Key="k")["Body"].read()
