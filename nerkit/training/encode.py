"""Examples -> model inputs: tokenization, subword label alignment, document windows.

Training tokenizes with the very ``tokenizer.json`` that ships in the artifact, through
the ``tokenizers`` library, and computes casing features with ``nerkit.features``: the
model sees exactly what the serving engine will feed it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from nerkit.features import casing_ids
from nerkit.labels import spans_to_tags
from nerkit.training.data import Example

IGNORE_INDEX = -100  # CrossEntropyLoss skips these positions ([CLS], [SEP], padding)


@dataclass(frozen=True)
class EncodedSentence:
    """One sentence's subword tokens (no special tokens) with labels and casing."""

    input_ids: list[int]
    casing_ids: list[int]
    label_ids: list[int]
    offsets: list[tuple[int, int]]


@dataclass(frozen=True)
class Window:
    """One model input: ``[CLS] tokens [SEP]`` with a label per position."""

    input_ids: list[int]
    casing_ids: list[int]
    label_ids: list[int]


def load_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> tuple[int, int, int]:
    """(cls, sep, pad) ids of a BERT-style tokenizer."""
    ids = [tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]", "[PAD]")]
    if any(i is None for i in ids):
        raise ValueError("tokenizer lacks [CLS]/[SEP]/[PAD]; only BERT-style vocabularies work")
    return ids[0], ids[1], ids[2]  # type: ignore[return-value]


def encode_examples(
    tokenizer: Tokenizer, examples: Sequence[Example], label_to_id: dict[str, int]
) -> list[EncodedSentence]:
    """Tokenize every sentence; every subword of an entity is labelled (B- first, then I-)."""
    encodings = tokenizer.encode_batch([ex.text for ex in examples], add_special_tokens=False)
    sentences = []
    for example, encoding in zip(examples, encodings, strict=True):
        offsets = [tuple(o) for o in encoding.offsets]
        tags = spans_to_tags(example.spans, offsets)
        sentences.append(
            EncodedSentence(
                input_ids=list(encoding.ids),
                casing_ids=casing_ids(example.text, offsets),
                label_ids=[label_to_id[tag] for tag in tags],
                offsets=offsets,
            )
        )
    return sentences


def label_transitions(
    sentences: Sequence[EncodedSentence], n_labels: int, weight: float
) -> dict[str, Any]:
    """How often each label starts a sentence and follows each other, token by token.

    Add-one smoothed natural-log probabilities, in the manifest's ``transitions`` form; the
    serving engine's viterbi decoding adds them, times ``weight``, to the model's scores.
    """
    start = np.ones(n_labels)
    matrix = np.ones((n_labels, n_labels))
    for sentence in sentences:
        labels = sentence.label_ids
        if labels:
            start[labels[0]] += 1
            np.add.at(matrix, (labels[:-1], labels[1:]), 1)
    return {
        "weight": weight,
        "start": np.log(start / start.sum()).round(4).tolist(),
        "matrix": np.log(matrix / matrix.sum(axis=1, keepdims=True)).round(4).tolist(),
    }


def document_windows(
    examples: Sequence[Example],
    sentences: Sequence[EncodedSentence],
    tokenizer: Tokenizer,
    max_seq_length: int,
    *,
    context: bool,
    rng: random.Random | None = None,
    single_sentence_prob: float = 0.3,
) -> list[Window]:
    """Pack consecutive sentences of a document into windows of at most ``max_seq_length``.

    With ``context`` the model learns from neighbouring sentences (document context, as the
    engine sees when a caller sends a paragraph); ``single_sentence_prob`` keeps enough
    lone sentences in the mix for callers who send one sentence. Without ``context`` every
    sentence is its own window. A sentence longer than a window is split.
    """
    cls_id, sep_id, _ = special_ids(tokenizer)
    budget = max_seq_length - 2
    windows: list[Window] = []
    indexed = list(zip(examples, sentences, strict=True))
    for _, group in groupby(indexed, key=lambda pair: pair[0].document):
        current: list[EncodedSentence] = []
        for _, sentence in group:
            for piece in _split_long(sentence, budget):
                if (
                    current
                    and sum(len(s.input_ids) for s in current) + len(piece.input_ids) > budget
                ):
                    windows.append(_make_window(current, cls_id, sep_id))
                    current = []
                current.append(piece)
                if not context or (rng is not None and rng.random() < single_sentence_prob):
                    windows.append(_make_window(current, cls_id, sep_id))
                    current = []
        if current:
            windows.append(_make_window(current, cls_id, sep_id))
    return windows


def _split_long(sentence: EncodedSentence, budget: int) -> Iterator[EncodedSentence]:
    for start in range(0, max(len(sentence.input_ids), 1), budget):
        end = start + budget
        yield EncodedSentence(
            sentence.input_ids[start:end],
            sentence.casing_ids[start:end],
            sentence.label_ids[start:end],
            sentence.offsets[start:end],
        )


def _make_window(pieces: Sequence[EncodedSentence], cls_id: int, sep_id: int) -> Window:
    input_ids, casing, labels = [cls_id], [0], [IGNORE_INDEX]
    for piece in pieces:
        input_ids += piece.input_ids
        casing += piece.casing_ids
        labels += piece.label_ids
    return Window([*input_ids, sep_id], [*casing, 0], [*labels, IGNORE_INDEX])


def length_batches(
    windows: Sequence[Window], batch_size: int, rng: random.Random | None
) -> list[list[Window]]:
    """Batches of similar length (little padding), in random order when ``rng`` is given."""
    order = list(range(len(windows)))
    if rng is not None:
        rng.shuffle(order)
    # Sort within chunks of 50 batches: nearly no padding, still a random mix per epoch.
    chunk = batch_size * 50
    batches: list[list[Window]] = []
    for start in range(0, len(order), chunk):
        block = sorted(order[start : start + chunk], key=lambda i: len(windows[i].input_ids))
        batches += [
            [windows[i] for i in block[b : b + batch_size]]
            for b in range(0, len(block), batch_size)
        ]
    if rng is not None:
        rng.shuffle(batches)
    return batches
