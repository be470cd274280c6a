"""Training data ingest (nerkit.training.data): every format, its errors, and the real datasets."""

from __future__ import annotations

import csv
import logging
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from nerkit.labels import Span
from nerkit.training.data import (
    DataError,
    Example,
    entity_types,
    fingerprint,
    load_channel,
    load_examples,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CONLL = DATASETS / "conll2003"
GMB = DATASETS / "gmb-sample" / "ner_dataset.csv"

CONLL_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""

GMB_TEXT = """Sentence #,Word,POS,Tag
Sentence: 1,Thousands,NNS,O
,marched,VBN,O
,through,IN,O
,New,NNP,B-geo
,York,NNP,I-geo
Sentence: 2,Families,NNS,O
,of,IN,O
,Müller,NNP,B-per
,",",",",O
"""


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def entities(example: Example) -> list[tuple[str, str]]:
    return [(example.text[s.start : s.end], s.label) for s in example.spans]


def error_of(path: Path, **kw: object) -> str:
    with pytest.raises(DataError) as caught:
        load_examples(path, **kw)  # type: ignore[arg-type]
    return str(caught.value)


# --- CoNLL ---------------------------------------------------------------------------------


def test_conll_sentences_documents_and_offsets(tmp_path: Path) -> None:
    examples = load_examples(write(tmp_path, "train.txt", CONLL_TEXT))
    assert [e.text for e in examples] == [
        "EU rejects German call .",
        "Peter Blackburn",
        "BRUSSELS 1996-08-22",
    ]
    assert [entities(e) for e in examples] == [
        [("EU", "ORG"), ("German", "MISC")],
        [("Peter Blackburn", "PER")],
        [("BRUSSELS", "LOC")],
    ]
    assert [e.document for e in examples] == ["train.txt#1", "train.txt#1", "train.txt#2"]
    assert [e.source for e in examples] == ["train.txt:3", "train.txt:9", "train.txt:15"]


def test_conll_without_docstart_is_one_document_and_two_columns_work(tmp_path: Path) -> None:
    text = "Angela B-PER\nMerkel I-PER\nspoke O\n\n\n\nin O\nBerlin B-LOC\n"
    examples = load_examples(write(tmp_path, "a.conll", text))
    assert [entities(e) for e in examples] == [[("Angela Merkel", "PER")], [("Berlin", "LOC")]]
    assert {e.document for e in examples} == {"a.conll"}


def test_conll_long_sentence_is_not_truncated(tmp_path: Path) -> None:
    lines = [f"w{i} O" for i in range(1500)] + ["Paris B-LOC"]
    (example,) = load_examples(write(tmp_path, "long.txt", "\n".join(lines) + "\n"))
    assert len(example.text.split(" ")) == 1501
    assert entities(example) == [("Paris", "LOC")]


def test_conll_whitespace_inside_tokens_keeps_offsets(tmp_path: Path) -> None:
    # Tab-separated: the token may hold spaces. Space-separated: a no-break space stays in
    # its token (only ASCII blanks separate columns) and becomes a plain space in the text.
    text = "in\tO\nNew  York\tB-LOC\nCity\tI-LOC\n\nSão\u00a0Paulo B-LOC\nwins O\n"
    first, second = load_examples(write(tmp_path, "ws.txt", text))
    assert first.text == "in New York City"
    assert entities(first) == [("New York City", "LOC")]
    assert second.text == "São Paulo wins"
    assert entities(second) == [("São Paulo", "LOC")]


def test_conll_iob1_is_normalised_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # IOB1: entities open with I-; B- only separates two adjacent entities of one type.
    text = "Peter I-PER\nBlackburn I-PER\nJohn B-PER\nmet O\nEU I-ORG\nofficials O\n"
    with caplog.at_level(logging.WARNING):
        (example,) = load_examples(write(tmp_path, "iob1.txt", text))
    assert entities(example) == [("Peter Blackburn", "PER"), ("John", "PER"), ("EU", "ORG")]
    assert not caplog.records


def test_conll_broken_bio2_is_repaired_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "Peter B-PER\nBlackburn I-PER\nmet O\nofficials O\nof O\nEU I-ORG\n"
    with caplog.at_level(logging.WARNING):
        (example,) = load_examples(write(tmp_path, "bio2.txt", text))
    assert entities(example) == [("Peter Blackburn", "PER"), ("EU", "ORG")]
    assert any(
        "bio2.txt:6:" in r.getMessage() and "I-ORG" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("tag", ["X-PER", "B-", "I", "b-PER", "S-PER"])
def test_conll_malformed_tag_names_file_and_line(tmp_path: Path, tag: str) -> None:
    path = write(tmp_path, "train.txt", f"EU NNP B-NP B-ORG\n\nPeter NNP B-NP {tag}\n")
    assert error_of(path) == (f"train.txt:3: tag {tag!r} is not BIO (expected O, B-TYPE or I-TYPE)")


def test_conll_wrong_column_count(tmp_path: Path) -> None:
    path = write(tmp_path, "train.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n")
    assert error_of(path) == "train.txt:2: expected 4 columns as on line 1, got 3"
    path = write(tmp_path, "one.txt", "EU B-ORG\nrejects\n")
    assert error_of(path).startswith("one.txt:2: expected 2 or more columns")


# --- CSV -----------------------------------------------------------------------------------


def test_csv_gmb_latin1_with_continuation_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "ner_dataset.csv", GMB_TEXT, encoding="latin-1")
    first, second = load_examples(path)
    assert first.text == "Thousands marched through New York"
    assert entities(first) == [("New York", "geo")]
    assert second.text == "Families of Müller ,"
    assert entities(second) == [("Müller", "per")]
    assert (first.source, second.source) == ("ner_dataset.csv:2", "ner_dataset.csv:7")
    assert first.document == second.document == "ner_dataset.csv"


def test_csv_utf8_with_bom_and_without_pos(tmp_path: Path) -> None:
    text = "\ufeffSentence #,Word,Tag\nSentence: 1,Müller,B-per\n,spoke,O\n"
    (example,) = load_examples(write(tmp_path, "a.csv", text))
    assert entities(example) == [("Müller", "per")]


def test_csv_forced_encoding_rejects_undecodable_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.csv", GMB_TEXT, encoding="latin-1")
    assert error_of(path, encoding="utf-8").startswith("ner.csv:9: bytes are not valid utf-8")
    assert entities(load_examples(path, encoding="latin-1")[1]) == [("Müller", "per")]


def test_csv_sentence_id_on_every_row_and_document_column(tmp_path: Path) -> None:
    text = (
        "document_id,sentence_idx,word,tag\n"
        "d1,1,Paris,B-geo\nd1,1,sleeps,O\nd1,2,Bob,B-per\nd2,1,Rome,B-geo\nd2,1,wakes,O\n"
    )
    examples = load_examples(write(tmp_path, "ner.csv", text))
    assert [e.text for e in examples] == ["Paris sleeps", "Bob", "Rome wakes"]
    assert [e.document for e in examples] == ["ner.csv#d1", "ner.csv#d1", "ner.csv#d2"]


def test_csv_document_must_be_consecutive(tmp_path: Path) -> None:
    text = "Document,Sentence #,Word,Tag\nd1,1,a,O\nd2,1,b,O\nd1,2,c,O\n"
    assert "document 'a.csv#d1' resumes" in error_of(write(tmp_path, "a.csv", text))


def test_csv_missing_column_and_wrong_row_length(tmp_path: Path) -> None:
    missing = write(tmp_path, "a.csv", "Sentence #,Word,POS\nSentence: 1,Paris,NNP\n")
    assert error_of(missing).startswith("a.csv:1: missing required column(s) Tag")
    short = write(tmp_path, "b.csv", "Sentence #,Word,POS,Tag\nSentence: 1,Paris,NNP,B-geo\n,x,O\n")
    assert error_of(short) == "b.csv:3: expected 4 columns as in the header, got 3"
    bad_tag = write(tmp_path, "c.csv", "Sentence #,Word,Tag\nSentence: 1,Paris,geo\n")
    assert error_of(bad_tag).startswith("c.csv:2: tag 'geo' is not BIO")
    orphan = write(tmp_path, "d.csv", "Sentence #,Word,Tag\n,Paris,O\n")
    assert error_of(orphan).startswith("d.csv:2: empty sentence id")


# --- JSONL ---------------------------------------------------------------------------------


def test_jsonl_objects_and_triples(tmp_path: Path) -> None:
    text = (
        '{"text": "Angela Merkel visited Paris.", "entities": '
        '[{"start": 22, "end": 27, "label": "LOC"}, {"start": 0, "end": 13, "label": "PER"}]}\n'
        "\n"
        '{"text": "EU talks", "spans": [[0, 2, "ORG"]], "document": "d7"}\n'
        '{"text": "  ", "entities": []}\n'
    )
    first, second = load_examples(write(tmp_path, "train.jsonl", text))
    assert entities(first) == [("Angela Merkel", "PER"), ("Paris", "LOC")]
    assert (first.document, first.source) == ("train.jsonl", "train.jsonl:1")
    assert entities(second) == [("EU", "ORG")]
    assert (second.document, second.source) == ("train.jsonl#d7", "train.jsonl:3")


def test_jsonl_spans_are_trimmed_of_whitespace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = '{"text": "in Paris today", "entities": [[2, 9, "LOC"]]}\n'
    with caplog.at_level(logging.WARNING):
        (example,) = load_examples(write(tmp_path, "a.jsonl", text))
    assert example.spans == (Span(3, 8, "LOC"),)
    assert any("a.jsonl:1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": "Paris", "entities": [[0, 9, "LOC"]]', "bad JSON"),
        ('["Paris"]', "expected a JSON object"),
        ('{"entities": []}', "'text' must be a string"),
        ('{"text": "Paris"}', "missing 'entities'"),
        ('{"text": "Paris", "spans": null}', "'spans' must be a list"),
        ('{"text": "Paris", "entities": [[0, 9, "LOC"]]}', "out of range"),
        ('{"text": "Paris", "entities": [[3, 3, "LOC"]]}', "out of range"),
        ('{"text": "Paris", "entities": [[0, "5", "LOC"]]}', "must be integers"),
        ('{"text": "a  b", "entities": [[1, 3, "LOC"]]}', "covers only whitespace"),
        ('{"text": "New York", "entities": [[0, 8, "LOC"], [4, 8, "LOC"]]}', "overlap"),
        ('{"text": "Paris", "entities": [[0, 5, "B-LOC"]]}', "is a BIO tag"),
        ('{"text": "Paris", "entities": [[0, 5, ""]]}', "label must be an entity type"),
        ('{"text": "Paris", "entities": [{"start": 0, "end": 5}]}', "label must be"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = write(tmp_path, "dev.jsonl", '{"text": "ok", "entities": []}\n' + line + "\n")
    message = error_of(path)
    assert message.startswith("dev.jsonl:2: ")
    assert problem in message


# --- zip -----------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, str], encoding: str = "utf-8") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text.encode(encoding))
    return path


def test_zip_with_csv_like_the_kaggle_archive(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "archive.zip",
        {
            "ner.csv": GMB_TEXT,
            "__MACOSX/._ner.csv": "junk",
            ".hidden.csv": "junk",
            "README.md": "# not data",
        },
        encoding="latin-1",
    )
    examples = load_examples(archive)
    assert [e.source for e in examples] == ["archive.zip/ner.csv:2", "archive.zip/ner.csv:7"]
    assert entities(examples[1]) == [("Müller", "per")]


def test_zip_with_conll_members_in_sorted_order(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "data.zip",
        {"b/part2.conll": "Rome B-LOC\n", "a/part1.txt": CONLL_TEXT, "a/": ""},
    )
    examples = load_examples(archive)
    assert [e.document for e in examples] == [
        "data.zip/a/part1.txt#1",
        "data.zip/a/part1.txt#1",
        "data.zip/a/part1.txt#2",
        "data.zip/b/part2.conll",
    ]


@pytest.mark.parametrize(
    "member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "..\\evil.txt", "C:/evil.txt"]
)
def test_zip_with_traversal_member_is_refused(tmp_path: Path, member: str) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    archive = make_zip(inner / "bad.zip", {"ok.txt": "Rome B-LOC\n", member: "Paris B-LOC\n"})
    before = sorted(tmp_path.rglob("*"))
    assert "unsafe member name" in error_of(archive)
    assert sorted(tmp_path.rglob("*")) == before


def test_zip_without_data_and_broken_zip(tmp_path: Path) -> None:
    empty = make_zip(tmp_path / "docs.zip", {"README.md": "x", "__MACOSX/a.csv": "x"})
    assert error_of(empty) == "docs.zip: no data files in the archive"
    broken = write(tmp_path, "broken.zip", "not a zip")
    assert error_of(broken).startswith("broken.zip: not a valid zip archive")


# --- format detection, label_map, channel, helpers -----------------------------------------


def test_format_detection_from_content_and_errors(tmp_path: Path) -> None:
    jsonl = write(tmp_path, "data", '{"text": "Rome", "entities": [[0, 4, "LOC"]]}\n')
    assert entities(load_examples(jsonl)[0]) == [("Rome", "LOC")]
    conll = write(tmp_path, "data.train", "Rome B-LOC\n")
    assert entities(load_examples(conll)[0]) == [("Rome", "LOC")]
    csv_file = write(tmp_path, "export", "Sentence #,Word,Tag\n1,Rome,B-geo\n")
    assert entities(load_examples(csv_file)[0]) == [("Rome", "geo")]
    assert entities(load_examples(conll, format="conll")[0]) == [("Rome", "LOC")]
    assert error_of(conll, format="xml").startswith("data.train: unknown format 'xml'")
    assert "cannot tell the format" in error_of(write(tmp_path, "blob", "justoneword\n"))


@pytest.mark.parametrize("name", ["empty.txt", "empty.csv", "empty.jsonl", "blank.txt"])
def test_empty_files_are_errors(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "\n\n" if name == "blank.txt" else "")
    assert error_of(path) == f"{name}: no sentences (empty file?)"


def test_label_map_renames_keeps_and_drops(tmp_path: Path) -> None:
    path = write(tmp_path, "ner.csv", GMB_TEXT.replace("Families", "Today") + ",now,RB,B-tim\n")
    examples = load_examples(path, label_map={"geo": "LOC", "per": "PER", "tim": "O"})
    assert [entities(e) for e in examples] == [[("New York", "LOC")], [("Müller", "PER")]]
    examples = load_examples(path, label_map={"geo": "LOC"})
    assert entity_types(examples) == ["LOC", "per", "tim"]


def test_load_channel_reads_data_files_sorted_and_recursively(tmp_path: Path) -> None:
    channel = tmp_path / "train"
    write(channel, "b.txt", "Rome B-LOC\n")
    write(channel, "a/x.jsonl", '{"text": "EU", "entities": [[0, 2, "ORG"]]}\n')
    write(channel, ".hidden.txt", "junk\n")
    write(channel, ".cache/c.txt", "junk\n")
    write(channel, "manifest.json", "{}")
    examples = load_channel(channel)
    assert [e.source for e in examples] == ["a/x.jsonl:1", "b.txt:1"]
    assert entity_types(examples) == ["LOC", "ORG"]
    dropped = load_channel(channel, label_map={"ORG": "O"})
    assert entity_types(dropped) == ["LOC"]
    assert len(dropped) == 2


def test_load_channel_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_channel(tmp_path / "missing")
    write(tmp_path, "only/README.md", "no data")
    with pytest.raises(DataError, match="no data files"):
        load_channel(tmp_path / "only")
    write(tmp_path, "bad/a.txt", "Rome X-LOC\n")
    with pytest.raises(DataError, match=r"^a\.txt:1: tag 'X-LOC'"):
        load_channel(tmp_path / "bad")


def test_fingerprint_covers_texts_and_spans() -> None:
    example = Example("Rome", (Span(0, 4, "LOC"),), "d", "f:1")
    other = Example("Rome", (Span(0, 4, "ORG"),), "d", "f:1")
    moved = Example("Rome", (Span(0, 4, "LOC"),), "e", "g:9")
    assert fingerprint([example]) == fingerprint([moved])
    assert fingerprint([example]) != fingerprint([other])
    assert fingerprint([example, other]) != fingerprint([other, example])
    assert len(fingerprint([])) == 64


# --- the real datasets ---------------------------------------------------------------------


def b_tag_counts(tags: list[str]) -> Counter[str]:
    return Counter(tag[2:] for tag in tags if tag.startswith("B-"))


def span_counts(examples: list[Example]) -> Counter[str]:
    return Counter(span.label for example in examples for span in example.spans)


@pytest.mark.parametrize(
    ("name", "sentences", "documents"),
    [("train.txt", 14041, 946), ("valid.txt", 3250, 216), ("test.txt", 3453, 231)],
)
def test_real_conll2003(name: str, sentences: int, documents: int) -> None:
    path = CONLL / name
    if not path.exists():
        pytest.skip(f"CoNLL-2003 not present at {path}")
    examples = load_examples(path)
    assert len(examples) == sentences
    assert len({e.document for e in examples}) == documents
    assert entity_types(examples) == ["LOC", "MISC", "ORG", "PER"]
    lines = path.read_text(encoding="utf-8").split("\n")
    assert span_counts(examples) == b_tag_counts(
        [line.split()[-1] for line in lines if line.strip()]
    )
    for example in examples[:500]:
        for span in example.spans:
            entity = example.text[span.start : span.end]
            assert entity == entity.strip() and entity


def test_real_gmb_sample() -> None:
    if not GMB.exists():
        pytest.skip(f"GMB sample not present at {GMB}")
    examples = load_examples(GMB)
    assert len(examples) == 8300
    with GMB.open(encoding="latin-1", newline="") as handle:
        tags = [row["Tag"] for row in csv.DictReader(handle)]
    assert span_counts(examples) == b_tag_counts(tags)
    assert sum(len(e.text.split(" ")) for e in examples) == len(tags)
    assert load_examples(GMB, label_map={"geo": "LOC"})[0].spans[0].label == "LOC"
