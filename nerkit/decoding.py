"""Per-token label probabilities -> entity spans, with the transformers pipeline's semantics.

This reimplements the post-processing of ``transformers``' token-classification pipeline
(``gather_pre_entities``, ``aggregate_word(s)``, ``group_entities``) in vectorised numpy, so
serving needs neither torch nor transformers. For the same tokens and scores it returns the
same ``entity_group``, ``start``, ``end`` and ``score`` as the pipeline for the ``simple``,
``first``, ``average`` and ``max`` aggregation strategies, with these documented differences:

- ``word`` is always ``text[start:end]``, the caller's exact surface text, where the pipeline
  returns the tokenizer's decoded (lower-cased, accent-stripped) tokens.
- Spans are snapped to whole characters: leading/trailing whitespace is trimmed and an end
  that would cut a combining sequence (``"Cafe\\u0301"``: the uncased tokenizer leaves the
  stripped accent out of the token's offsets), a ZWJ emoji sequence or a variation selector
  is moved past it. A span left empty by snapping is dropped. On precomposed (NFC) text
  the pipeline never needs this: spans differ only where the pipeline's would cut a character.

Labels are BIO2 (``B-X``/``I-X``, ``O``); like the pipeline, a bare label ``X`` is read as a
continuation (``I-X``) and entities whose group is ``O`` are dropped.

Two ``decoding`` modes choose the tokens' labels before aggregation:

- ``argmax``: each token's scores as they are, so each token (or word) takes its own most
  likely label independently of its neighbours: the pipeline's behaviour. An ``I-X`` after
  ``O`` or after another type then starts a fragment.
- ``viterbi`` (the default): the tokens take the most likely label *sequence* in which every
  ``I-X`` follows ``B-X`` or ``I-X`` (a first-order Viterbi search over log-probabilities),
  and every other label's score is zeroed before aggregation. This removes fragmented and
  mistyped pieces of entities (README.md, "The default model", has what it gains). A model
  may add a ``TransitionPrior``: how often each label follows each other in its training
  data, weighted against the model's scores. Scores stay the model's probabilities of the
  labels chosen.

``label_tokens`` is the pipeline's ``aggregation_strategy="none"``: each token's chosen label
(``entity``, e.g. ``B-PER``), its score and its ``index`` in the model input, with ``word``
again the text under the token's offsets (the pipeline returns the vocabulary string, e.g.
``##kel``).

The pipeline's word test is kept as is, quirks included: with a WordPiece tokenizer a token
continues a word when its vocabulary string and its surface differ in length, so a token
whose surface holds a combining accent the normaliser stripped (``"e\\u0301t"`` -> ``et``)
joins the previous word under ``first``/``average``/``max``. Precomposed text (NFC, what
nearly all input is) is not affected.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, NamedTuple, get_args

import numpy as np

from nerkit.labels import OUTSIDE

# The request options' one definition: the API schema, the engine and the CLIs use these.
Aggregation = Literal["simple", "first", "average", "max"]
Decoding = Literal["viterbi", "argmax"]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
DECODINGS: tuple[str, ...] = get_args(Decoding)
_ZWJ = "\u200d"
_COMBINING_CATEGORIES = frozenset({"Mn", "Mc", "Me"})
# Code point ranges that never start a user-perceived character: variation selectors,
# emoji skin-tone modifiers, emoji tag characters and the supplementary variation selectors.
_EXTENDING_RANGES = (
    ("\ufe00", "\ufe0f"),
    ("\U0001f3fb", "\U0001f3ff"),
    ("\U000e0020", "\U000e007f"),
    ("\U000e0100", "\U000e01ef"),
)


@dataclass(frozen=True)
class Entity:
    """One entity; field names as the transformers pipeline's. ``word == text[start:end]``."""

    entity_group: str
    score: float
    word: str
    start: int
    end: int


@dataclass(frozen=True)
class Token:
    """One token and its label, as the pipeline's ``none`` strategy reports it.
    ``word == text[start:end]``."""

    entity: str  # the full label, e.g. B-PER or O
    score: float
    index: int  # position among the text's tokens, the template's leading ones counted
    word: str
    start: int
    end: int


class _Units(NamedTuple):
    """Tokens (``simple``) or words (other strategies) with their chosen label."""

    label: np.ndarray  # int label index per unit
    score: np.ndarray  # probability of that label
    start: np.ndarray  # character offsets
    end: np.ndarray


class TransitionPrior(NamedTuple):
    """Weighted log-probabilities of label bigrams, added to the scores by ``viterbi``."""

    start: np.ndarray  # [labels]: of the first label
    matrix: np.ndarray  # [labels, labels]: of the next label (column) after each (row)


