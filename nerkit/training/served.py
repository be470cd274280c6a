"""Scores of an artifact as users get them: raw text through the serving engine.

Training scores its epochs on token windows; a release is judged here, on whole texts with the
engine's tokenization, windows and decoding, so its metrics are what the API returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from nerkit.engine import NerEngine
from nerkit.labels import Span
from nerkit.metrics import entity_confusion, entity_scores
from nerkit.training.data import Example
from nerkit.training.progress import stage
from nerkit.training.recasing import LOWER, UPPER, recase_all

# Evaluations from this many texts up log their start and end (about a minute on a CPU).
LONG_EVALUATION_TEXTS = 1000
# What the manifest's served metrics mean (recorded next to them).
EVALUATION = (
    "entity-level micro P/R/F1 on raw text through nerkit.engine (the API defaults: "
    "aggregation simple, decoding viterbi); *_documents = whole documents as one text; "
    "*_argmax = without BIO-constrained decoding; *_lower / *_upper = the same text "
    "lowercased / uppercased"
)


def engine_predictions(
    engine: NerEngine, examples: Sequence[Example], **options: str
) -> list[list[Span]]:
    """Predicted spans on raw text, through the serving engine users call.

    ``options`` (``aggregation``, ``decoding``) default to the engine's, as for API callers.
    """
    # One call: the engine batches windows of all texts together, and int8 activations are
    # quantized per batch, so splitting the call for progress would change the scores. Only
    # a long one is announced.
    long = len(examples) >= LONG_EVALUATION_TEXTS
    with stage(f"engine predictions on {len(examples)} texts") if long else nullcontext():
        predicted = engine.predict([ex.text for ex in examples], **options)
    return [[Span(e.start, e.end, e.entity_group) for e in row] for row in predicted]


def engine_scores(engine: NerEngine, examples: Sequence[Example], **options: str) -> dict[str, Any]:
    """Entity-level scores of an artifact on raw text, through the serving engine."""
    return entity_scores(
        [ex.spans for ex in examples], engine_predictions(engine, examples, **options)
    )


def casing_scores(
    engine: NerEngine, examples: Sequence[Example], casings: Sequence[str], **options: str
) -> dict[str, dict[str, Any]]:
    """:func:`engine_scores` of the examples as written, lowercased or uppercased, by casing."""
    return {
        casing: engine_scores(engine, recase_all(examples, casing), **options) for casing in casings
    }


def engine_confusion(engine: NerEngine, examples: Sequence[Example]) -> dict[str, dict[str, int]]:
    """Entity confusion matrix (gold type -> predicted type) through the serving engine."""
    return entity_confusion([ex.spans for ex in examples], engine_predictions(engine, examples))


def join_documents(examples: Sequence[Example]) -> list[Example]:
    """One example per document (sentences joined by newlines), gold offsets shifted."""
    documents: list[Example] = []
    texts: list[str] = []
    spans: list[Span] = []
    current: str | None = None
    length = 0

    def flush() -> None:
        if texts:
            documents.append(Example("\n".join(texts), tuple(spans), current or "", ""))

    for ex in examples:
        if ex.document != current:
            flush()
            texts, spans, current, length = [], [], ex.document, 0
        offset = length + (1 if texts else 0)
        spans += [Span(s.start + offset, s.end + offset, s.label) for s in ex.spans]
        texts.append(ex.text)
        length = offset + len(ex.text)
    flush()
    return documents


def served_metrics(
    engine: NerEngine,
    validation: Sequence[Example],
    test: Sequence[Example],
    *,
    fp32_engine: NerEngine | None = None,
) -> dict[str, Any]:
    """The released artifact's metrics beyond validation F1 (test, documents, argmax, casing).

    ``fp32_engine`` (the unquantized model) adds ``test_fp32`` for comparison.
    """
    served: dict[str, Any] = {}
    if test:
        served["test"] = engine_scores(engine, test)
        if fp32_engine is not None:
            served["test_fp32"] = engine_scores(fp32_engine, test)
        served["test_documents"] = engine_scores(engine, join_documents(test))
        served["test_argmax"] = engine_scores(engine, test, decoding="argmax")
    served["validation_documents"] = engine_scores(engine, join_documents(validation))
    for split, examples in (("validation", validation), ("test", test)):
        if examples:
            for casing, scores in casing_scores(engine, examples, (LOWER, UPPER)).items():
                served[f"{split}_{casing}"] = scores
    return served
