"""What a cold start does and does not do: the work Lambda's init pays for.

Timings are the benchmark's job (bench/serving_benchmark.py); these tests pin the behaviour
behind them: modules a model source does not need are not imported, files already
verified are not hashed again, and a graph optimized at export is not optimized again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from nerkit import artifact, engine
from nerkit.engine import OPTIMIZED_GRAPH, NerEngine
from nerkit.store import ModelStore, open_source
from nerkit.training.export import build_artifact

REPO = Path(__file__).resolve().parent.parent
AWS_MODULES = ("boto3", "botocore", "s3transfer")


def serve_in_a_fresh_process(env: dict[str, str]) -> dict[str, Any]:
    """A fresh process (as Lambda starts one) imports lambda/handler.py, which preloads the
    model, and answers a request: its status, the loads and the AWS SDK modules imported."""
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO / "lambda")!r})
import handler
from starlette.testclient import TestClient
status = TestClient(handler.app).post("/v1/entities", json={{"text": "Paris"}}).status_code
print(json.dumps({{"status": status, "loads": handler.app.state.model.status().loads,
    "modules": [name for name in {AWS_MODULES!r} if name in sys.modules]}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO), "PRELOAD_MODEL": "true", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_a_local_model_is_served_without_importing_boto(
    tiny_artifact_tar: Path, tmp_path: Path
) -> None:
    env = {"MODEL_URI": str(tiny_artifact_tar), "MODEL_CACHE_DIR": str(tmp_path / "cache")}
    assert serve_in_a_fresh_process(env) == {"status": 200, "loads": 1, "modules": []}


def test_an_s3_model_is_served_inside_lambda_without_importing_boto(
    tiny_artifact_tar: Path, tmp_path: Path, moto_server: str, aws_credentials: None
) -> None:
    """Inside Lambda the model comes from S3 through nerkit.store.s3_reader: LIVE read, the
    tarball downloaded and verified, and botocore never imported."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server)
    s3.create_bucket(Bucket="nerkit-models")
    store = ModelStore("nerkit-models", "models", s3)
    store.set_live(store.upload(tiny_artifact_tar))
    env = {
        "MODEL_URI": "s3://nerkit-models/models",
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_LAMBDA_FUNCTION_NAME": "nerkit-serving",
        "AWS_ENDPOINT_URL_S3": moto_server,
    }
    assert serve_in_a_fresh_process(env) == {"status": 200, "loads": 1, "modules": []}


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files ``nerkit.artifact`` hashes from disk."""
    names: list[str] = []
    sha256_file = artifact.sha256_file

    def recording(path: Path) -> str:
        names.append(path.name)
        return sha256_file(path)

    monkeypatch.setattr(artifact, "sha256_file", recording)
    return names


def test_a_published_release_is_not_hashed_again_file_by_file(
    moto_s3: Any, tiny_artifact_tar: Path, tmp_path: Path, hashed: list[str]
) -> None:
    """The tarball's sha256 is checked against LIVE's as it downloads; the upload verified
    every file of those bytes, so the extracted files are checked by size, not hashed."""
    moto_s3.create_bucket(Bucket="models")
    store = ModelStore("models", "ner", moto_s3)
    store.set_live(store.upload(tiny_artifact_tar))
    hashed.clear()
    loaded = open_source("s3://models/ner", tmp_path / "cache", s3=moto_s3).fetch()
    assert loaded.version == "test-1"
    assert hashed == []
    model = loaded.path / "model.onnx"
    assert model.stat().st_size == loaded.manifest["files"]["model.onnx"]["bytes"]


def test_a_published_release_with_a_file_of_the_wrong_size_is_refused(
    moto_s3: Any, tiny_artifact_tar: Path, tmp_path: Path
) -> None:
    """Sizes are still checked: a tarball published around ``upload`` (right sha256
    metadata, a file that does not match its manifest) fails to load."""
    work = tmp_path / "bad"
    artifact.extract(tiny_artifact_tar, work)
    (work / "tokenizer.json").write_bytes(b"{}")
    bad = tmp_path / "bad.tar.gz"
    with pytest.raises(artifact.ArtifactError):
        artifact.pack(work, bad)  # pack refuses it too, so the tarball is made by hand
    with tarfile.open(bad, "w:gz") as tar:
        for path in sorted(work.iterdir()):
            tar.add(path, arcname=path.name)
    moto_s3.create_bucket(Bucket="models")
    sha256 = artifact.sha256_file(bad)
    moto_s3.put_object(
        Bucket="models",
        Key="ner/test-1/model.tar.gz",
        Body=bad.read_bytes(),
        Metadata={"sha256": sha256},
    )
    store = ModelStore("models", "ner", moto_s3)
    with pytest.raises(artifact.ArtifactError, match=r"wrong size: tokenizer\.json"):
        store.fetch(tmp_path / "cache", "test-1")


def test_a_local_tarball_is_verified_file_by_file(
    tiny_artifact_tar: Path, tmp_path: Path, hashed: list[str]
) -> None:
    """Nothing vouches for a local tarball's bytes: each file is hashed against the
    manifest as it is extracted."""
    loaded = open_source(str(tiny_artifact_tar), tmp_path / "cache").fetch()
    assert set(loaded.manifest["files"]) <= set(hashed)


TEXTS = [
    "Angela Merkel met Tim Cook in Berlin.",
    "Zoë Saldaña flew to São Paulo with the European Union delegation.",
    "Paris",
]


@pytest.fixture
def session_levels(monkeypatch: pytest.MonkeyPatch) -> list[ort.GraphOptimizationLevel]:
    """The graph optimization level of every ONNX Runtime session started."""
    levels: list[ort.GraphOptimizationLevel] = []
    session = ort.InferenceSession

    def recording(path: str, options: ort.SessionOptions, **kwargs: Any) -> Any:
        levels.append(options.graph_optimization_level)
        return session(path, options, **kwargs)

    monkeypatch.setattr(engine.ort, "InferenceSession", recording)
    return levels


def optimized_artifact(tiny_artifact_dir: Path, out_dir: Path) -> Path:
    build_artifact(
        out_dir,
        onnx_path=tiny_artifact_dir / "model.onnx",
        tokenizer_json=tiny_artifact_dir / "tokenizer.json",
        manifest=artifact.read_manifest(tiny_artifact_dir),
        optimize=True,
    )
    return out_dir


def test_a_graph_optimized_at_export_is_loaded_without_optimizing_it_again(
    tiny_artifact_dir: Path, tmp_path: Path, session_levels: list[ort.GraphOptimizationLevel]
) -> None:
    optimized = optimized_artifact(tiny_artifact_dir, tmp_path / "optimized")
    session_levels.clear()  # the export's own session
    manifest = artifact.verify(optimized)
    assert manifest[OPTIMIZED_GRAPH] == {"onnxruntime": ort.__version__, "level": "extended"}
    stored = NerEngine.load(optimized)
    plain = NerEngine.load(tiny_artifact_dir)
    assert session_levels == [
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ]
    # The same fusions, made at export instead of at load: identical results, scores included.
    assert stored.predict(TEXTS) == plain.predict(TEXTS)
    assert stored.predict(TEXTS, decoding="argmax") == plain.predict(TEXTS, decoding="argmax")


def test_a_graph_optimized_by_another_onnxruntime_is_optimized_again(
    tiny_artifact_dir: Path, tmp_path: Path, session_levels: list[ort.GraphOptimizationLevel]
) -> None:
    """Another version may fuse differently: the session optimizes what it loads."""
    optimized = optimized_artifact(tiny_artifact_dir, tmp_path / "optimized")
    manifest = artifact.read_manifest(optimized)
    other = {**manifest, OPTIMIZED_GRAPH: {"onnxruntime": "0.0.1", "level": "extended"}}
    artifact.write_manifest(optimized, other)
    session_levels.clear()
    NerEngine.load(optimized)
    assert session_levels == [ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
