"""The S3 boundary: the one S3 client configuration, and S3 failures as ``nerkit.errors``.

Every S3 call of the store runs inside ``s3_errors``, so no botocore (or
``nerkit.store.s3_reader``) exception leaves the package. Besides the public errors, three
kinds tell the registry what happened: an absent key (``ObjectMissing``), a lost conditional
write (``ConditionFailed``) and a denied request (``AccessDenied``, which may also mean
"absent": see ``read_object``).

botocore is imported on first use, not with this module: serving imports the store whatever
the model URI, and a model from a local file must not pay for botocore at cold start. The
client comes from botocore itself (boto3's resources and transfer manager are not used), which
reads the same environment and configuration files as boto3 does. Serving inside Lambda reads
with ``nerkit.store.s3_reader`` instead (``read_client``), and never imports botocore.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nerkit.errors import ConfigError, ModelNotFound, StoreConflict, StoreUnavailable
from nerkit.store import s3_reader
from nerkit.store.s3_reader import S3ResponseError, S3TransportError
from nerkit.store.uri import S3Tarball, StorePrefix, parse_model_uri

# botocore generates its clients at runtime and ships no type stubs; the alias documents intent.
S3Client = Any

# A request's time, and what S3 may take of it. API Gateway ends a request after 29 s (the
# serving Lambda's timeout, infra's lambda_timeout_seconds), and serving reads LIVE and
# downloads models inside requests. One S3 call takes at most S3_CALL_BUDGET_SECONDS: every
# attempt its connect and read timeouts, plus botocore's backoff before each retry. A stalled
# S3 fails the first call it stalls (a stalled body read: one read timeout, not retried), which
# ends that check or load: the model already loaded keeps serving, or the request is a 503.
# The rest of the request budget is for loading a new model and the largest inference
# (docs/RELIABILITY.md has the arithmetic).
REQUEST_BUDGET_SECONDS = 29.0
CONNECT_TIMEOUT_SECONDS = 1.0
# urllib3 applies it to each socket read: the wait for the response and for every body chunk.
READ_TIMEOUT_SECONDS = 2.0
# The first attempt included. botocore's ``max_attempts`` would count retries only (N + 1
# attempts), so the config names ``total_max_attempts``.
TOTAL_ATTEMPTS = 2


def retry_pause_limit(retry: int) -> float:
    """The longest pause botocore's standard mode makes before retry ``retry`` (1-based):
    random x min(2 ** (retry - 1) x 1 s, 20 s) after throttling (0.05 s otherwise), raised
    by at most 5 s more when the answer carries ``x-amz-retry-after``."""
    return min(2.0 ** (retry - 1), 20.0) + 5.0


S3_CALL_BUDGET_SECONDS = TOTAL_ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS) + sum(
    retry_pause_limit(retry) for retry in range(1, TOTAL_ATTEMPTS)
)
# Options of botocore's Config (botocore itself is imported on first S3 use).
CLIENT_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "read_timeout": READ_TIMEOUT_SECONDS,
    "retries": {"mode": "standard", "total_max_attempts": TOTAL_ATTEMPTS},
}

_MISSING_OBJECT = {"NoSuchKey", "404", "NotFound"}
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}


class ObjectMissing(ModelNotFound):
    """A key (not the bucket) is absent; callers that expect absence catch this one."""


class ConditionFailed(StoreConflict):
    """A conditional write lost (If-Match / If-None-Match)."""


class AccessDenied(StoreUnavailable):
    """S3 refused the request (403). For a GET or HEAD this may hide an absent key."""


def new_s3_client() -> S3Client:
    """A client configured for model loading (``CLIENT_OPTIONS``); botocore reads
    AWS_ENDPOINT_URL(_S3), the region and the credentials from the environment, which is how
    moto_server plugs in."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    return session.create_client("s3", config=Config(**CLIENT_OPTIONS))


def read_client(model_uri: str) -> S3Client | None:
    """For a caller that only reads ``model_uri`` (serving): the standard-library reader where
    it applies (``s3_reader.from_environment``: inside Lambda, credentials in the environment),
    else ``None``: a store then makes the botocore client on first use. ``None`` too for a
    URI that is not in S3 or is not valid (``open_source`` reports that)."""
    try:
        location = parse_model_uri(model_uri)
    except ConfigError:
        return None
    if not isinstance(location, StorePrefix | S3Tarball):
        return None
    return s3_reader.from_environment(location.bucket)


@contextmanager
def s3_errors(bucket: str, key: str) -> Iterator[None]:
    """Translate S3 failures on ``s3://bucket/key``, botocore's or ``nerkit.store.s3_reader``'s:
    a missing bucket or key is ``ModelNotFound``, a lost condition ``ConditionFailed``,
    anything else of access or transport ``StoreUnavailable``."""
    uri = f"s3://{bucket}/{key}"
    try:
        yield
    except S3ResponseError as exc:
        raise _translated(exc.code, bucket, uri) from exc
    except S3TransportError as exc:
        raise StoreUnavailable(f"cannot reach S3 for {uri}: {exc}") from exc
    except Exception as exc:
        # A botocore exception exists only where botocore is imported already; the reader's
        # callers (serving in Lambda) must not import it for the check.
        botocore_errors = sys.modules.get("botocore.exceptions")
        if botocore_errors is None:
            raise
        if isinstance(exc, botocore_errors.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise _translated(code, bucket, uri) from exc
        if isinstance(exc, botocore_errors.BotoCoreError):
            raise StoreUnavailable(f"cannot reach S3 for {uri}: {type(exc).__name__}") from exc
        raise


def _translated(code: str, bucket: str, uri: str) -> Exception:
    if code == "NoSuchBucket":
        return ModelNotFound(f"bucket {bucket} does not exist")
    if code in _MISSING_OBJECT:
        return ObjectMissing(f"not found: {uri}")
    if code in _CONDITION_FAILED:
        return ConditionFailed(f"conditional write to {uri} failed")
    if code in _DENIED:
        return AccessDenied(f"access denied to {uri}")
    return StoreUnavailable(f"S3 error {code or 'unknown'} on {uri}")


def read_object(s3: S3Client, operation: str, bucket: str, key: str) -> dict[str, Any]:
    """A GET or HEAD (``operation``: ``get_object`` or ``head_object``) of ``key``, where a
    denial of an absent key raises ``ObjectMissing``, as S3 answers callers allowed to list.

    S3 answers a GET or HEAD of a missing key with 404 only to a caller whose
    ``s3:ListBucket`` applies to that request. Our roles may list only with an ``s3:prefix``
    condition, which a GET does not carry, so S3 answers them 403. A denial is therefore
    followed by a list of exactly that key (``Prefix=<key>``, which the condition allows): if
    the key is not there, it is absent; otherwise the denial stands.
    """
    try:
        with s3_errors(bucket, key):
            response: dict[str, Any] = getattr(s3, operation)(Bucket=bucket, Key=key)
            return response
    except AccessDenied:
        if not key_listed(s3, bucket, key):
            raise ObjectMissing(f"not found: s3://{bucket}/{key}") from None
        raise


def key_listed(s3: S3Client, bucket: str, key: str) -> bool:
    """Whether ``key`` exists, by a list of that key alone (allowed where a list of the
    key's prefix is)."""
    with s3_errors(bucket, key):
        page = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    # Keys sort lexicographically: the key itself, if present, precedes every longer one.
    return any(item["Key"] == key for item in page.get("Contents", []))
