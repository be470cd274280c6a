"""``nerkit-train evaluate`` scores gold types as the model names them: the model's own
``label_map`` (or ``--label-map``), and a clear refusal when no type is shared."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from nerkit import artifact
from nerkit.exit_codes import ExitCode
from nerkit.training import cli
from nerkit.training.hyperparameters import Hyperparameters

GMB_CSV = """Sentence #,Word,POS,Tag
Sentence: 1,Thousands,NNS,O
,marched,VBD,O
,in,IN,O
,London,NNP,B-geo
,with,IN,O
,Tony,NNP,B-per
,Blair,NNP,I-per
,on,IN,O
,Monday,NNP,B-tim
Sentence: 2,Acme,NNP,B-org
,Corp,NNP,I-org
,sued,VBD,O
,Paris,NNP,B-geo
"""
GMB_TO_CONLL = {"geo": "LOC", "per": "PER", "org": "ORG", "tim": "O"}


@pytest.fixture
def gmb_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ner.csv"
    path.write_text(GMB_CSV)
    return path


@pytest.fixture
def gmb_trained_model(tmp_path: Path, tiny_artifact_dir: Path) -> Path:
    """The tiny model, as if trained on GMB with a label_map (it is in its manifest)."""
    model = tmp_path / "model"
    shutil.copytree(tiny_artifact_dir, model)
    manifest = artifact.read_manifest(model)
    hyperparameters = {"label_map": json.dumps(GMB_TO_CONLL)}
    artifact.write_manifest(model, {**manifest, "hyperparameters": hyperparameters})
    return model


def evaluate(
    capsys: pytest.CaptureFixture[str], model: Path, data: Path, *extra: str
) -> tuple[int, str, str]:
    code = cli.main(["evaluate", "--model", str(model), "--data", str(data), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_applies_the_models_label_map(
    capsys: pytest.CaptureFixture[str], gmb_csv: Path, gmb_trained_model: Path
) -> None:
    code, out, _ = evaluate(capsys, gmb_trained_model, gmb_csv)

    assert code == ExitCode.OK
    report = json.loads(out)
    assert report["label_map"] == GMB_TO_CONLL
    # London, Paris, Tony Blair, Acme Corp: tim is dropped by the map.
    assert report["support"] == 4
    assert set(report["per_type"]) <= {"LOC", "PER", "ORG", "MISC"}


def test_evaluate_refuses_when_no_type_is_shared(
    capsys: pytest.CaptureFixture[str], gmb_csv: Path, tiny_artifact_dir: Path
) -> None:
    code, out, err = evaluate(capsys, tiny_artifact_dir, gmb_csv)

    assert code == ExitCode.ERROR
    assert out == ""
    assert "the data's entity types (geo, org, per, tim) and the model's" in err
    assert "(LOC, MISC, ORG, PER) have none in common" in err
    assert "--label-map" in err


def test_evaluate_label_map_option_and_unpredicted_types(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    gmb_csv: Path,
    tiny_artifact_dir: Path,
) -> None:
    with caplog.at_level(logging.WARNING):
        code, out, _ = evaluate(capsys, tiny_artifact_dir, gmb_csv, "--label-map", '{"geo": "LOC"}')

    assert code == ExitCode.OK
    assert json.loads(out)["support"] == 5
    assert "the model does not predict org, per, tim" in caplog.text


def test_a_bad_label_map_says_it_is_the_label_map(
    capsys: pytest.CaptureFixture[str], gmb_csv: Path, tiny_artifact_dir: Path
) -> None:
    code, _, err = evaluate(capsys, tiny_artifact_dir, gmb_csv, "--label-map", "{geo: LOC}")
    assert code == ExitCode.ERROR
    assert "label_map is not valid JSON" in err

    for bad in ("{geo: LOC}", '["geo", "LOC"]', '{"geo": 1}'):
        with pytest.raises(ValueError, match="label_map") as refused:
            Hyperparameters.from_strings({"label_map": bad})
        assert 'such as {"geo": "LOC", "per": "PER"}' in str(refused.value)
