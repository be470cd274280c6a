"""S3 model store: immutable versions, a LIVE pointer, safe download, publish and rollback.

Layout (docs/ARCHITECTURE.md)::

    s3://<bucket>/<prefix>/<version>/model.tar.gz    (x-amz-meta-sha256: sha256 of the tarball)
    s3://<bucket>/<prefix>/<version>/manifest.json   (copy, for listing without a download)
    s3://<bucket>/<prefix>/LIVE                      (JSON pointer; moving it is going live)

Versions are immutable: ``upload`` writes the tarball with ``If-None-Match: *``. ``LIVE`` is
written with ``If-Match`` on the ETag that was read (or ``If-None-Match: *`` when there is none),
so two publishers racing each other cannot both win. Objects get the bucket's default
encryption (SSE-S3 or the bucket's KMS key); nothing here asks for a specific key.

Every failure surfaces as ``ArtifactError`` (or a subclass). Messages name buckets, keys and
paths: they are for operators and logs, not for the clients of the HTTP API.

Serving's cache directory holds one extraction per version (Lambda's /tmp is 512 MB by
default): ``resolve(..., keep=[...])`` deletes the others before downloading a new one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from nerkit.artifact import (
    DEFAULT_MAX_EXTRACT_BYTES,
    MANIFEST,
    STAGING_MARK,
    ArtifactError,
    extract,
    sha256_file,
    verify,
)

# boto3 generates its clients at runtime and ships no type stubs; the alias documents intent.
S3Client = Any

TARBALL = "model.tar.gz"
LIVE = "LIVE"
# Written next to an extracted model once it is verified; extract() refuses dot-files in a
# tarball, so an artifact cannot bring its own marker.
CACHE_MARKER = ".tarball-sha256"
# A tarball larger than extract() accepts is refused before it fills the disk, not after.
MAX_DOWNLOAD_BYTES = DEFAULT_MAX_EXTRACT_BYTES

_DOWNLOAD_PREFIX = ".download-"
# Versions become S3 key segments and local directory names: no separators, no leading dot.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
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
# In-progress downloads (``.download-*``) and extractions (``*.partial-*``) older than this
# are leftovers of a killed process: no Lambda invocation runs longer (15 minutes).
STALE_TEMP_SECONDS = 15 * 60
# Serving checks LIVE and downloads models inside a request's time budget (API Gateway: 29 s):
# fail fast on a dead or stalled endpoint; two attempts of at most 2 s connect + 10 s per
# read stay well inside it, and a failed refresh keeps the model already loaded.
_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=10, retries={"mode": "standard", "max_attempts": 2}
)


class ModelNotFound(ArtifactError):
    """The bucket, object, LIVE pointer or version does not exist."""


class StoreUnavailable(ArtifactError):
    """S3 or the local cache failed (unreachable, access denied, throttled, disk full): the
    artifact itself may be fine, so trying again later can succeed."""


class VersionExists(ArtifactError):
    """``upload`` refuses to replace an existing version with different bytes."""


class LiveConflict(ArtifactError):
    """LIVE is not what the caller expected, or another writer moved it meanwhile."""


class _ObjectMissing(ModelNotFound):
    """A key (not the bucket) is absent; callers that expect absence catch this one."""


class _ConditionFailed(ArtifactError):
    """A conditional write lost (If-Match / If-None-Match)."""


@dataclass(frozen=True)
class Pointer:
    """The LIVE pointer: which version serves, its tarball and what served before it."""

    version: str
    key: str
    sha256: str
    updated_at: str
    previous: str | None


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class LoadedArtifact:
    """A verified model directory ready for ``NerEngine.load`` and where it came from."""

    path: Path
    manifest: dict[str, Any]
    version: str
    source: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not uri.startswith("s3://"):
        raise ArtifactError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ArtifactError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key


def new_s3_client() -> S3Client:
    """A client configured for model loading; boto3 itself reads AWS_ENDPOINT_URL(_S3),
    the region and the credentials from the environment, which is how moto_server plugs in."""
    return boto3.client("s3", config=_CLIENT_CONFIG)


class ModelStore:
    """Versions and the LIVE pointer under ``s3://bucket/prefix``."""

    def __init__(self, bucket: str, prefix: str = "", s3: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._s3 = s3

    @classmethod
    def from_uri(cls, uri: str, s3: S3Client | None = None) -> ModelStore:
        bucket, prefix = parse_s3_uri(uri)
        return cls(bucket, prefix, s3)

    @property
    def s3(self) -> S3Client:
        # Created on first use so constructing a store (e.g. at import time) never hits AWS.
        if self._s3 is None:
            self._s3 = new_s3_client()
        return self._s3

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts]) if self.prefix else "/".join(parts)

    # -- writing ------------------------------------------------------------------------

    def upload(self, tar_path: Path) -> str:
        """Verify ``tar_path`` and store it as a new version; return the version.

        Re-uploading the very same bytes is a no-op (so a retried pipeline step succeeds);
        different bytes under an existing version raise ``VersionExists``.
        """
        manifest_bytes, manifest = _verified_manifest(tar_path)
        version = _check_version(manifest["version"])
        sha256 = sha256_file(tar_path)
        try:
            with tar_path.open("rb") as body:
                self._request(
                    "put_object",
                    self.key(version, TARBALL),
                    Body=body,
                    ContentType="application/gzip",
                    Metadata={"sha256": sha256},
                    # Real S3 rejects the PUT if the bytes it received do not hash to this.
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                    IfNoneMatch="*",
                )
        except _ConditionFailed:
            if self._tarball_sha256(version) != sha256:
                raise VersionExists(
                    f"version {version} already exists in {self.uri} with different content"
                ) from None
        # The manifest copy goes last: listing only shows versions whose tarball is complete.
        self._request(
            "put_object",
            self.key(version, MANIFEST),
            Body=manifest_bytes,
            ContentType="application/json",
        )
        return version

    def set_live(
        self, version: str, *, expected_current: str | EllipsisType | None = ...
    ) -> Pointer:
        """Point LIVE at ``version`` (which must exist); return the new pointer.

        ``expected_current`` refuses to act on a stale view: a version (LIVE must be exactly
        that), ``None`` (there must be no LIVE yet) or ``...`` (no expectation). Independently
        the write is conditional on the LIVE object read here, so a concurrent writer makes
        this raise ``LiveConflict`` instead of being silently overwritten. Setting the version
        that is already live changes nothing.
        """
        version = _check_version(version)
        current, etag = self._read_live()
        current_version = current.version if current else None
        if expected_current is not ... and expected_current != current_version:
            raise LiveConflict(
                f"LIVE in {self.uri} is {current_version!r}, expected {expected_current!r}"
            )
        if current is not None and current.version == version:
            return current
        pointer = Pointer(
            version=version,
            key=self.key(version, TARBALL),
            sha256=self._tarball_sha256(version),
            updated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            previous=current_version,
        )
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self._request(
                "put_object",
                self.key(LIVE),
                Body=json.dumps(asdict(pointer), indent=2, sort_keys=True).encode(),
                ContentType="application/json",
                **condition,
            )
        except _ConditionFailed:
            raise LiveConflict(
                f"LIVE in {self.uri} changed during the update; read it again and retry"
            ) from None
        return pointer

    def rollback(self, to: str | None = None) -> Pointer:
        """Move LIVE to ``to``, or back to the pointer's ``previous``; return the new pointer.

        The new pointer's ``previous`` is the version rolled back from, so a second
        ``rollback()`` undoes the first.
        """
        current = self.live()
        if current is None:
            raise ModelNotFound(f"no LIVE model in {self.uri}: nothing to roll back")
        target = to if to is not None else current.previous
        if target is None:
            raise ArtifactError(
                f"LIVE version {current.version} in {self.uri} has no previous version; "
                "name the version to roll back to"
            )
        if target == current.version:
            raise ArtifactError(f"version {target} is already live in {self.uri}")
        return self.set_live(target, expected_current=current.version)

    # -- reading ------------------------------------------------------------------------

    def versions(self) -> list[VersionInfo]:
        """Every complete version (its manifest copy exists), oldest first."""
        base = self.key("")
        infos = []
        for key in self._list_keys(base):
            version, _, name = key.removeprefix(base).partition("/")
            if name == MANIFEST and _is_version(version):
                manifest = self.manifest(version)
                infos.append(
                    VersionInfo(version, manifest.get("created_at"), manifest.get("metrics") or {})
                )
        return sorted(infos, key=lambda info: (info.created_at or "", info.version))

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest copy of ``version`` (no tarball download)."""
        key = self.key(_check_version(version), MANIFEST)
        try:
            raw = self._request("get_object", key)["Body"].read()
        except _ObjectMissing:
            raise ModelNotFound(f"version {version} not found in {self.uri}") from None
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise ArtifactError(f"manifest copy of version {version} is not valid JSON") from None
        if not isinstance(manifest, dict):
            raise ArtifactError(f"manifest copy of version {version} is not a JSON object")
        return manifest

    def live(self) -> Pointer | None:
        """The LIVE pointer, or ``None`` when nothing has been published yet."""
        return self._read_live()[0]

    def fetch(
        self,
        cache_dir: Path,
        version: str | None = None,
        *,
        keep: Collection[Path] | None = None,
        live: Pointer | None = None,
    ) -> LoadedArtifact:
        """Download, verify and extract ``version`` (default: the LIVE one) to
        ``cache_dir/<version>``, reusing an earlier verified extraction of the same tarball.

        With ``keep``, a download first deletes every other model directory of ``cache_dir``
        except those in ``keep`` (see ``prune_cache``). ``live`` is a LIVE pointer the caller
        has just read: that release is fetched without reading LIVE again, so a failure is
        pinned on the release the caller saw even if LIVE moves meanwhile.
        """
        if version is None:
            pointer = live or self.live()
            if pointer is None:
                raise ModelNotFound(f"no LIVE model in {self.uri}")
            version, key, sha256 = pointer.version, pointer.key, pointer.sha256
        else:
            key = self.key(_check_version(version), TARBALL)
            sha256 = self._tarball_sha256(version)
        dest = cache_dir / version
        source = f"s3://{self.bucket}/{key}"
        with _cache_errors(cache_dir):
            artifact = _reuse(dest, sha256, source)
            if artifact is None:
                if keep is not None:
                    prune_cache(cache_dir, keep)
                with _temp_download(cache_dir) as tmp:
                    if self._download(key, tmp) != sha256:
                        raise ArtifactError(
                            f"checksum mismatch: {source} is not what was published"
                        )
                    artifact = _install(tmp, sha256, dest, source)
        if artifact.version != version:
            raise ArtifactError(f"{source} holds version {artifact.version}, not {version}")
        return artifact

    def fetch_object(
        self, key: str, cache_dir: Path, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact:
        """Download one tarball by its full key (outside the version layout) and extract it
        to a directory of ``cache_dir`` named after its sha256 (``keep``: as for ``fetch``)."""
        source = f"s3://{self.bucket}/{key}"
        with _cache_errors(cache_dir), _temp_download(cache_dir) as tmp:
            return _reuse_or_install(tmp, self._download(key, tmp), cache_dir, source, keep)

    # -- S3 plumbing --------------------------------------------------------------------

    def _read_live(self) -> tuple[Pointer | None, str | None]:
        """The pointer and its ETag (for the conditional write), or ``(None, None)``."""
        try:
            response = self._request("get_object", self.key(LIVE))
        except _ObjectMissing:
            return None, None
        return _parse_pointer(response["Body"].read(), f"{self.uri}/{LIVE}"), response["ETag"]

    def _tarball_sha256(self, version: str) -> str:
        try:
            head = self._request("head_object", self.key(version, TARBALL))
        except _ObjectMissing:
            raise ModelNotFound(f"version {version} not found in {self.uri}") from None
        sha256 = head.get("Metadata", {}).get("sha256", "")
        if not _SHA256_RE.fullmatch(sha256):
            raise ArtifactError(
                f"version {version} in {self.uri} has no sha256 metadata; "
                "store versions with ModelStore.upload"
            )
        return sha256

    def _download(self, key: str, dest: Path) -> str:
        """Stream ``key`` into ``dest``; return its sha256 (hashed on the way, not re-read).

        Refuses objects over ``MAX_DOWNLOAD_BYTES``: by their declared size before reading
        anything, and by the bytes received, in case the declared size was wrong.
        """
        too_large = ArtifactError(
            f"s3://{self.bucket}/{key} is larger than {MAX_DOWNLOAD_BYTES} bytes"
        )
        digest, size = hashlib.sha256(), 0
        with _s3_errors(self.bucket, key), dest.open("wb") as out:
            response = self._request("get_object", key)
            if response.get("ContentLength", 0) > MAX_DOWNLOAD_BYTES:
                response["Body"].close()
                raise too_large
            for chunk in response["Body"].iter_chunks(1 << 20):
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise too_large
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def _list_keys(self, prefix: str) -> Iterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        with _s3_errors(self.bucket, prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]

    def _request(self, operation: str, key: str, **kwargs: Any) -> dict[str, Any]:
        with _s3_errors(self.bucket, key):
            return getattr(self.s3, operation)(Bucket=self.bucket, Key=key, **kwargs)


def resolve(
    model_uri: str,
    cache_dir: Path,
    *,
    s3: S3Client | None = None,
    keep: Collection[Path] | None = None,
    live: Pointer | None = None,
) -> LoadedArtifact:
    """Turn serving's ``MODEL_URI`` into a verified model directory.

    ``s3://bucket/prefix`` follows LIVE (or loads ``live``, a pointer just read by
    ``live_pointer``), ``s3://bucket/key.tar.gz`` loads one object, a local ``.tar.gz`` is
    extracted into ``cache_dir`` and a local directory is verified in place. With ``keep``
    (serving passes the directory its engine was loaded from), a download or extraction
    first deletes the other model directories of ``cache_dir``.
    """
    if not model_uri:
        raise ArtifactError("no model URI given")
    if model_uri.startswith("s3://"):
        bucket, key = parse_s3_uri(model_uri)
        if _is_tarball_key(key):
            return ModelStore(bucket, s3=s3).fetch_object(key, cache_dir, keep=keep)
        return ModelStore(bucket, key, s3).fetch(cache_dir, keep=keep, live=live)
    path = Path(model_uri)
    if path.is_dir():
        manifest = verify(path)
        return LoadedArtifact(path, manifest, str(manifest["version"]), str(path))
    if path.is_file():
        with _cache_errors(cache_dir):
            return _reuse_or_install(path, sha256_file(path), cache_dir, str(path), keep)
    raise ModelNotFound(f"no model at {model_uri}")


def live_pointer(model_uri: str, *, s3: S3Client | None = None) -> Pointer | None:
    """The LIVE pointer behind ``model_uri`` (one small GET), for noticing a new release.

    ``None`` when there is nothing to follow: a fixed object, a local path, or no LIVE yet.
    """
    if not model_uri.startswith("s3://"):
        return None
    bucket, key = parse_s3_uri(model_uri)
    if _is_tarball_key(key):
        return None
    return ModelStore(bucket, key, s3).live()


def prune_cache(cache_dir: Path, keep: Collection[Path]) -> list[Path]:
    """Delete the model directories of ``cache_dir`` that are not in ``keep``; return them.

    Complete extractions (those with ``CACHE_MARKER``) go. A download or extraction in
    progress (``.download-`` files, ``.partial-`` staging directories) belongs to whoever
    runs it, so those go only once older than ``STALE_TEMP_SECONDS``: left by a process
    killed mid-load (a Lambda timeout), they would otherwise fill /tmp over time.
    """
    if not cache_dir.is_dir():
        return []
    kept = {path.resolve() for path in keep}
    stale_before = time.time() - STALE_TEMP_SECONDS
    removed = []
    for entry in sorted(cache_dir.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir() and (entry / CACHE_MARKER).is_file():
            if entry.resolve() not in kept:
                shutil.rmtree(entry)
                removed.append(entry)
        elif _is_temp(entry) and entry.lstat().st_mtime < stale_before:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _is_temp(entry: Path) -> bool:
    return entry.name.startswith(_DOWNLOAD_PREFIX) or STAGING_MARK in entry.name


# -- helpers ------------------------------------------------------------------------------


def _is_tarball_key(key: str) -> bool:
    return key.endswith(".tar.gz")


def _is_version(value: Any) -> bool:
    return isinstance(value, str) and _VERSION_RE.fullmatch(value) is not None


def _check_version(value: Any) -> str:
    if not _is_version(value):
        raise ArtifactError(
            f"invalid model version {value!r}: use up to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _parse_pointer(raw: bytes, uri: str) -> Pointer:
    try:
        data = json.loads(raw)
        pointer = Pointer(
            version=data["version"],
            key=data["key"],
            sha256=data["sha256"],
            updated_at=data["updated_at"],
            previous=data.get("previous"),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ArtifactError(f"LIVE pointer {uri} is not valid pointer JSON") from None
    valid = (
        _is_version(pointer.version)
        and isinstance(pointer.key, str)
        and isinstance(pointer.sha256, str)
        and _SHA256_RE.fullmatch(pointer.sha256) is not None
        and (pointer.previous is None or _is_version(pointer.previous))
    )
    if not valid:
        raise ArtifactError(f"LIVE pointer {uri} has an invalid version, key or sha256")
    return pointer


def _verified_manifest(tar_path: Path) -> tuple[bytes, dict[str, Any]]:
    """Fully extract and verify the tarball in a scratch directory; return its manifest
    (raw bytes, for the S3 copy, and parsed)."""
    with tempfile.TemporaryDirectory(prefix="nerkit-upload-") as scratch:
        model_dir = Path(scratch) / "model"
        manifest = extract(tar_path, model_dir)
        return (model_dir / MANIFEST).read_bytes(), manifest


def _reuse(dest: Path, sha256: str, source: str) -> LoadedArtifact | None:
    """The extraction in ``dest`` if it came from the tarball ``sha256`` and still verifies."""
    try:
        if (dest / CACHE_MARKER).read_text().strip() != sha256:
            return None
        manifest = verify(dest)
    except (OSError, ArtifactError):
        return None  # absent or damaged: extract again
    return LoadedArtifact(dest, manifest, str(manifest["version"]), source)


def _install(tar_file: Path, sha256: str, dest: Path, source: str) -> LoadedArtifact:
    manifest = extract(tar_file, dest)
    (dest / CACHE_MARKER).write_text(sha256 + "\n")
    return LoadedArtifact(dest, manifest, str(manifest["version"]), source)


def _reuse_or_install(
    tar_file: Path, sha256: str, cache_dir: Path, source: str, keep: Collection[Path] | None
) -> LoadedArtifact:
    # Content-addressed: the version is unknown until extraction. The leading "_" cannot
    # start a version, so these never collide with cache_dir/<version>.
    dest = cache_dir / f"_sha256-{sha256[:16]}"
    artifact = _reuse(dest, sha256, source)
    if artifact is None:
        if keep is not None:
            prune_cache(cache_dir, keep)
        artifact = _install(tar_file, sha256, dest, source)
    return artifact


@contextmanager
def _temp_download(cache_dir: Path) -> Iterator[Path]:
    """A temp file in ``cache_dir`` (same filesystem as the extraction), always removed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_DOWNLOAD_PREFIX, suffix=".tar.gz", dir=cache_dir)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextmanager
def _cache_errors(cache_dir: Path) -> Iterator[None]:
    """Local disk failures (full /tmp, no permission) become ArtifactErrors like S3 ones."""
    try:
        yield
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot use the model cache {cache_dir}: {exc.strerror or exc}"
        ) from exc


@contextmanager
def _s3_errors(bucket: str, key: str) -> Iterator[None]:
    """Translate botocore failures into ArtifactErrors; failures of access or transport
    (anything but a missing object or a lost condition) are ``StoreUnavailable``."""
    uri = f"s3://{bucket}/{key}"
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            raise ModelNotFound(f"bucket {bucket} does not exist") from exc
        if code in _MISSING_OBJECT:
            raise _ObjectMissing(f"not found: {uri}") from exc
        if code in _CONDITION_FAILED:
            raise _ConditionFailed(f"conditional write to {uri} failed") from exc
        if code in _DENIED:
            raise StoreUnavailable(f"access denied to {uri}") from exc
        raise StoreUnavailable(f"S3 error {code or 'unknown'} on {uri}") from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(f"cannot reach S3 for {uri}: {type(exc).__name__}") from exc
