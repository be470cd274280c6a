"""The quality gate, publish (library and both CLIs) and rollback against moto S3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import artifact_version, dummy_tarball

from nerkit import artifact, models_cli
from nerkit.exit_codes import ExitCode
from nerkit.publish import decide, publish
from nerkit.store import ModelStore

BUCKET, PREFIX = "models-bucket", "models"
URI = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture
def s3(moto_s3: Any) -> None:
    moto_s3.create_bucket(Bucket=BUCKET)


def make_tar(tmp_path: Path, version: str, f1: float | None) -> Path:
    metrics = {} if f1 is None else {"validation": {"f1": f1}}
    labels = ["O", "B-PER", "I-PER"]
    return dummy_tarball(
        tmp_path / version, version, labels=labels, max_seq_length=64, metrics=metrics
    )


def test_decide_rules() -> None:
    manifest = {"version": "b", "metrics": {"validation": {"f1": 0.9}}}
    live = {"version": "a", "metrics": {"validation": {"f1": 0.91}}}
    assert decide(manifest, min_f1=0.85).passed
    failed = decide(manifest, min_f1=0.95)
    assert not failed.passed and "below the gate's minimum 0.9500" in failed.reason
    beaten = decide(manifest, min_f1=0.5, live_manifest=live)
    assert not beaten.passed and "does not beat live a" in beaten.reason
    with pytest.raises(artifact.ArtifactError, match=r"no metrics\.validation\.f1"):
        decide({"version": "c", "metrics": {}}, min_f1=0.5)


@pytest.mark.parametrize("live_metrics", [{}, {"validation": {}}, {"validation": {"f1": "high"}}])
def test_a_live_model_without_f1_leaves_only_the_minimum(live_metrics: dict[str, Any]) -> None:
    manifest = {"version": "b", "metrics": {"validation": {"f1": 0.9}}}
    live = {"version": "a", "metrics": live_metrics}
    passed = decide(manifest, min_f1=0.85, live_manifest=live)
    assert passed.passed and passed.live_f1 is None and passed.live_version == "a"
    assert passed.reason == (
        "validation F1 0.9000 >= 0.8500; live a has no validation F1 to compare with"
    )
    assert not decide(manifest, min_f1=0.95, live_manifest=live).passed


def test_publish_moves_live_only_when_the_gate_passes(s3: None, tmp_path: Path) -> None:
    # Dummy models: the gate's rule alone (the CLIs' trial run is tested with real ones).
    store = ModelStore(BUCKET, PREFIX)
    decision, pointer = publish(store, make_tar(tmp_path, "v1", 0.88), min_f1=0.85, trial_run=None)
    assert decision.passed and pointer is not None and store.live().version == "v1"

    decision, pointer = publish(store, make_tar(tmp_path, "v2", 0.80), min_f1=0.85, trial_run=None)
    assert not decision.passed and pointer is None
    assert store.live().version == "v1"
    assert {v.version for v in store.versions()} == {"v1", "v2"}  # kept, never served

    decision, _ = publish(
        store, make_tar(tmp_path, "v3", 0.87), min_f1=0.85, must_beat_live=True, trial_run=None
    )
    assert not decision.passed and store.live().version == "v1"
    decision, _ = publish(
        store, make_tar(tmp_path, "v4", 0.90), min_f1=0.85, must_beat_live=True, trial_run=None
    )
    assert decision.passed and store.live().version == "v4"


def test_must_beat_live_over_a_live_model_without_metrics(s3: None, tmp_path: Path) -> None:
    store = ModelStore(BUCKET, PREFIX)
    store.set_live(store.upload(make_tar(tmp_path, "hand-made", None)))
    decision, pointer = publish(
        store, make_tar(tmp_path, "v1", 0.5), min_f1=0.4, must_beat_live=True, trial_run=None
    )
    assert decision.passed and pointer is not None and pointer.previous == "hand-made"
    assert "hand-made has no validation F1" in decision.reason


def runnable_tar(source: Path, tmp_path: Path, version: str, f1: float, **manifest: Any) -> Path:
    """The tiny artifact as ``version`` with a validation F1: it passes the CLIs' trial run."""
    metrics = {"validation": {"f1": f1}}
    return artifact_version(source, tmp_path, version, metrics=metrics, **manifest)


def test_cli_publish_and_rollback(
    s3: None, tmp_path: Path, tiny_artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def publish_cli(version: str, f1: float, *gate: str) -> int:
        tarball = runnable_tar(tiny_artifact_dir, tmp_path, version, f1)
        return models_cli.main(["publish", str(tarball), "--uri", URI, *gate])

    assert publish_cli("v1", 0.9) == 0
    assert publish_cli("v2", 0.92, "--min-f1", "0.9", "--must-beat-live") == 0
    capsys.readouterr()
    assert publish_cli("v3", 0.5, "--min-f1", "0.9") == ExitCode.GATE_REFUSED
    report = json.loads(capsys.readouterr().out)
    assert report["gate"]["passed"] is False and report["published"] is False
    assert report["live"]["version"] == "v2"  # still serving, not "no live model"

    assert models_cli.main(["rollback", "--uri", URI]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v1"
    assert models_cli.main(["rollback", "--uri", URI, "--to", "v2"]) == 0
    assert ModelStore(BUCKET, PREFIX).live().version == "v2"
    assert models_cli.main(["rollback", "--uri", URI, "--to", "missing"]) == 1
    assert "missing" in capsys.readouterr().err


def test_cli_publish_refuses_an_artifact_without_metrics(
    s3: None, tmp_path: Path, tiny_artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_metrics = artifact_version(tiny_artifact_dir, tmp_path, "v1", metrics={})
    code = models_cli.main(["publish", str(no_metrics), "--uri", URI])
    assert code == 1
    assert "no metrics.validation.f1" in json.loads(capsys.readouterr().err)["error"]
    assert ModelStore(BUCKET, PREFIX).live() is None


def test_cli_publish_refuses_a_model_that_fails_its_trial_run(
    s3: None, tmp_path: Path, tiny_artifact_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny graph has 512 positions: a release claiming 1,024 loads, then cannot run.
    good = runnable_tar(tiny_artifact_dir, tmp_path, "v1", 0.9)
    assert models_cli.main(["publish", str(good), "--uri", URI]) == 0
    claims_1024 = runnable_tar(tiny_artifact_dir, tmp_path, "v2", 0.95, max_seq_length=1024)
    capsys.readouterr()
    assert models_cli.main(["publish", str(claims_1024), "--uri", URI]) == ExitCode.ERROR
    error = json.loads(capsys.readouterr().err)["error"]
    assert "fails on a window of max_seq_length (1024) tokens" in error
    store = ModelStore(BUCKET, PREFIX)
    assert store.live().version == "v1"
    assert [info.version for info in store.versions()] == ["v1"], "nothing stored"
