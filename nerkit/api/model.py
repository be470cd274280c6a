"""The model holder: loads the model once and keeps it for the environment's life.

A Lambda environment serves many invocations, so the engine is loaded once and then reused:
during the init phase when ``PRELOAD_MODEL`` is on (``preload``), else on first use. When
``MODEL_URI`` follows a LIVE pointer, the pointer is re-read (one small GET) at most every
``MODEL_REFRESH_SECONDS``, whatever the outcome of the last check; a new version is loaded
next to the old one and swapped in only once it is fully loaded and has passed its trial run
(``NerEngine.self_test``: full-length windows must give finite scores), so a request never sees
a half-loaded model and a broken release, even one that passes every check of its files and
graph, never replaces a working one. A release that failed to load or its trial run (a fault
of the artifact, not of S3 or the disk) is remembered by version and sha256 and not downloaded
again until LIVE moves. The model source (``nerkit.store.open_source``) is
built once, on first use, and serves every check and download (with one S3 client).

Failures are recorded as a reason category, the only thing clients see (``REASONS``); the
full error, which may name buckets, keys and paths, goes to the log.

Loading runs inside the request that needs it (a Lambda environment freezes between
invocations, so background threads cannot be relied on).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit.api.settings import Settings
from nerkit.engine import NerEngine
from nerkit.errors import (
    ConfigError,
    IntrinsicModelError,
    ModelError,
    ModelNotFound,
    StoreUnavailable,
    TrialRunFailed,
)
from nerkit.store import ModelSource, Pointer, open_source, read_client

log = logging.getLogger(__name__)

# After a failed first load, requests within this many seconds get the recorded error at once
# instead of each downloading (and failing on) the same broken artifact again.
LOAD_RETRY_SECONDS = 10.0

# Why no model (or not the LIVE one) serves: what clients may see, with a generic message.
REASONS = {
    "not_configured": "the service has no model configured",
    "no_live_model": "no model has been published",
    "store_unavailable": "the model store cannot be reached",
    "load_failed": "the model failed to load",
    "failed_trial_run": "the model loaded but failed its trial run",
}


class ModelUnavailableError(Exception):
    """No model can serve requests; ``reason`` is a key of ``REASONS``."""

    def __init__(self, reason: str) -> None:
        super().__init__(REASONS[reason])
        self.reason = reason


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version; a request takes one of these and uses it throughout."""

    engine: NerEngine
    version: str
    manifest: dict[str, Any]
    path: Path  # the directory the engine was loaded from; kept in the cache while served


@dataclass(frozen=True)
class ModelStatus:
    """For ``/ready`` and tests: what is loaded, how often a load succeeded, the last error
    (a ``REASONS`` key) and its full message (for logs and tests only)."""

    version: str | None
    loads: int
    error: str | None
    error_detail: str | None


@dataclass(frozen=True)
class _Failure:
    reason: str
    detail: str


@dataclass(frozen=True)
class _BadRelease:
    """A LIVE pointer's release (version, tarball sha256) that failed to load, and how."""

    release: tuple[str, str]
    failure: _Failure


