"""A local S3 (moto server) holding the benchmarked model, for Lambda's cold start from S3.

The parent starts the server (``moto_server``, standard library only: the parent must not
import boto3, whose peak RSS every worker would inherit) and publishes each artifact in a
child process: ``python bench/s3_store.py SPEC.json`` uploads ``spec["model"]`` to
``spec["uri"]`` and moves LIVE to it, as ``nerkit-models publish`` does (without the gate).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BUCKET = "nerkit-bench-models"
# Throwaway credentials for moto; the workers get these and nothing else of AWS.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT_S = 120.0


def aws_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto at the local server, as a Lambda's points at S3."""
    return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL_S3": endpoint}


@contextlib.contextmanager
def moto_server(away_from: int | None = None) -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its endpoint URL. ``away_from``: a
    core the server must not run on (the workers'), when there is another one: S3 is
    another machine for a Lambda, so serving the download must not take the worker's CPU."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    others = os.sched_getaffinity(0) - {away_from}
    if others:
        os.sched_setaffinity(server.pid, others)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        server.kill()
        server.wait(timeout=10)


def publish(model: Path, uri: str) -> str:
    import boto3

    from nerkit.store import ModelStore

    store = ModelStore.from_uri(uri)
    with contextlib.suppress(boto3.client("s3").exceptions.BucketAlreadyOwnedByYou):
        boto3.client("s3").create_bucket(Bucket=store.bucket)
    version = store.upload(model)
    store.set_live(version)
    return version


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps({"version": publish(Path(spec["model"]), spec["uri"])}), flush=True)
