"""nerkit.decoding on hand-made scores: each aggregation strategy, grouping, offsets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nerkit.decoding import (
    Entity,
    TransitionPrior,
    best_path,
    bio_viterbi,
    decode,
    snap_span,
    softmax,
    subword_flags,
)

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def one_hot(label: str, probability: float, labels: list[str] = LABELS) -> list[float]:
    """A score row giving ``label`` ``probability`` and sharing the rest equally."""
    rest = (1.0 - probability) / (len(labels) - 1)
    return [probability if name == label else rest for name in labels]


def offsets_of(text: str, pieces: list[str]) -> np.ndarray:
    """Character offsets of consecutive ``pieces`` of ``text`` (found left to right)."""
    offsets, cursor = [], 0
    for piece in pieces:
        start = text.index(piece, cursor)
        offsets.append((start, start + len(piece)))
        cursor = start + len(piece)
    return np.array(offsets, dtype=np.int64)


def run(
    text: str,
    pieces: list[str],
    rows: list[list[float]],
    aggregation: str,
    *,
    subword: list[bool] | None = None,
    labels: list[str] = LABELS,
    decoding: str = "argmax",
) -> list[tuple[str, str, float]]:
    """Decoded entities; ``argmax`` unless asked, as these tests pin the pipeline's rules."""
    flags = np.array(subword if subword is not None else [False] * len(pieces))
    scores = np.array(rows, dtype=np.float32)
    offsets = offsets_of(text, pieces)
    entities = decode(text, scores, offsets, flags, labels, aggregation, decoding)
    for entity in entities:
        assert entity.word == text[entity.start : entity.end]
    return [(e.entity_group, e.word, round(e.score, 4)) for e in entities]


def test_simple_groups_b_then_i_of_the_same_type() -> None:
    text = "John Smith lives in New York"
    pieces = ["John", "Smith", "lives", "in", "New", "York"]
    rows = [
        one_hot("B-PER", 0.9),
        one_hot("I-PER", 0.7),
        one_hot("O", 0.99),
        one_hot("O", 0.98),
        one_hot("B-LOC", 0.6),
        one_hot("I-LOC", 0.8),
    ]
    assert run(text, pieces, rows, "simple") == [
        ("PER", "John Smith", 0.8),
        ("LOC", "New York", 0.7),
    ]


def test_simple_splits_on_b_on_type_change_and_on_o() -> None:
    text = "a b c d e f"
    pieces = text.split()
    rows = [
        one_hot("B-PER", 0.9),
        one_hot("B-PER", 0.8),  # B after PER: a new entity
        one_hot("I-LOC", 0.7),  # I of another type: a new entity named by its type
        one_hot("O", 0.9),
        one_hot("I-PER", 0.6),  # I after O starts an entity
        one_hot("I-PER", 0.5),
    ]
    assert run(text, pieces, rows, "simple") == [
        ("PER", "a", 0.9),
        ("PER", "b", 0.8),
        ("LOC", "c", 0.7),
        ("PER", "e f", 0.55),
    ]


# "Microsoft" as micro|##soft: the tokens disagree, each strategy resolves it its own way.
MICRO = [0.05, 0.30, 0.05, 0.55, 0.05]  # B-LOC 0.55
SOFT = [0.05, 0.80, 0.05, 0.05, 0.05]  # B-PER 0.80


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("simple", [("LOC", "Micro", 0.55), ("PER", "soft", 0.8)]),
        ("first", [("LOC", "Microsoft", 0.55)]),
        ("max", [("PER", "Microsoft", 0.8)]),
        # mean of the rows: B-PER 0.55 beats B-LOC 0.30
        ("average", [("PER", "Microsoft", 0.55)]),
    ],
)
def test_word_strategies_make_subwords_agree(
    aggregation: str, expected: list[tuple[str, str, float]]
) -> None:
    text = "Microsoft rocks"
    pieces = ["Micro", "soft", "rocks"]
    rows = [MICRO, SOFT, one_hot("O", 0.9)]
    got = run(text, pieces, rows, aggregation, subword=[False, True, False])
    assert got == expected


