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
from dataclasses import asdict
from pathlib import Path

from nerkit import artifact
from nerkit.decoding import AGGREGATIONS, DECODINGS
from nerkit.engine import NerEngine, trial_run
from nerkit.errors import ModelError
from nerkit.exit_codes import ExitCode
from nerkit.publish import publish
from nerkit.store import ModelStore, new_s3_client, open_source, parse_s3_uri
from nerkit.training.data import load_examples
from nerkit.training.served import engine_scores, join_documents

log = logging.getLogger("nerkit.train")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO / "models" / "default"
CONLL_DIR = REPO.parent / "shared" / "datasets" / "conll2003"
# The default English model's recipe (see models/default/MODEL_CARD.md for its results).
DEFAULT_HYPERPARAMETERS = {
    "name": "conll03-en",
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
    parser = argparse.ArgumentParser(prog="nerkit-train", description=__doc__)
    commands = parser.add_subparsers(required=True, dest="command")

    train = commands.add_parser("train", help="train a model (the SageMaker entrypoint, locally)")
    train.add_argument("--train", required=True, help="file, directory or s3:// prefix")
    train.add_argument("--validation", required=True, help="file, directory or s3:// prefix")
    train.add_argument("--test", help="file, directory or s3:// prefix")
    train.add_argument("--out", required=True, type=Path, help="where model.tar.gz goes")
    train.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--work", type=Path, help="job directory (kept; enables resume)")
    _publish_options(train)
    train.set_defaults(func=cmd_train)

    default = commands.add_parser("train-default", help="retrain the committed default model")
    default.add_argument("--data", type=Path, default=CONLL_DIR)
    default.add_argument("--work", type=Path, default=REPO / "runs" / "default")
    default.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE")
    default.set_defaults(func=cmd_train_default)

    evaluate = commands.add_parser("evaluate", help="entity F1 of an artifact on a dataset")
    evaluate.add_argument("--model", required=True, help="model.tar.gz, directory or s3:// URI")
    evaluate.add_argument("--data", required=True, type=Path)
    evaluate.add_argument("--aggregation", default="simple", choices=AGGREGATIONS)
    evaluate.add_argument("--decoding", default="viterbi", choices=DECODINGS)
    evaluate.add_argument("--documents", action="store_true", help="whole documents as one text")
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
    hyperparameters = _parse_hp(args.hp)
    work = args.work or Path(tempfile.mkdtemp(prefix="nerkit-train-"))
    channels = {"train": args.train, "validation": args.validation, "test": args.test}
    tar_path = run_local_job(work, channels, hyperparameters, args.out)
    print(json.dumps({"model": str(tar_path), "work": str(work)}))
    if args.uri:
        return _publish_and_report(tar_path, args)
    return ExitCode.OK


def cmd_train_default(args: argparse.Namespace) -> int:
    """Train on CoNLL-2003 and replace models/default/ in place (artifact, card, plots).

    Runs ``DEFAULT_EPOCH_STAGES`` one after the other in ``--work`` (stages already done
    there are not trained again), or one run when ``--hp epochs=N`` is given.
    """
    channels = {name: str(args.data / f"{name}.txt") for name in ("train", "test")}
    channels["validation"] = str(args.data / "valid.txt")
    overrides = _parse_hp(args.hp)
    stages = [overrides["epochs"]] if "epochs" in overrides else DEFAULT_EPOCH_STAGES
    for epochs in stages:
        hyperparameters = {**DEFAULT_HYPERPARAMETERS, **overrides, "epochs": epochs}
        tar_path = run_local_job(args.work, channels, hyperparameters, DEFAULT_MODEL_DIR)
    print(json.dumps({"model": str(tar_path)}))
    return ExitCode.OK


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
    paths.hyperparameters.parent.mkdir(parents=True, exist_ok=True)
    paths.hyperparameters.write_text(json.dumps(hyperparameters, indent=2))
    run_job(paths)
    out.mkdir(parents=True, exist_ok=True)
    tar_path = out / "model.tar.gz"
    artifact.pack(paths.model_dir, tar_path)
    for extra in sorted(paths.output_data.glob("*")):
        if extra.suffix in (".md", ".png"):
            shutil.copy(extra, out / extra.name)
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
            s3.download_file(bucket, key, str(target))
        return
    path = Path(source).resolve()
    if not path.exists():
        raise FileNotFoundError(f"no such data: {source}")
    os.symlink(path, channel / path.name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nerkit-eval-") as cache:
        loaded = open_source(str(args.model), Path(cache)).fetch()
        engine = NerEngine.load(loaded.path, threads=os.cpu_count() or 1)
        examples = load_examples(args.data)
        if args.documents:
            examples = join_documents(examples)
        scores = engine_scores(
            engine, examples, aggregation=args.aggregation, decoding=args.decoding
        )
    print(json.dumps({"model": loaded.version, "data": str(args.data), **scores}, indent=2))
    return ExitCode.OK


def _publish_and_report(tar_path: Path, args: argparse.Namespace) -> int:
    store = ModelStore.from_uri(args.uri)
    decision, pointer = publish(
        store,
        tar_path,
        min_f1=args.min_f1,
        must_beat_live=args.must_beat_live,
        trial_run=trial_run,
    )
    print(json.dumps({"gate": asdict(decision), "live": asdict(pointer) if pointer else None}))
    return ExitCode.OK if decision.passed else ExitCode.GATE_REFUSED


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
