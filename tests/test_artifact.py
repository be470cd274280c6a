"""nerkit.artifact: manifest, verify, deterministic pack and safe extract."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import dummy_artifact

from nerkit.artifact import (
    MANIFEST,
    ArtifactError,
    extract,
    pack,
    read_manifest,
    verify,
    write_manifest,
)

LABELS = ["O", "B-PER", "I-PER"]


def make_artifact(model_dir: Path, version: str = "v1", model: bytes = b"onnx-v1") -> Path:
    """A small artifact directory: dummy model and tokenizer bytes plus a real manifest."""
    return dummy_artifact(model_dir, version, model=model, labels=LABELS)


def packed(model_dir: Path, tar_path: Path) -> Path:
    pack(model_dir, tar_path)
    return tar_path


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    """A gzip'd tar built member by member, for archives ``pack`` would never produce."""
    with tarfile.open(path, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def good_members(model_dir: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    names = [MANIFEST, "model.onnx", "tokenizer.json"]
    return [(member(name), (model_dir / name).read_bytes()) for name in names]


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_artifact(tmp_path / "model")


def test_write_manifest_records_every_file_and_verify_accepts_it(model_dir: Path) -> None:
    manifest = verify(model_dir)
    assert manifest["format_version"] == 1
    assert sorted(manifest["files"]) == ["model.onnx", "tokenizer.json"]
    assert manifest["files"]["model.onnx"]["bytes"] == len(b"onnx-v1")
    assert read_manifest(model_dir) == manifest


def test_write_manifest_refuses_subdirectories_and_symlinks(model_dir: Path) -> None:
    (model_dir / "sub").mkdir()
    with pytest.raises(ArtifactError, match="regular files only: sub"):
        write_manifest(model_dir, read_manifest(model_dir))
    (model_dir / "sub").rmdir()
    (model_dir / "link").symlink_to(model_dir / "model.onnx")
    with pytest.raises(ArtifactError, match="regular files only: link"):
        write_manifest(model_dir, read_manifest(model_dir))


def test_pack_is_deterministic_and_extract_round_trips(model_dir: Path, tmp_path: Path) -> None:
    first = pack(model_dir, tmp_path / "a" / "model.tar.gz")
    # Different mtimes must not change the bytes.
    os.utime(model_dir / "model.onnx", (1, 1))
    second = pack(model_dir, tmp_path / "b" / "model.tar.gz")
    assert first == second
    manifest = extract(tmp_path / "a" / "model.tar.gz", tmp_path / "out")
    assert manifest == read_manifest(model_dir)
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"onnx-v1"


def test_verify_detects_a_changed_file_of_the_same_size(model_dir: Path) -> None:
    (model_dir / "model.onnx").write_bytes(b"onnx-v2")
    with pytest.raises(ArtifactError, match=r"checksum mismatch: model\.onnx"):
        verify(model_dir)


def test_verify_detects_a_changed_size(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").write_bytes(b"{}")
    with pytest.raises(ArtifactError, match=r"wrong size: tokenizer\.json"):
        verify(model_dir)


def test_verify_detects_a_missing_file(model_dir: Path) -> None:
    (model_dir / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match=r"file missing: model\.onnx"):
        verify(model_dir)


def test_pack_refuses_an_unverified_directory(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactError):
        pack(model_dir, tmp_path / "model.tar.gz")
    assert not (tmp_path / "model.tar.gz").exists()


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"has no manifest\.json"):
        verify(tmp_path)


def test_bad_manifest_json(model_dir: Path) -> None:
    (model_dir / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        verify(model_dir)


def _edit_manifest(model_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((model_dir / MANIFEST).read_text())
    edit(manifest)
    (model_dir / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=2), "unsupported artifact format_version 2"),
        (lambda m: m.pop("labels"), "lacks labels"),
        (lambda m: m.update(labels=[]), "labels must be a non-empty list"),
        (lambda m: m.update(max_seq_length=4), "max_seq_length must be an integer"),
        (lambda m: m["files"].pop("tokenizer.json"), "lacks tokenizer.json"),
        (lambda m: m["files"].update({"model.onnx": "abc"}), "must be an object with a sha256"),
        (lambda m: m["files"].update({"../escape": {"sha256": "0"}}), "unsafe file name"),
    ],
)
def test_invalid_manifest(
    model_dir: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    _edit_manifest(model_dir, edit)
    with pytest.raises(ArtifactError, match=message):
        verify(model_dir)


def test_manifest_must_be_an_object(model_dir: Path) -> None:
    (model_dir / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="must be a JSON object"):
        read_manifest(model_dir)


# -- hostile tarballs ---------------------------------------------------------------------

HOSTILE = {
    "absolute path": (member("/tmp/evil"), "unsafe path"),
    "parent traversal": (member("../evil"), "unsafe path"),
    "subdirectory file": (member("a/b"), "unsafe path"),
    "hidden file": (member(".marker"), "unsafe path"),
    "directory": (member("sub", tarfile.DIRTYPE), "regular files only"),
    "symlink": (member("model.onnx", tarfile.SYMTYPE, "/etc/passwd"), "regular files only"),
    "hardlink": (member("model.onnx", tarfile.LNKTYPE, "manifest.json"), "regular files only"),
    "char device": (member("null", tarfile.CHRTYPE), "regular files only"),
    "fifo": (member("pipe", tarfile.FIFOTYPE), "regular files only"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_extract_refuses_hostile_members(model_dir: Path, tmp_path: Path, case: str) -> None:
    info, message = HOSTILE[case]
    # The hostile member follows a complete, valid artifact: extraction must still fail.
    tar_path = write_tar(tmp_path / "evil.tar.gz", [*good_members(model_dir), (info, b"evil")])
    with pytest.raises(ArtifactError, match=message):
        extract(tar_path, tmp_path / "out" / "model")
    # Nothing at all is left: no model, no staging directory, no file escaped next to them.
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_caps_the_total_size(model_dir: Path, tmp_path: Path) -> None:
    tar_path = packed(model_dir, tmp_path / "model.tar.gz")
    # manifest.json (the first member) fits; the members after it push the total over.
    limit = (model_dir / MANIFEST).stat().st_size + 1
    with pytest.raises(ArtifactError, match=f"larger than {limit} bytes"):
        extract(tar_path, tmp_path / "out", max_bytes=limit)
    assert not (tmp_path / "out").exists()
    assert extract(tar_path, tmp_path / "out", max_bytes=limit + 100)["version"] == "v1"


def test_extract_refuses_a_tarball_whose_files_fail_the_manifest(
    model_dir: Path, tmp_path: Path
) -> None:
    members = good_members(model_dir)
    members[1] = (member("model.onnx"), b"onnx-XX")
    tar_path = write_tar(tmp_path / "model.tar.gz", members)
    with pytest.raises(ArtifactError, match=r"checksum mismatch: model\.onnx"):
        extract(tar_path, tmp_path / "out")


def bad_deflate_tarball(path: Path) -> Path:
    """A gzip whose deflate stream turns invalid inside the first member's data.

    Tar reading succeeds until the member's bytes are read, which is where zlib's error
    used to escape as a non-ArtifactError. A sync flush byte-aligns the stream, so the next
    byte can be a block header with the reserved type 0b11 (bits: BFINAL=1, BTYPE=11).
    """
    info = member("model.onnx")
    info.size = 1 << 17
    head = info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1 << 16)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(head) + deflate.flush(zlib.Z_SYNC_FLUSH) + b"\x07"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff" + body)
    return path


def test_extract_refuses_bytes_that_are_not_gzip(tmp_path: Path) -> None:
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(b"this is not gzip at all")
    with pytest.raises(ArtifactError, match=r"not a readable \.tar\.gz"):
        extract(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [bad]


def test_extract_refuses_a_truncated_tarball(model_dir: Path, tmp_path: Path) -> None:
    good = packed(model_dir, tmp_path / "good.tar.gz").read_bytes()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArtifactError, match=r"not a readable \.tar\.gz"):
        extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extract_reports_corrupt_deflate_data_as_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"not a readable \.tar\.gz: .*invalid block type"):
        extract(bad_deflate_tarball(tmp_path / "bad.tar.gz"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_extract_keeps_the_previous_model(tmp_path: Path) -> None:
    old = make_artifact(tmp_path / "old", version="v1")
    new = make_artifact(tmp_path / "new", version="v2", model=b"onnx-v2")
    dest = tmp_path / "cache" / "model"
    extract(packed(old, tmp_path / "old.tar.gz"), dest)
    members = [*good_members(new), (member("../escape"), b"x")]
    with pytest.raises(ArtifactError, match="unsafe path"):
        extract(write_tar(tmp_path / "evil.tar.gz", members), dest)
    assert verify(dest)["version"] == "v1"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]


def test_extract_accepts_a_tar_of_dot(tmp_path: Path) -> None:
    """`tar -czf model.tar.gz -C model .` stores "." and "./name" entries."""
    source = dummy_artifact(tmp_path / "model", "v1")
    tar_path = tmp_path / "model.tar.gz"
    subprocess.run(["tar", "-czf", str(tar_path), "-C", str(source), "."], check=True)
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
    assert "." in names and "./manifest.json" in names
    manifest = extract(tar_path, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["manifest.json", *manifest["files"]]
    )
