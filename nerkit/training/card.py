"""The model card: a markdown page with data, metrics, hyperparameters and two plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nerkit.metrics import MISSED
from nerkit.training.train import EpochRecord

CARD = "MODEL_CARD.md"
CURVE_PNG = "training_curve.png"
CONFUSION_PNG = "confusion_matrix.png"


def write_card(
    card_dir: Path,
    manifest: dict[str, Any],
    history: Sequence[EpochRecord],
    confusion: dict[str, dict[str, int]],
) -> list[Path]:
    """Write MODEL_CARD.md and its plots into ``card_dir``; return the files written."""
    _plot_curve(card_dir / CURVE_PNG, history)
    _plot_confusion(card_dir / CONFUSION_PNG, confusion)
    (card_dir / CARD).write_text(render(manifest, confusion))
    return [card_dir / CARD, card_dir / CURVE_PNG, card_dir / CONFUSION_PNG]


def _decoding(manifest: dict[str, Any]) -> str:
    transitions = manifest.get("transitions")
    if not transitions:
        return "viterbi (valid BIO sequences)"
    return (
        "viterbi (valid BIO sequences) with the training data's label transitions, "
        f"weight {transitions['weight']}"
    )


def render(manifest: dict[str, Any], confusion: dict[str, dict[str, int]]) -> str:
    metrics = manifest["metrics"]
    hp = manifest.get("hyperparameters", {})
    lines = [
        f"# Model card: {manifest['name']} ({manifest['version']})",
        "",
        f"- Base encoder: {manifest.get('base_model', 'unknown')}",
        f"- Labels: {', '.join(manifest['labels'])}",
        f"- Casing features: {manifest.get('casing') or 'none'}; "
        f"max sequence length {manifest['max_seq_length']} tokens",
        f"- Served weights: ONNX, quantization `{manifest.get('quantization', 'none')}`"
        + _quantization_reason(manifest),
        f"- Decoding (API default): {_decoding(manifest)}",
        f"- Created: {manifest.get('created_at', '')}; training took "
        f"{manifest.get('training', {}).get('seconds', '?')} s on "
        f"{manifest.get('training', {}).get('hardware', '?')}",
        "",
        "## Data",
        "",
        "| split | sentences | sha256 (texts + spans) |",
        "|---|---|---|",
        *[
            f"| {name} | {info['sentences']} | `{info['sha256'][:16]}` |"
            for name, info in manifest.get("data", {}).items()
            if name != "split"
        ],
        *_split_lines(manifest.get("data", {}).get("split")),
        "",
        *_training_data(manifest),
        "## Metrics",
        "",
        f"{metrics.get('evaluation', '')}.",
        "",
        "| evaluation | precision | recall | F1 | entities |",
        "|---|---|---|---|---|",
    ]
    for name, scores in metrics.items():
        if isinstance(scores, dict) and "precision" in scores:
            lines.append(
                f"| {name} | {scores['precision']:.4f} | {scores['recall']:.4f} | "
                f"{scores['f1']:.4f} | {scores['support']} |"
            )
    main = next(
        name
        for name in ("test", "validation", "seen_validation")
        if "per_type" in metrics.get(name, {})
    )
    lines += [
        "",
        *_casing_table(metrics),
        f"Per entity type ({main}):",
        "",
        "| type | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *[
            f"| {t} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |"
            for t, s in metrics[main]["per_type"].items()
        ],
        "",
        f"Training curve: ![training curve]({CURVE_PNG})",
        "",
        "| epoch | train loss | validation F1 (torch, viterbi) |",
        "|---|---|---|",
        *[
            f"| {h['epoch']} | {h['train_loss']:.4f} | {h['validation_f1']:.4f} |"
            for h in metrics.get("history", [])
        ],
        "",
        f"Entity confusion matrix (validation; rows gold, columns predicted, `{MISSED}` = no "
        f"entity with those boundaries): ![confusion matrix]({CONFUSION_PNG})",
        "",
        *_confusion_table(confusion),
        "",
        "## Hyperparameters",
        "",
        *[f"- `{key}`: {value}" for key, value in sorted(hp.items())],
        "",
    ]
    return "\n".join(lines)


def _quantization_reason(manifest: dict[str, Any]) -> str:
    choice = manifest.get("quantization_choice")
    return f" ({choice['reason']})" if choice else ""


def _split_lines(split: dict[str, Any] | None) -> list[str]:
    if not split:
        return []
    fractions = ", ".join(
        f"{name} {value:g}" for name, value in split["fractions"].items() if value
    )
    return [
        "",
        f"Validation{' and test' if split['fractions'].get('test') else ''} held out of the "
        f"train input ({fractions}), by {split['unit']}, seed {split['seed']}.",
    ]


def _training_data(manifest: dict[str, Any]) -> list[str]:
    """Which channels the model saw, and where its gating validation F1 comes from."""
    training = manifest.get("training", {})
    channels = training.get("channels", ["train"])
    lines = [f"Trained on: {', '.join(channels)}; epoch selection: "]
    lines[0] += training.get("epoch_selection", "the epoch with the best validation F1") + "."
    reference = manifest["metrics"].get("validation", {}).get("reference_model")
    if reference:
        lines[0] += (
            " Validation was trained on, so its scores here (`seen_validation*`) are not held "
            f"out. The validation F1 the gate reads, {manifest['metrics']['validation']['f1']:.4f},"
            f" is the held-out score of the reference run: {reference}."
        )
    return [*lines, ""]


def _casing_table(metrics: dict[str, Any]) -> list[str]:
    """F1 on the text as written, lowercased and uppercased (when measured)."""
    splits = [s for s in ("validation", "seen_validation", "test") if f"{s}_lower" in metrics]
    if not splits:
        return []

    def f1(key: str) -> str:
        return f"{metrics[key]['f1']:.4f}" if key in metrics else ""

    return [
        "F1 by the casing of the text (the same text as written, lowercased, uppercased):",
        "",
        "| text | " + " | ".join(splits) + " |",
        "|---" * (len(splits) + 1) + "|",
        *[
            f"| {row} | " + " | ".join(f1(split + suffix) for split in splits) + " |"
            for row, suffix in (
                ("as written", ""),
                ("lowercased", "_lower"),
                ("uppercased", "_upper"),
            )
        ],
        "",
    ]


def _confusion_table(confusion: dict[str, dict[str, int]]) -> list[str]:
    columns = sorted({c for row in confusion.values() for c in row})
    return [
        "| gold \\ predicted | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        *[
            f"| {row} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |"
            for row, counts in confusion.items()
        ],
    ]


# Figures are drawn with matplotlib's object API, which renders to files without pyplot's
# global state or a display backend (containers have no display).


def _plot_curve(path: Path, history: Sequence[EpochRecord]) -> None:
    curve_figure(history).savefig(path, dpi=100)


def curve_figure(history: Sequence[EpochRecord]) -> Figure:
    """Train loss and validation F1 per epoch. F1's axis runs to 1 from a tenth below the
    lowest value and the loss starts at 0, so a single epoch is a readable point rather
    than a dot in a range magnified around it; the epoch axis shows whole epochs, and each
    F1 is written by its point."""
    epochs = [h.epoch for h in history]
    f1s = [h.validation["f1"] for h in history]
    fig = Figure(figsize=(6, 3.5))
    loss_axis = fig.subplots()
    loss_axis.plot(epochs, [h.train_loss for h in history], "o-", color="tab:gray")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("train loss", color="tab:gray")
    loss_axis.set_ylim(bottom=0)
    loss_axis.set_xticks(epochs if len(epochs) <= 20 else epochs[:: math.ceil(len(epochs) / 20)])
    if len(epochs) == 1:
        loss_axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
    f1_axis = loss_axis.twinx()
    f1_axis.plot(epochs, f1s, "o-", color="tab:blue")
    f1_axis.set_ylabel("validation entity F1", color="tab:blue")
    f1_axis.set_ylim(max(0.0, math.floor((min(f1s) - 0.05) * 10) / 10), 1)
    if len(epochs) <= 20:
        for epoch, f1 in zip(epochs, f1s, strict=True):
            f1_axis.annotate(
                f"{f1:.3f}", (epoch, f1), textcoords="offset points", xytext=(0, 6),
                ha="center", fontsize=8, color="tab:blue",
            )  # fmt: skip
    fig.tight_layout()
    return fig


def _plot_confusion(path: Path, confusion: dict[str, dict[str, int]]) -> None:
    rows = list(confusion)
    columns = sorted({c for row in confusion.values() for c in row})
    values = [[confusion[r].get(c, 0) for c in columns] for r in rows]
    fig = Figure(figsize=(1.2 * len(columns) + 2, 0.8 * len(rows) + 1.5))
    axis = fig.subplots()
    axis.imshow(values, cmap="Blues")
    axis.set_xticks(range(len(columns)), columns, rotation=30)
    axis.set_yticks(range(len(rows)), rows)
    axis.set_xlabel("predicted")
    axis.set_ylabel("gold")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
