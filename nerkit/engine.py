"""The inference engine: tokenizers + ONNX Runtime, windows for long texts, batching.

Serving imports this module, so it must never import torch or transformers. A text is
tokenized once; if it is longer than the model's ``max_seq_length`` it is cut into
overlapping windows, every token keeps the scores of the window where it has the most
context, and the whole token sequence is decoded once (so nothing is lost or doubled at a
window boundary). Windows of all texts are run together in length-sorted batches.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from nerkit.artifact import ArtifactError, extract, verify
from nerkit.decoding import (
    Entity,
    Token,
    TransitionPrior,
    check_decoding,
    check_options,
    decode,
    entity_group_name,
    label_tokens,
    softmax,
    subword_flags,
    transition_prior,
)
from nerkit.errors import TrialRunFailed
from nerkit.features import CASING_SCHEME, casing_ids
from nerkit.labels import OUTSIDE

__all__ = [
    "Entity",
    "InvalidTextError",
    "NerEngine",
    "Token",
    "UnknownLabelsError",
    "assign_windows",
    "plan_windows",
    "trial_run",
]

DEFAULT_BATCH_SIZE = 32
# A batch closes when the next (length-sorted) window is longer than this times the
# batch's shortest plus a few tokens: on a CPU the cost is the padded token count, so
# grouping only similar lengths keeps padding small.
_BUCKET_GROWTH = 1.25
_BUCKET_SLACK = 4
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "casing_ids")
# Stands for "no unknown token" so the id comparison stays vectorised.
_NO_TOKEN_ID = -1
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
# The manifest entry of an artifact whose model.onnx ONNX Runtime optimized at export
# (nerkit.training.export.optimize_graph): {"onnxruntime": its version, "level": "extended"}.
OPTIMIZED_GRAPH = "onnxruntime_optimized"


class UnknownLabelsError(ValueError):
    """``labels`` names entity types the model does not have (``unknown``, in request order)."""

    def __init__(self, unknown: list[str], known: list[str]) -> None:
        super().__init__(f"unknown entity types {unknown}; this model has {known}")
        self.unknown = unknown
        self.known = known


class InvalidTextError(ValueError):
    """Text ``index`` is not valid Unicode (a lone surrogate, which JSON can carry)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"text {index} is not valid Unicode (lone surrogate)")
        self.index = index


class _Window(NamedTuple):
    """Model input for one window: the template's special tokens around a run of content."""

    doc: int  # index of the text
    start: int  # first content token of the window, counted in the text's content tokens
    ids: np.ndarray
    casing: np.ndarray | None


@dataclass(frozen=True)
class _Document:
    """One tokenized text; ``ids``/``casing`` include the template's special tokens."""

    text: str
    ids: np.ndarray
    casing: np.ndarray | None
    prefix: int  # special tokens the template puts before the content
    suffix: int  # and after it
    offsets: np.ndarray  # [content, 2]
    tokens: list[str]  # content tokens' vocabulary strings
    special: np.ndarray  # content tokens the tokenizer marks special
    window_starts: np.ndarray

    @property
    def length(self) -> int:
        return len(self.offsets)


def trial_run(tar_path: Path) -> None:
    """Extract ``tar_path`` (a ``model.tar.gz``) into a scratch directory, load it and run
    ``NerEngine.self_test``: what the command lines that move LIVE demand first, as serving's
    model holder does before a swap. Raises ``ArtifactError`` (``TrialRunFailed`` when the
    model loads but cannot run)."""
    with tempfile.TemporaryDirectory(prefix="nerkit-trial-") as scratch:
        model_dir = Path(scratch) / "model"
        manifest = extract(tar_path, model_dir)
        NerEngine.load(model_dir, manifest=manifest).self_test()


def plan_windows(length: int, capacity: int, stride: int) -> np.ndarray:
    """Start offsets of windows of ``capacity`` tokens covering ``length`` tokens.

    Consecutive windows overlap by at least ``stride`` tokens; the last window ends at the
    last token so no window is shorter than it needs to be.
    """
    if length <= capacity:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - capacity, capacity - stride, dtype=np.int64)
    return np.append(starts, length - capacity)


def assign_windows(length: int, starts: np.ndarray, capacity: int) -> np.ndarray:
    """For each token, the window in which it is farthest from a cut.

    A window edge at the start or end of the text cuts no context, so only edges inside
    the text count; ties go to the earlier window. Memory stays linear in ``length``.
    """
    unbounded = length  # farther than any distance inside the text
    best = np.full(length, -1, dtype=np.int64)
    chosen = np.zeros(length, dtype=np.int64)
    for window, start in enumerate(starts.tolist()):
        end = min(start + capacity, length)
        positions = np.arange(start, end, dtype=np.int64)
        to_left_cut = positions - start if start > 0 else np.full_like(positions, unbounded)
        to_right_cut = end - 1 - positions if end < length else unbounded
        centrality = np.minimum(to_left_cut, to_right_cut)
        better = centrality > best[start:end]
        best[start:end][better] = centrality[better]
        chosen[start:end][better] = window
    return chosen


