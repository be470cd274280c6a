"""Model URIs and version names: what a model location or version given as text means.

The one parser of ``MODEL_URI`` (serving's setting, the CLIs' ``--uri``, the gate's store):

- ``s3://bucket/prefix``: a model store (versions and a LIVE pointer, ``ModelStore``);
- ``s3://bucket/key.tar.gz``: one fixed tarball;
- anything without ``://``: a local ``model.tar.gz`` or model directory.

Unusable text raises ``ConfigError``, a fault of the configuration, not of any artifact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit.errors import ConfigError

# Versions become S3 key segments and local directory names: no separators, no leading dot.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION_RE = re.compile(VERSION_PATTERN)


@dataclass(frozen=True)
class StorePrefix:
    """``s3://bucket/prefix``: a model store."""

    bucket: str
    prefix: str


@dataclass(frozen=True)
class S3Tarball:
    """``s3://bucket/key.tar.gz``: one fixed tarball."""

    bucket: str
    key: str


ModelLocation = StorePrefix | S3Tarball | Path


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not uri.startswith("s3://"):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key


def parse_model_uri(uri: str) -> ModelLocation:
    """What ``uri`` names (see the module docstring); ``ConfigError`` if it names nothing."""
    uri = uri.strip()
    if not uri:
        raise ConfigError("no model URI given")
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if key.endswith(".tar.gz"):
            return S3Tarball(bucket, key)
        return StorePrefix(bucket, key.strip("/"))
    if "://" in uri:
        raise ConfigError(
            f"unsupported model URI {uri!r}: use s3://bucket/prefix, s3://bucket/key.tar.gz "
            "or a local path"
        )
    return Path(uri)


def is_version(value: Any) -> bool:
    return isinstance(value, str) and _VERSION_RE.fullmatch(value) is not None


def invalid_version(value: Any) -> str:
    """Why ``value`` is not a version name (the message of whoever refuses it)."""
    return (
        f"invalid model version {value!r}: use up to 128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )


def check_version(value: Any) -> str:
    """``value`` if it is a version name, else ``ConfigError``."""
    if not is_version(value):
        raise ConfigError(invalid_version(value))
    return value
