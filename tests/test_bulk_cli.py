"""``nerkit-bulk run`` as a user runs it (a subprocess), against ``POST /v1/entities``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bulk_helpers import run_outputs
from fastapi.testclient import TestClient

from nerkit.api.app import create_app
from nerkit.api.settings import Settings
from nerkit.bulk.locations import location
from nerkit.bulk.progress import ProgressReporter

REPO = Path(__file__).resolve().parent.parent
TEXTS = [
    "Angela Merkel met Tim Cook of Apple in Berlin.",
    "Paris is the capital of France, said Emmanuel Macron.",
    "The United Nations met in New York on Monday.",
    "Ada Lovelace worked with Charles Babbage in London. " * 8,
    "Zoë Ørsted visited Kraków and São Paulo 🙂 with IBM.",
]
OPTION_SETS: list[dict[str, Any]] = [
    {},
    {"aggregation": "first", "decoding": "argmax"},
    {"aggregation": "max", "labels": ["PER", "LOC"], "min_score": 0.3},
]


def bulk(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "nerkit.bulk.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def cli_flags(options: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag, *value] if isinstance(value, list) else [flag, str(value)]
    return flags


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTION_SETS, ids=["defaults", "first-argmax", "labels"])
def test_run_gives_exactly_the_entities_of_the_api(
    tmp_path: Path, tiny_artifact_tar: Path, options: dict[str, Any]
) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    done = bulk(
        "run", "--input", str(source), "--output", str(out), "--model", str(tiny_artifact_tar),
        "--cache-dir", str(tmp_path / "cache"), *cli_flags(options),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["model_version"] == "test-1"
    assert summary["totals"]["documents"] == len(TEXTS)
    assert "progress:" in done.stderr and "docs/s" in done.stderr  # not a terminal: lines
    results, errors = run_outputs(location(str(out)))
    assert errors == []

    api = TestClient(
        create_app(Settings(model_uri=str(tiny_artifact_tar), model_cache_dir=tmp_path / "api"))
    )
    response = api.post("/v1/entities", json={"texts": TEXTS, **options})
    assert response.status_code == 200, response.text
    expected = response.json()["results"]
    assert [r["id"] for r in results] == list(range(len(TEXTS)))
    assert [{"entities": r["entities"], "truncated": r["truncated"]} for r in results] == expected
    assert any(r["entities"] for r in results)  # the comparison is not vacuous


def test_run_refuses_bad_options_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    done = bulk(
        "run", "--input", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o"),
        "--model", str(tmp_path / "nowhere.tar.gz"), "--min-score", "2",
    )  # fmt: skip
    assert done.returncode == 2
    assert "min_score must be within 0..1" in done.stderr
    done = bulk("run", "--input", str(tmp_path), "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "must not be inside the input" in done.stderr


def test_run_refuses_entity_types_the_model_does_not_have(
    tmp_path: Path, tiny_artifact_tar: Path
) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "Paris"}\n')
    done = bulk(
        "run", "--input", str(tmp_path / "a.jsonl"), "--output", str(tmp_path / "o"),
        "--model", str(tiny_artifact_tar), "--cache-dir", str(tmp_path / "c"), "--labels", "FOOD",
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown entity types ['FOOD']" in done.stderr


def test_progress_shows_a_bar_with_rate_and_eta_on_a_terminal() -> None:
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    now = [0.0]
    terminal = Terminal()
    reporter = ProgressReporter(terminal, clock=lambda: now[0])  # type: ignore[arg-type]
    reporter.planned(1000)
    now[0] = 10.0
    reporter.advance(50, 250)
    assert "\r[#######" in terminal.text
    assert "50 documents, 5.0 docs/s" in terminal.text and "ETA 30s" in terminal.text
