"""The model artifact: a directory (or its ``model.tar.gz``) with a manifest and checksums.

See docs/ARCHITECTURE.md for the format. Everything that reads an artifact goes through
``verify`` so a corrupt or tampered model is refused before it is loaded. Every fault of an
artifact raises ``ArtifactError`` (``nerkit.errors``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

from nerkit.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.onnx", "tokenizer.json")
REQUIRED_KEYS = ("format_version", "name", "version", "labels", "max_seq_length", "files")
# A MiniLM int8 artifact is ~25 MB; 2 GiB leaves room for large models and stops tar bombs.
DEFAULT_MAX_EXTRACT_BYTES = 2 << 30
# Extraction stages into "<dest>.partial-<random>" next to dest, then renames it into place.
STAGING_MARK = ".partial-"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` with the checksum of every other regular file in the directory."""
    files = {}
    for path in sorted(model_dir.iterdir()):
        if path.name == MANIFEST:
            continue
        if not path.is_file() or path.is_symlink():
            raise ArtifactError(f"artifact directory may hold regular files only: {path.name}")
        files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": files}
    _check_manifest(manifest)
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"artifact has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{MANIFEST} is not valid JSON: {exc}") from None
    _check_manifest(manifest)
    return manifest


def verify(model_dir: Path, *, hashes: bool = True) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256; return the manifest.

    ``hashes=False`` skips the sha256s, only for files extracted a moment ago from a tarball
    whose own sha256 was just checked against the one published with it: publishing
    (``ModelStore.upload``) verified every file of those very bytes, so hashing them again
    proves nothing new. The manifest, the files' presence and sizes are still checked.
    """
    manifest = read_manifest(model_dir)
    for name, expected in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise ArtifactError(f"artifact file missing: {name}")
        if path.stat().st_size != expected.get("bytes", path.stat().st_size):
            raise ArtifactError(f"artifact file has the wrong size: {name}")
        if hashes and sha256_file(path) != expected.get("sha256"):
            raise ArtifactError(f"checksum mismatch: {name}")
    return manifest


def pack(model_dir: Path, tar_path: Path) -> str:
    """Verify ``model_dir`` and write a deterministic ``model.tar.gz``; return its sha256."""
    manifest = verify(model_dir)
    names = [MANIFEST, *sorted(manifest["files"])]
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    # Fixed mtimes/owners make the tarball's bytes (and sha256) depend only on content.
    with (
        tar_path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in names:
            data = (model_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return sha256_file(tar_path)


def extract(
    tar_path: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
    published: bool = False,
) -> dict[str, Any]:
    """Safely extract an artifact tarball into ``dest`` (replaced) and verify it
    (``published``: the tarball matched its published sha256, see ``verify``'s ``hashes``).

    Only regular files at the top level are accepted: no absolute paths, ``..``, directories,
    links or devices, and no more than ``max_bytes`` in total. The archive is extracted
    into a sibling temp directory and renamed into place only once verified, so a bad
    artifact never leaves a half-written model behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not tar_path.is_file():
        raise ArtifactError(f"artifact not found: {tar_path}")
    # A unique staging name: two processes extracting into the same cache must not share it.
    staging = Path(tempfile.mkdtemp(prefix=dest.name + STAGING_MARK, dir=dest.parent))
    try:
        try:
            with tarfile.open(tar_path, mode="r:gz") as tar:
                _extract_members(tar, staging, max_bytes)
        # zlib.error escapes tarfile when a member's compressed data is corrupt.
        except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
            # Only faults of the archive itself: a full or read-only disk (OSError) is
            # the caller's environment, not a bad artifact, and must stay retryable.
            raise ArtifactError(f"artifact is not a readable .tar.gz: {exc}") from None
        manifest = verify(staging, hashes=not published)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(staging, dest)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_members(tar: tarfile.TarFile, staging: Path, max_bytes: int) -> None:
    total = 0
    for member in tar:
        # `tar -C dir .` (how a SageMaker-style model.tar.gz may be made) stores a root
        # entry "." and names like "./model.onnx": accept exactly that, nothing deeper.
        if member.isdir() and member.name in (".", "./"):
            continue
        name = member.name.removeprefix("./")
        if not member.isfile():
            raise ArtifactError(f"artifact may hold regular files only: {name!r}")
        if not _is_plain_name(name):
            raise ArtifactError(f"unsafe path in artifact: {name!r}")
        total += member.size
        if total > max_bytes:
            raise ArtifactError(f"artifact is larger than {max_bytes} bytes")
        source = tar.extractfile(member)
        assert source is not None  # a regular file always has a stream
        with (staging / name).open("wb") as out:
            shutil.copyfileobj(source, out)


def _is_plain_name(name: str) -> bool:
    """A top-level file name: no separators, no ``.``/``..``, no hidden files."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{MANIFEST} must be a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{MANIFEST} lacks {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"unsupported artifact format_version {manifest['format_version']!r}")
    labels = manifest["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ArtifactError(f"{MANIFEST} labels must be a non-empty list of strings")
    if not isinstance(manifest["max_seq_length"], int) or manifest["max_seq_length"] < 8:
        raise ArtifactError(f"{MANIFEST} max_seq_length must be an integer >= 8")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError(f"{MANIFEST} files must be an object")
    for name, entry in files.items():
        # verify() joins these names onto the model directory, so only plain file names.
        if not _is_plain_name(name):
            raise ArtifactError(f"{MANIFEST} lists an unsafe file name: {name!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ArtifactError(f"{MANIFEST} files[{name!r}] must be an object with a sha256")
    for name in REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"artifact lacks {name}")
