"""Hold out validation (and test) sentences from one training input, seeded and by document.

Whole documents go to one part, so no document's sentences are trained on and scored at
once (neighbouring sentences share names and context). An input with too few documents to
give every held-out part one (a CSV without a document column is one document) is split by
sentence instead, and the record says so. Each part keeps the input's order, so a
document's sentences stay consecutive.

``max_sentences`` (quick trials) keeps the first sentences of an input, before any split.

The hyperparameters (``validation_split``, ``test_split``, ``max_sentences``) are all a run
needs, so ``nerkit-train`` and the SageMaker pipeline split alike
(``nerkit.split_options`` turns the command lines' ``--split VALIDATION[,TEST]`` into them).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from nerkit.training.data import DataError, Example

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """The parts of one input and how they were made (the manifest's ``data.split``)."""

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    record: dict[str, Any]


def first_sentences(examples: list[Example], limit: int, name: str) -> list[Example]:
    """The first ``limit`` sentences (0: all), logged when it cuts."""
    if limit <= 0 or len(examples) <= limit:
        return examples
    log.info("%s: using the first %d of %d sentences (max_sentences)", name, limit, len(examples))
    return examples[:limit]


def split_examples(
    examples: Sequence[Example], *, validation: float, test: float, seed: int
) -> Split:
    """Hold out ``validation`` and ``test`` fractions of the sentences (see the module doc)."""
    documents = [list(group) for _, group in groupby(examples, key=lambda ex: ex.document)]
    held_out = [fraction for fraction in (validation, test) if fraction > 0]
    # Every held-out part needs a document, and the training part more than one.
    by_document = len(documents) >= 2 * (len(held_out) + 1)
    units = documents if by_document else [[example] for example in examples]
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    total = len(examples)
    parts: dict[str, list[int]] = {"test": [], "validation": [], "train": []}
    targets = {"test": test * total, "validation": validation * total}
    counts = {"test": 0, "validation": 0}
    for index in order:
        part = next((p for p in ("test", "validation") if counts[p] < targets[p]), "train")
        parts[part].append(index)
        if part != "train":
            counts[part] += len(units[index])
    chosen = {
        name: [ex for i in sorted(indices) for ex in units[i]] for name, indices in parts.items()
    }
    for name in ("train", "validation", *(["test"] if test > 0 else [])):
        if not chosen[name]:
            raise DataError(
                f"{total} sentences are too few to split into train, validation"
                f"{' and test' if test > 0 else ''}: give more data or larger fractions"
            )
    record = {
        "from": "train",
        "seed": seed,
        "unit": "document" if by_document else "sentence",
        "fractions": {"validation": validation, "test": test},
        "sentences": {name: len(part) for name, part in chosen.items()},
    }
    if not by_document:
        log.warning(
            "the input has %d document(s): too few to split by document; split by sentence",
            len(documents),
        )
    log.info("split: %s", record)
    return Split(chosen["train"], chosen["validation"], chosen["test"], record)
