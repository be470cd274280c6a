"""Manage the S3 model store from a shell; every command prints JSON.

    python -m nerkit.models_cli list --uri s3://my-bucket/models
    python -m nerkit.models_cli publish --bucket my-bucket --prefix models build/model.tar.gz
    python -m nerkit.models_cli rollback --uri s3://my-bucket/models [--to VERSION]

Errors print ``{"error": "..."}`` on stderr and exit 1. A thin layer over ``ModelStore``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nerkit.artifact import ArtifactError
from nerkit.store import TARBALL, ModelStore

Command = Callable[[ModelStore, argparse.Namespace], Any]


def _list(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    pointer = store.live()
    return {
        "uri": store.uri,
        "live": pointer.version if pointer else None,
        "versions": [asdict(info) for info in store.versions()],
    }


def _upload(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    version = store.upload(args.tarball)
    return {"version": version, "uri": f"s3://{store.bucket}/{store.key(version, TARBALL)}"}


def _publish(store: ModelStore, args: argparse.Namespace) -> dict[str, Any]:
    return asdict(store.set_live(store.upload(args.tarball)))


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
    where.add_argument("--prefix", default="", help="key prefix under --bucket")

    parser = argparse.ArgumentParser(
        prog="python -m nerkit.models_cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, run: Command, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[where], help=text)
        sub.set_defaults(run=run)
        return sub

    add("list", _list, "versions, oldest first, and which one is LIVE")
    add("upload", _upload, "store a model.tar.gz as a new version").add_argument(
        "tarball", type=Path
    )
    add("publish", _publish, "upload a model.tar.gz, then make it LIVE").add_argument(
        "tarball", type=Path
    )
    add("rollback", _rollback, "move LIVE back").add_argument(
        "--to", help="version to make LIVE (default: the pointer's previous one)"
    )
    add("live", _live, "show the LIVE pointer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.uri and args.prefix:
        parser.error("--prefix goes with --bucket; put the prefix in --uri instead")
    run: Command = args.run
    try:
        store = ModelStore.from_uri(args.uri) if args.uri else ModelStore(args.bucket, args.prefix)
        result = run(store, args)
    except ArtifactError as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
