"""``--split`` and ``--max-sentences``: the command-line options of the runs that split one
input (``nerkit-train``, ``nerkit.pipeline.start`` and the admin route's checks), as the
hyperparameters the job reads (``nerkit.training.split`` does the split). Outside
``nerkit.training`` so the serving image, which has no training code, can check them.
"""

from __future__ import annotations

import argparse


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    """``--split`` and ``--max-sentences``, for the command lines that start training."""
    parser.add_argument(
        "--split",
        metavar="VALIDATION[,TEST]",
        help="instead of --validation (and --test): hold out these fractions of --train, "
        "e.g. 0.1 or 0.1,0.1; seeded by the seed hyperparameter, whole documents to one part",
    )
    parser.add_argument(
        "--max-sentences",
        type=int,
        metavar="N",
        help="use only the first N sentences of each input (quick trials)",
    )


def split_arguments_as_hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    """``--split`` and ``--max-sentences`` as the hyperparameters the job reads."""
    values = split_hyperparameters(args.split) if args.split else {}
    if args.max_sentences is not None:
        if args.max_sentences < 1:
            raise ValueError(f"--max-sentences must be >= 1, got {args.max_sentences}")
        values["max_sentences"] = str(args.max_sentences)
    return values


def split_hyperparameters(text: str) -> dict[str, str]:
    """``"0.1"`` or ``"0.1,0.05"`` -> the ``validation_split`` / ``test_split`` hyperparameters."""
    parts = [part.strip() for part in text.split(",")]
    try:
        fractions = [float(part) for part in parts]
    except ValueError:
        fractions = []
    if not 1 <= len(fractions) <= 2 or not all(0 < f < 1 for f in fractions):
        raise ValueError(f"--split takes VALIDATION[,TEST] fractions such as 0.1,0.1, got {text!r}")
    if sum(fractions) >= 1:
        raise ValueError(f"--split {text}: the held-out fractions leave nothing to train on")
    names = ("validation_split", "test_split")
    return {name: part for name, part in zip(names, parts, strict=False)}
