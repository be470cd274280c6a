"""Plain helpers shared by test modules (fixtures live in conftest.py).

Importable as ``from helpers import ...`` from any test under tests/ (tests/infra included):
there are no ``__init__.py`` files, so pytest's default ``prepend`` import mode puts
tests/conftest.py's directory on ``sys.path``.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

from nerkit.artifact import pack, write_manifest

# What moto needs to sign requests; never real credentials.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# The skip reason of the browser test, which the end-of-run banner (conftest.py) looks for.
PAGE_NOT_TESTED = "the web page was not tested"
PAGE_NOT_TESTED_BANNER = [
    "!" * 78,
    "THE WEB PAGE WAS NOT TESTED: tests/test_page_browser.py needs Chromium, not found here.",
    "Fix: `sudo apt-get install chromium` (Debian/Ubuntu), or run .ci/run, which installs it;",
    "or set NERKIT_CHROMIUM=/path/to/chromium. Then run `make test` again.",
    "!" * 78,
]


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dummy_artifact(
    model_dir: Path, version: str, *, model: bytes | None = None, **manifest: Any
) -> Path:
    """An artifact directory with dummy model/tokenizer bytes and a real manifest.

    ``model.onnx`` holds ``model`` (default ``b"onnx <version>"``); ``manifest`` entries
    override or extend the base manifest (name, version, labels, max_seq_length).
    """
    model_dir.mkdir(parents=True)
    (model_dir / "model.onnx").write_bytes(model or f"onnx {version}".encode())
    (model_dir / "tokenizer.json").write_bytes(b'{"tokenizer": true}')
    base = {"name": "test", "version": version, "labels": ["O", "B-PER"], "max_seq_length": 32}
    write_manifest(model_dir, {**base, **manifest})
    return model_dir


def dummy_tarball(work: Path, version: str, *, model: bytes | None = None, **manifest: Any) -> Path:
    """``dummy_artifact`` at ``work/model``, packed as ``work/model.tar.gz``."""
    model_dir = dummy_artifact(work / "model", version, model=model, **manifest)
    tar_path = work / "model.tar.gz"
    pack(model_dir, tar_path)
    return tar_path


class FakeClock:
    """The model holder's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def artifact_version(
    source: Path, dest: Path, version: str, *, broken: bool = False, **manifest: Any
) -> Path:
    """A copy of the artifact ``source`` as ``version``, packed; ``broken`` replaces the ONNX
    graph with bytes that pass the checksums but that ONNX Runtime cannot load; ``manifest``
    entries replace the manifest's."""
    model_dir = dest / version
    shutil.copytree(source, model_dir)
    if broken:
        (model_dir / "model.onnx").write_bytes(b"not an onnx graph")
    original = json.loads((model_dir / "manifest.json").read_text())
    write_manifest(model_dir, {**original, "version": version, **manifest})
    tar_path = dest / f"{version}.tar.gz"
    pack(model_dir, tar_path)
    return tar_path
