"""``make run``: serve the API and the page locally, loading the model from S3 as on Lambda.

For a local model (``model.tar.gz`` or an extracted model directory; default: the committed
default model) a moto S3 server stands in for S3: the artifact is published to it with
``ModelStore`` (upload, then LIVE) and the app starts with ``MODEL_URI=s3://<bucket>/<prefix>``,
so the local run walks the same load path (LIVE pointer, download, checksum, extraction) as a
Lambda cold start. An ``s3://`` model (a store prefix or a ``.tar.gz`` key) is served straight
from S3 with your own AWS credentials; no local S3 is started.

    python scripts/run_local.py [--model PATH_OR_S3_URI] [--port PORT]
    make run [MODEL=PATH_OR_S3_URI] [PORT=PORT]

Ctrl-C or SIGTERM stops uvicorn gracefully, then the moto server.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts scripts/ on the path, not the repository root.
sys.path.insert(0, str(REPO_ROOT))

import boto3  # noqa: E402
import uvicorn  # noqa: E402

from nerkit import artifact  # noqa: E402
from nerkit.api.local_gateway import local_app  # noqa: E402
from nerkit.errors import ModelError  # noqa: E402
from nerkit.store import ModelStore, parse_model_uri  # noqa: E402
from nerkit.store.local import (  # noqa: E402
    LOCAL_BUCKET,
    LOCAL_PREFIX,
    LOCAL_STORE_URI,
    announce,
    use_local_s3,
)
from scripts.local_admin import enable_admin  # noqa: E402

DEFAULT_ARTIFACT = REPO_ROOT / "models" / "default" / "model.tar.gz"
HOST = "127.0.0.1"
# moto imports every AWS service model on start; a slow shared machine can take a while.
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
SAMPLE_TEXT = "Angela Merkel met Tim Cook in Berlin."


class Shutdown(Exception):
    """SIGINT or SIGTERM arrived: unwind through the ``finally`` blocks that clean up."""


class StartupError(Exception):
    """Something the local run needs is missing or did not start; the message says what."""


def _raise_shutdown(signum: int, _frame: FrameType | None) -> None:
    raise Shutdown(signal.Signals(signum).name)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """A second Ctrl-C must not interrupt the cleanup of the first."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        "--artifact",
        dest="model",
        default=str(DEFAULT_ARTIFACT),
        help="model.tar.gz or model directory to publish to a local S3, or an s3:// URI to "
        "serve from S3 (a store prefix or a .tar.gz key; your AWS credentials) "
        f"(default: {DEFAULT_ARTIFACT.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "8080")),
        help="port of the API on 127.0.0.1 (default: $PORT or 8080)",
    )
    return parser.parse_args(argv)


def check_model(model: str) -> None:
    """Fail at once, with a hint, on a model that is not there or not a model location."""
    location = parse_model_uri(model)  # a ConfigError says what is wrong with it
    if not isinstance(location, Path) or location.exists():
        return
    if location == DEFAULT_ARTIFACT:
        raise StartupError(
            f"no default model at {location.relative_to(REPO_ROOT)}: train it with "
            "`make train-default`, or pass MODEL=path/to/model.tar.gz"
        )
    raise StartupError(f"model {model} is not a file or directory")


def check_port_free(port: int) -> None:
    """Fail before publishing anything, with a hint, instead of deep in uvicorn's startup."""
    with socket.socket() as probe:
        # As uvicorn does, so connections of an earlier run in TIME_WAIT do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            raise StartupError(
                f"port {port} on {HOST} is in use: stop what holds it or set PORT=<free port>"
            ) from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def http_status(url: str) -> int | None:
    """The status of a GET, or ``None`` while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_until(ready: Callable[[], bool], gone: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        if gone():
            raise StartupError(f"{what} stopped during startup")
        if time.monotonic() > deadline:
            raise StartupError(f"{what} did not come up within {STARTUP_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def start_moto(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto_server on a free loopback port; return the process and its endpoint."""
    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    with log_path.open("wb") as log:
        # Its own session: the terminal's Ctrl-C goes to this script only, which then stops
        # uvicorn first and moto last, instead of S3 vanishing under a running app.
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: http_status(f"{endpoint}/moto-api/") == 200,
            lambda: process.poll() is not None,
            "moto_server",
        )
    except StartupError as exc:
        stop_process(process)
        # The log lives in a temporary directory that is about to go: show its end now.
        tail = log_path.read_text(errors="replace").strip().splitlines()[-20:]
        raise StartupError("\n".join([str(exc), *tail])) from None
    except BaseException:
        stop_process(process)
        raise
    return process, endpoint


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def publish(model: Path, workdir: Path) -> str:
    """Create the bucket, upload the model as a version and make it LIVE; return it."""
    boto3.client("s3").create_bucket(Bucket=LOCAL_BUCKET)
    store = ModelStore(LOCAL_BUCKET, LOCAL_PREFIX)
    if model.is_dir():
        tarball = workdir / "model.tar.gz"
        artifact.pack(model, tarball)
        model = tarball
    version = store.upload(model)
    store.set_live(version)
    return version


