"""``nerkit-train``: train and evaluate models from the command line.

``train`` runs the very entrypoint the SageMaker container runs (``nerkit.training.job``),
against a local directory laid out like ``/opt/ml``: channels may be local paths or
``s3://`` URIs (downloaded first, as SageMaker does); ``--publish`` then uploads the model
through the quality gate. Publishing an existing artifact and rolling back are model-store
operations: ``nerkit-models publish`` / ``nerkit-models rollback``.

Exit status (``nerkit.exit_codes``): 0 ok, 1 error, 2 usage, 3 the gate refused the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nerkit import artifact
from nerkit.cli_text import plain
from nerkit.decoding import AGGREGATIONS, DECODINGS
from nerkit.engine import NerEngine, trial_run
from nerkit.errors import ModelError
from nerkit.exit_codes import ExitCode
from nerkit.publish import gate_metric, publish, publish_report
from nerkit.split_options import add_split_arguments, split_arguments_as_hyperparameters
from nerkit.store import ModelStore, new_s3_client, open_source, parse_s3_uri
from nerkit.training.data import DataError, Example, entity_types, load_examples
from nerkit.training.hyperparameters import parse_label_map
from nerkit.training.recasing import parse_casings
from nerkit.training.served import casing_scores, engine_scores, join_documents

log = logging.getLogger("nerkit.train")

HP_HELP = "a hyperparameter, repeatable (names, defaults: nerkit/training/hyperparameters.py)"
EXAMPLES = """examples:
  nerkit-train train --train data/ner.csv --split 0.1,0.1 --out build/my-model
  nerkit-train train --train data/train.txt --validation data/valid.txt --out build/m \\
      --hp epochs=3 --publish s3://BUCKET/models/ner --min-f1 0.85
  nerkit-train evaluate --model build/my-model/model.tar.gz --data data/test.txt
