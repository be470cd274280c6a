"""Training data ingest: CoNLL, CSV, JSONL files (or zips of them) -> ``Example`` sentences.

Every format ends up as sentences of text with gold entity spans (character offsets), so the
training loop, the metrics and the serving engine share one contract: ``text[span.start:span.end]``
is the entity. For token formats (CoNLL, CSV) ``text`` is the tokens joined by single spaces.

Formats (``format=None`` detects from the extension, then from the content):

- ``conll`` (.txt .conll .bio .iob): 2+ columns, token first, NER tag last; a blank line ends
  a sentence; ``-DOCSTART-`` starts a document. Lines with a tab are split on tabs only (a token
  may then hold spaces); other lines on spaces. Every token line has the same column count.
- ``csv`` (.csv): header with ``Sentence #``, ``Word``, ``Tag`` (``POS`` and a ``Document``
  column optional; a few aliases such as ``sentence_idx`` are accepted). A row with a new
  non-empty sentence id starts a sentence; an empty id continues it (the GMB convention).
- ``jsonl`` (.jsonl .ndjson): ``{"text": ..., "entities" | "spans": [{"start", "end", "label"}
  or [start, end, label], ...]}``; optional ``"document"``. Spans must be in range, non-empty
  and non-overlapping. Whitespace at a span's ends is trimmed (with a warning), because
  annotation tools often select a trailing space; a span of only whitespace is an error.
- ``zip``: the data files inside, by extension (sorted; ``__MACOSX``, hidden files and other
  files skipped). Members are read in memory, never extracted, and an archive with an absolute
  or ``..`` member name is refused outright.

Tags: IOB1 and BIO2 are both read and normalised to BIO2. A file is taken as BIO2 if any
entity opens with ``B-`` where IOB1 would write ``I-`` (after ``O`` or another type); in such
a file an ``I-`` that continues nothing is a data error we repair with a warning naming the
line. Otherwise the file is IOB1 and the conversion is silent.

Text is UTF-8 (a BOM is allowed) with a latin-1 fallback, unless ``encoding`` is given.
Documents: ``<file>`` for a file without document markers, ``<file>#<n>`` for the n-th
``-DOCSTART-``, ``<file>#<id>`` for a CSV/JSONL document id. Files in a channel or a zip are
named by their relative path (``archive.zip/ner.csv``), so ids never collide across files.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from nerkit.dataset_formats import EXTENSIONS, FORMATS
from nerkit.labels import OUTSIDE, Span, split_tag, tags_to_spans, to_bio2

log = logging.getLogger(__name__)

DOCSTART = "-DOCSTART-"
# Members are read into memory; the declared size bounds what zipfile will inflate.
MAX_ZIP_MEMBER_BYTES = 2 << 30

# CSV header names (lower-cased) per role; the first one present wins.
_CSV_ALIASES = {
    "sentence": ("sentence #", "sentence", "sentence_idx", "sentence_id"),
    "word": ("word", "token"),
    "tag": ("tag", "ner", "label"),
    "document": ("document", "document #", "document_id", "doc_id"),
}
_CSV_REQUIRED = {"sentence": "Sentence #", "word": "Word", "tag": "Tag"}
# A text file holds no NUL and almost no C0 control bytes other than the blanks.
_BINARY_SNIFF_BYTES = 8192
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\v")
_MAX_CONTROL_FRACTION = 0.01
# Only ASCII blanks separate CoNLL columns: a no-break space belongs to its token.
_ASCII_BLANKS = " \t\r\f\v"


class DataError(ValueError):
    """Bad training data; the message names file, line and problem."""


@dataclass(frozen=True)
class Example:
    """One sentence with its gold entities."""

    text: str
    spans: tuple[Span, ...]
    document: str
    source: str


@dataclass
class _Sentence:
    """A token-format sentence as read: tokens, raw tags and their line numbers."""

    document: str
    source: str
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def add(self, token: str, tag: str, line: int) -> None:
        self.tokens.append(token)
        self.tags.append(tag)
        self.lines.append(line)


def load_examples(
    path: Path,
    *,
    format: str | None = None,
    encoding: str | None = None,
    label_map: Mapping[str, str] | None = None,
) -> list[Example]:
    """Read one data file (or zip). ``label_map`` renames entity types; ``"O"`` drops a type."""
    path = Path(path)
    return _load_file(path, path.name, format=format, encoding=encoding, label_map=label_map)


def load_channel(channel_dir: Path, **kw: Any) -> list[Example]:
    """Read every data file under a SageMaker channel directory, in sorted path order.

    Hidden files and directories are skipped. Without ``format`` only files with a known
    extension are data files; with it, every file is read in that format.
    """
    channel_dir = Path(channel_dir)
    if not channel_dir.is_dir():
        raise DataError(f"{channel_dir}: channel directory does not exist")
    files = _channel_files(channel_dir, any_extension=kw.get("format") is not None)
    if not files:
        raise DataError(
            f"{channel_dir}: no data files in the channel (expected {', '.join(EXTENSIONS)}, "
            f"or name the format of other files with data_format={'|'.join(FORMATS[:3])})"
        )
    examples: list[Example] = []
    for path in files:
        examples += _load_file(path, path.relative_to(channel_dir).as_posix(), **kw)
    return examples


def entity_types(examples: Iterable[Example]) -> list[str]:
    """The sorted entity types of the gold spans."""
    return sorted({span.label for example in examples for span in example.spans})


def fingerprint(examples: Iterable[Example]) -> str:
    """sha256 over the texts and spans in order: identifies the training data in the manifest."""
    digest = hashlib.sha256()
    for example in examples:
        record = [example.text, [[s.start, s.end, s.label] for s in example.spans]]
        digest.update(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _channel_files(channel_dir: Path, *, any_extension: bool) -> list[Path]:
    files = []
    for path in channel_dir.rglob("*"):
        relative = path.relative_to(channel_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if any_extension or path.suffix.lower() in EXTENSIONS:
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(channel_dir).as_posix())


def _load_file(
    path: Path,
    name: str,
    *,
    format: str | None = None,
    encoding: str | None = None,
    label_map: Mapping[str, str] | None = None,
) -> list[Example]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    return _load_bytes(data, name, format=format, encoding=encoding, label_map=label_map)


def _load_bytes(
    data: bytes,
    name: str,
    *,
    format: str | None,
    encoding: str | None,
    label_map: Mapping[str, str] | None,
) -> list[Example]:
    fmt = format if format is not None else _detect_format(name, data)
    if fmt not in FORMATS:
        raise DataError(f"{name}: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
    if fmt == "zip":
        return _load_zip(data, name, encoding=encoding, label_map=label_map)
    _check_text(data, name)
    text = _decode(data, name, encoding)
    if fmt == "jsonl":
        examples = _parse_jsonl(text, name)
    else:
        parse = _parse_conll if fmt == "conll" else _parse_csv
        examples = _tagged_examples(parse(text, name), name)
    if not examples:
        raise DataError(f"{name}: no sentences (empty file?)")
    _check_documents_consecutive(examples)
    return _relabel(examples, label_map) if label_map else examples


def _detect_format(name: str, data: bytes) -> str:
    by_extension = EXTENSIONS.get(PurePosixPath(name).suffix.lower())
    if by_extension is not None:
        return by_extension
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    lines = data[:65536].removeprefix(b"\xef\xbb\xbf").split(b"\n")
    first = next((line for line in lines if line.strip()), b"").strip()
    if first.startswith(b"{"):
        return "jsonl"
    header = next(csv.reader([first.decode("latin-1")]), [])
    if len(header) > 1 and not _missing_csv_columns(_csv_columns(header)):
        return "csv"
    if len(first.split()) >= 2:
        return "conll"
    raise DataError(
        f"{name}: cannot tell the format from the name or content; "
        f"pass format= (one of {', '.join(FORMATS)})"
    )


def _check_text(data: bytes, name: str) -> None:
    """Refuse binary files (images, gzip, spreadsheets) before their bytes reach a message."""
    head = data[:_BINARY_SNIFF_BYTES]
    controls = sum(1 for byte in head if byte < 0x20 and byte not in _TEXT_CONTROLS)
    if b"\x00" in head or controls > len(head) * _MAX_CONTROL_FRACTION:
        raise DataError(
            f"{name}: looks binary, not a text data file; expected CoNLL text, CSV or JSONL "
            f"(or a .zip of them)"
        )


def _decode(data: bytes, name: str, encoding: str | None) -> str:
    if encoding is None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            # The GMB / Kaggle NER CSVs are latin-1; latin-1 decodes any byte string.
            log.info("%s: not UTF-8; read as latin-1", name)
            text = data.decode("latin-1")
    else:
        try:
            text = data.decode(encoding)
        except LookupError:
            raise DataError(f"{name}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise DataError(
                f"{name}:{line}: bytes are not valid {encoding} ({exc.reason} at byte {exc.start})"
            ) from None
    return text.removeprefix("\ufeff")


def _lines(text: str) -> Iterable[tuple[int, str]]:
    # Not str.splitlines(): it also breaks on U+0085, U+2028 ..., which latin-1 text holds
    # as ordinary characters, and the line numbers would no longer match the file.
    return enumerate(text.split("\n"), start=1)


@functools.lru_cache(maxsize=4096)
def _is_bio_tag(tag: str) -> bool:
    try:
        split_tag(tag)
    except ValueError:
        return False
    return True


def _checked_tag(tag: str, where: str) -> str:
    if not _is_bio_tag(tag):
        raise DataError(f"{where}: tag {tag!r} is not BIO (expected O, B-TYPE or I-TYPE)")
    return tag


def _normalise_token(token: str) -> str:
    # Inner whitespace (a no-break space, or spaces in a tab-separated token) becomes one
    # space so that the text is exactly the tokens joined by single spaces.
    return " ".join(token.split())


def _conll_fields(line: str) -> list[str]:
    line = line.strip(_ASCII_BLANKS)
    if not line.strip():
        return []
    if "\t" in line:
        return [column.strip(" ") for column in line.split("\t")]
    return [column for column in line.split(" ") if column]


def _parse_conll(text: str, name: str) -> list[_Sentence]:
    sentences: list[_Sentence] = []
    current: _Sentence | None = None
    document, documents = name, 0
    expected: tuple[int, int] | None = None  # (column count, line) of the first token line
    for number, line in _lines(text):
        fields = _conll_fields(line)
        if not fields:
            current = None
            continue
        if fields[0] == DOCSTART:
            documents += 1
            document, current = f"{name}#{documents}", None
            continue
        where = f"{name}:{number}"
        if len(fields) < 2:
            raise DataError(f"{where}: expected 2 or more columns (token ... tag), got 1")
        if expected is None:
            expected = (len(fields), number)
        elif len(fields) != expected[0]:
            raise DataError(
                f"{where}: expected {expected[0]} columns as on line {expected[1]}, "
                f"got {len(fields)}"
            )
        tag = _checked_tag(fields[-1], where)
        token = _normalise_token(fields[0])
        if not token:
            log.warning("%s: token is only whitespace; skipped", where)
            continue
        if current is None:
            current = _Sentence(document, where)
            sentences.append(current)
        current.add(token, tag, number)
    return sentences


def _csv_columns(header: Sequence[str]) -> dict[str, int]:
    names = [column.strip().lower() for column in header]
    columns = {}
    for role, aliases in _CSV_ALIASES.items():
        index = next((names.index(alias) for alias in aliases if alias in names), None)
        if index is not None:
            columns[role] = index
    return columns


def _missing_csv_columns(columns: Mapping[str, int]) -> list[str]:
    return [title for role, title in _CSV_REQUIRED.items() if role not in columns]


def _parse_csv(text: str, name: str) -> list[_Sentence]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _read_csv_rows(reader, name)
    except csv.Error as exc:
        raise DataError(f"{name}:{reader.line_num}: {exc}") from None


def _read_csv_rows(reader: Any, name: str) -> list[_Sentence]:
    header = next(reader, None)
    if header is None:
        return []
    columns = _csv_columns(header)
    missing = _missing_csv_columns(columns)
    if missing:
        raise DataError(
            f"{name}:1: missing required column(s) {', '.join(missing)}; header is {header}"
        )
    sentences: list[_Sentence] = []
    current: _Sentence | None = None
    current_key: tuple[str, str] = ("", "")
    document = name
    for row in reader:
        if not any(value.strip() for value in row):
            continue
        where = f"{name}:{reader.line_num}"
        if len(row) != len(header):
            raise DataError(
                f"{where}: expected {len(header)} columns as in the header, got {len(row)}"
            )
        if "document" in columns and row[columns["document"]].strip():
            document = f"{name}#{row[columns['document']].strip()}"
        sentence_id = row[columns["sentence"]].strip()
        # A sentence id on every row or only on a sentence's first row (GMB) both work.
        if sentence_id and (document, sentence_id) != current_key:
            current_key = (document, sentence_id)
            current = _Sentence(document, where)
            sentences.append(current)
        elif current is None:
            raise DataError(f"{where}: empty sentence id before any sentence started")
        tag = _checked_tag(row[columns["tag"]].strip(), where)
        token = _normalise_token(row[columns["word"]])
        if not token:
            log.warning("%s: word is empty or only whitespace; skipped", where)
            continue
        current.add(token, tag, reader.line_num)
    return [sentence for sentence in sentences if sentence.tokens]


def _uses_bio2(sentences: Iterable[_Sentence]) -> bool:
    """True if an entity opens with B- where IOB1 would write I- (after O or another type)."""
    for sentence in sentences:
        previous: str | None = None
        for tag in sentence.tags:
            prefix, entity_type = split_tag(tag)
            if prefix == "B" and entity_type != previous:
                return True
            previous = entity_type
    return False


def _join_tokens(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    offsets = []
    start = 0
    for token in tokens:
        offsets.append((start, start + len(token)))
        start += len(token) + 1
    return " ".join(tokens), offsets


def _tagged_examples(sentences: list[_Sentence], name: str) -> list[Example]:
    declared_bio2 = _uses_bio2(sentences)
    converted = 0
    examples = []
    for sentence in sentences:
        tags = to_bio2(sentence.tags)
        if tags != sentence.tags:
            converted += 1
            if declared_bio2:
                _warn_repairs(sentence, tags, name)
        text, offsets = _join_tokens(sentence.tokens)
        spans = tuple(tags_to_spans(tags, offsets))
        examples.append(Example(text, spans, sentence.document, sentence.source))
    if converted and not declared_bio2:
        log.info("%s: read as IOB1; %d sentences converted to BIO2", name, converted)
    return examples


def _warn_repairs(sentence: _Sentence, tags: Sequence[str], name: str) -> None:
    for index, (old, new) in enumerate(zip(sentence.tags, tags, strict=True)):
        if old != new:
            before = sentence.tags[index - 1] if index else "sentence start"
            log.warning(
                "%s:%d: %s after %s does not continue an entity; read as %s",
                name,
                sentence.lines[index],
                old,
                before,
                new,
            )


def _parse_jsonl(text: str, name: str) -> list[Example]:
    examples = []
    for number, line in _lines(text):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: bad JSON: {exc.msg} (column {exc.colno})") from None
        example = _json_example(record, name, where)
        if example.text.strip():
            examples.append(example)
    return examples


def _json_example(record: Any, name: str, where: str) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text = record.get("text")
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string")
    key = next((key for key in ("entities", "spans") if key in record), None)
    if key is None:
        raise DataError(f"{where}: missing 'entities' (or 'spans'), a list that may be empty")
    items = record[key]
    if not isinstance(items, list):
        raise DataError(f"{where}: '{key}' must be a list of entities (may be empty)")
    spans = sorted(_json_span(item, text, where) for item in items)
    for left, right in pairwise(spans):
        if right.start < left.end:
            raise DataError(f"{where}: entities overlap: {left} and {right}")
    document = record.get("document")
    if document is not None and not isinstance(document, str | int):
        raise DataError(f"{where}: 'document' must be a string or an integer")
    return Example(text, tuple(spans), name if document is None else f"{name}#{document}", where)


def _json_span(item: Any, text: str, where: str) -> Span:
    if isinstance(item, dict):
        start, end, label = item.get("start"), item.get("end"), item.get("label")
    elif isinstance(item, list) and len(item) == 3:
        start, end, label = item
    else:
        raise DataError(
            f"{where}: entity {item!r} is not {{start, end, label}} or [start, end, label]"
        )
    if type(start) is not int or type(end) is not int:
        raise DataError(f"{where}: entity {item!r}: start and end must be integers")
    if not 0 <= start < end <= len(text):
        raise DataError(
            f"{where}: entity {item!r} is out of range "
            f"(need 0 <= start < end <= {len(text)}, the text length)"
        )
    _check_label(label, item, where)
    trimmed_start, trimmed_end = start, end
    while trimmed_start < trimmed_end and text[trimmed_start].isspace():
        trimmed_start += 1
    while trimmed_end > trimmed_start and text[trimmed_end - 1].isspace():
        trimmed_end -= 1
    if trimmed_start == trimmed_end:
        raise DataError(f"{where}: entity {item!r} covers only whitespace")
    if (trimmed_start, trimmed_end) != (start, end):
        log.warning(
            "%s: entity %r trimmed of whitespace to %r",
            where,
            item,
            text[trimmed_start:trimmed_end],
        )
    return Span(trimmed_start, trimmed_end, label)


def _check_label(label: Any, item: Any, where: str) -> None:
    if not isinstance(label, str) or not label or label != label.strip() or label == OUTSIDE:
        raise DataError(f"{where}: entity {item!r}: label must be an entity type such as 'PER'")
    if label[:2] in ("B-", "I-"):
        raise DataError(
            f"{where}: entity {item!r}: label {label!r} is a BIO tag; use the type {label[2:]!r}"
        )


def _load_zip(
    data: bytes, name: str, *, encoding: str | None, label_map: Mapping[str, str] | None
) -> list[Example]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DataError(f"{name}: not a valid zip archive ({exc})") from None
    examples: list[Example] = []
    with archive:
        members = _zip_data_members(archive, name)
        if not members:
            raise DataError(f"{name}: no data files in the archive")
        for info in members:
            examples += _load_bytes(
                _read_member(archive, info, name),
                f"{name}/{info.filename}",
                format=None,
                encoding=encoding,
                label_map=label_map,
            )
    return examples


def _zip_data_members(archive: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    members = []
    for info in sorted(archive.infolist(), key=lambda i: i.filename):
        # Windows path rules catch both separators, drive letters and UNC names.
        unsafe = PureWindowsPath(info.filename)
        if unsafe.anchor or ".." in unsafe.parts:
            raise DataError(f"{name}: unsafe member name {info.filename!r}; archive refused")
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if info.is_dir() or path.parts[0] == "__MACOSX":
            continue
        if any(part.startswith(".") for part in path.parts):
            continue
        if EXTENSIONS.get(path.suffix.lower(), "zip") == "zip":
            # Unknown extensions (READMEs) and nested archives are not training data here.
            log.info("%s: skipping member %s (not a data file)", name, info.filename)
            continue
        members.append(info)
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    where = f"{name}/{info.filename}"
    if info.file_size > MAX_ZIP_MEMBER_BYTES:
        raise DataError(f"{where}: {info.file_size} bytes uncompressed is over the limit")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError) as exc:
        # RuntimeError: encrypted member; NotImplementedError: unsupported compression.
        raise DataError(f"{where}: cannot read from the archive ({exc})") from None


def _check_documents_consecutive(examples: Sequence[Example]) -> None:
    finished: set[str] = set()
    current: str | None = None
    for example in examples:
        if example.document == current:
            continue
        if example.document in finished:
            raise DataError(
                f"{example.source}: document {example.document!r} resumes after another "
                "document; its sentences must be consecutive"
            )
        if current is not None:
            finished.add(current)
        current = example.document


def _relabel(examples: list[Example], label_map: Mapping[str, str]) -> list[Example]:
    relabelled = []
    for example in examples:
        spans = (Span(s.start, s.end, label_map.get(s.label, s.label)) for s in example.spans)
        kept = tuple(span for span in spans if span.label != OUTSIDE)
        relabelled.append(dataclasses.replace(example, spans=kept))
    return relabelled
