"""Training: label alignment, metrics, and the SageMaker container contract end to end."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from seqeval.metrics import classification_report, f1_score

from nerkit import artifact
from nerkit.decoding import TransitionPrior
from nerkit.exit_codes import ExitCode
from nerkit.labels import Span, bio_labels, spans_to_tags, tags_to_spans
from nerkit.metrics import entity_confusion, entity_scores
from nerkit.training.base_model import write_fast_tokenizer
from nerkit.training.data import Example, load_examples
from nerkit.training.encode import (
    IGNORE_INDEX,
    EncodedSentence,
    document_windows,
    encode_examples,
    label_transitions,
    length_batches,
    load_tokenizer,
)
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.served import engine_scores, join_documents
from nerkit.training.train import predict_spans

REPO = Path(__file__).resolve().parents[1]
CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

-DOCSTART- -X- -X- O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
said VBD B-VP O
on IN B-PP O
Thursday NNP B-NP O
it PRP B-NP O
disagreed VBD B-VP O
with IN B-PP O
German JJ B-NP B-MISC
advice NN I-NP O
to TO B-PP O
consumers NNS B-NP O
to TO B-VP O
shun VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
until IN B-SBAR O
scientists NNS B-NP O
determine VBP B-VP O
whether IN B-SBAR O
mad JJ B-NP O
cow NN I-NP O
disease NN I-NP O
can MD B-VP O
be VB I-VP O
transmitted VBN I-VP O
to TO B-PP O
sheep NN B-NP O
. . O O

Germany NNP B-NP B-LOC
's POS B-NP O
representative NN I-NP O
to TO B-PP O
the DT B-NP O
European NNP I-NP B-ORG
Union NNP I-NP I-ORG
's POS B-NP O
veterinary JJ I-NP O
committee NN I-NP O
Werner NNP I-NP B-PER
Zwingmann NNP I-NP I-PER
said VBD B-VP O
on IN B-PP O
Wednesday NNP B-NP O
. . O O
"""


@pytest.fixture(scope="module")
def conll_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(CONLL)
    return path


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    write_fast_tokenizer(tiny_model_dir, path)
    return path


def test_every_subword_of_an_entity_is_labelled(conll_file: Path, tokenizer_json: Path) -> None:
    examples = load_examples(conll_file)
    tokenizer = load_tokenizer(tokenizer_json)
    labels = bio_labels(["LOC", "MISC", "ORG", "PER"])
    encoded = encode_examples(tokenizer, examples, {label: i for i, label in enumerate(labels)})
    for example, sentence in zip(examples, encoded, strict=True):
        tags = [labels[i] for i in sentence.label_ids]
        # Decoding the aligned subword labels gives back exactly the gold spans.
        assert tags_to_spans(tags, sentence.offsets) == sorted(example.spans)
        for tag, (start, end) in zip(tags, sentence.offsets, strict=True):
            inside = any(s.start <= start and end <= s.end for s in example.spans)
            assert (tag != "O") == inside, (example.text[start:end], tag)


def test_document_windows_pack_sentences_of_one_document(
    conll_file: Path, tokenizer_json: Path
) -> None:
    examples = load_examples(conll_file)
    tokenizer = load_tokenizer(tokenizer_json)
    labels = bio_labels(["LOC", "MISC", "ORG", "PER"])
    encoded = encode_examples(tokenizer, examples, {label: i for i, label in enumerate(labels)})
    total_tokens = sum(len(s.input_ids) for s in encoded)
    single = document_windows(examples, encoded, tokenizer, 512, context=False)
    packed = document_windows(examples, encoded, tokenizer, 512, context=True)
    assert len(single) == len(examples)
    assert len(packed) == 2  # one window per document: documents never share a window
    for windows in (single, packed):
        # Every token appears exactly once; only [CLS]/[SEP] are ignored by the loss.
        assert sum(len(w.input_ids) - 2 for w in windows) == total_tokens
        for w in windows:
            assert w.label_ids[0] == w.label_ids[-1] == IGNORE_INDEX
            assert IGNORE_INDEX not in w.label_ids[1:-1]
    small = document_windows(examples, encoded, tokenizer, 16, context=True)
    assert max(len(w.input_ids) for w in small) <= 16
    assert sum(len(w.input_ids) - 2 for w in small) == total_tokens
    batches = length_batches(small, 4, random.Random(0))
    assert sorted(id(w) for b in batches for w in b) == sorted(id(w) for w in small)


