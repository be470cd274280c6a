"""Progress of the long stages (training epochs, validation, export, served evaluation).

On a terminal: a tqdm bar. Elsewhere (SageMaker sends stderr to CloudWatch, a CI log, a
redirected file): a log line when a stage starts, one at most every ``LOG_INTERVAL_S``
seconds with done/total, rate and ETA, and one when it ends, so a quiet log never means
a hung job.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

T = TypeVar("T")
LOG_INTERVAL_S = 30.0
Clock = Callable[[], float]


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress(
    items: Iterable[T],
    total: int,
    what: str,
    *,
    unit: str = "batches",
    terminal: bool | None = None,
    detail: Callable[[], str] | None = None,
    clock: Clock = time.monotonic,
    interval_s: float = LOG_INTERVAL_S,
) -> Iterator[T]:
    """Yield ``items`` (``total`` of them), showing progress as the module doc says;
    ``detail`` adds to each periodic line (the running loss, say)."""
    if on_terminal() if terminal is None else terminal:
        yield from tqdm(items, total=total, desc=what, unit=unit, leave=False)
        return
    started = clock()
    last = started
    log.info("%s: %d %s", what, total, unit)
    done = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= interval_s and done < total:
            last = now
            extra = f", {detail()}" if detail else ""
            log.info("%s: %s%s", what, _rate_line(done, total, now - started, unit), extra)
    log.info("%s: done, %d %s in %s", what, done, unit, _duration(clock() - started))


@contextmanager
def stage(what: str, *, clock: Clock = time.monotonic) -> Iterator[None]:
    """Log the start and the end (with its duration) of a step that reports no steps."""
    started = clock()
    log.info("%s ...", what)
    yield
    log.info("%s: done in %s", what, _duration(clock() - started))


def _rate_line(done: int, total: int, elapsed: float, unit: str) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    return (
        f"{done}/{total} {unit} ({100 * done / total:.0f}%), {rate:.2f} {unit}/s, "
        f"ETA {_duration(eta)}"
    )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
