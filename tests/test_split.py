"""Training from one input: the seeded, document-aware split and the sentence limit, from the
job's hyperparameters to the manifest, and ``nerkit-train train --split`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerkit import artifact
from nerkit.labels import Span
from nerkit.split_options import split_hyperparameters
from nerkit.training.data import DataError, Example
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.job import JobPaths, load_data
from nerkit.training.split import split_examples

# Documents of different lengths, each sentence naming its document.
DOCUMENTS = {f"d{n}": 1 + n % 4 for n in range(40)}


def examples() -> list[Example]:
    return [
        Example(f"Paris {doc} {i}", (Span(0, 5, "LOC"),), doc, f"x:{doc}:{i}")
        for doc, count in DOCUMENTS.items()
        for i in range(count)
    ]


def test_split_keeps_documents_whole_and_is_seeded() -> None:
    data = examples()
    split = split_examples(data, validation=0.2, test=0.1, seed=7)

    parts = {"train": split.train, "validation": split.validation, "test": split.test}
    documents = {name: {ex.document for ex in part} for name, part in parts.items()}
    assert not documents["train"] & documents["validation"]
    assert not documents["train"] & documents["test"]
    assert not documents["validation"] & documents["test"]
    assert sorted(ex.source for part in parts.values() for ex in part) == sorted(
        ex.source for ex in data
    )
    # Each part keeps the input order, so a document's sentences stay consecutive.
    for part in parts.values():
        assert part == sorted(part, key=data.index)
    assert len(split.validation) >= 0.2 * len(data) and len(split.test) >= 0.1 * len(data)
    assert split.record == {
        "from": "train",
        "seed": 7,
        "unit": "document",
        "fractions": {"validation": 0.2, "test": 0.1},
        "sentences": {name: len(part) for name, part in parts.items()},
    }
    assert split_examples(data, validation=0.2, test=0.1, seed=7) == split
    other = split_examples(data, validation=0.2, test=0.1, seed=8)
    assert {ex.document for ex in other.validation} != documents["validation"]


def test_one_document_is_split_by_sentence() -> None:
    one_document = [Example(f"s {i}", (), "ner.csv", f"ner.csv:{i}") for i in range(20)]

    split = split_examples(one_document, validation=0.25, test=0.0, seed=1)

    assert split.record["unit"] == "sentence"
    assert len(split.validation) == 5 and len(split.train) == 15 and split.test == []


def test_too_little_data_to_split_is_an_error() -> None:
    with pytest.raises(DataError, match="too few to split"):
        split_examples(examples()[:1], validation=0.1, test=0.0, seed=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1", {"validation_split": "0.1"}),
        ("0.1, 0.05", {"validation_split": "0.1", "test_split": "0.05"}),
    ],
)
def test_split_option_becomes_hyperparameters(text: str, expected: dict[str, str]) -> None:
    assert split_hyperparameters(text) == expected
    assert Hyperparameters.from_strings(expected).validation_split == 0.1


@pytest.mark.parametrize("text", ["", "ten", "0", "1.5", "0.1,0.1,0.1", "0.5,0.5"])
def test_bad_split_options_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--split"):
        split_hyperparameters(text)


def _job(root: Path, channels: dict[str, list[Example]], hp: dict[str, str]) -> JobPaths:
    paths = JobPaths(root)
    for name, part in channels.items():
        paths.channel(name).mkdir(parents=True)
        lines = [
            json.dumps(
                {
                    "text": ex.text,
                    "entities": [[s.start, s.end, s.label] for s in ex.spans],
                    "document": ex.document,
                }
            )
            for ex in part
        ]
        (paths.channel(name) / "data.jsonl").write_text("\n".join(lines) + "\n")
    return paths


def test_job_splits_train_when_asked_and_limits_sentences(tmp_path: Path) -> None:
    paths = _job(tmp_path, {"train": examples()}, {})
    hp = Hyperparameters.from_strings(
        {"validation_split": "0.2", "test_split": "0.2", "max_sentences": "60", "seed": "3"}
    )

    data = load_data(paths, hp)

    assert len(data.train) + len(data.validation) + len(data.test) == 60
    assert data.split is not None and data.split["unit"] == "document"
    assert data.split["sentences"] == {
        "train": len(data.train),
        "validation": len(data.validation),
        "test": len(data.test),
    }


def test_job_without_validation_data_says_how_to_get_some(tmp_path: Path) -> None:
    paths = _job(tmp_path, {"train": examples()}, {})
    with pytest.raises(ValueError, match=r"give a validation channel .* validation_split"):
        load_data(paths, Hyperparameters.from_strings({}))


def test_job_refuses_a_validation_channel_and_a_split(tmp_path: Path) -> None:
    paths = _job(tmp_path, {"train": examples(), "validation": examples()[:5]}, {})
    with pytest.raises(ValueError, match="not both"):
        load_data(paths, Hyperparameters.from_strings({"validation_split": "0.1"}))


@pytest.mark.slow
def test_cli_trains_from_one_file_with_split(tmp_path: Path, tiny_model_dir: Path) -> None:
    from nerkit.training import cli

    data = _job(tmp_path / "in", {"train": examples()}, {}).channel("train") / "data.jsonl"
    code = cli.main(
        [
            "train",
            "--train", str(data),
            "--split", "0.2,0.2",
            "--max-sentences", "40",
            "--out", str(tmp_path / "out"),
            "--work", str(tmp_path / "work"),
            "--hp", f"base_model={tiny_model_dir}",
            "--hp", "epochs=1",
            "--hp", "max_seq_length=32",
            "--hp", "quantize=none",
        ]
    )  # fmt: skip

    assert code == 0
    manifest = artifact.read_manifest(tmp_path / "work" / "model")
    split = manifest["data"]["split"]
    assert split["unit"] == "document" and split["fractions"] == {"validation": 0.2, "test": 0.2}
    assert sum(split["sentences"].values()) == 40
    assert manifest["data"]["test"]["sentences"] == split["sentences"]["test"]
    assert "test" in manifest["metrics"]
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "held out of the train input (validation 0.2, test 0.2), by document, seed 13" in card
