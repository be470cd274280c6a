"""What a cold start does and does not do: the work Lambda's init pays for.

Timings are the benchmark's job (bench/serving_benchmark.py); these tests pin the behaviour
behind them: modules a model source does not need are not imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AWS_MODULES = ("boto3", "botocore", "s3transfer")


def test_a_local_model_is_served_without_importing_boto(
    tiny_artifact_tar: Path, tmp_path: Path
) -> None:
    """A fresh process (as Lambda starts one) imports lambda/handler.py, preloads a model from
    a local tarball and answers a request: no AWS SDK module is imported on the way."""
    script = f"""
import json, sys
sys.path.insert(0, {str(REPO / "lambda")!r})
import handler
from starlette.testclient import TestClient
status = TestClient(handler.app).post("/v1/entities", json={{"text": "Paris"}}).status_code
print(json.dumps({{"status": status, "loads": handler.app.state.model.status().loads,
    "modules": [name for name in {AWS_MODULES!r} if name in sys.modules]}}))
"""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MODEL_URI": str(tiny_artifact_tar),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "PRELOAD_MODEL": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"status": 200, "loads": 1, "modules": []}
