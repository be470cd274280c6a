"""The model holder: loads the model on first use and keeps it for the environment's life.

A Lambda environment serves many invocations, so the engine is loaded once (lazily: the init
phase has a 10 s limit and ``/health`` needs no model) and then reused. When ``MODEL_URI``
follows a LIVE pointer, the pointer is re-read at most every ``MODEL_REFRESH_SECONDS``; a new
version is loaded next to the old one and swapped in only once it is fully loaded, so a
request never sees a half-loaded model and a broken release never replaces a working one.
Every failure is recorded for ``/ready`` and the logs.

Loading runs inside the request that needs it (a Lambda environment freezes between
invocations, so background threads cannot be relied on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit import store
from nerkit.api.settings import Settings
from nerkit.artifact import ArtifactError
from nerkit.engine import NerEngine

log = logging.getLogger(__name__)

# After a failed first load, requests within this many seconds get the recorded error at once
# instead of each downloading (and failing on) the same broken artifact again.
LOAD_RETRY_SECONDS = 10.0


class ModelUnavailableError(Exception):
    """No model can serve requests; the message says why and is safe to show clients."""


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version; a request takes one of these and uses it throughout."""

    engine: NerEngine
    version: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ModelStatus:
    """For ``/ready`` and tests: what is loaded, how often a load succeeded, the last error."""

    version: str | None
    loads: int
    error: str | None


Resolve = Callable[[str, Path], store.LoadedArtifact]
LiveVersion = Callable[[str], str | None]


class ModelHolder:
    """Thread-safe lazy loading and refreshing of the model named by ``settings.model_uri``."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Resolve = store.resolve,
        live_version: LiveVersion = store.live_version,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._resolve = resolve
        self._live_version = live_version
        self._clock = clock
        self._current: LoadedModel | None = None
        self._loads = 0
        self._error: str | None = None
        self._failed_at: float | None = None
        self._checked_at = 0.0
        self._load_lock = threading.Lock()
        self._refresh_lock = threading.Lock()

    def get(self) -> LoadedModel:
        """The model to serve with, loading or refreshing it first when due.

        Raises ``ModelUnavailableError`` only while no model has ever loaded.
        """
        current = self._current
        if current is None:
            return self._load_first()
        if self._refresh_due():
            self._refresh()
            return self._current or current
        return current

    def status(self) -> ModelStatus:
        current = self._current
        return ModelStatus(
            version=current.version if current else None, loads=self._loads, error=self._error
        )

    def _load_first(self) -> LoadedModel:
        # Concurrent first requests wait for one load instead of each loading the model.
        with self._load_lock:
            if self._current is not None:
                return self._current
            if self._failed_at is not None and self._clock() - self._failed_at < LOAD_RETRY_SECONDS:
                raise ModelUnavailableError(self._error)
            try:
                loaded = self._load()
            except Exception as exc:
                self._fail("load", exc)
                raise ModelUnavailableError(self._error) from None
            self._install(loaded)
            return loaded

    def _refresh_due(self) -> bool:
        interval = self._settings.model_refresh_seconds
        return interval > 0 and self._clock() - self._checked_at >= interval

    def _refresh(self) -> None:
        # One thread checks; the others keep serving the current model meanwhile.
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            if not self._refresh_due():
                return
            self._checked_at = self._clock()
            current = self._current
            assert current is not None  # refresh starts only after the first load
            try:
                live = self._live_version(self._settings.model_uri)
                if live is None or live == current.version:
                    return
                log.info(
                    "new live model version",
                    extra={"fields": {"model_version": current.version, "live_version": live}},
                )
                loaded = self._load()
            except Exception as exc:
                self._fail("refresh", exc)
                return
            self._install(loaded)
        finally:
            self._refresh_lock.release()

    def _load(self) -> LoadedModel:
        settings = self._settings
        if not settings.model_uri:
            raise ArtifactError("MODEL_URI is not set")
        started = time.perf_counter()
        artifact = self._resolve(settings.model_uri, settings.model_cache_dir)
        engine = NerEngine.load(
            artifact.path, threads=settings.ner_threads, manifest=artifact.manifest
        )
        log.info(
            "model loaded",
            extra={
                "fields": {
                    "model_version": artifact.version,
                    "load_ms": round((time.perf_counter() - started) * 1000, 1),
                    "loads": self._loads + 1,
                }
            },
        )
        return LoadedModel(engine, artifact.version, engine.manifest)

    def _install(self, loaded: LoadedModel) -> None:
        self._current = loaded
        self._loads += 1
        self._error = None
        self._failed_at = None
        self._checked_at = self._clock()

    def _fail(self, stage: str, exc: Exception) -> None:
        # ArtifactError messages are client-safe by contract; anything else may hold paths
        # or internals, so clients get its type and the log gets the traceback.
        reason = str(exc) if isinstance(exc, ArtifactError) else type(exc).__name__
        self._error = f"model {stage} failed: {reason}"
        self._failed_at = self._clock()
        current = self._current
        log.error(
            "model %s failed",
            stage,
            exc_info=not isinstance(exc, ArtifactError),
            extra={
                "fields": {
                    "model_version": current.version if current else None,
                    "error": self._error,
                }
            },
        )
