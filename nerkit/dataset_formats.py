"""The training data formats and the file extensions that name them (``nerkit.training.data``
reads them; the admin API accepts uploads of exactly these; no heavy imports here)."""

from __future__ import annotations

FORMATS = ("conll", "csv", "jsonl", "zip")
EXTENSIONS = {
    ".txt": "conll",
    ".conll": "conll",
    ".bio": "conll",
    ".iob": "conll",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".zip": "zip",
}