"""

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO / "models" / "default"
CONLL_DIR = REPO.parent / "shared" / "datasets" / "conll2003"
# The default English model's recipe (see models/default/MODEL_CARD.md for its results).
DEFAULT_HYPERPARAMETERS = {
    "name": "conll03-en",
    # Casing augmentation (README.md "The default model": not yet tuned by experiment).
    "lowercase_share": "0.3",
    "uppercase_share": "0.15",
    "learning_rate": "1e-4",
    "batch_size": "16",
    "max_seq_length": "128",
    "casing": "true",
    "context": "true",
    "seed": "13",
}
# Trained in stages: each resumes the previous stage's checkpoints with more epochs, which
# re-sizes the learning-rate schedule, so the rate rises again and decays to zero by the
# stage's end (warm restarts; README.md has what each stage gave).
DEFAULT_EPOCH_STAGES = ("4", "7", "12", "16")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ModelError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nerkit-train",
        description=plain(__doc__),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(required=True, dest="command")

    train = commands.add_parser("train", help="train a model (the SageMaker entrypoint, locally)")
    train.add_argument("--train", required=True, help="file, directory or s3:// prefix")
    train.add_argument(
        "--validation", help="file, directory or s3:// prefix (or --split to hold out of --train)"
    )
    train.add_argument("--test", help="file, directory or s3:// prefix")
    add_split_arguments(train)
    train.add_argument("--out", required=True, type=Path, help="where model.tar.gz goes")
    train.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=HP_HELP,
    )
    train.add_argument("--work", type=Path, help="job directory (kept; enables resume)")
    train.add_argument(
        "--reference",
        metavar="MODEL",
        help="the same recipe's model trained without validation (model.tar.gz, directory or "
        "s3:// URI): its validation F1 becomes this run's gating metric (with --hp "
        "train_channels=train,validation)",
    )
    _publish_options(train)
    train.set_defaults(func=cmd_train)

    default = commands.add_parser(
        "train-default", help="train the default model's recipe (replaces models/default)"
    )
    default.add_argument(
        "--data", type=Path, default=CONLL_DIR, help="CoNLL-2003 directory (train/valid/test.txt)"
    )
    default.add_argument(
        "--work",
        type=Path,
        default=REPO / "runs" / "default",
        help="the train-only run's job directory, kept between stages (default: runs/default)",
    )
    default.add_argument(
        "--release-work",
        type=Path,
        default=REPO / "runs" / "default-release",
        help="the release run's job directory (default: runs/default-release)",
    )
    default.add_argument(
        "--release",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the train-only stages, train the released model on train + validation "
        "(--no-release: the train-only model becomes the default model)",
    )
    default.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=HP_HELP,
    )
    default.set_defaults(func=cmd_train_default)

    evaluate = commands.add_parser("evaluate", help="entity F1 of an artifact on a dataset")
    evaluate.add_argument("--model", required=True, help="model.tar.gz, directory or s3:// URI")
    evaluate.add_argument(
        "--data", required=True, type=Path, help="labelled file (any training data format)"
    )
    evaluate.add_argument("--aggregation", default="simple", choices=AGGREGATIONS)
    evaluate.add_argument("--decoding", default="viterbi", choices=DECODINGS)
    evaluate.add_argument("--documents", action="store_true", help="whole documents as one text")
    evaluate.add_argument(
        "--label-map",
        metavar="JSON",
        help='rename the data\'s entity types ("O" drops one), e.g. \'{"geo": "LOC"}\' '
        "(default: the label_map the model was trained with)",
    )
    evaluate.add_argument(
        "--casing",
        type=_casings,
        metavar="as-written,lower,upper",
        help="score the text as written, lowercased and/or uppercased (comma-separated): "
        "the report then has one set of scores per casing under 'casing'",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    return parser


def _publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--publish",
        dest="uri",
        metavar="S3_URI",
        help="then publish to this model store (s3://bucket/prefix) if it passes the gate",
    )
    parser.add_argument("--min-f1", type=float, default=0.0, help="gate: minimum validation F1")
    parser.add_argument("--must-beat-live", action="store_true", help="gate: beat the live F1")


def cmd_train(args: argparse.Namespace) -> int:
    hyperparameters = {**_parse_hp(args.hp), **split_arguments_as_hyperparameters(args)}
    if args.reference:
        hyperparameters = {**hyperparameters, **_reference_hyperparameters(args.reference)}
    channels = {"train": args.train, "validation": args.validation, "test": args.test}
    if args.work:
        tar_path = run_local_job(args.work, channels, hyperparameters, args.out)
        log.info(
            "work directory %s kept (%s: checkpoints to resume or extend this run); delete it "
            "when done",
            args.work,
            _megabytes(_tree_bytes(args.work)),
        )
        work: str | None = str(args.work)
    else:
        # Without --work nothing is kept: the job directory (checkpoints of hundreds of MB)
        # goes whether the run succeeds or fails.
        with tempfile.TemporaryDirectory(prefix="nerkit-train-") as temporary:
            tar_path = run_local_job(Path(temporary), channels, hyperparameters, args.out)
        work = None
    print(
        json.dumps(
            {
                "model": str(tar_path),
                "bytes": tar_path.stat().st_size,
                "work": work,
            }
        )
    )
    if args.uri:
        return _publish_and_report(tar_path, args)
    return ExitCode.OK


def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def cmd_train_default(args: argparse.Namespace) -> int:
    """Train on CoNLL-2003 and replace models/default/ in place (artifact, card, plots).

    First the recipe on train alone, selected on validation: ``DEFAULT_EPOCH_STAGES`` one
    after the other in ``--work``. Then the release: the same recipe and schedule on train +
    validation in ``--release-work``, the last epoch kept, gated on the first run's
    validation F1. Stages already trained in a work directory are not trained again; with
    ``--hp epochs=N`` each run is one stage of N epochs.
    """
    channels = {name: str(args.data / f"{name}.txt") for name in ("train", "test")}
    channels["validation"] = str(args.data / "valid.txt")
    recipe = {**DEFAULT_HYPERPARAMETERS, **_parse_hp(args.hp)}
    stages = [recipe["epochs"]] if "epochs" in recipe else DEFAULT_EPOCH_STAGES
    train_only_out = args.work / "artifact" if args.release else DEFAULT_MODEL_DIR
    tar_path = _run_stages(args.work, channels, recipe, stages, train_only_out)
    if args.release:
        release = {
            **recipe,
            "train_channels": "train,validation",
            **_reference_hyperparameters(str(tar_path)),
        }
        tar_path = _run_stages(args.release_work, channels, release, stages, DEFAULT_MODEL_DIR)
    print(json.dumps({"model": str(tar_path)}))
    return ExitCode.OK


def _run_stages(
    work: Path,
    channels: dict[str, str | None],
    hyperparameters: dict[str, str],
    stages: Sequence[str],
    out: Path,
) -> Path:
    """One run per stage in ``work``, each resuming the previous one's checkpoints."""
    for epochs in stages:
        tar_path = run_local_job(work, channels, {**hyperparameters, "epochs": epochs}, out)
    return tar_path


