"""The standard-library S3 reader serving uses inside Lambda (nerkit.store.s3_reader).

Its signatures are checked against botocore's own S3 signer on the same request and clock;
its calls against moto's S3 over real HTTP (the store's serving path included); its failures
against a local HTTP server that answers what S3 answers when things go wrong.
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


def reader_for(env: dict[str, str], bucket: str = "nerkit-models") -> S3Reader | None:
    return from_environment(bucket, env)


def test_only_inside_lambda_with_credentials_in_the_environment() -> None:
    reader = reader_for(LAMBDA_ENV)
    assert reader is not None
    assert reader.region == "eu-west-1"
    assert reader.endpoint.host == "s3.eu-west-1.amazonaws.com"
    assert reader.credentials.token is None
    with_token = reader_for({**LAMBDA_ENV, "AWS_SESSION_TOKEN": "t"})
    assert with_token is not None and with_token.credentials.token == "t"
    # Outside Lambda, or without credentials or region in the environment: botocore.
    for missing in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert reader_for({k: v for k, v in LAMBDA_ENV.items() if k != missing}) is None
    no_region = {k: v for k, v in LAMBDA_ENV.items() if k != "AWS_REGION"}
    assert reader_for(no_region) is None
    assert reader_for({**no_region, "AWS_DEFAULT_REGION": "us-east-2"}) is not None
    # Endpoint variants the reader does not name: botocore.
    for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        assert reader_for({**LAMBDA_ENV, name: "true"}) is None
    # Proxies, which botocore honours: botocore. A CA bundle is the reader's too.
    for name in ("HTTPS_PROXY", "http_proxy"):
        assert reader_for({**LAMBDA_ENV, name: "x"}) is None
    bundled = reader_for({**LAMBDA_ENV, "AWS_CA_BUNDLE": "/etc/ca.pem"})
    assert bundled is not None and bundled.ca_bundle == "/etc/ca.pem"
    # Partitions whose endpoints the reader does not name, and directory buckets: botocore.
    for region in ("us-iso-east-1", "us-isob-east-1", "eusc-de-east-1", "mars-1"):
        assert reader_for({**LAMBDA_ENV, "AWS_REGION": region}) is None
    for region in ("us-gov-west-1", "cn-northwest-1", "ap-southeast-5", "il-central-1"):
        assert reader_for({**LAMBDA_ENV, "AWS_REGION": region})
    for bucket in ("models--use1-az4--x-s3", "models--op-s3"):
        assert reader_for(LAMBDA_ENV, bucket) is None


def test_a_configured_endpoint_is_used_unless_ignored() -> None:
    configured = {**LAMBDA_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}
    reader = reader_for(configured)
    assert reader is not None
    assert reader.address("b-1", "k") == ("127.0.0.1", "/b-1/k")
    specific = from_environment(
        "nerkit-models", {**configured, "AWS_ENDPOINT_URL_S3": "http://localhost:9000"}
    )
    assert specific is not None
    assert (specific.endpoint.host, specific.endpoint.port) == ("localhost", 9000)
    ipv6 = from_environment(
        "nerkit-models", {**configured, "AWS_ENDPOINT_URL": "http://[::1]:9000"}
    )
    assert ipv6 is not None and ipv6.address("b-1", "k") == ("[::1]", "/b-1/k")
    ignored = from_environment(
        "nerkit-models", {**configured, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}
    )
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


def STALL(handler: http.server.BaseHTTPRequestHandler) -> None:
    """A reply that never comes (``fake_s3`` holds the request until the test ends)."""


@dataclass
class Traffic:
    """What the local server received: each request's path and Authorization header."""

    paths: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


@contextlib.contextmanager
def fake_s3(
    replies: list[Reply], tls: ssl.SSLContext | None = None, ca_bundle: str | None = None
) -> Iterator[tuple[S3Reader, Traffic]]:
    """A reader on a local server that answers the n-th request with ``replies[n]`` (over TLS
    with ``tls``, the reader trusting ``ca_bundle``); yields the reader and what the server
    received."""
    traffic = Traffic()
    stopping = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            traffic.paths.append(self.path)
            traffic.authorizations.append(self.headers.get("Authorization", ""))
            reply = replies[len(traffic.paths) - 1]
            if reply is STALL:
                stopping.wait()  # accepted, never answered, until the test is over
            else:
                reply(self)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    endpoint = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
    reader = S3Reader(
        "us-east-1",
        Credentials("a", "b"),
        endpoint,
        read_timeout=0.5,
        connect_timeout=0.5,
        ca_bundle=ca_bundle,
    )
    try:
        yield reader, traffic
    finally:
        stopping.set()
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