def test_max_takes_the_earliest_token_on_ties() -> None:
    text = "Newcastle"
    rows = [one_hot("B-LOC", 0.7), one_hot("B-PER", 0.7)]
    got = run(text, ["New", "castle"], rows, "max", subword=[False, True])
    assert got == [("LOC", "Newcastle", 0.7)]


def test_words_merge_into_entities_after_aggregation() -> None:
    text = "Newcastle United won"
    pieces = ["New", "castle", "United", "won"]
    rows = [one_hot("B-LOC", 0.9), one_hot("O", 0.6), one_hot("I-LOC", 0.8), one_hot("O", 0.9)]
    flags = [False, True, False, False]
    assert run(text, pieces, rows, "first", subword=flags) == [("LOC", "Newcastle United", 0.85)]
    # simple sees the O subword and cuts the entity in two
    assert run(text, pieces, rows, "simple", subword=flags) == [
        ("LOC", "New", 0.9),
        ("LOC", "United", 0.8),
    ]


def test_a_first_token_flagged_subword_still_starts_a_word() -> None:
    text = "ab cd"
    rows = [one_hot("B-PER", 0.9), one_hot("O", 0.9)]
    assert run(text, ["ab", "cd"], rows, "first", subword=[True, False]) == [("PER", "ab", 0.9)]


def test_bare_labels_continue_like_i_labels() -> None:
    labels = ["O", "PER", "LOC"]
    text = "Ada Lovelace of London"
    rows = [[0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8]]
    got = run(text, text.split(), rows, "simple", labels=labels)
    assert got == [("PER", "Ada Lovelace", 0.7), ("LOC", "London", 0.8)]


def test_average_ignores_nan_like_the_pipeline() -> None:
    text = "Oslo"
    rows = [one_hot("B-LOC", 0.8), [np.nan] * len(LABELS)]
    got = run(text, ["Os", "lo"], rows, "average", subword=[False, True])
    assert got == [("LOC", "Oslo", 0.8)]


def test_no_tokens_no_entities() -> None:
    empty = np.zeros((0, len(LABELS)), dtype=np.float32)
    offsets = np.zeros((0, 2), dtype=np.int64)
    assert decode("", empty, offsets, np.zeros(0, dtype=bool), LABELS, "average") == []


def test_unknown_aggregation_is_refused() -> None:
    with pytest.raises(ValueError, match="aggregation"):
        decode("a", np.ones((1, 5)), np.array([[0, 1]]), np.zeros(1, bool), LABELS, "none")


def test_unknown_decoding_is_refused() -> None:
    with pytest.raises(ValueError, match="decoding"):
        decode("a", np.ones((1, 5)), np.array([[0, 1]]), np.zeros(1, bool), LABELS, "first", "x")


def test_viterbi_joins_what_argmax_fragments() -> None:
    """``Smith`` prefers I-LOC alone, but I-LOC cannot follow B-PER: one PER, not two entities."""
    text = "John Smith lives in Paris"
    pieces = ["John", "Smith", "lives", "in", "Paris"]
    rows = [
        one_hot("B-PER", 0.9),
        [0.05, 0.05, 0.4, 0.05, 0.45],  # I-LOC 0.45 > I-PER 0.4
        one_hot("O", 0.99),
        one_hot("O", 0.99),
        one_hot("B-LOC", 0.9),
    ]
    assert run(text, pieces, rows, "simple") == [
        ("PER", "John", 0.9),
        ("LOC", "Smith", 0.45),
        ("LOC", "Paris", 0.9),
    ]
    assert run(text, pieces, rows, "simple", decoding="viterbi") == [
        ("PER", "John Smith", 0.65),  # the mean of the chosen labels' probabilities
        ("LOC", "Paris", 0.9),
    ]


