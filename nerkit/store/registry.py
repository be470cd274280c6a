"""The S3 model registry: immutable versions, a LIVE pointer, safe download, publish, rollback.

Layout (docs/ARCHITECTURE.md)::

    s3://<bucket>/<prefix>/<version>/model.tar.gz    (x-amz-meta-sha256: sha256 of the tarball)
    s3://<bucket>/<prefix>/<version>/manifest.json   (copy, for listing without a download;
                                                      x-amz-meta-tarball-sha256: the same sha256)
    s3://<bucket>/<prefix>/LIVE                      (JSON pointer; moving it is going live)

Versions are immutable: ``upload`` writes the tarball with ``If-None-Match: *``. ``LIVE`` is
written with ``If-Match`` on the ETag that was read (or ``If-None-Match: *`` when there is none),
so two publishers racing each other cannot both win. Objects get the bucket's default
encryption (SSE-S3 or the bucket's KMS key); nothing here asks for a specific key.

Absent keys under least privilege: S3 answers a GET or HEAD of a missing key with 404 only to
a caller whose ``s3:ListBucket`` applies to that request; our roles may list only with an
``s3:prefix`` condition, which a GET does not carry, so S3 answers them 403. A denied GET or
HEAD is therefore followed by a list of exactly that key (``nerkit.store.s3.read_object``):
if the key is not there, it is absent (no LIVE yet, no such version); otherwise the denial
stands.

Failures are ``nerkit.errors`` (see there for which are transient).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

from nerkit.artifact import DEFAULT_MAX_EXTRACT_BYTES, MANIFEST, extract, sha256_file
from nerkit.errors import ArtifactError, ConfigError, LiveConflict, ModelNotFound, VersionExists
from nerkit.store import cache
from nerkit.store.cache import LoadedArtifact
from nerkit.store.s3 import (
    ConditionFailed,
    ObjectMissing,
    S3Client,
    new_s3_client,
    read_object,
    s3_errors,
)
from nerkit.store.uri import (
    StorePrefix,
    check_version,
    invalid_version,
    is_version,
    parse_model_uri,
)

TARBALL = "model.tar.gz"
LIVE = "LIVE"
# Metadata of a version's manifest copy: the sha256 of its tarball.
TARBALL_SHA256 = "tarball-sha256"
# A tarball larger than extract() accepts is refused before it fills the disk, not after.
MAX_DOWNLOAD_BYTES = DEFAULT_MAX_EXTRACT_BYTES

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


# Versions a LIVE pointer remembers as having been live before it (how far rollbacks reach).
MAX_HISTORY = 20


@dataclass(frozen=True)
class Pointer:
    """The LIVE pointer: which version serves, its tarball and what served before it
    (``history``, newest first; ``previous`` is its first entry)."""

    version: str
    key: str
    sha256: str
    updated_at: str
    previous: str | None
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str | None
    metrics: dict[str, Any]


class ModelStore:
    """Versions and the LIVE pointer under ``s3://bucket/prefix``."""

    def __init__(self, bucket: str, prefix: str = "", s3: S3Client | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._s3 = s3

    @classmethod
    def from_uri(cls, uri: str, s3: S3Client | None = None) -> ModelStore:
        """The store at ``s3://bucket/prefix``; ``ConfigError`` for any other model URI."""
        location = parse_model_uri(uri)
        if not isinstance(location, StorePrefix):
            raise ConfigError(f"not a model store URI (s3://bucket/prefix): {uri!r}")
        return cls(location.bucket, location.prefix, s3)

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
        version = manifest["version"]
        if not is_version(version):
            raise ArtifactError(invalid_version(version))
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
        except ConditionFailed:
            if self._tarball_sha256(version) != sha256:
                raise VersionExists(
                    f"version {version} already exists in {self.uri} with different content"
                ) from None
        # The manifest copy goes last: listing only shows versions whose tarball is complete.
        # It carries the tarball's sha256 too, so moving LIVE needs no access to tarballs.
        self._request(
            "put_object",
            self.key(version, MANIFEST),
            Body=manifest_bytes,
            ContentType="application/json",
            Metadata={TARBALL_SHA256: sha256},
        )
        return version

    def set_live(
        self, version: str, *, expected_current: str | EllipsisType | None = ...
    ) -> Pointer:
        """Point LIVE at ``version`` (which must exist) going forward: the version it replaces
        is remembered in the pointer's history, for ``rollback``. Return the new pointer.

        ``expected_current`` refuses to act on a stale view: a version (LIVE must be exactly
        that), ``None`` (there must be no LIVE yet) or ``...`` (no expectation). Independently
        the write is conditional on the LIVE object read here, so a concurrent writer makes
        this raise ``LiveConflict`` instead of being silently overwritten. Setting the version
        that is already live changes nothing.
        """
        version = check_version(version)
        current, etag = self._read_live()
        _check_expected(current, expected_current, self.uri)
        if current is None:
            return self._write_live(version, (), etag)
        if current.version == version:
            return current
        return self._write_live(version, (current.version, *current.history), etag)

    def rollback(
        self, to: str | None = None, *, expected_current: str | EllipsisType | None = ...
    ) -> Pointer:
        """Move LIVE back to the version that was live before it, or to ``to``; return the
        new pointer (``expected_current``: as for ``set_live``).

        The pointer keeps a history of the versions that were live, newest first, so
        repeated rollbacks walk back through it. Rolling back to a version of the history
        drops it and the entries newer than it; ``to`` a stored version that never was live
        (in the history) moves forward to it, remembering the current one, so a rollback
        afterwards returns here. The CLI's ``rollback`` and the admin API's
        ``PUT /v1/models/live`` are both this.
        """
        current, etag = self._read_live()
        if current is None:
            raise ModelNotFound(f"no LIVE model in {self.uri}: nothing to roll back")
        _check_expected(current, expected_current, self.uri)
        target = check_version(to) if to is not None else current.previous
        if target is None:
            raise LiveConflict(
                f"LIVE version {current.version} in {self.uri} has no previous version; "
                "name the version to roll back to"
            )
        if target == current.version:
            raise LiveConflict(f"version {target} is already live in {self.uri}")
        if target in current.history:
            history = current.history[current.history.index(target) + 1 :]
        else:
            history = (current.version, *current.history)
        return self._write_live(target, history, etag)

    def _write_live(self, version: str, history: tuple[str, ...], etag: str | None) -> Pointer:
        """Write LIVE -> ``version`` if LIVE still has ``etag`` (no LIVE yet: ``None``)."""
        history = tuple(item for item in history if item != version)[:MAX_HISTORY]
        pointer = Pointer(
            version=version,
            key=self.key(version, TARBALL),
            sha256=self._tarball_sha256(version),
            updated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            previous=history[0] if history else None,
            history=history,
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
        except ConditionFailed:
            raise LiveConflict(
                f"LIVE in {self.uri} changed during the update; read it again and retry"
            ) from None
        return pointer

    # -- reading ------------------------------------------------------------------------

    def versions(self, limit: int | None = None) -> list[VersionInfo]:
        """Every complete version (its manifest copy exists), oldest first; with ``limit``,
        only the ``limit`` stored last (by their manifest copies' upload time), so the number
        of manifests read stays bounded however many versions the store holds."""
        base = self.key("")
        stored = []
        for item in self._list_objects(base):
            version, _, name = item["Key"].removeprefix(base).partition("/")
            if name == MANIFEST and is_version(version):
                stored.append((item["LastModified"], version))
        if limit is not None:
            stored = sorted(stored, reverse=True)[:limit]
        infos = []
        for _, version in stored:
            manifest = self.manifest(version)
            infos.append(
                VersionInfo(version, manifest.get("created_at"), manifest.get("metrics") or {})
            )
        return sorted(infos, key=lambda info: (info.created_at or "", info.version))

    def manifest(self, version: str) -> dict[str, Any]:
        """The manifest copy of ``version`` (no tarball download)."""
        key = self.key(check_version(version), MANIFEST)
        try:
            raw, _ = self._get(key)
        except ObjectMissing:
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
        pointer: Pointer | None = None,
    ) -> LoadedArtifact:
        """Download, verify and extract a release to ``cache_dir/<version>``, reusing an
        earlier verified extraction of the same tarball.

        The release is ``pointer`` (a LIVE pointer the caller has read: fetched without
        reading LIVE again, so a failure is pinned on the release the caller saw), else
        ``version``, else the one LIVE names now. With ``keep``, a download first deletes
        every other model directory of ``cache_dir`` except those in ``keep``
        (``cache.prune``).
        """
        if pointer is None and version is None:
            pointer = self.live()
            if pointer is None:
                raise ModelNotFound(f"no LIVE model in {self.uri}")
        if pointer is not None:
            version, key, sha256 = pointer.version, pointer.key, pointer.sha256
        else:
            assert version is not None
            key = self.key(check_version(version), TARBALL)
            sha256 = self._tarball_sha256(version)
        dest = cache_dir / version
        source = f"s3://{self.bucket}/{key}"
        with cache.cache_errors(cache_dir):
            artifact = cache.reuse(dest, sha256, source)
            if artifact is None:
                if keep is not None:
                    cache.prune(cache_dir, keep)
                with cache.temp_download(cache_dir) as tmp:
                    if self._download(key, tmp) != sha256:
                        raise ArtifactError(
                            f"checksum mismatch: {source} is not what was published"
                        )
                    artifact = cache.install(tmp, sha256, dest, source, published=True)
        if artifact.version != version:
            raise ArtifactError(f"{source} holds version {artifact.version}, not {version}")
        return artifact

    def fetch_object(
        self, key: str, cache_dir: Path, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact:
        """Download one tarball by its full key (outside the version layout) and extract it
        to a directory of ``cache_dir`` named after its sha256 (``keep``: as for ``fetch``)."""
        source = f"s3://{self.bucket}/{key}"
        with cache.cache_errors(cache_dir), cache.temp_download(cache_dir) as tmp:
            return cache.reuse_or_install(tmp, self._download(key, tmp), cache_dir, source, keep)

    # -- S3 plumbing --------------------------------------------------------------------

    def _read_live(self) -> tuple[Pointer | None, str | None]:
        """The pointer and its ETag (for the conditional write), or ``(None, None)``."""
        try:
            raw, etag = self._get(self.key(LIVE))
        except ObjectMissing:
            return None, None
        return _parse_pointer(raw, f"{self.uri}/{LIVE}"), etag

    def _tarball_sha256(self, version: str) -> str:
        """From the manifest copy's metadata, or for versions stored before it carried the
        sha256, from the tarball's own."""
        try:
            head = self._read("head_object", self.key(version, MANIFEST))
            sha256 = head.get("Metadata", {}).get(TARBALL_SHA256, "")
        except ObjectMissing:
            sha256 = ""  # an upload interrupted before its manifest copy
        if not sha256:
            try:
                head = self._read("head_object", self.key(version, TARBALL))
            except ObjectMissing:
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
        with s3_errors(self.bucket, key), dest.open("wb") as out:
            response = self._read("get_object", key)
            body = response["Body"]
            try:
                if response.get("ContentLength", 0) > MAX_DOWNLOAD_BYTES:
                    raise too_large
                for chunk in body.iter_chunks(1 << 20):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise too_large
                    digest.update(chunk)
                    out.write(chunk)
            finally:
                body.close()  # a refused or failed download does not keep its connection
        return digest.hexdigest()

    def _get(self, key: str) -> tuple[bytes, str]:
        """The bytes and ETag of a small object. The body is read inside the error
        translation too: a stalled read after the headers is ``StoreUnavailable``."""
        response = self._read("get_object", key)
        with s3_errors(self.bucket, key):
            return response["Body"].read(), response["ETag"]

    def _read(self, operation: str, key: str) -> dict[str, Any]:
        """A GET or HEAD of ``key``; a denial of an absent key reads as absent (module
        docstring): ``ObjectMissing``."""
        return read_object(self.s3, operation, self.bucket, key)

    def _list_objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        with s3_errors(self.bucket, prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def _request(self, operation: str, key: str, **kwargs: Any) -> dict[str, Any]:
        with s3_errors(self.bucket, key):
            return getattr(self.s3, operation)(Bucket=self.bucket, Key=key, **kwargs)


def _check_expected(current: Pointer | None, expected: str | EllipsisType | None, uri: str) -> None:
    current_version = current.version if current else None
    if expected is not ... and expected != current_version:
        raise LiveConflict(f"LIVE in {uri} is {current_version!r}, expected {expected!r}")


def _parse_pointer(raw: bytes, uri: str) -> Pointer:
    try:
        data = json.loads(raw)
        previous = data.get("previous")
        # Pointers written before the history existed know only their previous version.
        history = data.get("history", [previous] if previous else [])
        pointer = Pointer(
            version=data["version"],
            key=data["key"],
            sha256=data["sha256"],
            updated_at=data["updated_at"],
            previous=previous,
            history=tuple(history),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ArtifactError(f"LIVE pointer {uri} is not valid pointer JSON") from None
    valid = (
        is_version(pointer.version)
        and isinstance(pointer.key, str)
        and isinstance(pointer.sha256, str)
        and _SHA256_RE.fullmatch(pointer.sha256) is not None
        and (pointer.previous is None or is_version(pointer.previous))
        and isinstance(history, list)
        and all(isinstance(item, str) and is_version(item) for item in pointer.history)
        and pointer.previous == (pointer.history[0] if pointer.history else None)
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