def _reference_hyperparameters(model: str) -> dict[str, str]:
    """Gate a train + validation run on ``model``'s held-out validation F1."""
    with tempfile.TemporaryDirectory(prefix="nerkit-reference-") as cache:
        manifest = open_source(model, Path(cache)).fetch().manifest
    channels = manifest.get("training", {}).get("channels", ["train"])
    if "validation" in channels:
        raise ValueError(
            f"reference {manifest['version']} was trained on validation: its validation F1 "
            "is not held out (give the run of the same recipe on train alone)"
        )
    return {
        "reference_validation_f1": str(gate_metric(manifest)),
        "reference_model": f"{manifest['version']}, trained on {', '.join(channels)}",
    }


def run_local_job(
    work: Path, channels: dict[str, str | None], hyperparameters: dict[str, str], out: Path
) -> Path:
    """Lay out ``work`` like /opt/ml, run the job, pack the artifact into ``out``."""
    # Imported here: the job imports torch, which `evaluate` and `--help` do not need.
    from nerkit.training.job import run_job
    from nerkit.training.paths import JobPaths

    paths = JobPaths(work)
    for name, source in channels.items():
        if source:
            _stage_channel(source, paths.channel(name))
        else:  # a channel of an earlier run in this work directory is not this run's
            shutil.rmtree(paths.channel(name), ignore_errors=True)
    paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
    paths.hyperparameters.write_text(json.dumps(hyperparameters, indent=2))
    try:
        run_job(paths)
    except DataError as exc:
        # The job names its channel directories; the user knows the paths they gave.
        message = str(exc)
        for name, source in channels.items():
            if source:
                message = message.replace(str(paths.channel(name)), f"--{name} {source}")
        raise DataError(message) from None
    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / "model.tar.gz"
    artifact.pack(paths.model_dir, tar_path)
    for extra in sorted(paths.output_data.glob("*")):
        if extra.suffix in (".md", ".png"):
            shutil.copy(extra, out / extra.name)
    manifest = artifact.read_manifest(paths.model_dir)
    log.info(
        "model: %s (%s), validation F1 %.4f, quantization %s: %s",
        tar_path,
        _megabytes(tar_path.stat().st_size),
        manifest["metrics"]["validation"]["f1"],
        manifest["quantization"],
        manifest["quantization_choice"]["reason"],
    )
    return tar_path


