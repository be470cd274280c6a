"""A read-only S3 client on the standard library, for serving inside Lambda.

Importing botocore and building its S3 client takes ~0.17 s on this machine, a fifth of a
Lambda cold start, for the three calls serving makes: GET LIVE, GET the tarball, and the list
that tells a denied GET of an absent key from a real denial (``nerkit.store.s3.read_object``).
Inside Lambda the credentials and the region are environment variables, so those calls are
signed here with Signature Version 4 as AWS documents it (tests/test_s3_reader.py checks each
signature against botocore's own signer) and sent with ``http.client``.

``from_environment`` gives a reader only inside Lambda with credentials in the environment and
an endpoint this module can name (the region's, or AWS_ENDPOINT_URL(_S3)); FIPS and dual-stack
settings, and everywhere else, keep botocore (``None``). The reader keeps botocore's timeouts
and attempts (``nerkit.store.s3.CLIENT_OPTIONS``), answers in the shapes the store reads of
botocore's, and fails with ``S3ResponseError`` (S3's error code) or ``S3TransportError``, which
``nerkit.store.s3.s3_errors`` translates like botocore's.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import os
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The hash of an empty payload: what botocore signs for a GET, HEAD or list.
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# S3's answers worth a second attempt, as botocore's standard retry mode has them, and those
# of them that are throttling (a longer pause before the retry).
_RETRY_STATUS = frozenset({500, 502, 503, 504})
_THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException"})
_RETRY_CODES = _THROTTLING_CODES | {"RequestTimeout", "InternalError"}
# The partitions whose S3 endpoints this module names: aws (s3.<region>.amazonaws.com, GovCloud
# included) and aws-cn (.amazonaws.com.cn). Other partitions keep botocore.
_AWS_REGION = re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)(-gov)?-[a-z]+-\d+$")
_CN_REGION = re.compile(r"^cn-[a-z]+-\d+$")
# Bucket names that can be a host name label (no dots: a dotted name breaks TLS's wildcard).
_VIRTUAL_HOST_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_TRUE = frozenset({"true", "1", "yes"})
# Proxies, which botocore honours and this module does not.
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


class S3ResponseError(Exception):
    """S3 answered with an error: ``code`` is its error code, or the status for a HEAD."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"{code} ({status}): {message}" if message else f"{code} ({status})")
        self.status = status
        self.code = code


class S3TransportError(Exception):
    """No answer from S3: connection refused or reset, a timeout, a broken response."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: ``scheme://host[:port]{base_path}``, virtual-hosted or path-style."""

    scheme: str
    host: str
    port: int | None
    base_path: str = ""
    virtual_hosted: bool = True


def from_environment(bucket: str, environ: Mapping[str, str] | None = None) -> S3Reader | None:
    """A reader of ``bucket`` for this Lambda's environment, or ``None`` where botocore must
    be used: outside Lambda, without credentials in the environment, in a partition other than
    aws and aws-cn, behind a proxy, with FIPS or dual-stack
    endpoints, and for directory buckets (S3 Express, Outposts), which have endpoints of
    their own. S3 settings of the AWS config file (addressing style, acceleration) are not
    read either: a deployment that needs them sets ``AWS_USE_...`` or runs outside Lambda."""
    env = os.environ if environ is None else environ
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    if not (env.get("AWS_LAMBDA_FUNCTION_NAME") and access_key and secret_key):
        return None
    if not (_AWS_REGION.match(region) or _CN_REGION.match(region)):
        return None
    if any(
        env.get(name, "").lower() in _TRUE
        for name in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")
    ):
        return None
    if any(env.get(name) for name in _PROXY_VARIABLES):
        return None
    if bucket.endswith(("--x-s3", "--op-s3")):
        return None
    credentials = Credentials(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None)
    configured = None
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() not in _TRUE:
        configured = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    return S3Reader(region, credentials, configured, ca_bundle=env.get("AWS_CA_BUNDLE") or None)


