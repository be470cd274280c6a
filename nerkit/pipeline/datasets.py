"""Dataset uploads without AWS credentials: a presigned S3 POST for one file under the
datasets prefix.

The key is fixed by the server (``<datasets prefix>/<dataset>/<channel>/<file name>``), the
POST policy pins it exactly and bounds its size, and it expires within minutes. The channel's
prefix is what a training run takes (``POST /v1/training-runs``). The signature acts with the
signer's rights, which is why the admin function may write under the datasets prefix only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from nerkit.dataset_formats import EXTENSIONS
from nerkit.pipeline.start import OPTIONAL_CHANNELS, REQUIRED_CHANNELS
from nerkit.store.s3 import S3Client
from nerkit.store.uri import parse_s3_uri

UPLOAD_EXPIRES_SECONDS = 900
CHANNELS = (*REQUIRED_CHANNELS, *OPTIONAL_CHANNELS)
# One path segment of safe characters: no "/", no "..", nothing S3 or a shell treats specially.
# Written without a lookahead (each "." is followed by another character or ends the name), so
# the admin API's schema can publish it as is.
MAX_NAME_CHARS = 100
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
# A name whose extension, in any case, is one of EXTENSIONS.
FILENAME_PATTERN = (
    r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.(?:"
    + "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext[1:])
        for ext in sorted(EXTENSIONS)
    )
    + ")$"
)
_NAME_RE = re.compile(NAME_PATTERN)


class UploadError(ValueError):
    """The upload cannot be offered as asked; the message says what to fix."""


@dataclass(frozen=True)
class Upload:
    url: str
    fields: dict[str, str]
    uri: str
    channel_uri: str
    max_bytes: int
    expires_in: int


def check_name(what: str, name: str) -> str:
    if len(name) > MAX_NAME_CHARS or not _NAME_RE.fullmatch(name):
        raise UploadError(f"{what} {name!r}: 1-100 letters, digits, '.', '_' or '-'")
    return name


def presigned_upload(
    s3: S3Client,
    datasets_uri: str,
    *,
    dataset: str,
    channel: str,
    filename: str,
    max_bytes: int,
    url: str = "",
) -> Upload:
    """A presigned POST of ``filename`` into ``channel`` of ``dataset``; ``url`` replaces the
    endpoint boto3 names (a POST policy's signature does not depend on the host)."""
    check_name("dataset", dataset)
    check_name("filename", filename)
    if channel not in CHANNELS:
        raise UploadError(f"channel {channel!r}: one of {', '.join(CHANNELS)}")
    if PurePosixPath(filename).suffix.lower() not in EXTENSIONS:
        raise UploadError(
            f"filename {filename!r}: the extension must be one of {', '.join(EXTENSIONS)}"
        )
    bucket, prefix = parse_s3_uri(datasets_uri.rstrip("/"))
    channel_key = "/".join(part for part in (prefix, dataset, channel) if part)
    key = f"{channel_key}/{filename}"
    post: dict[str, Any] = s3.generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Conditions=[["content-length-range", 1, max_bytes]],
        ExpiresIn=UPLOAD_EXPIRES_SECONDS,
    )
    return Upload(
        url=url or post["url"],
        fields=dict(post["fields"]),
        uri=f"s3://{bucket}/{key}",
        channel_uri=f"s3://{bucket}/{channel_key}/",
        max_bytes=max_bytes,
        expires_in=UPLOAD_EXPIRES_SECONDS,
    )
