"""The boto boundary: the one S3 client configuration, and botocore failures as ``nerkit.errors``.

Every S3 call of the store runs inside ``s3_errors``, so no botocore exception leaves the
package. Besides the public errors, three kinds tell the registry what happened: an absent key
(``ObjectMissing``), a lost conditional write (``ConditionFailed``) and a denied request
(``AccessDenied``, which may also mean "absent": see ``ModelStore``).

botocore is imported on first use, not with this module: serving imports the store whatever
the model URI, and a model from a local file must not pay for botocore at cold start. The
client comes from botocore itself (boto3's resources and transfer manager are not used), which
reads the same environment and configuration files as boto3 does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nerkit.errors import ModelNotFound, StoreConflict, StoreUnavailable

# botocore generates its clients at runtime and ships no type stubs; the alias documents intent.
S3Client = Any

# Serving checks LIVE and downloads models inside a request's time budget (API Gateway: 29 s):
# fail fast on a dead or stalled endpoint; two attempts of at most 2 s connect + 10 s per
# read stay well inside it, and a failed refresh keeps the model already loaded.
CLIENT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 10,
    "retries": {"mode": "standard", "max_attempts": 2},
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


@contextmanager
def s3_errors(bucket: str, key: str) -> Iterator[None]:
    """Translate botocore failures on ``s3://bucket/key``: a missing bucket or key is
    ``ModelNotFound``, a lost condition ``ConditionFailed``, anything else of access or
    transport ``StoreUnavailable``."""
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{key}"
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            raise ModelNotFound(f"bucket {bucket} does not exist") from exc
        if code in _MISSING_OBJECT:
            raise ObjectMissing(f"not found: {uri}") from exc
        if code in _CONDITION_FAILED:
            raise ConditionFailed(f"conditional write to {uri} failed") from exc
        if code in _DENIED:
            raise AccessDenied(f"access denied to {uri}") from exc
        raise StoreUnavailable(f"S3 error {code or 'unknown'} on {uri}") from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(f"cannot reach S3 for {uri}: {type(exc).__name__}") from exc
