"""Casing features computed from the caller's original text.

The default encoder's vocabulary is uncased, so capitalisation (a strong NER signal) is
lost in tokenization. Models trained with casing features get, for every subword token, the
shape of its surface text in the original string. Training and serving both compute it
here, from the tokenizer's character offsets, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

# Scheme name recorded in the artifact manifest; bump it if the ids below change.
CASING_SCHEME = "token_shape_v1"
CASING_PAD, LOWER, UPPER, TITLE, MIXED, DIGIT, OTHER = range(7)
CASING_VOCAB_SIZE = 7


def token_shape(surface: str) -> int:
    """The casing class of one token's surface text."""
    if not surface:
        return CASING_PAD
    if any(ch.isdigit() for ch in surface):
        return DIGIT
    letters = [ch for ch in surface if ch.isalpha()]
    if not letters:
        return OTHER
    if all(ch.islower() for ch in letters):
        return LOWER
    if all(ch.isupper() for ch in letters):
        # "A" and "I" are title-like; "USA" is all upper.
        return UPPER if len(letters) > 1 else TITLE
    if letters[0].isupper() and not any(ch.isupper() for ch in letters[1:]):
        return TITLE
    return MIXED


def casing_ids(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """One casing id per token; special and padding tokens have ``(0, 0)`` offsets -> pad."""
    return [token_shape(text[start:end]) if end > start else CASING_PAD for start, end in offsets]