def _stage_channel(source: str, channel: Path) -> None:
    """Make ``channel`` hold the data: a link to a local path, or a download of an S3 prefix."""
    shutil.rmtree(channel, ignore_errors=True)
    channel.mkdir(parents=True)
    if source.startswith("s3://"):
        bucket, prefix = parse_s3_uri(source)
        s3 = new_s3_client()
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
            if not obj["Key"].endswith("/")
        ]
        if not keys:
            raise FileNotFoundError(f"no objects under {source}")
        for key in keys:
            relative = key[len(prefix) :].lstrip("/") or Path(key).name
            target = (channel / relative).resolve()
            if channel.resolve() not in target.parents:
                raise ValueError(f"refusing S3 key outside the channel: {key}")
            target.parent.mkdir(parents=True, exist_ok=True)
            # The store's botocore client has no transfer manager; datasets are small files.
            with target.open("wb") as out:
                shutil.copyfileobj(s3.get_object(Bucket=bucket, Key=key)["Body"], out)
        return
    path = Path(source).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no such data: {source}")
    os.symlink(path, channel / path.name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nerkit-eval-") as cache:
        loaded = open_source(str(args.model), Path(cache)).fetch()
        engine = NerEngine.load(loaded.path, threads=os.cpu_count() or 1)
        label_map = _evaluation_label_map(args.label_map, loaded.manifest)
        examples = load_examples(args.data, label_map=label_map)
        _check_types_overlap(_model_types(loaded.manifest), examples, label_map)
        if args.documents:
            examples = join_documents(examples)
        options = {"aggregation": args.aggregation, "decoding": args.decoding}
        if args.casing:
            scores = {"casing": casing_scores(engine, examples, args.casing, **options)}
        else:
            scores = engine_scores(engine, examples, **options)
    report = {"model": loaded.version, "data": str(args.data), "label_map": label_map}
    print(json.dumps({**report, **scores}, indent=2))
    return ExitCode.OK


def _evaluation_label_map(given: str | None, manifest: dict[str, Any]) -> dict[str, str] | None:
    """``--label-map``, else the one the model was trained with (its manifest's)."""
    if given is not None:
        return parse_label_map(given)
    trained_with = manifest.get("hyperparameters", {}).get("label_map", "")
    mapping = parse_label_map(trained_with)
    if mapping:
        log.info("gold types renamed with the model's label_map: %s", trained_with)
    return mapping


def _model_types(manifest: dict[str, Any]) -> set[str]:
    return {label[2:] for label in manifest["labels"] if label != "O"}


def _check_types_overlap(
    model_types: set[str], examples: list[Example], label_map: dict[str, str] | None
) -> None:
    """Refuse a score that could only be 0 (no type in common); warn on gold types the
    model never predicts (each of their entities counts as missed)."""
    gold_types = set(entity_types(examples))
    if gold_types and not gold_types & model_types:
        raise ValueError(
            f"the data's entity types ({', '.join(sorted(gold_types))}) and the model's "
            f"({', '.join(sorted(model_types))}) have none in common"
            f"{' after label_map ' + json.dumps(label_map) if label_map else ''}; rename the "
            """data's types with --label-map '{"geo": "LOC", ...}'"""
        )
    unknown = sorted(gold_types - model_types)
    if unknown:
        log.warning(
            "the model does not predict %s: their gold entities count as missed "
            '(rename or drop them with --label-map, e.g. \'{"%s": "O"}\')',
            ", ".join(unknown),
            unknown[0],
        )


def _publish_and_report(tar_path: Path, args: argparse.Namespace) -> int:
    store = ModelStore.from_uri(args.uri)
    decision, pointer = publish(
        store,
        tar_path,
        min_f1=args.min_f1,
        must_beat_live=args.must_beat_live,
        trial_run=trial_run,
    )
    print(json.dumps(publish_report(store, decision, pointer)))
    return ExitCode.OK if decision.passed else ExitCode.GATE_REFUSED


def _casings(value: str) -> list[str]:
    try:
        return parse_casings(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_hp(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--hp takes KEY=VALUE, got {pair!r}")
        values[key.strip()] = value
    return values


if __name__ == "__main__":
    sys.exit(main())