class NerEngine:
    """Named-entity recognition over an artifact directory (see docs/ARCHITECTURE.md)."""

    def __init__(
        self,
        manifest: dict[str, Any],
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        batch_size: int | None = None,
        stride: int | None = None,
    ) -> None:
        self.manifest = manifest
        self._session = session
        self._labels: list[str] = list(manifest["labels"])
        self._entity_types = entity_types_of(self._labels)
        self._input_types = _check_inputs(session, manifest)
        _check_output(session, len(self._labels))
        self._prior = _transition_prior(manifest)
        self._use_casing = "casing_ids" in self._input_types
        self._batch_size = _positive("batch_size", batch_size or _default_batch_size(manifest))
        self._pad_id = _pad_id(tokenizer)
        self._unk_id = _unk_id(tokenizer)
        self._subword_prefix: str | None = getattr(
            tokenizer.model, "continuing_subword_prefix", None
        )
        # Windows are cut here, so the tokenizer must return every token, unpadded.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        # Content tokens per window: max_seq_length counts the template's special tokens.
        self._capacity = manifest["max_seq_length"] - len(tokenizer.encode("").ids)
        self._stride = self._capacity // 4 if stride is None else stride
        if not 0 <= self._stride < self._capacity:
            raise ValueError(f"stride must be in [0, {self._capacity}): {self._stride}")

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        threads: int = 1,
        batch_size: int | None = None,
        stride: int | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> NerEngine:
        """Verify the artifact in ``model_dir`` and load it.

        ``threads`` is ONNX Runtime's intra-op thread count; ``batch_size`` the most windows
        run together (default: 1 for dynamically quantized models, else 32; see
        ``_default_batch_size``); ``manifest`` a manifest the caller verified a moment ago
        (a model source's ``fetch`` does), which skips hashing the files twice; ``stride`` the
        overlap of consecutive windows of a long text (default: a quarter of a window, so
        each token keeps at least an eighth of a window of context on each side).
        """
        if manifest is None:
            manifest = verify(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = _positive("threads", threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = graph_optimization_level(manifest)
        try:
            session = ort.InferenceSession(
                str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime and tokenizers raise their own types
            raise _failure(exc, "artifact model or tokenizer cannot be loaded") from None
        return cls(manifest, session, tokenizer, batch_size=batch_size, stride=stride)

    def self_test(self) -> None:
        """Prove the model runs before it serves: one batch with a text longer than a window
        (so windows of exactly ``max_seq_length`` tokens, the most the engine ever feeds)
        and a short one must give finite scores for every token and label.

        Loading checks what the graph declares; this catches what only running shows, such
        as a ``max_seq_length`` beyond the graph's position embeddings. Raises
        ``TrialRunFailed`` (or ``MemoryError``, which is not the artifact's fault).
        """
        limit = self.manifest["max_seq_length"]
        texts = [" ".join(["x"] * (self._capacity + 1)), "Paris"]
        documents = [
            self._document(text, encoding)
            for text, encoding in zip(texts, self._encode(texts), strict=True)
        ]
        try:
            # Non-finite scores are reported below, not warned about.
            with np.errstate(invalid="ignore", over="ignore"):
                scores = self._document_scores(documents)
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime raises its own types
            failure = f"model.onnx fails on a window of max_seq_length ({limit}) tokens"
            raise _failure(exc, failure, TrialRunFailed) from None
        for doc, probabilities in zip(documents, scores, strict=True):
            if probabilities.shape != (doc.length, len(self._labels)):
                raise TrialRunFailed(
                    f"model.onnx gives scores of shape {probabilities.shape} for "
                    f"{doc.length} tokens and {len(self._labels)} labels"
                )
            if not np.isfinite(probabilities).all():
                raise TrialRunFailed("model.onnx gives scores that are not finite")

    @property
    def labels(self) -> list[str]:
        """The model's BIO2 labels, in logit order."""
        return list(self._labels)

    @property
    def entity_types(self) -> list[str]:
        """The ``entity_group`` values this model can return."""
        return list(self._entity_types)

    def predict(
        self,
        texts: Sequence[str],
        *,
        aggregation: str = "simple",
        decoding: str = "viterbi",
        labels: Collection[str] | None = None,
        min_score: float = 0.0,
        outside: bool = False,
    ) -> list[list[Entity]]:
        """Entities of each text, in text order; ``word == text[start:end]`` always.

        ``aggregation``, ``decoding`` and ``outside`` are as in
        :func:`nerkit.decoding.decode`. ``labels`` keeps only those entity types (read once;
        unknown ones raise ``UnknownLabelsError``; ``O`` groups, asked for with ``outside``,
        are kept), ``min_score`` drops entities scoring below it. A text that is not valid
        Unicode raises ``InvalidTextError``; both are ``ValueError``s raised before any
        inference.
        """
        check_options(aggregation, decoding)
        wanted = self._check_request(texts, labels)
        results = []
        for doc, scores in self._scored(texts):
            entities = self._decode(doc, scores, aggregation, decoding, outside)
            results.append([e for e in entities if _wanted(e, wanted, min_score)])
        return results

    def predict_tokens(
        self, texts: Sequence[str], *, decoding: str = "viterbi"
    ) -> list[list[Token]]:
        """Every (non-special) token of each text with its label, ``O`` included: the
        pipeline's ``aggregation_strategy="none"``. ``decoding`` and the errors are as for
        :meth:`predict`; ``index`` counts the template's special tokens, as the model input
        of a text that fits one window does."""
        check_decoding(decoding)
        self._check_request(texts, None)
        results = []
        for doc, scores in self._scored(texts):
            keep, offsets, _ = self._content(doc)
            indices = doc.prefix + np.flatnonzero(keep)
            results.append(
                label_tokens(
                    doc.text, scores[keep], offsets, indices, self._labels, decoding, self._prior
                )
            )
        return results

    def _scored(self, texts: Sequence[str]) -> list[tuple[_Document, np.ndarray]]:
        """Each text's document and its content tokens' probabilities, in text order."""
        documents = [
            self._document(text, encoding)
            for text, encoding in zip(texts, self._encode(texts), strict=True)
        ]
        return list(zip(documents, self._document_scores(documents), strict=True))

    def _check_request(
        self,
        texts: Sequence[str],
        labels: Collection[str] | None,
    ) -> frozenset[str] | None:
        """The entity types to keep (``None``: all), once the request is known to be valid."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a string")
        wanted = None
        if labels is not None:
            # Keys in request order for the error; a set for the per-entity filter.
            requested = dict.fromkeys(labels)
            unknown = [label for label in requested if label not in self._entity_types]
            if unknown:
                raise UnknownLabelsError(unknown, self.entity_types)
            wanted = frozenset(requested)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {index} is not a string")
        return wanted

    def _encode(self, texts: Sequence[str]) -> list[Encoding]:
        if not texts:
            return []
        try:
            return self._tokenizer.encode_batch(list(texts))
        except TypeError:
            # The tokenizer refuses lone surrogates (which JSON can carry) with a TypeError
            # that does not say which text; find it only now, so valid requests never pay
            # for encoding every text to UTF-8 first.
            for index, text in enumerate(texts):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidTextError(index) from None
            raise

    def _document(self, text: str, encoding: Encoding) -> _Document:
        ids = np.asarray(encoding.ids, dtype=np.int64)
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        special = np.asarray(encoding.special_tokens_mask, dtype=bool)
        prefix, suffix = _template_edges(special)
        end = len(ids) - suffix
        casing = (
            np.asarray(casing_ids(text, encoding.offsets), dtype=np.int64)
            if self._use_casing
            else None
        )
        return _Document(
            text=text,
            ids=ids,
            casing=casing,
            prefix=prefix,
            suffix=suffix,
            offsets=offsets[prefix:end],
            tokens=encoding.tokens[prefix:end],
            special=special[prefix:end],
            window_starts=plan_windows(end - prefix, self._capacity, self._stride),
        )

    def _document_scores(self, documents: list[_Document]) -> list[np.ndarray]:
        """Each document's content-token probabilities, all windows run in shared batches."""
        windows = [window for i, doc in enumerate(documents) for window in self._windows(i, doc)]
        per_document: list[list[tuple[_Window, np.ndarray]]] = [[] for _ in documents]
        for window, probs in zip(windows, self._score(windows), strict=True):
            per_document[window.doc].append((window, probs))
        return [
            _content_scores(doc, scored, self._capacity)
            for doc, scored in zip(documents, per_document, strict=True)
        ]

    def _windows(self, index: int, doc: _Document) -> list[_Window]:
        if len(doc.window_starts) == 1:
            return [_Window(index, 0, doc.ids, doc.casing)]
        head = slice(0, doc.prefix)
        tail = slice(len(doc.ids) - doc.suffix, len(doc.ids))

        def cut(values: np.ndarray, start: int) -> np.ndarray:
            body = values[doc.prefix + start : doc.prefix + start + self._capacity]
            return np.concatenate([values[head], body, values[tail]])

        return [
            _Window(
                index,
                int(start),
                cut(doc.ids, start),
                None if doc.casing is None else cut(doc.casing, start),
            )
            for start in doc.window_starts
        ]

    def _score(self, windows: list[_Window]) -> list[np.ndarray]:
        """Label probabilities ``[window length, labels]`` per window, in input order."""
        results: list[np.ndarray] = [np.empty(0)] * len(windows)
        for batch in self._batches(windows):
            probabilities = softmax(self._run([windows[i] for i in batch]))
            for i, probs in zip(batch, probabilities, strict=True):
                results[i] = probs[: len(windows[i].ids)]
        return results

    def _batches(self, windows: list[_Window]) -> list[list[int]]:
        """Window indices grouped by similar length, at most ``batch_size`` per group."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        batches: list[list[int]] = []
        for i in order:
            length = len(windows[i].ids)
            if (
                batches
                and len(batches[-1]) < self._batch_size
                and length <= _BUCKET_GROWTH * len(windows[batches[-1][0]].ids) + _BUCKET_SLACK
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _run(self, batch: list[_Window]) -> np.ndarray:
        width = max(len(window.ids) for window in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        casing = np.zeros((len(batch), width), dtype=np.int64)
        for row, window in enumerate(batch):
            ids[row, : len(window.ids)] = window.ids
            mask[row, : len(window.ids)] = 1
            if window.casing is not None:
                casing[row, : len(window.casing)] = window.casing
        arrays = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids),
            "casing_ids": casing,
        }
        feeds = {
            name: arrays[name].astype(kind, copy=False) for name, kind in self._input_types.items()
        }
        return self._session.run(["logits"], feeds)[0]

    def _content(self, doc: _Document) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Which content tokens the pipeline looks at (a mask), their offsets and strings.

        The pipeline skips special tokens; inside the content they are rare (typed by the
        user and marked special by the tokenizer), so only then pay for filtering tokens.
        """
        keep = ~doc.special
        tokens = doc.tokens if keep.all() else [doc.tokens[i] for i in np.flatnonzero(keep)]
        return keep, doc.offsets[keep], tokens

    def _decode(
        self, doc: _Document, scores: np.ndarray, aggregation: str, decoding: str, outside: bool
    ) -> list[Entity]:
        keep, offsets, tokens = self._content(doc)
        ids = doc.ids[doc.prefix : doc.prefix + doc.length][keep]
        flags = subword_flags(
            doc.text,
            tokens,
            offsets,
            is_unknown=ids == self._unk_id,
            subword_prefix=self._subword_prefix,
        )
        return decode(
            doc.text,
            scores[keep],
            offsets,
            flags,
            self._labels,
            aggregation,
            decoding,
            self._prior,
            outside,
        )


def _content_scores(
    doc: _Document, scored: list[tuple[_Window, np.ndarray]], capacity: int
) -> np.ndarray:
    """The content tokens' probabilities, each from the window where it is most central."""
    if len(scored) == 1:
        _, probs = scored[0]
        return probs[doc.prefix : doc.prefix + doc.length]
    chosen = assign_windows(doc.length, doc.window_starts, capacity)
    scores = np.empty((doc.length, scored[0][1].shape[1]), dtype=np.float32)
    for index, (window, probs) in enumerate(scored):
        positions = np.flatnonzero(chosen == index)
        scores[positions] = probs[doc.prefix + positions - window.start]
    return scores


def _template_edges(special: np.ndarray) -> tuple[int, int]:
    """How many special tokens the post-processor put before and after the content.

    Special tokens typed by the user (``"[SEP]"`` in the text) are content: the tokenizer
    marks only the template's tokens in ``special_tokens_mask``.
    """
    content = np.flatnonzero(~special)
    if len(content) == 0:
        return len(special), 0
    return int(content[0]), int(len(special) - 1 - content[-1])


def graph_optimization_level(manifest: dict[str, Any]) -> ort.GraphOptimizationLevel:
    """What the session still has to optimize: nothing when this ONNX Runtime version
    optimized the graph at export, else everything (an older or newer version may fuse
    differently, and optimizing an optimized graph again is harmless).

    Export stores the extended level, the last one that does not depend on the CPU; the
    layout transforms ``ORT_ENABLE_ALL`` adds on top are CPU-specific and apply to
    convolutions, which a token classifier has none of.
    """
    stored = manifest.get(OPTIMIZED_GRAPH)
    if isinstance(stored, dict) and stored.get("onnxruntime") == ort.__version__:
        return ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def _check_inputs(session: ort.InferenceSession, manifest: dict[str, Any]) -> dict[str, type]:
    """The graph's inputs and their numpy types; refuse graphs the manifest does not explain."""
    declared = {node.name: node.type for node in session.get_inputs()}
    unknown = sorted(set(declared) - set(_KNOWN_INPUTS))
    if unknown:
        raise ArtifactError(f"model.onnx has inputs the engine cannot feed: {unknown}")
    if "input_ids" not in declared:
        raise ArtifactError("model.onnx has no input_ids input")
    casing = manifest.get("casing")
    if casing is not None and casing != CASING_SCHEME:
        raise ArtifactError(f"unsupported casing scheme {casing!r} (engine has {CASING_SCHEME})")
    if ("casing_ids" in declared) != (casing is not None):
        raise ArtifactError("model.onnx casing_ids input and manifest casing disagree")
    types = {}
    for name, onnx_type in declared.items():
        if onnx_type not in _NUMPY_TYPES:
            raise ArtifactError(f"model.onnx input {name} has unsupported type {onnx_type}")
        types[name] = _NUMPY_TYPES[onnx_type]
    return types


def _transition_prior(manifest: dict[str, Any]) -> TransitionPrior | None:
    """The manifest's ``transitions`` (label-bigram log-probabilities from the training data
    and the weight viterbi gives them), or ``None`` when the model has none."""
    transitions = manifest.get("transitions")
    if transitions is None:
        return None
    try:
        return transition_prior(transitions, len(manifest["labels"]))
    except ValueError as exc:
        raise ArtifactError(f"manifest {exc}") from None


def _check_output(session: ort.InferenceSession, num_labels: int) -> None:
    outputs = {node.name: node.shape for node in session.get_outputs()}
    if "logits" not in outputs:
        raise ArtifactError("model.onnx has no logits output")
    width = outputs["logits"][-1]
    if isinstance(width, int) and width != num_labels:
        raise ArtifactError(
            f"model.onnx has {width} logits per token, manifest {num_labels} labels"
        )


def _default_batch_size(manifest: dict[str, Any]) -> int:
    """1 for dynamically quantized models, else ``DEFAULT_BATCH_SIZE``.

    Dynamic int8 quantization scales activations per tensor, over the whole batch and its
    padding: batched, a text's scores (and sometimes labels) would depend on the other texts
    in the request. One window per run keeps results independent of batching and, on one
    core, costs about 10% throughput against length-bucketed batches.
    """
    quantization = str(manifest.get("quantization") or "none")
    return 1 if quantization.startswith("int8") else DEFAULT_BATCH_SIZE


def _pad_id(tokenizer: Tokenizer) -> int:
    # Padded positions are masked out, so any id works; prefer the tokenizer's own.
    padding = tokenizer.padding
    return int(padding["pad_id"]) if padding else 0


def _unk_id(tokenizer: Tokenizer) -> int:
    unk_token = getattr(tokenizer.model, "unk_token", None)
    unk_id = tokenizer.token_to_id(unk_token) if unk_token else None
    return _NO_TOKEN_ID if unk_id is None else unk_id


def _failure(exc: Exception, failure: str, blame: type[ArtifactError] = ArtifactError) -> Exception:
    """What an ONNX Runtime or tokenizers error means for the artifact: ``blame``
    (``failure: exc``), unless memory ran out, which is not the artifact's fault and must
    not make callers blame (and skip) the release."""
    if _out_of_memory(exc):
        return MemoryError(f"not enough memory for the model: {exc}")
    return blame(f"{failure}: {exc}")


def _out_of_memory(exc: Exception) -> bool:
    """Whether an ONNX Runtime error is an allocation failure (it has no type of its own)."""
    message = str(exc)
    return "bad_alloc" in message or "Failed to allocate memory" in message


def entity_types_of(labels: list[str]) -> dict[str, None]:
    """The entity types of BIO ``labels``, in label order (a dict: ordered, O(1) lookups)."""
    names = dict.fromkeys(entity_group_name(label) for label in labels)
    names.pop(OUTSIDE, None)
    return names


def _wanted(entity: Entity, wanted: frozenset[str] | None, min_score: float) -> bool:
    # O groups exist only when the caller asked for them, so ``wanted`` does not filter them.
    kept_type = wanted is None or entity.entity_group in wanted or entity.entity_group == OUTSIDE
    return entity.score >= min_score and kept_type


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{name} must be at least 1: {value}")
    return value