def announce_when_ready(server: uvicorn.Server, base_url: str) -> None:
    """Print the page URL and a curl example once /ready says the model is loaded."""
    while not server.should_exit:
        if http_status(f"{base_url}ready") == 200:
            curl = (
                f"curl -s {base_url}v1/entities -H 'content-type: application/json' "
                f"""-d '{{"text": "{SAMPLE_TEXT}"}}'"""
            )
            print(f"\nReady. Page: {base_url}\nTry:   {curl}\nCtrl-C stops.\n", flush=True)
            return
        time.sleep(0.2)


def serve(port: int) -> bool:
    """Run the app until a signal; return whether it started at all."""
    # The app reads MODEL_URI and the rest from the environment, as on Lambda, behind a
    # stand-in for API Gateway's keys (the admin key); its request log is a short line per
    # request here (LOG_FORMAT=json shows the CloudWatch JSON).
    os.environ.setdefault("LOG_FORMAT", "text")
    app = local_app()
    # The app logs every request itself; uvicorn's access log would repeat each line.
    config = uvicorn.Config(app, host=HOST, port=port, log_level="info", access_log=False)
    server = uvicorn.Server(config)
    base_url = f"http://{HOST}:{port}/"
    threading.Thread(target=announce_when_ready, args=(server, base_url), daemon=True).start()
    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown) and then re-raises the signal
    # to the handler installed before it, ours, which ends this run like any other signal.
    server.run()
    return server.started


def serve_model_uri(model_uri: str, port: int, workdir: Path) -> None:
    # A fresh cache per run: the model is downloaded from S3 at start, as on a cold start.
    os.environ.update(MODEL_URI=model_uri, MODEL_CACHE_DIR=str(workdir / "model-cache"))
    if not serve(port):
        raise StartupError("the API did not start; see the log above")


def run(args: argparse.Namespace, workdir: Path) -> int:
    check_model(args.model)
    check_port_free(args.port)
    if args.model.startswith("s3://"):
        print(f"Serving {args.model} from S3 (your AWS credentials)", flush=True)
        serve_model_uri(args.model, args.port, workdir)
        return 0
    moto, endpoint = start_moto(workdir / "moto.log")
    announced: Path | None = None
    try:
        use_local_s3(endpoint)
        version = publish(Path(args.model), workdir)
        announced = announce(args.port, endpoint)
        print(f"Local S3 (moto_server): {endpoint}", flush=True)
        print(f"Model {version} is LIVE at {LOCAL_STORE_URI}", flush=True)
        print(f"Manage it: .venv/bin/nerkit-models list --local --port {args.port}", flush=True)
        admin_key, admin_env = enable_admin(endpoint, LOCAL_BUCKET)
        os.environ.update(admin_env)
        print(f"Admin key (local, this run only; paste it in the page): {admin_key}", flush=True)
        serve_model_uri(LOCAL_STORE_URI, args.port, workdir)
    finally:
        with signals_ignored():
            if announced is not None:
                announced.unlink(missing_ok=True)
            stop_process(moto)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_shutdown)
    try:
        with tempfile.TemporaryDirectory(prefix="nerkit-run-local-") as workdir:
            return run(args, Path(workdir))
    except Shutdown as stop:
        print(f"Stopped ({stop}).", flush=True)
        return 0
    except (StartupError, ModelError) as exc:
        print(f"run_local: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
