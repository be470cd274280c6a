"""The local S3 of ``make run``: how it is reached, by the app it serves and by ``nerkit-models``.

``make run`` starts a moto S3 server on a free port and publishes the model to
``LOCAL_STORE_URI`` there. It records the endpoint in a small file named after the API's port
(:func:`announce`), so ``nerkit-models --local`` finds that store in one step
(:func:`use_announced`) instead of the user exporting an endpoint and dummy credentials.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from nerkit.errors import ConfigError

LOCAL_BUCKET = "nerkit-local-models"
LOCAL_PREFIX = "models"
LOCAL_STORE_URI = f"s3://{LOCAL_BUCKET}/{LOCAL_PREFIX}"
DEFAULT_PORT = 8080


def use_local_s3(endpoint: str) -> None:
    """Point boto3 (in this process and its children) at a local S3 with throwaway
    credentials, never the user's real ones."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )


def announcement(port: int) -> Path:
    """Where ``make run`` on API port ``port`` records its local S3 endpoint."""
    return Path(tempfile.gettempdir()) / f"nerkit-local-s3-{port}.json"


def announce(port: int, endpoint: str) -> Path:
    path = announcement(port)
    path.write_text(json.dumps({"endpoint": endpoint, "pid": os.getpid()}))
    return path


def use_announced(port: int) -> str:
    """Use the local S3 of the ``make run`` serving on ``port``; return its store URI."""
    path = announcement(port)
    try:
        record = json.loads(path.read_text())
        endpoint, pid = str(record["endpoint"]), int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"no `make run` found on port {port}: start one (it runs the local S3), or give "
            "its port with --port"
        ) from None
    if not _alive(pid):
        raise ConfigError(f"the `make run` on port {port} has stopped: start it again")
    use_local_s3(endpoint)
    return LOCAL_STORE_URI


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
