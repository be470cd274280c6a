"""Input records: lines of a byte stream, parsed as JSON Lines or plain text.

A bad record (not UTF-8, not JSON, not an object, a missing or non-string field, a text over
the limit, a line over the byte limit) becomes a ``BadRecord`` with the reason; it never
stops the stream, so its neighbours are unaffected.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Format = Literal["jsonl", "text"]
FORMATS: tuple[Format, ...] = ("jsonl", "text")
# A line longer than this is refused without being held in memory whole (a file without
# newlines would otherwise be read into memory as one line).
MAX_LINE_BYTES = 16 << 20
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Line:
    offset: int  # of the line's first byte in the (decompressed) stream
    number: int  # 1-based line number in the input object
    data: bytes | None  # without its line break; None when over MAX_LINE_BYTES
    end: int  # offset just past the line break


@dataclass(frozen=True)
class Record:
    line: int
    id: Any
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BadRecord:
    line: int
    reason: str
    message: str


@dataclass(frozen=True)
class RecordOptions:
    format: Format = "jsonl"
    id_field: str = "id"
    text_field: str = "text"
    max_text_chars: int = 100_000


def format_for(uri: str, requested: str = "auto") -> Format:
    """``requested`` unless ``auto``: then ``.txt`` (optionally ``.gz``) is text, else JSONL."""
    if requested != "auto":
        if requested not in FORMATS:
            raise ValueError(f"format must be auto, {' or '.join(FORMATS)}: {requested!r}")
        return requested  # type: ignore[return-value]
    name = uri.removesuffix(".gz")
    return "text" if name.endswith(".txt") else "jsonl"


def is_gzip(uri: str, head: bytes = b"") -> bool:
    return uri.endswith(".gz") or head.startswith(_GZIP_MAGIC)


def gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a gzip stream (concatenated members too) chunk by chunk."""
    decompressor = zlib.decompressobj(wbits=47)
    for chunk in chunks:
        while chunk:
            out = decompressor.decompress(chunk)
            if out:
                yield out
            if decompressor.eof:
                chunk = decompressor.unused_data
                decompressor = zlib.decompressobj(wbits=47)
            else:
                chunk = b""
    tail = decompressor.flush()
    if tail:
        yield tail


def split_lines(
    chunks: Iterable[bytes],
    *,
    offset: int = 0,
    first_line: int = 1,
    max_bytes: int = MAX_LINE_BYTES,
) -> Iterator[Line]:
    """The lines of a stream that starts at byte ``offset`` with line ``first_line``.

    ``\\n`` ends a line and a trailing ``\\r`` is dropped; a last line without a break counts.
    """
    buffer = bytearray()
    overlong = False
    start, number = offset, first_line
    position = offset  # of buffer[0]
    for chunk in chunks:
        begin = 0
        while True:
            newline = chunk.find(b"\n", begin)
            piece = chunk[begin:] if newline < 0 else chunk[begin:newline]
            if not overlong:
                if len(buffer) + len(piece) > max_bytes:
                    overlong = True
                    buffer.clear()
                else:
                    buffer += piece
            if newline < 0:
                position += len(chunk) - begin
                break
            end = position + (newline - begin) + 1
            yield Line(start, number, None if overlong else _strip_cr(bytes(buffer)), end)
            buffer.clear()
            overlong = False
            start, number, position = end, number + 1, end
            begin = newline + 1
    if buffer or overlong:
        yield Line(start, number, None if overlong else _strip_cr(bytes(buffer)), position)


def parse(line: Line, options: RecordOptions, source: str) -> Record | BadRecord | None:
    """The record on ``line`` (``None``: a blank line of a plain-text file, not a record)."""
    if line.data is None:
        return BadRecord(line.number, "line_too_long", f"line is over {MAX_LINE_BYTES} bytes")
    try:
        decoded = line.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(line.number, "invalid_encoding", f"not UTF-8 at byte {exc.start}")
    if options.format == "text":
        if not decoded.strip():
            return None
        return _checked(Record(line.number, f"{source}:{line.number}", decoded), options)
    if not decoded.strip():
        return BadRecord(line.number, "empty_line", "a JSON Lines file has an empty line")
    try:
        value = json.loads(decoded)
    except ValueError as exc:
        return BadRecord(line.number, "invalid_json", f"not JSON: {exc}")
    if not isinstance(value, dict):
        return BadRecord(line.number, "not_object", "the line is JSON but not an object")
    if options.text_field not in value:
        return BadRecord(line.number, "missing_field", f"no {options.text_field!r} field")
    text = value.pop(options.text_field)
    if not isinstance(text, str):
        return BadRecord(line.number, "invalid_field", f"{options.text_field!r} is not a string")
    record_id = value.pop(options.id_field, f"{source}:{line.number}")
    return _checked(Record(line.number, record_id, text, value), options)


def _checked(record: Record, options: RecordOptions) -> Record | BadRecord:
    if not record.text.strip():
        return BadRecord(record.line, "empty_text", "text is empty or whitespace only")
    if len(record.text) > options.max_text_chars:
        return BadRecord(
            record.line,
            "text_too_long",
            f"text is {len(record.text)} characters long; the limit is {options.max_text_chars}",
        )
    try:
        record.text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which a JSON escape can carry
        return BadRecord(record.line, "invalid_text", "text holds a lone surrogate")
    return record


def _strip_cr(data: bytes) -> bytes:
    return data[:-1] if data.endswith(b"\r") else data
