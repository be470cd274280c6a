"""The SageMaker training job, top to bottom: arguments, data, base model, training, export
with the quantization choice, served evaluation, the artifact.

The job reads and writes SageMaker's directory contract::

    /opt/ml/input/config/hyperparameters.json   hyperparameters (every value a string)
    /opt/ml/input/data/<channel>/               channels: train, validation, optional test
    /opt/ml/checkpoints/                        resumable state (spot interruptions)
    /opt/ml/model/                              the model artifact (SageMaker tars it)
    /opt/ml/output/failure                      one paragraph on why the job failed
    /opt/ml/output/data/                        extra outputs (plots, metrics.json)

The root is ``NERKIT_ML_ROOT`` (default ``/opt/ml``) so the same code runs locally and in
tests against a temporary directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerkit.exit_codes import ExitCode
from nerkit.labels import bio_labels
from nerkit.training.base_model import resolve_base_model, write_fast_tokenizer
from nerkit.training.card import CARD, write_card
from nerkit.training.data import Example, entity_types, load_channel
from nerkit.training.encode import load_tokenizer
from nerkit.training.export import build_artifact
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.manifest import build_manifest
from nerkit.training.quantization import export_and_choose
from nerkit.training.served import engine_confusion, served_metrics
from nerkit.training.train import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @classmethod
    def from_env(cls) -> JobPaths:
        return cls(Path(os.environ.get("NERKIT_ML_ROOT", "/opt/ml")))

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output_data(self) -> Path:
        return self.root / "output" / "data"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


@dataclass(frozen=True)
class JobData:
    """The channels, restricted to the entity types the model will predict."""

    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def main() -> int:
    """Container entrypoint: run the job, turn any failure into SageMaker's failure file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    paths = JobPaths.from_env()
    try:
        run_job(paths)
    except Exception as exc:  # the job's last line of defence: report, never hang
        traceback.print_exc()
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(f"{type(exc).__name__}: {exc}\n")
        return ExitCode.ERROR
    return ExitCode.OK


def run_job(paths: JobPaths) -> dict[str, Any]:
    """Arguments -> data -> train -> export and choose -> evaluate -> write the artifact."""
    # 1. Arguments.
    raw = json.loads(paths.hyperparameters.read_text()) if paths.hyperparameters.exists() else {}
    hp = Hyperparameters.from_strings(raw)
    log.info("hyperparameters: %s", hp.as_strings())

    # 2. Data.
    data = load_data(paths, hp)

    work = Path(tempfile.mkdtemp(prefix="nerkit-job-"))
    try:
        # 3. Base model and the tokenizer serving will use.
        base_dir = resolve_base_model(hp.base_model)
        tokenizer_json = work / "tokenizer.json"
        write_fast_tokenizer(base_dir, tokenizer_json)
        tokenizer = load_tokenizer(tokenizer_json)

        # 4. Train (best epoch on validation F1, checkpoints for spot restarts).
        result = train(
            hp,
            base_dir,
            tokenizer,
            data.labels,
            data.train,
            data.validation,
            checkpoint_dir=paths.checkpoints,
        )

        # 5. Export to ONNX; keep int8 only if the engine measures it within the F1 budget.
        choice = export_and_choose(result, hp, tokenizer_json, work, data.validation)

        # 6. Evaluate the chosen artifact as users get it: raw text through the engine.
        engine = choice.chosen.engine()
        quantized = choice.chosen is not choice.fp32
        served = {
            "validation": choice.chosen.scores,
            "validation_fp32": choice.fp32.scores,
            **served_metrics(
                engine,
                data.validation,
                data.test,
                fp32_engine=choice.fp32.engine() if quantized and data.test else None,
            ),
        }
        confusion = engine_confusion(engine, data.validation)
        manifest = build_manifest(
            hp,
            base_dir,
            choice.chosen.quantization,
            served,
            result,
            {"train": data.train, "validation": data.validation, "test": data.test},
        )

        # 7. Write the artifact where SageMaker collects it; card and plots go to output/data.
        paths.output_data.mkdir(parents=True, exist_ok=True)
        write_card(paths.output_data, manifest, result.history, confusion)
        _empty_dir(paths.model_dir)
        final = build_artifact(
            paths.model_dir,
            onnx_path=choice.chosen.directory / "model.onnx",
            tokenizer_json=tokenizer_json,
            manifest=manifest,
            extra_files=[paths.output_data / CARD],
            optimize=True,
        )
        (paths.output_data / "metrics.json").write_text(json.dumps(final["metrics"], indent=2))
        log.info(
            "artifact written to %s: validation F1 %.4f (%s)",
            paths.model_dir,
            final["metrics"]["validation"]["f1"],
            choice.chosen.quantization,
        )
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_data(paths: JobPaths, hp: Hyperparameters) -> JobData:
    """Read the channels; the model predicts ``entity_types`` or every type of the train set."""
    options: dict[str, Any] = {"format": hp.data_format or None, "label_map": hp.label_mapping}
    train_examples = load_channel(paths.channel("train"), **options)
    validation = load_channel(paths.channel("validation"), **options)
    test_dir = paths.channel("test")
    test = load_channel(test_dir, **options) if test_dir.is_dir() else []
    types = hp.entity_type_list or entity_types(train_examples)
    if not types:
        raise ValueError("the training data holds no entities: nothing to learn")
    data = JobData(
        labels=bio_labels(types),
        train=_only_types(train_examples, set(types)),
        validation=_only_types(validation, set(types)),
        test=_only_types(test, set(types)),
    )
    log.info(
        "data: %d train, %d validation, %d test sentences; labels %s",
        len(data.train),
        len(data.validation),
        len(data.test),
        data.labels,
    )
    return data


def _only_types(examples: list[Example], types: set[str]) -> list[Example]:
    """Drop gold spans of types the model does not predict (given ``entity_types``)."""
    return [
        ex
        if all(s.label in types for s in ex.spans)
        else Example(
            ex.text, tuple(s for s in ex.spans if s.label in types), ex.document, ex.source
        )
        for ex in examples
    ]


def _empty_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


if __name__ == "__main__":
    sys.exit(main())
