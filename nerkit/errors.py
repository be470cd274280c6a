"""Every failure of finding, reading, verifying or publishing a model: one hierarchy.

``ModelError`` is the base. Its branches say what a caller may do about a failure:

- ``StoreUnavailable`` is **transient**: S3 unreachable, throttled or denying access, or the
  local cache unusable (disk full). The model may be fine; trying again later can succeed.
- ``IntrinsicModelError`` is a fault of the model itself: a bad artifact or LIVE pointer
  (``ArtifactError``; ``TrialRunFailed`` when it loads but cannot run) or a model, version
  or pointer that does not exist (``ModelNotFound``).
  Trying the same release again fails the same way.
- ``StoreConflict``: the store is not in the state a write assumed (a version already stored
  with other bytes, LIVE moved meanwhile or is already what was asked for).
- ``ConfigError``: a model URI or version name that cannot be parsed, a fault of the caller's
  configuration or input (also a ``ValueError``).

What is shown to whom: **no message of these errors is for the clients of the HTTP API.**
Messages name buckets, keys and local paths; they go to logs and to the operators' CLIs. The
API tells clients only a fixed reason category (``nerkit.api.model.REASONS``).
"""

from __future__ import annotations


class ModelError(Exception):
    """Base of every model loading and publishing failure (see the module docstring)."""


class StoreUnavailable(ModelError):
    """Transient: S3 or the local model cache failed (unreachable, throttled, access denied,
    disk full); the artifact itself may be fine, so trying again later can succeed."""


class IntrinsicModelError(ModelError):
    """The model itself is at fault: retrying the same release fails the same way."""


class ArtifactError(IntrinsicModelError):
    """The artifact (tarball, manifest, files) or the LIVE pointer is corrupt or unsafe."""


class TrialRunFailed(ArtifactError):
    """The model passes every check and loads, but its trial run (``NerEngine.self_test``)
    fails: the release cannot serve, and must not replace one that can."""


class ModelNotFound(IntrinsicModelError):
    """The bucket, object, LIVE pointer, version or local path does not exist."""


class StoreConflict(ModelError):
    """The store is not in the state the write assumed."""


class VersionExists(StoreConflict):
    """An upload would replace an existing version with different bytes."""


class LiveConflict(StoreConflict):
    """LIVE is not what the caller expected, another writer moved it meanwhile, or the
    requested move has nothing to do."""


class ConfigError(ModelError, ValueError):
    """A model URI or version name that cannot be used as given."""
