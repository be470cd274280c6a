"""The committed default model reaches the F1 recorded in its manifest, through the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerkit import artifact
from nerkit.engine import NerEngine
from nerkit.training.data import load_examples
from nerkit.training.recasing import recase_all
from nerkit.training.served import engine_scores

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default" / "model.tar.gz"
CONLL_TEST = REPO.parent / "shared" / "datasets" / "conll2003" / "test.txt"
# Test F1 of the committed model (20261123T165513Z-953faa01) on the text lowercased and
# uppercased (README.md "The default model"): its manifest predates these metrics. A model
# trained now records them as metrics.test_lower / test_upper, which take precedence.
MEASURED_TEST_F1 = {"lower": 0.5827, "upper": 0.8035}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> NerEngine:
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"{DEFAULT_MODEL} is missing: the repository must ship the default model")
    directory = tmp_path_factory.mktemp("default") / "model"
    artifact.extract(DEFAULT_MODEL, directory)
    return NerEngine.load(directory, threads=2)


def test_default_model_manifest(engine: NerEngine) -> None:
    manifest = engine.manifest
    assert manifest["labels"] == [
        "O",
        "B-LOC",
        "I-LOC",
        "B-MISC",
        "I-MISC",
        "B-ORG",
        "I-ORG",
        "B-PER",
        "I-PER",
    ]
    assert manifest["quantization"].startswith("int8")
    assert DEFAULT_MODEL.stat().st_size <= 30 * 1024 * 1024


def test_default_model_finds_obvious_entities(engine: NerEngine) -> None:
    text = "Angela Merkel met executives of Volkswagen in Berlin during the World Cup."
    found = {(e.word, e.entity_group) for e in engine.predict([text])[0]}
    assert {("Angela Merkel", "PER"), ("Volkswagen", "ORG"), ("Berlin", "LOC")} <= found


@pytest.mark.slow
def test_default_model_reaches_its_recorded_test_f1(engine: NerEngine) -> None:
    if not CONLL_TEST.is_file():
        pytest.skip(f"CoNLL-2003 test data not found at {CONLL_TEST}")
    recorded = engine.manifest["metrics"]["test"]
    scores = engine_scores(engine, load_examples(CONLL_TEST))
    # Same data, same artifact, same engine: only float summation order may differ.
    assert scores["support"] == recorded["support"]
    assert scores["f1"] == pytest.approx(recorded["f1"], abs=0.002)


@pytest.mark.slow
@pytest.mark.parametrize("casing", ["lower", "upper"])
def test_default_model_reaches_its_test_f1_on_recased_text(engine: NerEngine, casing: str) -> None:
    if not CONLL_TEST.is_file():
        pytest.skip(f"CoNLL-2003 test data not found at {CONLL_TEST}")
    recorded = engine.manifest["metrics"].get(f"test_{casing}", {})
    expected = recorded.get("f1", MEASURED_TEST_F1[casing])
    scores = engine_scores(engine, recase_all(load_examples(CONLL_TEST), casing))
    assert scores["support"] == engine.manifest["metrics"]["test"]["support"]
    assert scores["f1"] == pytest.approx(expected, abs=0.002)
