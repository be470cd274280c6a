"""The BIO2 label scheme and conversions between tags and character spans."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

OUTSIDE = "O"


@dataclass(frozen=True, order=True)
class Span:
    """A labelled character span ``text[start:end]``."""

    start: int
    end: int
    label: str


def split_tag(tag: str) -> tuple[str, str | None]:
    """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", None)``. Raises on anything else."""
    if tag == OUTSIDE:
        return OUTSIDE, None
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not entity_type:
        raise ValueError(f"not a BIO tag: {tag!r}")
    return prefix, entity_type


def bio_labels(entity_types: Iterable[str]) -> list[str]:
    """The model's label list: ``O`` first, then ``B-X, I-X`` for each type, sorted."""
    labels = [OUTSIDE]
    for entity_type in sorted(set(entity_types)):
        labels += [f"B-{entity_type}", f"I-{entity_type}"]
    return labels


def to_bio2(tags: Sequence[str], *, where: str = "") -> list[str]:
    """Normalise BIO1 (IOB1) or broken BIO2 to BIO2.

    An ``I-X`` that does not continue an ``X`` entity starts one (it becomes ``B-X``). In
    IOB1 that is the normal encoding; in BIO2 data it is an error we repair, so we log a
    warning naming ``where`` when ``where`` is given.
    """
    out: list[str] = []
    previous_type: str | None = None
    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if prefix == "I" and previous_type != entity_type:
            if where:
                log.warning(
                    "%s token %d: %s does not continue an entity; read as B-%s",
                    where,
                    index + 1,
                    tag,
                    entity_type,
                )
            tag = f"B-{entity_type}"
        out.append(tag)
        previous_type = entity_type
    return out


def tags_to_spans(tags: Sequence[str], token_offsets: Sequence[tuple[int, int]]) -> list[Span]:
    """BIO2 tags over tokens with character offsets -> entity spans (conlleval chunking)."""
    spans: list[Span] = []
    open_type: str | None = None
    open_start = open_end = 0
    for tag, (start, end) in zip(tags, token_offsets, strict=True):
        prefix, entity_type = split_tag(tag)
        if open_type is not None and (prefix != "I" or entity_type != open_type):
            spans.append(Span(open_start, open_end, open_type))
            open_type = None
        if prefix == "B" or (prefix == "I" and open_type is None):
            open_type, open_start = entity_type, start
        if open_type is not None:
            open_end = end
    if open_type is not None:
        spans.append(Span(open_start, open_end, open_type))
    return spans


def spans_to_tags(spans: Iterable[Span], token_offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Entity spans -> BIO2 tags for tokens; a token belongs to a span it overlaps."""
    tags = [OUTSIDE] * len(token_offsets)
    for span in sorted(spans):
        first = True
        for index, (start, end) in enumerate(token_offsets):
            if start < span.end and end > span.start and end > start:
                tags[index] = f"{'B' if first else 'I'}-{span.label}"
                first = False
    return tags
