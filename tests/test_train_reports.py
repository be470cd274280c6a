"""What ``nerkit-train train`` tells its user and leaves behind: the quantization chosen and
why (output, manifest, card), the work directory (kept and sized, or removed), and channel
errors that name the user's file."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest

from nerkit import artifact
from nerkit.exit_codes import ExitCode
from nerkit.training import cli, quantization
from nerkit.training.data import DataError, load_examples

CONLL = "\n\n".join(
    f"-DOCSTART- O\n\n{name} B-PER\nvisited O\n{city} B-LOC\n. O\n\n"
    f"{org} B-ORG\nhired O\n{name} B-PER\n. O"
    for name, city, org in [
        ("Ann", "Paris", "Acme"),
        ("Bob", "Rome", "Initech"),
        ("Cleo", "Oslo", "Globex"),
        ("Dan", "Lima", "Umbrella"),
        ("Eve", "Kyiv", "Hooli"),
        ("Finn", "Bern", "Stark"),
    ]
)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "mine.txt"
    path.write_text(CONLL + "\n")
    return path


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directories of this test's runs, to see what a run leaves behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _train(data: Path, out: Path, model: Path, *extra: str) -> int:
    return cli.main(
        [
            "train",
            "--train", str(data),
            "--split", "0.34",
            "--out", str(out),
            "--hp", f"base_model={model}",
            "--hp", "epochs=1",
            "--hp", "max_seq_length=32",
            *extra,
        ]
    )  # fmt: skip


@pytest.mark.slow
def test_int8_fallback_is_said_in_output_manifest_and_card(
    tmp_path: Path,
    data: Path,
    temp_root: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No int8 variant can be within a negative budget: export must fall back to fp32.
    monkeypatch.setattr(quantization, "MAX_QUANTIZATION_F1_LOSS", -1.0)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert _train(data, out, tiny_model_dir) == ExitCode.OK

    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == str(out / "model.tar.gz")
    assert report["work"] is None
    manifest = artifact.extract(out / "model.tar.gz", tmp_path / "model")
    choice = manifest["quantization_choice"]
    assert manifest["quantization"] == choice["chosen"] == "none"
    assert set(choice["validation_f1"]) == {"none", "int8", "int8-no-embeddings"}
    assert choice["reason"].startswith("fp32 kept, about 4x larger, because int8 lost more")
    assert choice["reason"] in (out / "MODEL_CARD.md").read_text()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"quantization: {choice['reason']}" in warnings
    assert f"model: {out / 'model.tar.gz'} (" in caplog.text
    # Without --work, nothing of the run is left in the temporary directory.
    assert list(temp_root.iterdir()) == []


@pytest.mark.slow
def test_kept_work_directory_is_named_with_its_size(
    tmp_path: Path, data: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "work"
    with caplog.at_level(logging.INFO):
        code = _train(data, tmp_path / "out", tiny_model_dir, "--work", str(work), "--hp",
                      "quantize=none")  # fmt: skip
    assert code == ExitCode.OK
    # Off a terminal (as under pytest) every stage reports progress in the log.
    for line in (
        "epoch 1/1 training: done, ",
        "validation (torch): done, ",
        "exporting to ONNX (fp32): done in ",
        "fusing the transformer graph: done in ",
    ):
        assert line in caplog.text
    for noise in ("Fused Attention", "Removed ", "Quantization parameters for tensor"):
        assert noise not in caplog.text
    assert f"work directory {work} kept (" in caplog.text
    assert "MB: checkpoints to resume or extend this run); delete it when done" in caplog.text
    manifest = artifact.read_manifest(work / "model")
    assert manifest["quantization_choice"]["reason"] == "fp32 as asked (quantize=none)"


def test_failed_run_leaves_no_temporary_directory(
    tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert _train(empty, tmp_path / "out", tmp_path) == ExitCode.ERROR
    assert list(temp_root.iterdir()) == []
    assert "empty.txt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("scan.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8),
        ("data.csv", bytes((7 * i + 3) % 256 for i in range(4000)).replace(b"\x00", b"\x01")),
        ("notes.jsonl", b"\x1f\x8b\x08\x00" + bytes(range(1, 256)) * 4),
    ],
)
def test_binary_files_are_refused_as_binary(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as refused:
        load_examples(path)
    message = str(refused.value)
    assert message.startswith(f"{name}: looks binary, not a text data file")
    assert len(message) < 200


def test_latin1_text_is_not_taken_for_binary(tmp_path: Path) -> None:
    path = tmp_path / "ner.csv"
    path.write_bytes("Sentence #,Word,POS,Tag\nSentence: 1,Café,NN,B-org\n".encode("latin-1"))
    assert [ex.text for ex in load_examples(path)] == ["Café"]


def test_channel_errors_name_the_users_path(
    tmp_path: Path, temp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mine.tsv"
    data.write_text("Ann\tB-PER\n")
    assert _train(data, tmp_path / "out", tmp_path) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert f"error: --train {data}: no data files in the channel" in err
    assert str(temp_root) not in err


def test_a_reused_work_directory_holds_only_this_runs_channels(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nerkit.training import job

    work = tmp_path / "work"
    earlier = job.JobPaths(work).channel("validation")
    earlier.mkdir(parents=True)
    (earlier / "valid.txt").write_text(CONLL)
    seen: list[list[str]] = []

    def record_channels(paths: job.JobPaths) -> None:
        seen.append(sorted(p.name for p in (paths.root / "input" / "data").iterdir()))
        raise RuntimeError("stop here")

    monkeypatch.setattr(job, "run_job", record_channels)
    channels = {"train": str(data), "validation": None, "test": None}
    with pytest.raises(RuntimeError, match="stop here"):
        cli.run_local_job(work, channels, {"validation_split": "0.2"}, tmp_path / "out")
    assert seen == [["train"]]
