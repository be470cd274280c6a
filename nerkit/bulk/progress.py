"""Progress of a local run: a bar on a terminal, a line every so often otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

# A terminal redraws often; logs (CI, nohup) get a line at a readable pace.
_TTY_INTERVAL = 0.2
_LOG_INTERVAL = 10.0
_BAR = 30


class ProgressReporter:
    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._clock = clock
        self._started = clock()
        self._shown = self._started
        self.total_bytes = 0
        self.done_bytes = 0
        self.documents = 0

    def planned(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes

    def advance(self, documents: int, read_bytes: int) -> None:
        self.documents += documents
        self.done_bytes += read_bytes
        now = self._clock()
        if now - self._shown >= (_TTY_INTERVAL if self._tty else _LOG_INTERVAL):
            self._shown = now
            self._show(now)

    def finish(self) -> None:
        self._show(self._clock())
        if self._tty:
            self._stream.write("\n")
        self._stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-9)
        rate = self.documents / elapsed
        fraction = min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 1.0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else float("inf")
        eta_text = "?" if eta == float("inf") else f"{eta:.0f}s"
        return (
            f"{fraction:6.1%} {self.documents} documents, {rate:.1f} docs/s, "
            f"elapsed {elapsed:.0f}s, ETA {eta_text}"
        )

    def _show(self, now: float) -> None:
        text = self.line(now)
        if self._tty:
            fraction = min(1.0, self.done_bytes / self.total_bytes) if self.total_bytes else 1.0
            filled = int(fraction * _BAR)
            self._stream.write(f"\r[{'#' * filled}{'.' * (_BAR - filled)}] {text}")
        else:
            self._stream.write(f"progress: {text}\n")
        self._stream.flush()
