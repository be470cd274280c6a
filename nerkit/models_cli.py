"""Manage the S3 model store from a shell.

    nerkit-models list --uri s3://my-bucket/models [--json]
    nerkit-models list --local        # the local S3 of a running `make run` (--port PORT)
    nerkit-models publish --uri s3://my-bucket/models build/model.tar.gz --min-f1 0.85 \\
        --must-beat-live
    nerkit-models rollback --uri s3://my-bucket/models [--to VERSION]

``list`` prints a table (``--json``: JSON); the other commands print JSON.
``publish`` goes through the quality gate (``nerkit.publish``, the same rule as
``nerkit-train train --publish`` and the training pipeline): it prints
``{"gate": ..., "published": ..., "live": ...}`` (``live``: the LIVE pointer after the call,
unchanged when refused) and exits 3 when the gate refuses the model (uploaded, kept for
inspection, not LIVE).
``upload`` only stores a version, which never serves until published. ``rollback`` is the one
way to move LIVE without the gate: back to the previous version, or ``--to`` any stored one.
LIVE remembers the versions that were live before it, so repeated rollbacks walk back
(``ModelStore.rollback``, which the admin API's ``PUT /v1/models/live`` uses too).

Errors print ``{"error": "..."}`` on stderr and exit 1, usage errors exit 2 (the scheme of
every nerkit command line, ``nerkit.exit_codes``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nerkit.cli_text import plain
from nerkit.engine import trial_run
from nerkit.errors import ModelError
from nerkit.exit_codes import ExitCode
from nerkit.publish import publish, publish_report
from nerkit.store import TARBALL, ModelStore, VersionInfo
from nerkit.store.local import DEFAULT_PORT, use_announced


class _GateRefused(Exception):
    """The gate kept the model from going live; ``report`` is what to print."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__("the gate refused the model")
        self.report = report


Command = Callable[[ModelStore, argparse.Namespace], Any]


def _list(store: ModelStore, args: argparse.Namespace) -> dict[str, Any] | str:
    pointer = store.live()
    live = pointer.version if pointer else None
    versions = store.versions()
    if args.json:
        return {"uri": store.uri, "live": live, "versions": [asdict(info) for info in versions]}
    return version_table(store.uri, live, versions)


def version_table(uri: str, live: str | None, versions: Sequence[VersionInfo]) -> str:
    """The versions as a text table, oldest first, LIVE marked."""
    rows = [("LIVE", "VERSION", "CREATED", "VALIDATION F1", "TEST F1")]
    for info in versions:
        rows.append(
            (
                "*" if info.version == live else "",
                info.version,
                info.created_at or "-",
                _f1(info.metrics, "validation"),
                _f1(info.metrics, "test"),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    count = f"{len(versions)} version{'' if len(versions) == 1 else 's'}"
    state = f"LIVE: {live}" if live else "nothing LIVE"
    return "\n".join([f"{uri}: {count}, {state}", *(lines if versions else [])])


def _f1(metrics: dict[str, Any], split: str) -> str:
    value = metrics.get(split, {}).get("f1") if isinstance(metrics.get(split), dict) else None
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _upload(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    version = store.upload(args.tarball)
    return {"version": version, "uri": f"s3://{store.bucket}/{store.key(version, TARBALL)}"}


def _publish(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    decision, pointer = publish(
        store,
        args.tarball,
        min_f1=args.min_f1,
        must_beat_live=args.must_beat_live,
        trial_run=trial_run,
    )
    report = publish_report(store, decision, pointer)
    if not decision.passed:
        raise _GateRefused(report)
    return report


def _rollback(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    return asdict(store.rollback(args.to))


def _live(store: ModelStore, args: argparse.Namespace) -> dict[str, Any] | None:
    pointer = store.live()
    return asdict(pointer) if pointer else None


def _parser() -> argparse.ArgumentParser:
    where = argparse.ArgumentParser(add_help=False)
    target = where.add_mutually_exclusive_group(required=True)
    target.add_argument("--uri", help="s3://bucket/prefix of the model store")
    target.add_argument("--bucket", help="bucket of the model store (with --prefix)")
    target.add_argument(
        "--local",
        action="store_true",
        help="the local S3 store of a running `make run` (no AWS settings needed)",
    )
    where.add_argument("--prefix", default="", help="key prefix under --bucket")
    where.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", DEFAULT_PORT)),
        help=f"with --local: the port `make run` serves on (default: $PORT or {DEFAULT_PORT})",
    )

    parser = argparse.ArgumentParser(
        prog="nerkit-models",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, run: Command, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[where], help=text)
        sub.set_defaults(run=run)
        return sub

    add("list", _list, "versions, oldest first, and which one is LIVE").add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    add("upload", _upload, "store a model.tar.gz as a new version (not LIVE)").add_argument(
        "tarball", type=Path
    )
    gated = add("publish", _publish, "upload a model.tar.gz; make it LIVE if it passes the gate")
    gated.add_argument("tarball", type=Path)
    gated.add_argument(
        "--min-f1", type=float, default=0.0, help="gate: minimum validation F1 (default 0)"
    )
    gated.add_argument(
        "--must-beat-live", action="store_true", help="gate: beat the LIVE model's validation F1"
    )
    add(
        "rollback", _rollback, "move LIVE back (no gate: the way out of a bad release)"
    ).add_argument("--to", help="version to make LIVE (default: the pointer's previous one)")
    add("live", _live, "show the LIVE pointer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.uri and args.prefix:
        parser.error("--prefix goes with --bucket; put the prefix in --uri instead")
    run: Command = args.run
    try:
        store = _store(args)
        result = run(store, args)
    except _GateRefused as refused:
        print(json.dumps(refused.report, indent=2, sort_keys=True))
        return ExitCode.GATE_REFUSED
    except ModelError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return ExitCode.ERROR
    print(result if isinstance(result, str) else json.dumps(result, indent=2, sort_keys=True))
    return ExitCode.OK


def _store(args: argparse.Namespace) -> ModelStore:
    if args.local:
        return ModelStore.from_uri(use_announced(args.port))
    if args.uri:
        return ModelStore.from_uri(args.uri)
    return ModelStore(args.bucket, args.prefix)


if __name__ == "__main__":
    raise SystemExit(main())
