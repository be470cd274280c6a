"""Where a run reads and writes: local paths and ``s3://`` URIs behind one small interface.

Input objects are listed with an ETag (S3's, or size and mtime locally) so that a completed
shard can be recognised as done for the same input; reads stream byte ranges in chunks.
A GET or HEAD that may find nothing (a marker, a manifest, an input URI that may be a prefix)
goes through the model store's ``read_object``: the roles list only with an ``s3:prefix``
condition, so S3 answers them 403 for a missing key, and a list of that key tells absent
from denied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from nerkit.errors import ModelError
from nerkit.store.s3 import ObjectMissing, read_object

# boto3 generates its clients at runtime and ships no type stubs.
S3Client = Any

CHUNK_BYTES = 1 << 20
# A worker invocation lasts up to 15 minutes: one S3 call (4 attempts of at most 5 s connect
# + 60 s read) stays far inside it, and throttling (503 SlowDown) is retried with backoff.
S3_CONFIG = Config(
    connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 4}
)


class LocationError(Exception):
    """A location cannot be read or written (missing, denied, unreachable)."""


@dataclass(frozen=True)
class InputObject:
    uri: str
    size: int
    etag: str


class Location(Protocol):
    """A directory-like place: keys are ``/``-separated paths below ``uri``."""

    uri: str

    def child(self, key: str) -> str: ...

    def list_objects(self) -> list[InputObject]: ...

    def read(self, uri: str, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, body: bytes) -> None: ...


def location(uri: str, *, s3: S3Client | None = None) -> Location:
    """The location ``uri`` names: ``s3://bucket/prefix`` or a local path."""
    if uri.startswith("s3://"):
        return S3Location(uri, s3)
    if "://" in uri:
        raise LocationError(f"use an s3:// URI or a local path, not {uri!r}")
    return LocalLocation(uri)


def new_s3_client() -> S3Client:
    import boto3

    return boto3.client("s3", config=S3_CONFIG)


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise LocationError(f"{uri!r} has no bucket")
    return bucket, key


class S3Location:
    def __init__(self, uri: str, s3: S3Client | None = None) -> None:
        self.uri = uri
        self.bucket, self.prefix = split_s3_uri(uri)
        self._s3 = s3

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            self._s3 = new_s3_client()
        return self._s3

    def child(self, key: str) -> str:
        return f"s3://{self.bucket}/{_join(self.prefix, key)}"

    def list_objects(self) -> list[InputObject]:
        """The object ``uri`` names, else every object below it as a prefix, by key."""
        if self.prefix and not self.prefix.endswith("/"):
            head = self._read("head_object", self.prefix)
            if head is not None:
                return [InputObject(self.uri, head["ContentLength"], head["ETag"].strip('"'))]
        prefix = self.prefix if not self.prefix or self.prefix.endswith("/") else self.prefix + "/"
        found = []
        with _s3_errors(self.uri):
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if item["Key"].endswith("/"):
                        continue  # a console "folder" marker
                    found.append(
                        InputObject(
                            f"s3://{self.bucket}/{item['Key']}",
                            item["Size"],
                            item["ETag"].strip('"'),
                        )
                    )
        return sorted(found, key=lambda obj: obj.uri)

    def read(self, uri: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        bucket, key = split_s3_uri(uri)
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with _s3_errors(uri):
            body = self.s3.get_object(Bucket=bucket, Key=key, **extra)["Body"]
            yield from body.iter_chunks(CHUNK_BYTES)

    def get(self, key: str) -> bytes | None:
        response = self._read("get_object", _join(self.prefix, key))
        if response is None:
            return None
        with _s3_errors(self.child(key)):  # the body streams after the headers
            body: bytes = response["Body"].read()
            return body

    def put(self, key: str, body: bytes) -> None:
        with _s3_errors(self.child(key)):
            self.s3.put_object(Bucket=self.bucket, Key=_join(self.prefix, key), Body=body)

    def _read(self, operation: str, key: str) -> dict[str, Any] | None:
        """A GET or HEAD of ``key`` in this bucket; ``None`` when the key is absent (also
        when S3 denies it to a role that may list only by prefix: module docstring)."""
        try:
            return read_object(self.s3, operation, self.bucket, key)
        except ObjectMissing:
            return None
        except ModelError as exc:
            raise LocationError(str(exc)) from exc


class LocalLocation:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.root = Path(uri)

    def child(self, key: str) -> str:
        return str(self.root / key)

    def list_objects(self) -> list[InputObject]:
        if self.root.is_file():
            paths = [self.root]
        elif self.root.is_dir():
            paths = sorted(
                path
                for path in self.root.rglob("*")
                if path.is_file()
                and not any(part.startswith(".") for part in path.relative_to(self.root).parts)
            )
        else:
            raise LocationError(f"no such file or directory: {self.uri}")
        return [_local_object(path) for path in paths]

    def read(self, uri: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            with open(uri, "rb") as handle:
                handle.seek(start)
                left = None if end is None else end - start
                while left is None or left > 0:
                    chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
                    if not chunk:
                        return
                    if left is not None:
                        left -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise LocationError(f"cannot read {uri}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocationError(f"cannot read {self.child(key)}: {exc.strerror or exc}") from exc

    def put(self, key: str, body: bytes) -> None:
        path = self.root / key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: a reader never sees half an object, as on S3.
            partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
            partial.write_bytes(body)
            partial.replace(path)
        except OSError as exc:
            raise LocationError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _local_object(path: Path) -> InputObject:
    stat = path.stat()
    return InputObject(str(path), stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}")


def _join(prefix: str, key: str) -> str:
    return f"{prefix.rstrip('/')}/{key}" if prefix else key


class _s3_errors:
    """botocore failures as ``LocationError``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise LocationError(f"S3 error {code or 'unknown'} on {self.uri}") from exc
        if isinstance(exc, BotoCoreError):
            raise LocationError(f"cannot reach S3 for {self.uri}: {type(exc).__name__}") from exc
        return False