def test_viterbi_drops_or_opens_an_entity_that_starts_with_i() -> None:
    """An I-X after O is either an O or a B-X, whichever the scores make more likely."""
    text = "met Smith and Jones"
    pieces = ["met", "Smith", "and", "Jones"]
    rows = [
        one_hot("O", 0.99),
        [0.2, 0.3, 0.45, 0.025, 0.025],  # I-PER best, B-PER next
        one_hot("O", 0.99),
        [0.4, 0.05, 0.45, 0.05, 0.05],  # I-PER best, O next
    ]
    assert run(text, pieces, rows, "simple") == [("PER", "Smith", 0.45), ("PER", "Jones", 0.45)]
    assert run(text, pieces, rows, "simple", decoding="viterbi") == [("PER", "Smith", 0.3)]


def test_viterbi_then_word_aggregation() -> None:
    """Word strategies aggregate the scores of the labels the sequence search chose."""
    text = "Washington visited"
    pieces = ["Washing", "ton", "visited"]
    rows = [
        one_hot("B-LOC", 0.6),
        [0.1, 0.05, 0.5, 0.05, 0.3],  # I-PER alone would split the word's type
        one_hot("O", 0.99),
    ]
    for aggregation in ("first", "average", "max"):
        got = run(text, pieces, rows, aggregation, subword=[False, True, False], decoding="viterbi")
        assert [(group, word) for group, word, _ in got] == [("LOC", "Washington")], aggregation


@pytest.mark.parametrize("with_prior", [False, True])
def test_bio_viterbi_is_the_best_valid_sequence(with_prior: bool) -> None:
    """Against brute force over every label sequence, on random scores, label orders and
    transition priors."""
    rng = np.random.default_rng(7)
    for labels in (LABELS, ["B-LOC", "I-PER", "O", "I-LOC", "B-PER"], ["O", "I-ORG", "B-MISC"]):
        n = len(labels)
        inside = np.array([label.startswith("I-") for label in labels])
        opener = np.array(
            [labels.index("B-" + x[2:]) if "B-" + x[2:] in labels else -1 for x in labels]
        )
        prior = TransitionPrior(rng.normal(size=n), rng.normal(size=(n, n))) if with_prior else None

        def valid(sequence: tuple[int, ...], labels: list[str] = labels) -> bool:
            previous = "O"
            for index in sequence:
                label = labels[index]
                if label.startswith("I-") and previous[2:] != label[2:]:
                    return False
                previous = label
            return True

        for length in range(1, 6):
            scores = rng.dirichlet(np.ones(n) * 0.5, size=length).astype(np.float32)
            log_scores = np.log(np.maximum(scores, 1e-30))

            def total(
                sequence: tuple[int, ...],
                log_scores: np.ndarray = log_scores,
                prior: TransitionPrior | None = prior,
            ) -> float:
                value = sum(log_scores[i, label] for i, label in enumerate(sequence))
                if prior is not None:
                    value += prior.start[sequence[0]]
                    value += sum(prior.matrix[a, b] for a, b in itertools.pairwise(sequence))
                return float(value)

            candidates = itertools.product(range(n), repeat=length)
            best = max((s for s in candidates if valid(s)), key=total)
            assert tuple(bio_viterbi(scores, inside, opener, prior)) == best, (labels, scores)


def test_a_transition_prior_can_overrule_the_scores() -> None:
    """The prior is weighed against the scores: strong enough, it decides the labels."""
    text = "John Smith"
    pieces = ["John", "Smith"]
    rows = [one_hot("B-PER", 0.6), one_hot("I-PER", 0.6)]
    assert run(text, pieces, rows, "simple", decoding="viterbi") == [("PER", "John Smith", 0.6)]
    only_o = np.full(len(LABELS), -20.0)
    only_o[0] = 0.0
    prior = TransitionPrior(only_o, np.tile(only_o, (len(LABELS), 1)))
    scores = np.array(rows, dtype=np.float32)
    flags = np.zeros(2, dtype=bool)
    offsets = offsets_of(text, pieces)
    assert decode(text, scores, offsets, flags, LABELS, "simple", "viterbi", prior) == []
    # argmax ignores the prior.
    assert len(decode(text, scores, offsets, flags, LABELS, "simple", "argmax", prior)) == 1


