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

import dataclasses
import json
import logging
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
from nerkit.training.device import training_device
from nerkit.training.encode import load_tokenizer
from nerkit.training.export import build_artifact
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.manifest import build_manifest
from nerkit.training.paths import JobPaths
from nerkit.training.quantization import export_and_choose
from nerkit.training.served import engine_confusion, served_metrics
from nerkit.training.split import first_sentences, split_examples
from nerkit.training.train import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobData:
    """The channels, restricted to the entity types the model will predict."""

    labels: list[str]
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    split: dict[str, Any] | None  # how validation/test were held out of train, if they were


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
    # Before any data is read: a GPU instance whose CUDA does not work fails now, not later.
    log.info("training device: %s", training_device(paths))

    # 2. Data.
    data = load_data(paths, hp)

    work = Path(tempfile.mkdtemp(prefix="nerkit-job-"))
    try:
        # 3. Base model and the tokenizer serving will use.
        base_dir = resolve_base_model(hp.base_model)
        tokenizer_json = work / "tokenizer.json"
        write_fast_tokenizer(base_dir, tokenizer_json)
        tokenizer = load_tokenizer(tokenizer_json)

        # 4. Train (best epoch on validation F1, or a fixed schedule when validation is
        # trained on; checkpoints for spot restarts).
        result = train(
            hp,
            base_dir,
            tokenizer,
            data.labels,
            training_examples(data, hp),
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
            choice.record(),
            served,
            result,
            {"train": data.train, "validation": data.validation, "test": data.test},
            split=data.split,
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
            "model written: validation F1 %.4f, quantization %s",
            final["metrics"]["validation"]["f1"],
            choice.chosen.quantization,
        )
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_data(paths: JobPaths, hp: Hyperparameters) -> JobData:
    """Read the channels (or split train, ``validation_split``); the model predicts
    ``entity_types`` or every type of the train set."""
    options: dict[str, Any] = {"format": hp.data_format or None, "label_map": hp.label_mapping}

    def channel(name: str) -> list[Example]:
        examples = load_channel(paths.channel(name), **options)
        return first_sentences(examples, hp.max_sentences, name)

    given = {name for name in ("validation", "test") if paths.channel(name).is_dir()}
    split_record = None
    if hp.validation_split > 0:
        held_out = {"validation", *(["test"] if hp.test_split > 0 else [])}
        if given & held_out:
            raise ValueError(
                f"both a {'/'.join(sorted(given & held_out))} channel and validation_split/"
                "test_split: give the held-out data or the fractions, not both"
            )
        split = split_examples(
            channel("train"), validation=hp.validation_split, test=hp.test_split, seed=hp.seed
        )
        train_examples, validation, test = split.train, split.validation, split.test
        split_record = split.record
        if "test" in given:
            test = channel("test")
    elif "validation" not in given:
        raise ValueError(
            "no validation data: give a validation channel (--validation), or hold out part "
            "of train with validation_split (--split 0.1)"
        )
    else:
        train_examples, validation = channel("train"), channel("validation")
        test = channel("test") if "test" in given else []
    types = hp.entity_type_list or entity_types(train_examples)
    if not types:
        raise ValueError("the training data holds no entities: nothing to learn")
    data = JobData(
        labels=bio_labels(types),
        train=_only_types(train_examples, set(types)),
        validation=_only_types(validation, set(types)),
        test=_only_types(test, set(types)),
        split=split_record,
    )
    log.info(
        "data: %d train, %d validation, %d test sentences; labels %s",
        len(data.train),
        len(data.validation),
        len(data.test),
        data.labels,
    )
    return data


def training_examples(data: JobData, hp: Hyperparameters) -> list[Example]:
    """The sentences trained on: those of every channel in ``train_channels``, in order.

    Documents are named by channel too, so two channels' files of the same name never run
    into one document when windows are packed.
    """
    channels = {"train": data.train, "validation": data.validation}
    if hp.train_channel_list == ["train"]:
        return data.train
    return [
        dataclasses.replace(example, document=f"{name}/{example.document}")
        for name in hp.train_channel_list
        for example in channels[name]
    ]


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
