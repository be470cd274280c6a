"""The manifest a training job writes next to the model: how to serve it and how it was made.

``nerkit.artifact`` checks the fields every artifact needs; the engine reads the serving
fields (:func:`serving_fields`); the rest (metrics, hyperparameters, data, software) is the
training record the model card and the quality gate read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from nerkit.artifact import sha256_file
from nerkit.features import CASING_SCHEME
from nerkit.training.base_model import describe_base_model
from nerkit.training.data import Example, fingerprint
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.served import EVALUATION
from nerkit.training.train import TrainResult

# The packages whose versions decide what a model computes.
SOFTWARE = ("torch", "transformers", "onnxruntime", "tokenizers")


def serving_fields(
    labels: Sequence[str],
    *,
    max_seq_length: int,
    casing: bool,
    transitions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest fields the serving engine reads to run the model."""
    return {
        "labels": list(labels),
        "max_seq_length": max_seq_length,
        "do_lower_case": True,
        "casing": CASING_SCHEME if casing else None,
        "transitions": transitions,
    }


def result_serving_fields(hp: Hyperparameters, result: TrainResult) -> dict[str, Any]:
    """:func:`serving_fields` of a training run."""
    return serving_fields(
        result.labels,
        max_seq_length=hp.max_seq_length,
        casing=hp.casing,
        transitions=result.transitions,
    )


def untrained_manifest(
    *, name: str, version: str, serving: dict[str, Any], quantization: str
) -> dict[str, Any]:
    """A manifest with no training record: enough to load and serve the model (candidates)."""
    return {
        "name": name,
        "version": version,
        **serving,
        "quantization": quantization,
        "metrics": {},
    }


def build_manifest(
    hp: Hyperparameters,
    base_dir: Path,
    quantization_choice: dict[str, Any],
    served: dict[str, Any],
    result: TrainResult,
    data: dict[str, list[Example]],
    *,
    split: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The released model's manifest; ``quantization_choice``: what export kept and why
    (``Choice.record``); ``served`` are its metrics through the engine;
    ``split``: how validation/test were held out of the train input (``data.split``)."""
    now = datetime.now(UTC)
    return {
        "name": hp.name,
        "version": f"{now:%Y%m%dT%H%M%SZ}-{sha256_file(base_dir / 'config.json')[:4]}"
        f"{fingerprint(data['train'])[:4]}",
        "created_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "base_model": describe_base_model(hp.base_model),
        **result_serving_fields(hp, result),
        "quantization": quantization_choice["chosen"],
        "quantization_choice": quantization_choice,
        "metrics": {
            **(_gated_on_reference(hp, served) if hp.trains_on_validation else served),
            "evaluation": EVALUATION,
            "best_epoch": result.best_epoch,
            "history": [
                {"epoch": r.epoch, "train_loss": r.train_loss, "validation_f1": r.validation["f1"]}
                for r in result.history
            ],
        },
        "hyperparameters": hp.as_strings(),
        "training": {
            "seconds": round(result.train_seconds, 1),
            "hardware": _hardware(),
            "channels": hp.train_channel_list,
            "epoch_selection": (
                "none: a fixed schedule, the last epoch kept (validation was trained on)"
                if hp.trains_on_validation
                else "the epoch with the best validation F1"
            ),
        },
        "data": {
            **{
                name: {"sentences": len(examples), "sha256": fingerprint(examples)}
                for name, examples in data.items()
                if examples
            },
            **({"split": split} if split else {}),
        },
        "software": {pkg: metadata.version(pkg) for pkg in SOFTWARE},
    }


def _gated_on_reference(hp: Hyperparameters, served: dict[str, Any]) -> dict[str, Any]:
    """Metrics of a model trained on validation: its scores there become ``seen_*`` (not
    held out), and ``validation.f1``, the gate's metric, is the reference run's held-out F1."""
    return {
        "validation": {"f1": hp.reference_validation_f1, "reference_model": hp.reference_model},
        **{(f"seen_{k}" if k.startswith("validation") else k): v for k, v in served.items()},
    }


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU x{os.cpu_count()} ({torch.get_num_threads()} torch threads)"