def _endpoint(region: str, url: str | None) -> Endpoint:
    if url:
        # A configured endpoint (moto, a local S3) is addressed path-style, as botocore
        # addresses one whose host is an IP address or localhost.
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an S3 endpoint URL: {url!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
        return Endpoint(
            parts.scheme, host, parts.port, parts.path.rstrip("/"), virtual_hosted=False
        )
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return Endpoint("https", f"s3.{region}.{suffix}", None)


class Body:
    """An object's body being received; botocore's StreamingBody, for what the store reads."""

    def __init__(self, response: http.client.HTTPResponse, connection: http.client.HTTPConnection):
        self._response = response
        self._connection = connection

    def read(self, amount: int | None = None) -> bytes:
        try:
            data = self._response.read(amount)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise S3TransportError(f"reading the body failed: {type(exc).__name__}") from exc
        if amount is None or not data:
            self.close()
            # http.client's read(n) answers b"" when the connection closes early; the bytes
            # still owed say whether the body is whole.
            if self._response.length:
                raise S3TransportError(f"the body ended {self._response.length} bytes short")
        return data

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk

    def close(self) -> None:
        self._connection.close()


class S3Reader:
    """GET, HEAD and list of one region's S3 (or a configured endpoint), signed with SigV4."""

    def __init__(
        self,
        region: str,
        credentials: Credentials,
        endpoint_url: str | None = None,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        attempts: int | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        # Imported here: nerkit.store.s3 imports this module.
        from nerkit.store.s3 import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, TOTAL_ATTEMPTS

        self.region = region
        self.credentials = credentials
        self.endpoint_url = endpoint_url
        self.endpoint = _endpoint(region, endpoint_url)
        # Buckets S3 said live in another region (x-amz-bucket-region), as botocore follows.
        self._bucket_regions: dict[str, str] = {}
        self.connect_timeout = connect_timeout or CONNECT_TIMEOUT_SECONDS
        self.read_timeout = read_timeout or READ_TIMEOUT_SECONDS
        self.attempts = attempts or TOTAL_ATTEMPTS
        self.ca_bundle = ca_bundle  # AWS_CA_BUNDLE, as botocore reads it; else the system's
        self._tls: ssl.SSLContext | None = None

    # -- the calls the store makes, with botocore's names and answer shapes ----------------

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        response, connection = self._send("GET", Bucket, Key)
        return {**_object_fields(response), "Body": Body(response, connection)}

    def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        response, connection = self._send("HEAD", Bucket, Key)
        connection.close()
        return _object_fields(response)

    def list_objects_v2(
        self,
        *,
        Bucket: str,
        Prefix: str = "",
        MaxKeys: int = 1000,
    ) -> dict[str, Any]:
        query = {"list-type": "2", "max-keys": str(MaxKeys), "prefix": Prefix}
        response, connection = self._send("GET", Bucket, "", query)
        try:
            document = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise S3TransportError(f"reading the list failed: {type(exc).__name__}") from exc
        finally:
            connection.close()
        return {"Contents": [{"Key": key} for key in _xml_texts(document, "Contents", "Key")]}

    # -- requests ----------------------------------------------------------------------

    def _send(
        self, method: str, bucket: str, key: str, query: Mapping[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """The response to a signed request whose status is 2xx (its connection open), after
        at most ``attempts`` tries; ``S3ResponseError`` or ``S3TransportError`` otherwise.

        A bucket of another region is answered with its region; the request is then sent
        there at once, once per call: one try more than ``attempts`` for that bucket's first
        call, and none after it, as its region is remembered."""
        attempt, followed = 0, False
        while True:
            attempt += 1
            throttled = False
            try:
                response, connection = self._attempt(method, bucket, key, query or {})
            except S3TransportError:
                if attempt >= self.attempts:
                    raise
            else:
                if response.status < 300:
                    return response, connection
                try:
                    error, region = _error(response, method)
                finally:
                    connection.close()
                if not followed and self._follow_region(bucket, region):
                    attempt, followed = attempt - 1, True
                    continue
                retry = response.status in _RETRY_STATUS or error.code in _RETRY_CODES
                if not retry or attempt >= self.attempts:
                    raise error
                throttled = error.code in _THROTTLING_CODES
            # botocore's standard mode: a random pause up to base x 2 ** (retry - 1) s, at most
            # 20 s, where the base is 1 s after throttling and 0.05 s otherwise (within
            # nerkit.store.s3.retry_pause_limit, which the request budget counts).
            base = 1.0 if throttled else 0.05
            time.sleep(random.random() * min(base * 2.0 ** (attempt - 1), 20.0))

    def _follow_region(self, bucket: str, region: str | None) -> bool:
        """Whether S3 named another region of this partition for ``bucket`` (a 301
        PermanentRedirect, or a 400 whose signature named the wrong region), which is now
        used for it: its endpoint and signing region, or only the signing region behind a
        configured endpoint."""
        partition = _CN_REGION if _CN_REGION.match(self.region) else _AWS_REGION
        if not region or region == self.region_of(bucket) or not partition.match(region):
            return False
        self._bucket_regions[bucket] = region
        return True

    def region_of(self, bucket: str) -> str:
        return self._bucket_regions.get(bucket, self.region)

    def _attempt(
        self, method: str, bucket: str, key: str, query: Mapping[str, str]
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        host, path = self.address(bucket, key)
        query_string = canonical_query(query)
        now = datetime.now(UTC)
        headers = self.signed_headers(method, host, path, query_string, now, self.region_of(bucket))
        connection = self._connection(host)
        try:
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(self.read_timeout)
            target = f"{path}?{query_string}" if query_string else path
            connection.request(method, target, headers=headers)
            return connection.getresponse(), connection
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise S3TransportError(f"{method} failed: {type(exc).__name__}: {exc}") from exc

    def _connection(self, host: str) -> http.client.HTTPConnection:
        port = self.endpoint.port
        if self.endpoint.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=self.connect_timeout)
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.ca_bundle)
        return http.client.HTTPSConnection(
            host, port, timeout=self.connect_timeout, context=self._tls
        )

    def address(self, bucket: str, key: str) -> tuple[str, str]:
        """The host and the encoded path of ``key`` in ``bucket``."""
        encoded_key = urllib.parse.quote(key, safe="/~")
        region = self.region_of(bucket)
        endpoint = self.endpoint
        if region != self.region and self.endpoint_url is None:
            endpoint = _endpoint(region, None)
        if endpoint.virtual_hosted and _VIRTUAL_HOST_BUCKET.match(bucket):
            return f"{bucket}.{endpoint.host}", f"/{encoded_key}"
        return endpoint.host, f"{endpoint.base_path}/{bucket}/{encoded_key}"

    def signed_headers(
        self,
        method: str,
        host: str,
        path: str,
        query_string: str,
        now: datetime,
        region: str | None = None,
    ) -> dict[str, str]:
        """The request's headers, Authorization included (SigV4, service ``s3``, ``region``:
        default the reader's)."""
        region = region or self.region
        port = self.endpoint.port
        default = 443 if self.endpoint.scheme == "https" else 80
        host_header = host if port in (None, default) else f"{host}:{port}"
        timestamp = now.strftime("%Y%m%dT%H%M%SZ")
        headers = {
            "host": host_header,
            "x-amz-content-sha256": EMPTY_SHA256,
            "x-amz-date": timestamp,
        }
        if self.credentials.token:
            headers["x-amz-security-token"] = self.credentials.token
        names = sorted(headers)
        signed = ";".join(names)
        canonical_request = "\n".join(
            [
                method,
                path,
                query_string,
                "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in names),
                signed,
                EMPTY_SHA256,
            ]
        )
        scope = f"{timestamp[:8]}/{region}/s3/aws4_request"
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                timestamp,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            ]
        )
        key = f"AWS4{self.credentials.secret_key}".encode()
        for part in (timestamp[:8], region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers


def canonical_query(query: Mapping[str, str]) -> str:
    """The query string, sorted and encoded as SigV4 signs it (and as it is sent)."""
    pairs = sorted(
        (urllib.parse.quote(name, safe="-_.~"), urllib.parse.quote(value, safe="-_.~"))
        for name, value in query.items()
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def _object_fields(response: http.client.HTTPResponse) -> dict[str, Any]:
    metadata = {
        name[len("x-amz-meta-") :]: value
        for name, value in ((n.lower(), v) for n, v in response.getheaders())
        if name.startswith("x-amz-meta-")
    }
    length = response.getheader("content-length")
    return {
        "ETag": response.getheader("etag", ""),
        "ContentLength": int(length) if length and length.isdigit() else 0,
        "Metadata": metadata,
    }


def _error(response: http.client.HTTPResponse, method: str) -> tuple[S3ResponseError, str | None]:
    """S3's error (the code in the XML body, else the status, as botocore: a HEAD has no
    body, a proxy may send HTML) and the bucket's region if S3 named it."""
    body = b""
    if method != "HEAD":
        try:
            body = response.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            body = b""
    fields = _error_fields(body)
    code = fields.get("Code") or str(response.status)
    region = response.getheader("x-amz-bucket-region") or fields.get("Region")
    message = fields.get("Message", "")
    return S3ResponseError(response.status, code, message), region


def _error_fields(body: bytes) -> dict[str, str]:
    """The children of S3's ``<Error>`` by name (Code, Message, Region...); ``{}`` for a body
    that is not one (a HEAD's, a proxy's HTML page)."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return {}
    if _local(root.tag) != "Error":
        return {}
    return {_local(item.tag): item.text or "" for item in root}


def _xml_texts(document: bytes, parent: str, child: str) -> list[str]:
    """The text of every ``child`` of a ``parent`` element, namespaces ignored."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError as exc:
        raise S3TransportError("S3 answered malformed XML") from exc
    return [
        item.text or ""
        for element in root.iter()  # the root included
        if _local(element.tag) == parent
        for item in element
        if _local(item.tag) == child
    ]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