def test_entity_word_is_the_callers_surface_not_the_tokens() -> None:
    text = "  Cafe\u0301 ZÜRICH "
    rows = [one_hot("B-LOC", 0.9), one_hot("I-LOC", 0.9)]
    # The uncased tokenizer gives "cafe" (2, 6): the combining accent is outside it.
    offsets = np.array([[2, 6], [8, 14]])
    entities = decode(text, np.array(rows), offsets, np.zeros(2, bool), LABELS, "simple")
    assert entities == [Entity("LOC", pytest.approx(0.9), "Cafe\u0301 ZÜRICH", 2, 14)]


@pytest.mark.parametrize(
    ("text", "span", "expected"),
    [
        ("Cafe\u0301 au lait", (0, 4), (0, 5)),  # keep the combining accent
        ("  Paris \t", (0, 9), (2, 7)),  # trim whitespace both sides
        ("Paris\u200d rocks", (0, 5), (0, 6)),  # a trailing ZWJ belongs to "s"
        ("\U0001f468\u200d\U0001f469 x", (0, 1), (0, 3)),  # ZWJ emoji sequence
        ("\U0001f44d\U0001f3fd ok", (0, 1), (0, 2)),  # skin tone modifier
        ("\u2764\ufe0f love", (0, 1), (0, 2)),  # variation selector
        ("e\u0301\u0323x", (1, 4), (3, 4)),  # start moves off the marks of "e"
        ("e\u0301", (1, 2), (2, 2)),  # nothing left: empty
        ("New York", (0, 8), (0, 8)),  # already whole
    ],
)
def test_snap_span(text: str, span: tuple[int, int], expected: tuple[int, int]) -> None:
    assert snap_span(text, *span) == expected


def test_empty_span_after_snapping_is_dropped() -> None:
    text = "e\u0301 x"
    offsets = np.array([[0, 1], [1, 2]])  # a token that is only the combining mark
    rows = np.array([one_hot("O", 0.9), one_hot("B-PER", 0.9)])
    assert decode(text, rows, offsets, np.zeros(2, bool), LABELS, "simple") == []


def test_wordpiece_subword_flags() -> None:
    text = "Microsoft's José [UNK]"
    tokens = ["micro", "##soft", "'", "s", "jose", "[UNK]"]
    offsets = np.array([[0, 5], [5, 9], [9, 10], [10, 11], [12, 16], [17, 22]])
    unknown = np.array([False, False, False, False, False, True])
    flags = subword_flags(text, tokens, offsets, is_unknown=unknown, subword_prefix="##")
    # "[UNK]" is 5 characters like its surface here, but unknowns never continue a word
    assert flags.tolist() == [False, True, False, False, False, False]


def test_fallback_subword_flags_without_a_subword_prefix() -> None:
    text = "don't stop"
    tokens = ["don", "'", "t", "stop"]
    offsets = np.array([[0, 3], [3, 4], [4, 5], [6, 10]])
    flags = subword_flags(text, tokens, offsets, is_unknown=np.zeros(4, bool), subword_prefix=None)
    assert flags.tolist() == [False, True, True, False]


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 1000.0, 0.0], [-5.0, 0.0, 5.0]], dtype=np.float32)
    probabilities = softmax(logits)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[0], [0.5, 0.5, 0.0], atol=1e-7)
    expected = np.exp([-10.0, -5.0, 0.0]) / np.exp([-10.0, -5.0, 0.0]).sum()
    np.testing.assert_allclose(probabilities[1], expected, rtol=1e-5)


def test_best_path_of_no_units_is_empty() -> None:
    prior = TransitionPrior(np.zeros(len(LABELS)), np.zeros((len(LABELS), len(LABELS))))
    for with_prior in (None, prior):
        path = best_path(np.empty((0, len(LABELS)), dtype=np.float32), LABELS, with_prior)
        assert path.shape == (0,)