def test_label_transitions_count_the_training_labels() -> None:
    labels = ["O", "B-PER", "I-PER"]
    sentences = [
        EncodedSentence([1, 2, 3], [0, 0, 0], [1, 2, 0], [(0, 1), (2, 3), (4, 5)]),
        EncodedSentence([4, 5], [0, 0], [0, 0], [(0, 1), (2, 3)]),
        EncodedSentence([], [], [], []),
    ]
    got = label_transitions(sentences, len(labels), weight=0.5)
    assert got["weight"] == 0.5
    # Add-one smoothing: starts O 1+1, B-PER 1+1, I-PER 0+1 of 5.
    assert np.exp(got["start"]) == pytest.approx([0.4, 0.4, 0.2], abs=1e-3)
    # After B-PER: I-PER once (2 of 4 with smoothing); after O: O once (2 of 4).
    matrix = np.exp(np.array(got["matrix"]))
    assert matrix[1] == pytest.approx([0.25, 0.25, 0.5], abs=1e-3)
    assert matrix[0] == pytest.approx([0.5, 0.25, 0.25], abs=1e-3)
    assert matrix.sum(axis=1) == pytest.approx([1, 1, 1], abs=1e-3)


class _FixedScores(torch.nn.Module):
    """A token classifier whose first content token favours B-PER and every later one
    I-LOC, then I-PER, then B-LOC: argmax gives a mistyped fragment, viterbi one PER."""

    def __init__(self, labels: list[str]) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.first = torch.full((len(labels),), -5.0)
        self.first[labels.index("B-PER")] = 5.0
        self.rest = torch.full((len(labels),), -5.0)
        self.rest[labels.index("I-LOC")] = 5.0
        self.rest[labels.index("I-PER")] = 4.0
        self.rest[labels.index("B-LOC")] = 0.0

    def forward(self, input_ids: torch.Tensor, *_: torch.Tensor) -> torch.Tensor:
        logits = self.rest.repeat(*input_ids.shape, 1)
        logits[:, 1] = self.first  # position 0 is [CLS]
        return logits


def test_epoch_selection_scores_the_served_decoding(conll_file: Path, tokenizer_json: Path) -> None:
    example = next(ex for ex in load_examples(conll_file) if ex.text == "Peter Blackburn")
    tokenizer = load_tokenizer(tokenizer_json)
    labels = bio_labels(["LOC", "MISC", "ORG", "PER"])
    encoded = encode_examples(tokenizer, [example], {label: i for i, label in enumerate(labels)})

    def predict(prior: TransitionPrior | None = None) -> list[list[Span]]:
        return predict_spans(
            _FixedScores(labels),
            [example],
            encoded,
            tokenizer,
            labels,
            max_seq_length=32,
            batch_size=4,
            prior=prior,
        )

    assert predict() == [[Span(0, len(example.text), "PER")]]
    # A prior that forbids continuing an entity: "Blackburn" becomes its next best, B-LOC.
    no_inside = np.where([label.startswith("I-") for label in labels], -50.0, 0.0)
    prior = TransitionPrior(np.zeros(len(labels)), np.tile(no_inside, (len(labels), 1)))
    assert predict(prior) == [[Span(0, 5, "PER"), Span(6, len(example.text), "LOC")]]


def test_entity_scores_match_seqeval_conlleval_mode() -> None:
    rng = random.Random(7)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]
    gold_tags, pred_tags = [], []
    for _ in range(200):
        n = rng.randint(1, 12)
        gold_tags.append([rng.choice(tags) for _ in range(n)])
        pred_tags.append([t if rng.random() < 0.7 else rng.choice(tags) for t in gold_tags[-1]])
    offsets = [[(i * 2, i * 2 + 1) for i in range(len(seq))] for seq in gold_tags]
    gold = [tags_to_spans(t, o) for t, o in zip(gold_tags, offsets, strict=True)]
    pred = [tags_to_spans(t, o) for t, o in zip(pred_tags, offsets, strict=True)]
    ours = entity_scores(gold, pred)
    assert ours["f1"] == pytest.approx(f1_score(gold_tags, pred_tags))
    report = classification_report(gold_tags, pred_tags, output_dict=True)
    for entity_type, scores in ours["per_type"].items():
        if scores["support"]:
            assert scores["f1"] == pytest.approx(report[entity_type]["f1-score"])