class _LabelTable(NamedTuple):
    names: tuple[str, ...]  # entity_group reported for a group starting with this label
    tags: np.ndarray  # int id of the type used to decide whether neighbours merge
    begins: np.ndarray  # bool: a B- label always starts a new group
    outside: np.ndarray  # bool: groups named O are not entities
    # BIO constraints for viterbi: label inside[i] (an I-X) may only follow itself or
    # opener[i] (its B-X; -1 when the label set has none).
    inside: np.ndarray
    opener: np.ndarray


def entity_group_name(label: str) -> str:
    """The ``entity_group`` the pipeline reports for a group that starts with ``label``."""
    return label.split("-", 1)[-1]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed like the pipeline (max-shifted, float32)."""
    logits = logits.astype(np.float32, copy=False)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def subword_flags(
    text: str,
    tokens: Sequence[str],
    offsets: np.ndarray,
    *,
    is_unknown: np.ndarray,
    subword_prefix: str | None,
) -> np.ndarray:
    """The pipeline's ``is_subword`` for each (non-special) token.

    With a word-aware tokenizer (one with a ``continuing_subword_prefix`` such as ``##``) a
    token continues a word when its vocabulary string and its surface text differ in length
    (``##ing`` vs ``ing``). Otherwise the pipeline's fallback applies: a token continues a
    word unless a space touches its start. Unknown tokens always start a word.
    """
    starts, ends = offsets[:, 0], offsets[:, 1]
    if subword_prefix:
        token_lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flags = token_lengths != ends - starts
    else:
        code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        # One extra "not a space" slot: at start == len(text) the pipeline's slice is shorter.
        is_space = np.append(code_points == ord(" "), False)
        flags = (starts > 0) & ~is_space[np.maximum(starts - 1, 0)] & ~is_space[starts]
    return flags & ~is_unknown


def decode(
    text: str,
    scores: np.ndarray,
    offsets: np.ndarray,
    is_subword: np.ndarray,
    labels: Sequence[str],
    aggregation: str,
    decoding: str = "viterbi",
    prior: TransitionPrior | None = None,
    outside: bool = False,
) -> list[Entity]:
    """Entities of ``text`` from the probabilities of its non-special tokens.

    ``scores`` is ``[tokens, labels]`` (softmax output), ``offsets`` ``[tokens, 2]`` character
    offsets into ``text``, ``is_subword`` from :func:`subword_flags`; special tokens must
    already be removed (the pipeline skips them before anything else). ``prior`` is used by
    ``viterbi`` only. With ``outside`` the groups labelled ``O`` are kept too (entity_group
    ``O``), as the pipeline returns them when its ``ignore_labels`` leaves ``O`` out.
    """
    check_options(aggregation, decoding)
    if len(scores) == 0:
        return []
    table = _label_table(tuple(labels))
    scores = _decoded(scores, table, decoding, prior)
    if aggregation == "simple":
        units = _token_units(scores, offsets)
    else:
        units = _word_units(scores, offsets, is_subword, aggregation)
    return _group(text, units, table, outside)


def label_tokens(
    text: str,
    scores: np.ndarray,
    offsets: np.ndarray,
    indices: np.ndarray,
    labels: Sequence[str],
    decoding: str = "viterbi",
    prior: TransitionPrior | None = None,
) -> list[Token]:
    """Every token of ``text`` with its label, ``O`` included: the pipeline's ``none``.

    ``scores`` and ``offsets`` are as for :func:`decode`; ``indices`` the tokens' positions
    in the model input. Each token takes the label ``decoding`` chooses for it and that
    label's probability as its score.
    """
    check_decoding(decoding)
    if len(scores) == 0:
        return []
    units = _token_units(_decoded(scores, _label_table(tuple(labels)), decoding, prior), offsets)
    return [
        Token(labels[label], float(score), int(index), text[start:end], int(start), int(end))
        for label, score, index, start, end in zip(
            units.label.tolist(),
            units.score,
            indices.tolist(),
            units.start.tolist(),
            units.end.tolist(),
            strict=True,
        )
    ]


def check_options(aggregation: str, decoding: str) -> None:
    """Raise ``ValueError`` unless both are among ``AGGREGATIONS`` and ``DECODINGS``."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}: {aggregation!r}")
    check_decoding(decoding)


def check_decoding(decoding: str) -> None:
    """Raise ``ValueError`` unless ``decoding`` is among ``DECODINGS``."""
    if decoding not in DECODINGS:
        raise ValueError(f"decoding must be one of {', '.join(DECODINGS)}: {decoding!r}")


def transition_prior(transitions: Mapping[str, Any], n_labels: int) -> TransitionPrior:
    """The ``TransitionPrior`` of a manifest's ``transitions`` (``weight``, ``start``,
    ``matrix``), weighted; ``ValueError`` when they are malformed."""
    try:
        weight = float(transitions["weight"])
        start = np.array(transitions["start"], dtype=np.float64)
        matrix = np.array(transitions["matrix"], dtype=np.float64)
    except (TypeError, KeyError, ValueError):
        raise ValueError("transitions need weight, start and matrix") from None
    if start.shape != (n_labels,) or matrix.shape != (n_labels, n_labels):
        raise ValueError(f"transitions must be {n_labels} start and {n_labels}x{n_labels} values")
    if not (np.isfinite(start).all() and np.isfinite(matrix).all() and weight >= 0):
        raise ValueError("transitions must be finite, with a weight >= 0")
    return TransitionPrior(weight * start, weight * matrix)


def best_path(
    scores: np.ndarray, labels: Sequence[str], prior: TransitionPrior | None = None
) -> np.ndarray:
    """The label indices ``viterbi`` decoding chooses for ``scores`` (``[units, labels]``)."""
    if len(scores) == 0:
        return np.empty(0, dtype=np.int64)
    table = _label_table(tuple(labels))
    return bio_viterbi(scores, table.inside, table.opener, prior)


def bio_viterbi(
    scores: np.ndarray,
    inside: np.ndarray,
    opener: np.ndarray,
    prior: TransitionPrior | None = None,
) -> np.ndarray:
    """The most likely label sequence in which every ``I-X`` follows ``B-X`` or ``I-X``.

    ``scores`` is ``[units, labels]`` probabilities; ``inside``/``opener`` come from the label
    table; ``prior`` adds label-bigram log-probabilities. Without a prior, when each unit's
    own best label already makes a valid sequence, that is the answer (nearly every text).
    """
    if prior is None:
        best_labels = scores.argmax(axis=1)
        if is_valid_bio(best_labels, inside, opener):
            return best_labels
    n_units, n_labels = scores.shape
    log_probs = np.log(np.maximum(scores, np.finfo(np.float32).tiny, dtype=np.float64))
    labels = np.arange(n_labels)
    # allowed[previous, next]: an I-X may only follow B-X or I-X.
    allowed = ~inside[None, :] | (labels[:, None] == labels[None, :])
    allowed |= labels[:, None] == opener[None, :]
    start = np.where(inside, -np.inf, 0.0)
    steps = np.where(allowed, 0.0, -np.inf)
    if prior is not None:
        start, steps = start + prior.start, steps + prior.matrix
    best = start + log_probs[0]
    back = np.empty((n_units, n_labels), dtype=np.int64)
    for step in range(1, n_units):
        candidates = best[:, None] + steps
        back[step] = candidates.argmax(axis=0)
        best = candidates[back[step], labels] + log_probs[step]
    path = np.empty(n_units, dtype=np.int64)
    path[-1] = best.argmax()
    for step in range(n_units - 1, 0, -1):
        path[step - 1] = back[step, path[step]]
    return path


def is_valid_bio(labels: np.ndarray, inside: np.ndarray, opener: np.ndarray) -> bool:
    """Whether every ``I-X`` in the label sequence follows ``B-X`` or ``I-X``."""
    if len(labels) == 0:
        return True
    previous, current = labels[:-1], labels[1:]
    broken = inside[current] & (previous != current) & (previous != opener[current])
    return not (inside[labels[0]] or broken.any())


def snap_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Trim whitespace and move boundaries off the inside of user-perceived characters.

    Both boundaries move forward over continuation characters, so two adjacent spans that
    shared a boundary still share (or no longer overlap at) the snapped one.
    """
    while end > start and text[end - 1].isspace():
        end -= 1
    while end < len(text) and _continues_character(text, end):
        end += 1
    while start < end and (text[start].isspace() or _continues_character(text, start)):
        start += 1
    return start, end


def _continues_character(text: str, index: int) -> bool:
    """Whether ``text[index]`` belongs to the character that starts before it."""
    char = text[index]
    category = unicodedata.category(char)
    if category in _COMBINING_CATEGORIES or char == _ZWJ:
        return True
    # A ZWJ glues pictographs (So) into one emoji ("family"); after it, anything else starts
    # a new character.
    if index > 0 and text[index - 1] == _ZWJ and category == "So":
        return True
    return any(low <= char <= high for low, high in _EXTENDING_RANGES)


@lru_cache(maxsize=16)
def _label_table(labels: tuple[str, ...]) -> _LabelTable:
    tag_ids: dict[str, int] = {}
    tags, begins = [], []
    for label in labels:
        begins.append(label.startswith("B-"))
        # The pipeline's get_tag: B-/I- prefixes are stripped, anything else is its own tag.
        tag = label[2:] if label.startswith(("B-", "I-")) else label
        tags.append(tag_ids.setdefault(tag, len(tag_ids)))
    names = tuple(entity_group_name(label) for label in labels)
    index = {label: i for i, label in enumerate(labels)}
    return _LabelTable(
        names=names,
        tags=np.array(tags, dtype=np.int64),
        begins=np.array(begins, dtype=bool),
        outside=np.array([name == OUTSIDE for name in names], dtype=bool),
        inside=np.array([label.startswith("I-") for label in labels], dtype=bool),
        opener=np.array([index.get("B-" + label[2:], -1) for label in labels], dtype=np.int64),
    )


def _decoded(
    scores: np.ndarray, table: _LabelTable, decoding: str, prior: TransitionPrior | None
) -> np.ndarray:
    """``scores`` as aggregation sees them: as they are (argmax) or only the viterbi path's."""
    if decoding == "argmax":
        return scores
    return _only_path(scores, bio_viterbi(scores, table.inside, table.opener, prior))


def _only_path(scores: np.ndarray, path: np.ndarray) -> np.ndarray:
    """``scores`` with every label but the chosen one zeroed, so aggregation follows ``path``."""
    rows = np.arange(len(path))
    kept = np.zeros_like(scores)
    kept[rows, path] = scores[rows, path]
    return kept


def _token_units(scores: np.ndarray, offsets: np.ndarray) -> _Units:
    return _best_labels(scores, offsets[:, 0], offsets[:, 1])


def _word_units(
    scores: np.ndarray, offsets: np.ndarray, is_subword: np.ndarray, aggregation: str
) -> _Units:
    """The pipeline's aggregate_words: one unit per word, whatever its first token's flag."""
    starts_word = ~is_subword
    starts_word[0] = True
    first = np.flatnonzero(starts_word)
    last = np.append(first[1:], len(scores)) - 1
    if aggregation == "first":
        word_scores = scores[first]
    elif aggregation == "max":
        word_scores = scores[_most_confident_token(scores, starts_word, first)]
    else:
        word_scores = _segment_nanmean(scores, first)
    return _best_labels(word_scores, offsets[first, 0], offsets[last, 1])


def _most_confident_token(
    scores: np.ndarray, starts_word: np.ndarray, first: np.ndarray
) -> np.ndarray:
    """Per word, the index of the token with the highest top score (the earliest on ties)."""
    word_ids = np.cumsum(starts_word) - 1
    order = np.lexsort((np.arange(len(scores)), -scores.max(axis=1), word_ids))
    # Sorting by word first keeps every word's block where it was, best token first.
    return order[first]


def _best_labels(scores: np.ndarray, start: np.ndarray, end: np.ndarray) -> _Units:
    label = scores.argmax(axis=1)
    return _Units(label, scores[np.arange(len(label)), label], start, end)


def _segment_nanmean(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.nanmean`` over the consecutive segments that begin at ``starts`` (axis 0)."""
    valid = ~np.isnan(values)
    sums = np.add.reduceat(np.where(valid, values, 0), starts, axis=0)
    counts = np.add.reduceat(valid.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(values.dtype)


def _group(text: str, units: _Units, table: _LabelTable, outside: bool) -> list[Entity]:
    """The pipeline's group_entities: merge neighbours of one type unless the next is B-;
    groups labelled ``O`` only with ``outside``."""
    tags = table.tags[units.label]
    starts_group = np.ones(len(tags), dtype=bool)
    starts_group[1:] = table.begins[units.label[1:]] | (tags[1:] != tags[:-1])
    first = np.flatnonzero(starts_group)
    last = np.append(first[1:], len(tags)) - 1
    group_labels = units.label[first]
    group_scores = _segment_nanmean(units.score, first)
    keep = np.ones(len(group_labels), dtype=bool) if outside else ~table.outside[group_labels]
    entities = []
    for label, score, raw_start, raw_end in zip(
        group_labels[keep],
        group_scores[keep],
        units.start[first[keep]],
        units.end[last[keep]],
        strict=True,
    ):
        start, end = snap_span(text, int(raw_start), int(raw_end))
        if start < end:
            entities.append(Entity(table.names[label], float(score), text[start:end], start, end))
    return entities
