"""Entity-level precision, recall and F1 over character spans.

An entity counts as correct only if its type, start and end all match a gold entity,
which is conlleval's (and seqeval's default mode's) definition once BIO chunks are turned
into spans. Serving-side evaluation uses this so that an artifact is scored on raw text
through the same engine users call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from nerkit.labels import Span


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(
    gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]]
) -> dict[str, Any]:
    """Micro-averaged scores overall and per entity type, with gold support counts."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sequences but {len(predicted)} predicted")
    correct: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    for gold_spans, pred_spans in zip(gold, predicted, strict=True):
        gold_set, pred_set = set(gold_spans), set(pred_spans)
        n_gold.update(span.label for span in gold_set)
        n_pred.update(span.label for span in pred_set)
        correct.update(span.label for span in gold_set & pred_set)
    per_type = {
        label: {**_prf(correct[label], n_pred[label], n_gold[label]), "support": n_gold[label]}
        for label in sorted(set(n_gold) | set(n_pred))
    }
    overall = _prf(sum(correct.values()), sum(n_pred.values()), sum(n_gold.values()))
    return {**overall, "support": sum(n_gold.values()), "per_type": per_type}


MISSED = "(none)"


def entity_confusion(
    gold: Sequence[Iterable[Span]], predicted: Sequence[Iterable[Span]]
) -> dict[str, dict[str, int]]:
    """``matrix[gold_type][predicted_type]`` over entities, matched by exact boundaries.

    A gold entity with no prediction of the same boundaries counts under ``(none)``
    predicted; a prediction with no gold entity of the same boundaries counts under
    ``(none)`` gold. The diagonal is the correct entities.
    """
    matrix: dict[str, Counter[str]] = {}
    for gold_spans, pred_spans in zip(gold, predicted, strict=True):
        gold_at = {(s.start, s.end): s.label for s in gold_spans}
        pred_at = {(s.start, s.end): s.label for s in pred_spans}
        for where in gold_at.keys() | pred_at.keys():
            row = gold_at.get(where, MISSED)
            matrix.setdefault(row, Counter())[pred_at.get(where, MISSED)] += 1
    return {row: dict(counts) for row, counts in sorted(matrix.items())}
