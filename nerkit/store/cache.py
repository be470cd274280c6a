"""The local model cache (Lambda's /tmp): one verified extraction per tarball.

A directory ``cache_dir/<name>`` holds one extracted, verified model and ``CACHE_MARKER``
(the sha256 of the tarball it came from), so a later load of the same tarball reuses it
(``reuse``) instead of downloading and extracting again (``install``). /tmp is small (512 MB
by default): before a new model is installed, ``prune`` deletes every other model directory
except those still in use. Disk failures are ``StoreUnavailable`` (transient), not faults of
the model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit.artifact import STAGING_MARK, extract, verify
from nerkit.errors import ArtifactError, StoreUnavailable

# Written next to an extracted model once it is verified; extract() refuses dot-files in a
# tarball, so an artifact cannot bring its own marker.
CACHE_MARKER = ".tarball-sha256"
# In-progress downloads (``.download-*``) and extractions (``*.partial-*``) older than this
# are leftovers of a killed process: no Lambda invocation runs longer (15 minutes).
STALE_TEMP_SECONDS = 15 * 60

_DOWNLOAD_PREFIX = ".download-"


@dataclass(frozen=True)
class LoadedArtifact:
    """A verified model directory ready for ``NerEngine.load`` and where it came from."""

    path: Path
    manifest: dict[str, Any]
    version: str
    source: str


def reuse(dest: Path, sha256: str, source: str) -> LoadedArtifact | None:
    """The extraction in ``dest`` if it came from the tarball ``sha256`` and still verifies."""
    try:
        if (dest / CACHE_MARKER).read_text().strip() != sha256:
            return None
        manifest = verify(dest)
    except (OSError, ArtifactError):
        return None  # absent or damaged: extract again
    return LoadedArtifact(dest, manifest, str(manifest["version"]), source)


def install(
    tar_file: Path, sha256: str, dest: Path, source: str, *, published: bool = False
) -> LoadedArtifact:
    """Extract and verify ``tar_file`` (whose sha256 the caller computed) into ``dest``;
    ``published``: that sha256 matched the one published with the tarball, so its files
    are not hashed again (``nerkit.artifact.verify``)."""
    manifest = extract(tar_file, dest, published=published)
    (dest / CACHE_MARKER).write_text(sha256 + "\n")
    return LoadedArtifact(dest, manifest, str(manifest["version"]), source)


def reuse_or_install(
    tar_file: Path, sha256: str, cache_dir: Path, source: str, keep: Collection[Path] | None
) -> LoadedArtifact:
    """A tarball whose version is unknown until extraction, cached by content."""
    # The leading "_" cannot start a version, so these never collide with cache_dir/<version>.
    dest = cache_dir / f"_sha256-{sha256[:16]}"
    artifact = reuse(dest, sha256, source)
    if artifact is None:
        if keep is not None:
            prune(cache_dir, keep)
        artifact = install(tar_file, sha256, dest, source)
    return artifact


def prune(cache_dir: Path, keep: Collection[Path]) -> list[Path]:
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


@contextmanager
def temp_download(cache_dir: Path) -> Iterator[Path]:
    """A temp file in ``cache_dir`` (same filesystem as the extraction), always removed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_DOWNLOAD_PREFIX, suffix=".tar.gz", dir=cache_dir)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextmanager
def cache_errors(cache_dir: Path) -> Iterator[None]:
    """Local disk failures (full /tmp, no permission) are transient, like S3 ones."""
    try:
        yield
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot use the model cache {cache_dir}: {exc.strerror or exc}"
        ) from exc


def _is_temp(entry: Path) -> bool:
    return entry.name.startswith(_DOWNLOAD_PREFIX) or STAGING_MARK in entry.name