def not_xml(status: int) -> Reply:
    """What a proxy in front of S3 may answer: an error page in HTML."""
    return ok_status(status, b"<html><body>Service Unavailable</body></html>")


def ok_status(status: int, body: bytes) -> Reply:
    def reply(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


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


def test_an_error_page_that_is_not_xml_is_still_an_error_with_a_retry() -> None:
    with fake_s3([not_xml(503), ok(b"LIVE")]) as (reader, traffic):
        assert reader.get_object(Bucket="b-1", Key="k")["Body"].read() == b"LIVE"
    assert len(traffic.paths) == 2
    with (
        fake_s3([not_xml(502), not_xml(502)]) as (reader, _),
        pytest.raises(S3ResponseError) as raised,
    ):
        reader.get_object(Bucket="b-1", Key="k")
    assert raised.value.code == "502"


def test_a_region_is_followed_once_per_call() -> None:
    """An endpoint that keeps naming other regions gets one follow per call, not a loop; a
    region named in the error body counts like the header; a name that is no region of the
    partition is not followed."""
    replies = [
        error(301, "PermanentRedirect", "eu-central-1"),
        error(301, "PermanentRedirect", "eu-west-3"),
    ]
    with fake_s3(replies) as (reader, traffic), pytest.raises(S3ResponseError):
        reader.get_object(Bucket="b-1", Key="k")
    assert len(traffic.paths) == 2
    in_body = "<Error><Code>AuthorizationHeaderMalformed</Code><Region>ap-south-2</Region></Error>"
    with fake_s3([ok_status(400, in_body.encode()), ok(b"x")]) as (reader, _):
        assert reader.get_object(Bucket="b-1", Key="k")["Body"].read() == b"x"
        assert reader.region_of("b-1") == "ap-south-2"
    bogus = [error(301, "PermanentRedirect", "evil.example.com/x"), ok(b"x")]
    with fake_s3(bogus) as (reader, traffic), pytest.raises(S3ResponseError):
        reader.get_object(Bucket="b-1", Key="k")
    assert len(traffic.paths) == 1


@pytest.fixture(scope="module")
def localhost_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server TLS context for ``localhost`` and the path of its self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)


def test_https_is_verified_against_the_ca_bundle(localhost_tls: tuple[ssl.SSLContext, str]) -> None:
    context, ca_bundle = localhost_tls
    with fake_s3([ok(b"LIVE")], tls=context, ca_bundle=ca_bundle) as (reader, _):
        assert reader.get_object(Bucket="b-1", Key="k")["Body"].read() == b"LIVE"
    # The same server, not trusted: the handshake fails (on each attempt), nothing is read.
    untrusted = fake_s3([ok(b"LIVE"), ok(b"LIVE")], tls=context)
    with untrusted as (reader, traffic), pytest.raises(S3TransportError, match="SSL"):
        reader.get_object(Bucket="b-1", Key="k")
    assert traffic.paths == []


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
    with fake_s3([STALL, STALL]) as (reader, traffic), unavailable as raised, s3_errors("b-1", "k"):
        reader.get_object(Bucket="b-1", Key="k")
    assert len(traffic.paths) == 2
    # Each attempt gave up on its read timeout, not on the server closing the connection.
    assert isinstance(raised.value.__cause__, S3TransportError)
    assert isinstance(raised.value.__cause__.__cause__, TimeoutError)


def test_a_body_cut_short_is_a_transport_error() -> None:
    with fake_s3([ok(b"abc", declared=10)]) as (reader, _):
        body = reader.get_object(Bucket="b-1", Key="k")["Body"]
        with pytest.raises(S3TransportError, match="7 bytes short"):
            b"".join(body.iter_chunks(4))
    with fake_s3([ok(b"abc", declared=10)]) as (reader, _), pytest.raises(S3TransportError):
        reader.get_object(Bucket="b-1", Key="k")["Body"].read()