def test_confusion_counts_types_and_misses() -> None:
    gold = [[Span(0, 5, "PER"), Span(10, 15, "LOC")]]
    pred = [[Span(0, 5, "ORG"), Span(20, 25, "LOC")]]
    assert entity_confusion(gold, pred) == {
        "(none)": {"LOC": 1},
        "LOC": {"(none)": 1},
        "PER": {"ORG": 1},
    }


def test_join_documents_keeps_offsets(conll_file: Path) -> None:
    examples = load_examples(conll_file)
    documents = join_documents(examples)
    assert len(documents) == 2
    by_doc = [[ex for ex in examples if ex.document == d.document] for d in documents]
    for document, sentences in zip(documents, by_doc, strict=True):
        assert [document.text[s.start : s.end] for s in document.spans] == [
            ex.text[s.start : s.end] for ex in sentences for s in ex.spans
        ]


def test_hyperparameters_arrive_as_strings() -> None:
    hp = Hyperparameters.from_strings({"epochs": "2", "casing": "false", "learning_rate": "3e-5"})
    assert (hp.epochs, hp.casing, hp.learning_rate) == (2.0, False, 3e-5)
    with pytest.raises(ValueError, match="unknown hyperparameters: nope"):
        Hyperparameters.from_strings({"nope": "1"})
    with pytest.raises(ValueError, match="casing='maybe' is not a valid bool"):
        Hyperparameters.from_strings({"casing": "maybe"})
    with pytest.raises(ValueError, match="max_seq_length must be"):
        Hyperparameters.from_strings({"max_seq_length": "4"})


def _sagemaker_dir(root: Path, data: Path, hyperparameters: dict[str, str]) -> None:
    for channel in ("train", "validation", "test"):
        (root / "input" / "data" / channel).mkdir(parents=True)
        (root / "input" / "data" / channel / "data.txt").write_text(data.read_text())
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))