class ModelHolder:
    """Thread-safe lazy loading and refreshing of the model named by ``settings.model_uri``."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: ModelSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``source``: where models come from (default: ``MODEL_URI``, opened on first use)."""
        self._settings = settings
        self._source = source
        self._clock = clock
        self._current: LoadedModel | None = None
        self._loads = 0
        self._failure: _Failure | None = None
        self._failed_at: float | None = None
        self._bad_release: _BadRelease | None = None
        self._checked_at = 0.0
        self._load_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._source_lock = threading.Lock()

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

    def preload(self) -> None:
        """Load the model now (Lambda's init phase, at full CPU), never raising.

        A failure is logged and recorded, and the first request tries again at once (no
        ``LOAD_RETRY_SECONDS`` pause): init problems such as a slow network may be gone by
        then, and a broken release is not downloaded again (see the module docstring).
        """
        try:
            self.get()
        except ModelUnavailableError:
            self._failed_at = None

    def status(self) -> ModelStatus:
        current, failure = self._current, self._failure
        return ModelStatus(
            version=current.version if current else None,
            loads=self._loads,
            error=failure.reason if failure else None,
            error_detail=failure.detail if failure else None,
        )

    def _load_first(self) -> LoadedModel:
        # Concurrent first requests wait for one load instead of each loading the model.
        with self._load_lock:
            if self._current is not None:
                return self._current
            paused = (
                self._failed_at is not None and self._clock() - self._failed_at < LOAD_RETRY_SECONDS
            )
            loaded = None if paused else self._attempt("load", None)
            if loaded is None:
                assert self._failure is not None  # every failed attempt records one
                raise ModelUnavailableError(self._failure.reason)
            return loaded

    def _refresh_due(self) -> bool:
        interval = self._settings.model_refresh_seconds
        return interval > 0 and self._clock() - self._checked_at >= interval

    def _refresh(self) -> None:
        # One thread checks; the others keep serving the current model meanwhile.
        if not self._refresh_lock.acquire(blocking=False):
            return
        try:
            if self._refresh_due():
                # Set before the check: a failing check waits for the next interval too.
                self._checked_at = self._clock()
                self._attempt("refresh", self._current)
        finally:
            self._refresh_lock.release()

    def _attempt(self, stage: str, current: LoadedModel | None) -> LoadedModel | None:
        """Load what ``MODEL_URI`` names, unless LIVE is what ``current`` serves or a release
        that failed before; install it and return the model serving now, or record why not
        and return ``None``. Never raises."""
        pointer = None
        try:
            # Read before loading, and load exactly that release (fetch does not read LIVE
            # again), so that a failure is pinned on the release it came from.
            pointer = self._model_source().live()
            if current is not None and (pointer is None or pointer.version == current.version):
                # LIVE serves what is loaded (or there is nothing to follow): a failure
                # recorded by an earlier check or a release since rolled back is over.
                self._failure = None
                return current
            bad = self._bad_release
            if pointer is not None and bad and bad.release == _release(pointer):
                self._failure, self._failed_at = bad.failure, self._clock()
                log.warning(
                    "LIVE still points at a release that failed to load; not retried",
                    extra={
                        "fields": {"live_version": pointer.version, "reason": bad.failure.reason}
                    },
                )
                return None
            if current is not None and pointer is not None:
                log.info(
                    "new live model version",
                    extra={
                        "fields": {
                            "model_version": current.version,
                            "live_version": pointer.version,
                        }
                    },
                )
            loaded = self._load(keep=[current.path] if current else [], pointer=pointer)
        except Exception as exc:
            self._fail(stage, exc, pointer)
            return None
        self._install(loaded)
        return loaded

    def _model_source(self) -> ModelSource:
        """The one source of this holder, opened from ``MODEL_URI`` on first use."""
        with self._source_lock:
            if self._source is None:
                settings = self._settings
                if not settings.model_uri:
                    raise ConfigError("MODEL_URI is not set")
                # Serving only reads: inside Lambda without botocore (nerkit.store.s3_reader).
                self._source = open_source(
                    settings.model_uri, settings.model_cache_dir, s3=read_client(settings.model_uri)
                )
            return self._source

    def _load(self, *, keep: Collection[Path], pointer: Pointer | None) -> LoadedModel:
        started = time.perf_counter()
        artifact = self._model_source().fetch(pointer, keep=keep)
        engine = NerEngine.load(
            artifact.path, threads=self._settings.ner_threads, manifest=artifact.manifest
        )
        engine.self_test()
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
        return LoadedModel(engine, artifact.version, engine.manifest, artifact.path)

    def _install(self, loaded: LoadedModel) -> None:
        self._current = loaded
        self._loads += 1
        self._failure = None
        self._failed_at = None
        self._checked_at = self._clock()

    def _fail(self, stage: str, exc: Exception, pointer: Pointer | None) -> None:
        failure = _Failure(_reason(exc), str(exc) or type(exc).__name__)
        self._failure = failure
        self._failed_at = self._clock()
        # Only a fault of the release itself is worth remembering: S3 or disk trouble, or
        # too little memory, may be gone at the next check, and an unexpected error says
        # nothing about the release.
        if pointer is not None and isinstance(exc, IntrinsicModelError):
            self._bad_release = _BadRelease(_release(pointer), failure)
        current = self._current
        log.error(
            "model %s failed",
            stage,
            # ModelError messages say what is wrong; anything else needs its traceback.
            exc_info=not isinstance(exc, ModelError),
            extra={
                "fields": {
                    "model_version": current.version if current else None,
                    "live_version": pointer.version if pointer else None,
                    "reason": failure.reason,
                    "error": failure.detail,
                }
            },
        )


def _release(pointer: Pointer) -> tuple[str, str]:
    """What identifies a release: its version and the sha256 of its tarball."""
    return pointer.version, pointer.sha256


def _reason(exc: Exception) -> str:
    if isinstance(exc, ConfigError):
        return "not_configured"
    if isinstance(exc, ModelNotFound):
        return "no_live_model"
    if isinstance(exc, StoreUnavailable):
        return "store_unavailable"
    if isinstance(exc, TrialRunFailed):
        return "failed_trial_run"
    return "load_failed"
