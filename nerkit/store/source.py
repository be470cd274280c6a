"""The model source: where serving, the gate and the CLIs load models from.

Built once from a model URI (``open_source``; the URI forms are in ``nerkit.store.uri``), a
source answers two questions:

- ``live()``: the LIVE pointer to follow (one small GET), or ``None`` when there is nothing
  to follow: a fixed tarball or local path, or a store where nothing is published yet;
- ``fetch(pointer)``: a verified model directory of that release (``None``: the source's
  current model: LIVE as of now, or the fixed model), downloaded and extracted into the
  source's cache directory unless already there.

``keep`` (the directories of models still in use) lets a fetch that downloads or extracts
first delete every other model directory of the cache (``cache.prune``). A source holds one
S3 client, made on first use, for all its calls.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nerkit.artifact import sha256_file, verify
from nerkit.errors import ConfigError, ModelNotFound
from nerkit.store import cache
from nerkit.store.cache import LoadedArtifact
from nerkit.store.registry import ModelStore, Pointer
from nerkit.store.s3 import S3Client
from nerkit.store.uri import S3Tarball, StorePrefix, parse_model_uri


class ModelSource(Protocol):
    """A model location; see the module docstring."""

    @property
    def uri(self) -> str: ...

    def live(self) -> Pointer | None: ...

    def fetch(
        self, pointer: Pointer | None = None, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact: ...


def open_source(uri: str, cache_dir: Path, *, s3: S3Client | None = None) -> ModelSource:
    """The source named by ``uri``, caching into ``cache_dir``; ``s3``: a client to use
    instead of the default one. Parses only (no network); ``ConfigError`` for a bad URI."""
    location = parse_model_uri(uri)
    if isinstance(location, StorePrefix):
        return StoreSource(ModelStore(location.bucket, location.prefix, s3), cache_dir)
    if isinstance(location, S3Tarball):
        return TarballSource(ModelStore(location.bucket, s3=s3), location.key, cache_dir)
    return LocalSource(location, cache_dir)


@dataclass(frozen=True)
class StoreSource:
    """``s3://bucket/prefix``: follows the store's LIVE pointer."""

    store: ModelStore
    cache_dir: Path

    @property
    def uri(self) -> str:
        return self.store.uri

    def live(self) -> Pointer | None:
        return self.store.live()

    def fetch(
        self, pointer: Pointer | None = None, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact:
        return self.store.fetch(self.cache_dir, keep=keep, pointer=pointer)


@dataclass(frozen=True)
class TarballSource:
    """``s3://bucket/key.tar.gz``: one fixed object, nothing to follow."""

    store: ModelStore
    key: str
    cache_dir: Path

    @property
    def uri(self) -> str:
        return f"s3://{self.store.bucket}/{self.key}"

    def live(self) -> Pointer | None:
        return None

    def fetch(
        self, pointer: Pointer | None = None, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact:
        _no_pointer(self, pointer)
        return self.store.fetch_object(self.key, self.cache_dir, keep=keep)


@dataclass(frozen=True)
class LocalSource:
    """A local model directory (verified in place) or ``model.tar.gz`` (extracted into the
    cache); nothing to follow."""

    path: Path
    cache_dir: Path

    @property
    def uri(self) -> str:
        return str(self.path)

    def live(self) -> Pointer | None:
        return None

    def fetch(
        self, pointer: Pointer | None = None, *, keep: Collection[Path] | None = None
    ) -> LoadedArtifact:
        _no_pointer(self, pointer)
        if self.path.is_dir():
            manifest = verify(self.path)
            return LoadedArtifact(self.path, manifest, str(manifest["version"]), self.uri)
        if self.path.is_file():
            with cache.cache_errors(self.cache_dir):
                sha256 = sha256_file(self.path)
                return cache.reuse_or_install(self.path, sha256, self.cache_dir, self.uri, keep)
        raise ModelNotFound(f"no model at {self.path}")


def _no_pointer(source: ModelSource, pointer: Pointer | None) -> None:
    # Only a store has releases to choose from; a pointer here is a caller's mistake.
    if pointer is not None:
        raise ConfigError(f"{source.uri} has no LIVE pointer to load {pointer.version} from")