def _run_train(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NERKIT_ML_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "training" / "train")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_training_container_contract_end_to_end(
    tmp_path: Path, conll_file: Path, tiny_model_dir: Path
) -> None:
    """The training image's entrypoint, as a process, against an /opt/ml layout."""
    hyperparameters = {
        "base_model": str(tiny_model_dir),
        "epochs": "2",
        "batch_size": "2",
        "max_seq_length": "32",
        "learning_rate": "1e-3",
        "name": "tiny-e2e",
    }
    _sagemaker_dir(tmp_path, conll_file, hyperparameters)
    run = _run_train(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (tmp_path / "output" / "failure").exists()

    manifest = artifact.verify(tmp_path / "model")
    assert manifest["name"] == "tiny-e2e"
    assert manifest["labels"] == bio_labels(["LOC", "MISC", "ORG", "PER"])
    assert manifest["casing"] == "token_shape_v1"
    assert manifest["quantization"] in ("int8", "int8-no-embeddings", "none")
    assert set(manifest["metrics"]) >= {"validation", "validation_fp32", "test", "history"}
    assert len(manifest["metrics"]["history"]) == 2
    assert manifest["hyperparameters"]["epochs"] == "2.0"
    transitions = manifest["transitions"]
    assert transitions["weight"] == 0.5 and len(transitions["start"]) == 9
    assert [len(row) for row in transitions["matrix"]] == [9] * 9
    assert "MODEL_CARD.md" in manifest["files"]
    # The served graph is stored optimized, so serving starts its session without optimizing.
    assert manifest["onnxruntime_optimized"]["level"] == "extended"
    assert (tmp_path / "checkpoints" / "checkpoint.pt").is_file()
    for extra in ("metrics.json", "training_curve.png", "confusion_matrix.png"):
        assert (tmp_path / "output" / "data" / extra).stat().st_size > 0

    # What training wrote is what serving loads.
    from nerkit.engine import NerEngine

    engine = NerEngine.load(tmp_path / "model")
    text = "Peter Blackburn flew to BRUSSELS."
    for entity in engine.predict([text])[0]:
        assert text[entity.start : entity.end] == entity.word

    # Rerun with the checkpoint in place (a spot restart): resumes, does not retrain.
    rerun = _run_train(tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resumed from" in rerun.stderr
    assert len(artifact.verify(tmp_path / "model")["metrics"]["history"]) == 2

    # More epochs over the same checkpoints extend the finished run by the difference.
    config = tmp_path / "input" / "config" / "hyperparameters.json"
    config.write_text(json.dumps({**hyperparameters, "epochs": "3"}))
    extended = _run_train(tmp_path)
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "at epoch 2" in extended.stderr
    history = artifact.verify(tmp_path / "model")["metrics"]["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3]


def test_training_failure_writes_the_reason(tmp_path: Path, conll_file: Path) -> None:
    _sagemaker_dir(tmp_path, conll_file, {"epochs": "zero"})
    run = _run_train(tmp_path)
    assert run.returncode != 0
    failure = (tmp_path / "output" / "failure").read_text()
    assert "epochs='zero' is not a valid float" in failure


def test_training_failure_on_empty_channel(tmp_path: Path, conll_file: Path) -> None:
    _sagemaker_dir(tmp_path, conll_file, {})
    (tmp_path / "input" / "data" / "train" / "data.txt").unlink()
    run = _run_train(tmp_path)
    assert run.returncode != 0
    assert "train" in (tmp_path / "output" / "failure").read_text()


def test_examples_are_the_ingest_type() -> None:
    # The training loop relies on Example carrying char spans into the sentence text.
    example = Example("Paris is big", (Span(0, 5, "LOC"),), "d", "x:1")
    assert spans_to_tags(example.spans, [(0, 5), (6, 8), (9, 12)]) == ["B-LOC", "O", "O"]


@pytest.mark.slow
def test_cli_trains_from_s3_and_publishes_through_the_gate(
    moto_s3: Any, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labelled files in S3 -> one command -> a gated, live model in the store."""
    from nerkit.store import ModelStore
    from nerkit.training import cli

    moto_s3.create_bucket(Bucket="data")
    for channel in ("train", "validation"):
        moto_s3.put_object(Bucket="data", Key=f"datasets/{channel}/part-1.txt", Body=CONLL)
    hp = [
        "--hp",
        f"base_model={tiny_model_dir}",
        "--hp",
        "epochs=1",
        "--hp",
        "batch_size=2",
        "--hp",
        "max_seq_length=32",
        "--hp",
        "name=from-s3",
    ]
    common = [
        "train",
        "--train",
        "s3://data/datasets/train/",
        "--validation",
        "s3://data/datasets/validation/",
        *hp,
    ]

    # A gate the tiny model cannot pass: the version is stored, LIVE does not move.
    code = cli.main(
        [
            *common,
            "--out",
            str(tmp_path / "a"),
            "--work",
            str(tmp_path / "wa"),
            "--publish",
            "s3://data/models/ner",
            "--min-f1",
            "0.99",
        ]
    )
    assert code == ExitCode.GATE_REFUSED
    store = ModelStore("data", "models/ner")
    assert store.live() is None and len(store.versions()) == 1
    capsys.readouterr()

    code = cli.main(
        [
            *common,
            "--out",
            str(tmp_path / "b"),
            "--work",
            str(tmp_path / "wb"),
            "--publish",
            "s3://data/models/ner",
            "--min-f1",
            "0",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["gate"]["passed"] is True
    assert store.live().version == report["live"]["version"]
    assert store.manifest(store.live().version)["name"] == "from-s3"
    assert (tmp_path / "b" / "model.tar.gz").is_file()
    assert (tmp_path / "b" / "MODEL_CARD.md").is_file()


def test_cli_train_reports_missing_s3_data(
    moto_s3: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nerkit.training import cli

    moto_s3.create_bucket(Bucket="data")
    code = cli.main(
        [
            "train",
            "--train",
            "s3://data/nothing/",
            "--validation",
            "s3://data/x/",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == ExitCode.ERROR
    assert "no objects under s3://data/nothing/" in capsys.readouterr().err


def test_cli_evaluates_an_artifact_with_each_decoding(
    tiny_artifact_tar: Path, conll_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nerkit.engine import NerEngine
    from nerkit.training import cli

    artifact.extract(tiny_artifact_tar, conll_file.parent / "tiny")
    engine = NerEngine.load(conll_file.parent / "tiny")
    examples = load_examples(conll_file)
    for decoding in ("viterbi", "argmax"):
        args = ["evaluate", "--model", str(tiny_artifact_tar), "--data", str(conll_file)]
        assert cli.main([*args, "--decoding", decoding, "--aggregation", "first"]) == 0
        report = json.loads(capsys.readouterr().out)
        want = engine_scores(engine, examples, aggregation="first", decoding=decoding)
        assert report["support"] == want["support"] > 0
        assert report["f1"] == pytest.approx(want["f1"])
    with pytest.raises(SystemExit) as refused:
        cli.main([*args, "--decoding", "beam"])
    assert refused.value.code == 2
    assert "invalid choice: 'beam'" in capsys.readouterr().err


def test_cli_evaluates_the_text_as_written_lowercased_and_uppercased(
    tiny_artifact_tar: Path, conll_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nerkit.engine import NerEngine
    from nerkit.training import cli
    from nerkit.training.recasing import recase_all

    artifact.extract(tiny_artifact_tar, conll_file.parent / "tiny-casing")
    engine = NerEngine.load(conll_file.parent / "tiny-casing")
    examples = load_examples(conll_file)
    args = ["evaluate", "--model", str(tiny_artifact_tar), "--data", str(conll_file)]
    assert cli.main([*args, "--casing", "as-written,lower,upper"]) == 0
    report = json.loads(capsys.readouterr().out)["casing"]
    assert list(report) == ["as-written", "lower", "upper"]
    for casing, scores in report.items():
        want = engine_scores(engine, recase_all(examples, casing))
        assert scores["support"] == want["support"] > 0
        assert scores["f1"] == pytest.approx(want["f1"])
    # The tiny model's predictions do change with the casing of the text.
    predictions = {
        casing: engine.predict([ex.text for ex in recase_all(examples, casing)])
        for casing in ("as-written", "upper")
    }
    assert predictions["as-written"] != predictions["upper"]
    with pytest.raises(SystemExit) as refused:
        cli.main([*args, "--casing", "lower,title"])
    assert refused.value.code == 2
    assert "comma-separated list of as-written, lower, upper" in capsys.readouterr().err


def test_a_reference_must_hold_a_held_out_validation_f1(
    tiny_artifact_tar: Path, tmp_path: Path
) -> None:
    from nerkit.errors import ArtifactError
    from nerkit.training import cli

    model_dir = tmp_path / "reference"
    manifest = artifact.extract(tiny_artifact_tar, model_dir)
    with pytest.raises(ArtifactError, match=r"has no metrics\.validation\.f1"):
        cli._reference_hyperparameters(str(model_dir))

    scored = {**manifest, "metrics": {"validation": {"f1": 0.91}}}
    artifact.write_manifest(model_dir, scored)
    assert cli._reference_hyperparameters(str(model_dir)) == {
        "reference_validation_f1": "0.91",
        "reference_model": f"{manifest['version']}, trained on train",
    }
    # A model that saw validation cannot vouch for a score there.
    artifact.write_manifest(
        model_dir, {**scored, "training": {"channels": ["train", "validation"]}}
    )
    with pytest.raises(ValueError, match="was trained on validation"):
        cli._reference_hyperparameters(str(model_dir))


@pytest.mark.slow
def test_release_on_train_and_validation_is_gated_on_the_reference_run(
    moto_s3: Any,
    tmp_path: Path,
    conll_file: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Train-only run -> train + validation run gated on its validation F1, through the CLI."""
    from nerkit.store import ModelStore
    from nerkit.training import cli
    from nerkit.training.card import CARD

    hp: list[str] = []
    for pair in (
        f"base_model={tiny_model_dir}",
        "epochs=2",
        "batch_size=2",
        "max_seq_length=32",
        "lowercase_share=0.3",
        "uppercase_share=0.2",
    ):
        hp += ["--hp", pair]
    data = ["--train", str(conll_file), "--validation", str(conll_file), "--test", str(conll_file)]
    # The reference is scored on a part of the validation data: its F1 differs from any
    # score of the released model on the whole of it.
    part = tmp_path / "part.txt"
    part.write_text(CONLL[: CONLL.index("-DOCSTART-", 10)])
    reference_data = [*data[:2], "--validation", str(part), *data[4:]]
    assert cli.main(["train", *reference_data, *hp, "--out", str(tmp_path / "ref")]) == 0
    capsys.readouterr()
    reference = artifact.extract(tmp_path / "ref" / "model.tar.gz", tmp_path / "ref-model")
    assert reference["training"]["channels"] == ["train"]
    assert reference["hyperparameters"]["lowercase_share"] == "0.3"
    assert {"test_lower", "test_upper", "validation_lower", "validation_upper"} <= set(
        reference["metrics"]
    )

    # Without a reference, training on validation is refused before any training.
    refused = ["train", *data, *hp, "--hp", "train_channels=train,validation"]
    assert cli.main([*refused, "--out", str(tmp_path / "x")]) == ExitCode.ERROR
    assert "needs reference_validation_f1" in capsys.readouterr().err

    moto_s3.create_bucket(Bucket="models")
    release = [*refused, "--reference", str(tmp_path / "ref" / "model.tar.gz")]
    out = ["--out", str(tmp_path / "release"), "--publish", "s3://models/ner", "--min-f1", "0"]
    assert cli.main([*release, *out]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    gate = report["gate"]
    manifest = ModelStore("models", "ner").manifest(report["live"]["version"])
    ref_f1 = reference["metrics"]["validation"]["f1"]
    # The gate read the reference run's held-out F1, not a score on data the model saw.
    assert gate["f1"] == ref_f1
    assert manifest["metrics"]["seen_validation"]["f1"] != ref_f1
    assert manifest["metrics"]["validation"] == {
        "f1": ref_f1,
        "reference_model": f"{reference['version']}, trained on train",
    }
    # Its own validation scores are kept, named as seen in training.
    assert {"seen_validation", "seen_validation_lower", "test", "test_upper"} <= set(
        manifest["metrics"]
    )
    assert manifest["data"]["validation"]["sentences"] == 5
    assert manifest["training"]["channels"] == ["train", "validation"]
    assert manifest["training"]["epoch_selection"].startswith("none: a fixed schedule")
    assert manifest["metrics"]["best_epoch"] == 2  # the last, not the best
    card = (tmp_path / "release" / CARD).read_text()
    assert "Trained on: train, validation" in card
    assert f"is the held-out score of the reference run: {reference['version']}" in card
    assert "| lowercased |" in card and "| uppercased |" in card


def test_train_default_runs_the_train_only_stages_then_the_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nerkit.training import cli

    runs: list[tuple[Path, dict[str, str], Path]] = []

    def record(work: Path, channels: Any, hyperparameters: dict[str, str], out: Path) -> Path:
        runs.append((work, hyperparameters, out))
        return out / "model.tar.gz"

    references: list[str] = []

    def reference(model: str) -> dict[str, str]:
        references.append(model)
        return {"reference_validation_f1": "0.93", "reference_model": "v1, trained on train"}

    monkeypatch.setattr(cli, "run_local_job", record)
    monkeypatch.setattr(cli, "_reference_hyperparameters", reference)
    work, release_work = tmp_path / "w", tmp_path / "r"
    base = ["train-default", "--data", str(tmp_path), "--work", str(work)]
    assert cli.main([*base, "--release-work", str(release_work), "--hp", "seed=1"]) == 0
    stages = list(cli.DEFAULT_EPOCH_STAGES)
    assert [hp["epochs"] for _, hp, _ in runs] == stages + stages
    # The train-only stages resume each other in one work directory, and so do the release's.
    assert [w for w, _, _ in runs] == [work] * len(stages) + [release_work] * len(stages)
    assert all(hp["seed"] == "1" and hp["name"] == "conll03-en" for _, hp, _ in runs)
    assert all(
        hp["lowercase_share"] == cli.DEFAULT_HYPERPARAMETERS["lowercase_share"] for _, hp, _ in runs
    )
    train_only, release = runs[: len(stages)], runs[len(stages) :]
    assert all("train_channels" not in hp for _, hp, _ in train_only)
    # The release trains on train + validation, gated on the last train-only artifact.
    assert references == [str(work / "artifact" / "model.tar.gz")]
    for _, hp, out in release:
        assert hp["train_channels"] == "train,validation"
        assert hp["reference_validation_f1"] == "0.93"
        assert out == cli.DEFAULT_MODEL_DIR
    assert {out for _, _, out in train_only} == {work / "artifact"}

    runs.clear()
    assert cli.main([*base, "--hp", "epochs=2", "--no-release"]) == 0
    assert [(hp["epochs"], out) for _, hp, out in runs] == [("2", cli.DEFAULT_MODEL_DIR)]
    capsys.readouterr()
