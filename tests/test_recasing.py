"""Re-cased text (evaluation and casing augmentation): offsets, labels and features hold."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from nerkit.features import LOWER as LOWER_SHAPE
from nerkit.features import TITLE
from nerkit.features import UPPER as UPPER_SHAPE
from nerkit.labels import Span
from nerkit.training.base_model import write_fast_tokenizer
from nerkit.training.data import Example
from nerkit.training.encode import encode_examples, load_tokenizer
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.recasing import (
    AS_WRITTEN,
    LOWER,
    UPPER,
    augment_casing,
    parse_casings,
    recase,
    recase_example,
)
from nerkit.training.train import _epoch_sentences

LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
LABEL_TO_ID = {label: i for i, label in enumerate(LABELS)}


def test_recase_lowers_and_uppers_ascii() -> None:
    text = "Peter Blackburn flew to BRUSSELS on 22 August."
    assert recase(text, LOWER) == text.lower()
    assert recase(text, UPPER) == text.upper()
    assert recase(text, AS_WRITTEN) is text


@pytest.mark.parametrize(
    ("text", "casing"),
    [
        ("Straße in İstanbul", UPPER),  # "ß".upper() == "SS"
        ("İSTANBUL and ŉ", LOWER),  # "İ".lower() is two code points; "ŉ".upper() too
        ("ﬁnance Ǆ ΐ", UPPER),
    ],
)
def test_recase_keeps_every_character_in_place(text: str, casing: str) -> None:
    recased = recase(text, casing)
    assert len(recased) == len(text)
    for original, changed in zip(text, recased, strict=True):
        mapped = original.lower() if casing == LOWER else original.upper()
        # A length-changing mapping keeps the character; every other one is applied.
        assert changed == (mapped if len(mapped) == 1 else original)


def test_recased_example_spans_cover_the_same_words() -> None:
    text = "Grüße aus MÜNCHEN von İlker"
    example = Example(text, (Span(10, 17, "LOC"), Span(22, 27, "PER")), "d", "x:1")
    # "İ" stays: its lowercase is two code points. "ß" stays in upper case ("SS").
    want = {LOWER: ("münchen", "İlker"), UPPER: ("MÜNCHEN", "İLKER")}
    for casing, surfaces in want.items():
        recased = recase_example(example, casing)
        assert recased.spans == example.spans
        assert tuple(recased.text[s.start : s.end] for s in recased.spans) == surfaces
    assert recase_example(example, UPPER).text == "GRÜßE AUS MÜNCHEN VON İLKER"


def test_unknown_casing_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown casing 'title'"):
        recase("x", "title")
    assert parse_casings("as-written, lower,upper,lower") == [AS_WRITTEN, LOWER, UPPER]
    with pytest.raises(ValueError, match="comma-separated list"):
        parse_casings("lower,title")


def _examples(n: int) -> list[Example]:
    return [Example(f"Sentence {i} from Paris", (Span(14, 19, "LOC"),), "d", "") for i in range(n)]


def test_augmentation_presents_the_shares_it_is_given() -> None:
    examples = _examples(4000)
    augmented = augment_casing(examples, lowercase_share=0.3, uppercase_share=0.2, seed="1")
    counts = Counter(
        LOWER if ex.text.islower() else UPPER if ex.text.isupper() else AS_WRITTEN
        for ex in augmented
    )
    assert counts[LOWER] / 4000 == pytest.approx(0.3, abs=0.03)
    assert counts[UPPER] / 4000 == pytest.approx(0.2, abs=0.03)
    assert all(a.spans == e.spans for a, e in zip(augmented, examples, strict=True))
    # Seeded: the same seed draws the same sentences, another seed others.
    again = augment_casing(examples, lowercase_share=0.3, uppercase_share=0.2, seed="1")
    other = augment_casing(examples, lowercase_share=0.3, uppercase_share=0.2, seed="2")
    assert again == augmented and other != augmented
    none = augment_casing(examples, lowercase_share=0, uppercase_share=0, seed="1")
    assert none == examples


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> object:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    write_fast_tokenizer(tiny_model_dir, path)
    return load_tokenizer(path)


def test_epoch_sentences_take_casing_features_from_the_recased_text(tokenizer: object) -> None:
    examples = [Example("Peter flew to Paris", (Span(0, 5, "PER"), Span(14, 19, "LOC")), "d", "")]
    original = encode_examples(tokenizer, examples, LABEL_TO_ID)
    assert original[0].casing_ids == [TITLE, LOWER_SHAPE, LOWER_SHAPE, TITLE]

    for shares, shape in (
        ({"lowercase_share": 1.0}, LOWER_SHAPE),
        ({"uppercase_share": 1.0}, UPPER_SHAPE),
    ):
        hp = Hyperparameters.from_strings({k: str(v) for k, v in shares.items()})
        [sentence] = _epoch_sentences(hp, tokenizer, examples, original, LABEL_TO_ID, 1)
        assert sentence.casing_ids == [shape] * 4
        # The uncased vocabulary gives the same ids; labels and offsets do not move.
        assert sentence.input_ids == original[0].input_ids
        assert sentence.label_ids == original[0].label_ids
        assert sentence.offsets == original[0].offsets

    # Without augmentation the epoch trains on the very sentences encoded once.
    assert (
        _epoch_sentences(Hyperparameters(), tokenizer, examples, original, LABEL_TO_ID, 1)
        is original
    )


def test_epoch_sentences_are_drawn_again_every_epoch(tokenizer: object) -> None:
    examples = _examples(200)
    original = encode_examples(tokenizer, examples, LABEL_TO_ID)
    hp = Hyperparameters(lowercase_share=0.5)
    epochs = [
        [s.casing_ids for s in _epoch_sentences(hp, tokenizer, examples, original, LABEL_TO_ID, e)]
        for e in (1, 2, 1)
    ]
    assert epochs[0] != epochs[1]  # other sentences lowercased in another epoch
    assert epochs[0] == epochs[2]  # a resumed run draws what the first run drew


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lowercase_share": "0.7", "uppercase_share": "0.4"}, "add up to at most 1"),
        ({"lowercase_share": "-0.1"}, "must be >= 0"),
        ({"train_channels": "train,test"}, "train_channels must be train plus"),
        ({"train_channels": "validation"}, "train_channels must be train plus"),
        ({"train_channels": "train,validation"}, "needs reference_validation_f1"),
        (
            {"train_channels": "train,validation", "reference_validation_f1": "0.93"},
            "needs reference_validation_f1 and reference_model",
        ),
    ],
)
def test_bad_casing_and_channel_hyperparameters_are_refused(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Hyperparameters.from_strings(values)


def test_training_on_validation_with_a_reference_is_accepted() -> None:
    hp = Hyperparameters.from_strings(
        {
            "train_channels": "train, validation",
            "reference_validation_f1": "0.938",
            "reference_model": "v1, trained on train",
        }
    )
    assert hp.trains_on_validation and hp.train_channel_list == ["train", "validation"]
    assert not Hyperparameters().trains_on_validation
