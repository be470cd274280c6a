"""The gate Lambda (nerkit.pipeline.gate) against moto S3: a SageMaker-style model.tar.gz in
training/, the model store under models/ner."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from helpers import dummy_artifact, dummy_tarball

from nerkit.artifact import ArtifactError
from nerkit.pipeline.gate import GateFailed, InvalidGateInput, handler
from nerkit.store import ModelStore

BUCKET = "nerkit-test-data"
PREFIX = "models/ner"
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BASE_MANIFEST: dict[str, Any] = {
    "name": "conll03-en",
    "created_at": "2026-11-23T13:00:00Z",
    "labels": LABELS,
    "max_seq_length": 128,
}


@pytest.fixture
def s3(moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MODEL_URI", f"s3://{BUCKET}/{PREFIX}")
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


@pytest.fixture
def store(s3: Any) -> ModelStore:
    return ModelStore(BUCKET, PREFIX, s3)


def _f1(value: float) -> dict[str, Any]:
    return {"validation": {"f1": value, "precision": value, "recall": value}, "test": {}}


def train(
    s3: Any, tmp_path: Path, job: str, metrics: dict[str, Any] | None, version: str | None = None
) -> str:
    """Put what a SageMaker job leaves behind (its own tar of /opt/ml/model, not our
    deterministic pack) at training/<job>/output/model.tar.gz; return its URI."""
    version = version or f"v-{job}"
    manifest = BASE_MANIFEST if metrics is None else {**BASE_MANIFEST, "metrics": metrics}
    model_dir = dummy_artifact(tmp_path / "jobs" / version, version, **manifest)
    tarball = tmp_path / "jobs" / f"{job}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    key = f"training/{job}/output/model.tar.gz"
    s3.upload_file(str(tarball), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def publish_live(store: ModelStore, tmp_path: Path, version: str, f1: float) -> None:
    tarball = dummy_tarball(tmp_path / "live" / version, version, **BASE_MANIFEST, metrics=_f1(f1))
    store.set_live(store.upload(tarball))


def event(uri: str, *, min_f1: float = 0.8, must_beat_live: bool = True) -> dict[str, Any]:
    return {
        "modelArtifact": uri,
        "trainingJob": "job",
        "minF1": min_f1,
        "mustBeatLive": must_beat_live,
    }


def live_version(store: ModelStore) -> str | None:
    pointer = store.live()
    return pointer.version if pointer else None


def test_pass_publishes_the_version_and_moves_live(
    s3: Any, store: ModelStore, tmp_path: Path
) -> None:
    uri = train(s3, tmp_path, "nerkit-prod-1", _f1(0.91))

    outcome = handler(event(uri), None)

    assert outcome["published"] is True
    assert outcome["version"] == "v-nerkit-prod-1"
    assert outcome["f1"] == pytest.approx(0.91)
    assert live_version(store) == "v-nerkit-prod-1"
    # The versioned layout: tarball + manifest copy, and the stored tarball verifies.
    assert store.manifest("v-nerkit-prod-1")["metrics"]["validation"]["f1"] == 0.91
    loaded = store.fetch(tmp_path / "cache")
    assert loaded.version == "v-nerkit-prod-1"
    assert json.loads(json.dumps(outcome)) == outcome  # the state machine gets plain JSON


def test_f1_below_the_gate_raises_and_leaves_live_alone(
    s3: Any, store: ModelStore, tmp_path: Path
) -> None:
    publish_live(store, tmp_path, "v-live", 0.70)
    uri = train(s3, tmp_path, "nerkit-prod-2", _f1(0.75))

    with pytest.raises(GateFailed, match=r"validation F1 0\.7500 is below .* 0\.8000"):
        handler(event(uri, must_beat_live=False), None)

    assert live_version(store) == "v-live"


def test_f1_below_the_gate_with_no_live_model_publishes_nothing_live(
    s3: Any, store: ModelStore, tmp_path: Path
) -> None:
    uri = train(s3, tmp_path, "nerkit-prod-3", _f1(0.5))

    with pytest.raises(GateFailed, match="below"):
        handler(event(uri), None)

    assert store.live() is None


def test_missing_metrics_is_a_clear_error(s3: Any, store: ModelStore, tmp_path: Path) -> None:
    publish_live(store, tmp_path, "v-live", 0.9)
    uri = train(s3, tmp_path, "nerkit-prod-4", metrics=None)

    with pytest.raises(ArtifactError, match=r"no metrics\.validation\.f1"):
        handler(event(uri), None)

    assert live_version(store) == "v-live"


def test_must_beat_live(s3: Any, store: ModelStore, tmp_path: Path) -> None:
    publish_live(store, tmp_path, "v-live", 0.90)
    worse = train(s3, tmp_path, "nerkit-prod-5", _f1(0.85))
    better = train(s3, tmp_path, "nerkit-prod-6", _f1(0.93))

    with pytest.raises(GateFailed, match=r"does not beat live v-live \(0\.9000\)"):
        handler(event(worse), None)
    assert live_version(store) == "v-live"

    outcome = handler(event(better), None)
    assert outcome["previous"] == "v-live"
    assert outcome["previousF1"] == pytest.approx(0.90)
    assert live_version(store) == "v-nerkit-prod-6"
    assert store.live().previous == "v-live"  # type: ignore[union-attr]


def test_without_must_beat_live_the_minimum_is_enough(
    s3: Any, store: ModelStore, tmp_path: Path
) -> None:
    publish_live(store, tmp_path, "v-live", 0.90)
    uri = train(s3, tmp_path, "nerkit-prod-7", _f1(0.85))

    handler(event(uri, must_beat_live=False), None)

    assert live_version(store) == "v-nerkit-prod-7"


def test_a_retried_invocation_after_publishing_succeeds(
    s3: Any, store: ModelStore, tmp_path: Path
) -> None:
    uri = train(s3, tmp_path, "nerkit-prod-8", _f1(0.9))
    handler(event(uri), None)

    again = handler(event(uri), None)

    assert again["published"] is True
    assert again["reason"] == "already live"
    assert live_version(store) == "v-nerkit-prod-8"


def test_a_corrupt_artifact_is_refused(s3: Any, store: ModelStore, tmp_path: Path) -> None:
    key = "training/nerkit-prod-9/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"not a tarball")

    with pytest.raises(ArtifactError, match="not a readable"):
        handler(event(f"s3://{BUCKET}/{key}"), None)

    assert store.live() is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"modelArtifact": "/tmp/model.tar.gz"}, "modelArtifact"),
        ({"minF1": "0.8"}, "minF1"),
        ({"minF1": 1.5}, "minF1"),
        ({"mustBeatLive": "yes"}, "mustBeatLive"),
    ],
)
def test_invalid_events_are_refused(s3: Any, change: dict[str, Any], message: str) -> None:
    bad = {**event(f"s3://{BUCKET}/training/j/output/model.tar.gz"), **change}

    with pytest.raises(InvalidGateInput, match=message):
        handler(bad, None)
