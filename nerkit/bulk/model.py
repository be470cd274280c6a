"""The one place a bulk run touches the model store: pin a version, load it.

A run pins the version when it starts (default: LIVE) and every shard loads exactly that
one, so all records of a run are tagged by the same model even if LIVE moves meanwhile.
A warm worker keeps its engine for the next shard of the same version.
"""

from __future__ import annotations

import threading
from pathlib import Path

from nerkit.engine import NerEngine
from nerkit.errors import ArtifactError, ModelNotFound
from nerkit.store import ModelStore, open_source, parse_model_uri
from nerkit.store.uri import StorePrefix

_cache: dict[tuple[str, str | None, int], tuple[NerEngine, str]] = {}
_lock = threading.Lock()


def pin_version(model_uri: str, requested: str | None = None) -> str | None:
    """The version a run will use: ``requested``, else the one LIVE names now; ``None`` when
    ``model_uri`` is one fixed artifact (a ``.tar.gz`` or a directory), which has no
    versions to choose from."""
    if requested:
        return requested
    location = parse_model_uri(model_uri)
    if not isinstance(location, StorePrefix):
        return None
    pointer = ModelStore(location.bucket, location.prefix).live()
    if pointer is None:
        raise ModelNotFound(f"no LIVE model in {model_uri}")
    return pointer.version


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
