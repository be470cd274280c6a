"""The one place a bulk run touches the model store: pin a version, load it.

A run pins the version when it starts (default: LIVE) and every shard loads exactly that
one, so all records of a run are tagged by the same model even if LIVE moves meanwhile.
A warm worker keeps its engine for the next shard of the same version.
"""

from __future__ import annotations

import threading
from pathlib import Path

from nerkit.artifact import ArtifactError
from nerkit.engine import NerEngine
from nerkit.store import ModelNotFound, ModelStore, live_pointer, parse_s3_uri, resolve

_cache: dict[tuple[str, str | None, int], tuple[NerEngine, str]] = {}
_lock = threading.Lock()


def pin_version(model_uri: str, requested: str | None = None) -> str | None:
    """The version a run will use: ``requested``, else the one LIVE names now; ``None`` when
    ``model_uri`` is one fixed artifact (a ``.tar.gz`` or a directory), which has no
    versions to choose from."""
    if requested:
        return requested
    if not model_uri.startswith("s3://") or model_uri.endswith(".tar.gz"):
        return None
    pointer = live_pointer(model_uri)
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
            if (
                version is not None
                and model_uri.startswith("s3://")
                and not model_uri.endswith(".tar.gz")
            ):
                bucket, prefix = parse_s3_uri(model_uri)
                artifact = ModelStore(bucket, prefix).fetch(cache_dir, version, keep=[])
            else:
                artifact = resolve(model_uri, cache_dir, keep=[])
            if version is not None and artifact.version != version:
                raise ArtifactError(f"{model_uri} holds version {artifact.version}, not {version}")
            engine = NerEngine.load(artifact.path, threads=threads, manifest=artifact.manifest)
            _cache[key] = (engine, artifact.version)
        return _cache[key]
