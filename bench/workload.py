"""The sentences the benchmark sends: a seeded sample of a CoNLL test file."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from measure import percentile

from nerkit.training.data import load_examples

# The "typical sentence" the latency run repeats has this many words.
TYPICAL_WORDS = 25
SEED = 0


@dataclass(frozen=True)
class Workload:
    texts: list[str]  # sampled test sentences, one request each
    typical_text: str  # a real test sentence of TYPICAL_WORDS words
    mean_words: float
    word_percentiles: dict[str, float]


def load_workload(path: Path, count: int, min_words: int) -> Workload:
    sentences = [example.text for example in load_examples(path)]
    # "Typical" sentences: table rows and bylines ("Nadim Ladki") are dropped.
    pool = [text for text in sentences if len(text.split()) >= min_words]
    rng = random.Random(SEED)
    texts = rng.sample(pool, count) if count <= len(pool) else rng.choices(pool, k=count)
    typical = next(text for text in sentences if len(text.split()) == TYPICAL_WORDS)
    words = [len(text.split()) for text in texts]
    return Workload(
        texts=texts,
        typical_text=typical,
        mean_words=statistics.fmean(words),
        word_percentiles={f"p{q}": percentile(words, q) for q in (50, 95)},
    )
