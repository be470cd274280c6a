"""Text re-cased as users send it (chat logs, queries in lower case; headlines in upper case).

Used two ways: evaluation scores a model on its data lowercased and uppercased, and training
presents a share of its sentences that way (casing augmentation). Gold spans are character
offsets, so a re-cased text must keep every character where it was: characters whose case
mapping changes the length (``"ß".upper() == "SS"``, ``"İ".lower()`` is two code points) are
kept as written. The casing features are then computed from the re-cased text, as serving
computes them from whatever a caller sends.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from nerkit.training.data import Example

AS_WRITTEN, LOWER, UPPER = "as-written", "lower", "upper"
CASINGS = (AS_WRITTEN, LOWER, UPPER)


def recase(text: str, casing: str) -> str:
    """``text`` lowercased or uppercased character by character, its length unchanged."""
    if casing == AS_WRITTEN:
        return text
    if casing not in CASINGS:
        raise ValueError(f"unknown casing {casing!r}: one of {', '.join(CASINGS)}")
    convert = str.lower if casing == LOWER else str.upper
    return "".join(mapped if len(mapped := convert(char)) == 1 else char for char in text)


def recase_example(example: Example, casing: str) -> Example:
    """The same sentence re-cased; its gold spans still point at the same characters."""
    if casing == AS_WRITTEN:
        return example
    return dataclasses.replace(example, text=recase(example.text, casing))


def recase_all(examples: Sequence[Example], casing: str) -> list[Example]:
    return [recase_example(example, casing) for example in examples]


def augment_casing(
    examples: Sequence[Example], *, lowercase_share: float, uppercase_share: float, seed: str
) -> list[Example]:
    """Each sentence lowercased with probability ``lowercase_share``, uppercased with
    ``uppercase_share``, as written otherwise; the draw is seeded by ``seed``."""
    rng = random.Random(seed)
    augmented = []
    for example in examples:
        draw = rng.random()
        if draw < lowercase_share:
            casing = LOWER
        elif draw < lowercase_share + uppercase_share:
            casing = UPPER
        else:
            casing = AS_WRITTEN
        augmented.append(recase_example(example, casing))
    return augmented


def parse_casings(value: str) -> list[str]:
    """``"as-written,lower,upper"`` -> the list; an unknown name is a ``ValueError``."""
    casings = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in casings if name not in CASINGS]
    if unknown or not casings:
        raise ValueError(
            f"--casing takes a comma-separated list of {', '.join(CASINGS)}, got {value!r}"
        )
    return list(dict.fromkeys(casings))
