"""Load and soak test of the HTTP API on loopback: throughput, latency and server memory.

Starts the app under uvicorn on 127.0.0.1 (one worker, the default model from a local path)
and sends ``POST /v1/entities`` requests with one real CoNLL-2003 test sentence each (a fixed
sample when the dataset is absent): a load phase per concurrency (``--concurrency``), each
ending at ``--requests`` requests or ``--seconds`` seconds, whichever comes first, then a soak
phase at ``--soak-concurrency`` for ``--soak-seconds``. Prints, per phase, requests, errors,
throughput and p50/p99 latency, and the server's resident memory before the first phase (model
loaded, warmed up) and after each one. It only prints numbers; it asserts nothing.

    .venv/bin/python bench/load_soak.py                          # 1, 8, 32, then a 60 s soak
    .venv/bin/python bench/load_soak.py --soak-seconds 300 --json load.json

``--url`` targets a server already running (``make run``); it must be a loopback address, and
the server's memory is read only when ``--pid`` names its process.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "default" / "model.tar.gz"
DEFAULT_DATA = Path("/work/shared/datasets/conll2003/test.txt")
FALLBACK_SENTENCES = [
    "Angela Merkel met Tim Cook of Apple in Berlin on Monday.",
    "The European Union and Microsoft signed a deal in New York.",
    "Jose Muller moved from Sao Paulo to Zurich in 2019.",
    "Japan's Toyota opened a plant in Kentucky, the governor said.",
]
SENTENCES_USED = 1000
WARMUP_REQUESTS = 20
# Hard caps, so a typo cannot turn a benchmark into an open-ended flood.
MAX_REQUESTS = 100_000
MAX_SECONDS = 3600.0
STARTUP_TIMEOUT_S = 120.0
# Far above any latency seen here; a request past it counts as an error, not a hang.
REQUEST_TIMEOUT_S = 60.0
SEED = 0


@dataclass
class Phase:
    name: str
    concurrency: int
    requests: int
    errors: dict[str, int]
    seconds: float
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    rss_after_mib: float | None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="MODEL_URI to serve")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CoNLL-2003 text file")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=1000, help="per load phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="per load phase, at most")
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--soak-seconds", type=float, default=60.0, help="0 skips the soak")
    parser.add_argument("--url", help="a running server on loopback instead of starting one")
    parser.add_argument("--pid", type=int, help="that server's process id, to read its memory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be in [1, {MAX_REQUESTS}]")
    for name in ("seconds", "soak_seconds"):
        if not 0 <= getattr(args, name) <= MAX_SECONDS:
            parser.error(f"--{name.replace('_', '-')} must be in [0, {MAX_SECONDS:.0f}]")
    if min([*args.concurrency, args.soak_concurrency]) < 1:
        parser.error("concurrency must be at least 1")
    if args.url and not is_loopback(args.url):
        parser.error(f"--url must be a loopback address (127.0.0.0/8, ::1, localhost): {args.url}")
    return args


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sentences(path: Path) -> list[str]:
    """Up to SENTENCES_USED test sentences (seeded sample), or the fallback ones."""
    if not path.is_file():
        return FALLBACK_SENTENCES
    found, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        token = line.split(" ", 1)[0]
        if token and token != "-DOCSTART-":
            words.append(token)
        elif words:
            found.append(" ".join(words))
            words = []
    if words:
        found.append(" ".join(words))
    random.Random(SEED).shuffle(found)
    return found[:SENTENCES_USED] or FALLBACK_SENTENCES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_server(model: Path) -> Iterator[tuple[str, int]]:
    """uvicorn on a free loopback port serving ``model``; its URL and process id."""
    port = free_port()
    env = {**os.environ, "MODEL_URI": str(model), "PRELOAD_MODEL": "1", "ENABLE_PAGE": "0"}
    env["PYTHONPATH"] = str(REPO)  # this checkout's nerkit, whatever the venv has installed
    command = [sys.executable, "-m", "uvicorn", "nerkit.api.app:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    # The request log goes to stdout, one line per request: not wanted here.
    server = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of ``pid`` (VmRSS), in MiB."""
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


async def run_phase(
    url: str, texts: list[str], concurrency: int, max_requests: int, max_seconds: float
) -> tuple[list[float], Counter[str], float]:
    """Latencies (s) of successful requests, errors by status, and the phase's duration."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker() -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() < deadline:
                text = texts[sent % len(texts)]
                sent += 1
                begun = time.perf_counter()
                try:
                    response = await client.post("/v1/entities", json={"text": text})
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - begun)
                else:
                    errors[str(response.status_code)] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - started


def summarise(
    name: str,
    concurrency: int,
    result: tuple[list[float], Counter[str], float],
    pid: int | None,
) -> Phase:
    latencies, errors, seconds = result
    done = len(latencies) + sum(errors.values())
    ms = sorted(latency * 1000 for latency in latencies) or [float("nan")]
    p99 = statistics.quantiles(ms, n=100)[98] if len(ms) >= 2 else ms[0]
    return Phase(
        name=name,
        concurrency=concurrency,
        requests=done,
        errors=dict(errors),
        seconds=round(seconds, 2),
        throughput_rps=round(len(latencies) / seconds, 1) if seconds else 0.0,
        p50_ms=round(statistics.median(ms), 1),
        p99_ms=round(p99, 1),
        rss_after_mib=None if (rss := rss_mib(pid)) is None else round(rss, 1),
    )


def measure(args: argparse.Namespace, url: str, pid: int | None) -> dict[str, object]:
    texts = sentences(args.data)
    asyncio.run(run_phase(url, texts, 1, WARMUP_REQUESTS, MAX_SECONDS))
    rss_before = rss_mib(pid)
    print(f"server {url} pid {pid}; {len(texts)} sentences; load average {os.getloadavg()}")
    print(f"server RSS before: {rss_before if rss_before is None else round(rss_before, 1)} MiB")
    print(
        f"{'phase':<8}{'conc':>5}{'requests':>9}{'errors':>7}{'s':>8}{'req/s':>8}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'RSS MiB':>9}"
    )
    phases = [("load", c, args.requests, args.seconds) for c in args.concurrency]
    if args.soak_seconds:
        phases.append(("soak", args.soak_concurrency, MAX_REQUESTS, args.soak_seconds))
    results = []
    for name, concurrency, count, seconds in phases:
        result = asyncio.run(run_phase(url, texts, concurrency, count, seconds))
        phase = summarise(name, concurrency, result, pid)
        results.append(phase)
        errors = sum(phase.errors.values())
        print(
            f"{phase.name:<8}{phase.concurrency:>5}{phase.requests:>9}{errors:>7}"
            f"{phase.seconds:>8}{phase.throughput_rps:>8}{phase.p50_ms:>8}{phase.p99_ms:>8}"
            f"{phase.rss_after_mib!s:>9}"
        )
        if phase.errors:
            print(f"  errors: {phase.errors}")
    return {
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "rss_before_mib": rss_before,
        "phases": [asdict(phase) for phase in results],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.url:
        report = measure(args, args.url.rstrip("/"), args.pid)
    else:
        with local_server(args.model) as (url, pid):
            report = measure(args, url, pid)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
