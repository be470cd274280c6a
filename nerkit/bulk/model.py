"""The one place a bulk run touches the model store: pin a version, load it.

A run pins the version when it starts (default: LIVE) and every shard loads exactly that
one, so all records of a run are tagged by the same model even if LIVE moves meanwhile.
A warm worker keeps its engine for the next shard of the same version. The plan checks a
requested version and entity types against the store's manifest copy, so a typo fails the
run at once with a ``JobError`` instead of in every worker.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from nerkit.bulk.plan import JobError
from nerkit.engine import NerEngine, entity_types_of
from nerkit.errors import ArtifactError, ConfigError, ModelNotFound
from nerkit.store import ModelStore, open_source, parse_model_uri
from nerkit.store.uri import StorePrefix, check_version

_cache: dict[tuple[str, str | None, int], tuple[NerEngine, str]] = {}
_lock = threading.Lock()


def pin_version(
    model_uri: str, requested: str | None = None, labels: Sequence[str] | None = None
) -> str | None:
    """The version a run will use: ``requested``, else the one LIVE names now; ``None`` when
    ``model_uri`` is one fixed artifact (a ``.tar.gz`` or a directory), which has no
    versions to choose from (its loader checks ``requested`` and ``labels``).

    In a store, a requested version must exist and ``labels`` must be entity types of the
    pinned version (``JobError`` otherwise)."""
    if requested:
        try:
            check_version(requested)
        except ConfigError as exc:
            raise JobError(str(exc)) from None
    location = parse_model_uri(model_uri)
    if not isinstance(location, StorePrefix):
        return requested or None
    store = ModelStore(location.bucket, location.prefix)
    if requested:
        version = requested
    else:
        pointer = store.live()
        if pointer is None:
            raise ModelNotFound(f"no LIVE model in {model_uri}")
        version = pointer.version
    if requested or labels:
        try:
            manifest = store.manifest(version)
        except ModelNotFound as exc:
            raise JobError(f"model version {version} not found in {model_uri}") from exc
        known = list(entity_types_of(list(manifest["labels"])))
        unknown = [label for label in labels or () if label not in known]
        if unknown:
            raise JobError(f"unknown entity types {unknown}; model version {version} has {known}")
    return version


def load_engine(
    model_uri: str, version: str | None, cache_dir: Path, *, threads: int = 1
) -> tuple[NerEngine, str]:
    """The engine for ``version`` of ``model_uri`` (any, for ``None``) and its version."""
    key = (model_uri, version, threads)
    with _lock:
        if key not in _cache:
            _cache.clear()  # one model at a time in a worker's memory and /tmp
            location = parse_model_uri(model_uri)
            if version is not None and isinstance(location, StorePrefix):
                store = ModelStore(location.bucket, location.prefix)
                artifact = store.fetch(cache_dir, version, keep=[])
            else:
                artifact = open_source(model_uri, cache_dir).fetch(keep=[])
            if version is not None and artifact.version != version:
                raise ArtifactError(f"{model_uri} holds version {artifact.version}, not {version}")
            engine = NerEngine.load(artifact.path, threads=threads, manifest=artifact.manifest)
            _cache[key] = (engine, artifact.version)
        return _cache[key]
