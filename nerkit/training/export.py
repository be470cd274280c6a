"""Trained token classifier -> ONNX (fp32 and dynamic int8) -> artifact directory.

Training-only: this module imports torch. The exported graph follows the artifact contract
in docs/ARCHITECTURE.md: int64 inputs ``input_ids``, ``attention_mask`` and optionally
``casing_ids`` (``[batch, sequence]``), float32 output ``logits`` (``[batch, sequence,
labels]``), both axes dynamic.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.optimizer import optimize_model
from transformers import PreTrainedModel

from nerkit.artifact import write_manifest
from nerkit.engine import OPTIMIZED_GRAPH
from nerkit.features import CASING_VOCAB_SIZE

# Token ids used to trace and check the export; every BERT-family vocabulary has them.
_PROBE_VOCAB = 100
# fp32 ONNX Runtime vs torch on the same inputs: only kernel rounding differs.
_EXPORT_ATOL = 1e-4
_EXPORT_RTOL = 1e-3


class _LogitsOnly(torch.nn.Module):
    """Calls the classifier with named inputs and returns its logits tensor.

    Named, because a Hugging Face model's third positional argument is ``token_type_ids``,
    not ``casing_ids``.
    """

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        if isinstance(output, torch.Tensor):
            return output
        logits = getattr(output, "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"model returned {type(output).__name__}, not logits")
        return logits


def export_onnx(
    model: torch.nn.Module, onnx_path: Path, *, with_casing: bool, opset: int = 17
) -> None:
    """Export a token classifier to ``onnx_path`` and check it against torch.

    ``model(input_ids=..., attention_mask=...[, casing_ids=...])`` must return logits or an
    output with ``.logits``. We use the TorchScript exporter (``dynamo=False``): on torch
    2.13 it exports a BERT encoder correctly in well under a second, where the dynamo
    exporter takes several seconds and only emits opset 18, down-converting to 17. Tracing
    can bake in shapes or values, so the exported graph is run on a batch of another
    shape and padding pattern and compared with torch; a mismatch raises ``RuntimeError``.
    Attention is exported in its eager form, the graph ONNX Runtime's fusions recognise.
    """
    input_names = ["input_ids", "attention_mask", *(["casing_ids"] if with_casing else [])]
    was_training = model.training
    wrapper = _LogitsOnly(model, input_names).eval()
    try:
        with torch.no_grad(), _eager_attention(model):
            _trace_to_onnx(wrapper, _probe_inputs(2, 7, with_casing, seed=0), onnx_path, opset)
            _check_export(wrapper, onnx_path, _probe_inputs(3, 11, with_casing, seed=1))
    finally:
        model.train(was_training)


def check_onnx(model: torch.nn.Module, onnx_path: Path, *, with_casing: bool) -> None:
    """Raise ``RuntimeError`` unless ``onnx_path`` (e.g. a fused rewrite of the export)
    still computes the torch model's logits on a right-padded batch of mixed lengths."""
    input_names = ["input_ids", "attention_mask", *(["casing_ids"] if with_casing else [])]
    with torch.no_grad():
        _check_export(
            _LogitsOnly(model, input_names).eval(),
            onnx_path,
            _probe_inputs(3, 11, with_casing, seed=2),
        )


@contextlib.contextmanager
def _eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Hugging Face models read the attention implementation from their config at each
    forward: switch every one inside ``model`` to eager for the export, then restore."""
    configs = [m.config for m in model.modules() if isinstance(m, PreTrainedModel)]
    saved = [config._attn_implementation for config in configs]
    for config in configs:
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        for config, implementation in zip(configs, saved, strict=True):
            config._attn_implementation = implementation


def fuse_transformer(
    onnx_path: Path, fused_path: Path, *, num_heads: int, hidden_size: int
) -> dict[str, int]:
    """ONNX Runtime's BERT fusions (Attention, SkipLayerNormalization, BiasGelu).

    Fewer, larger nodes: faster inference and a much faster session start, at the same F1
    (docs/ARCHITECTURE.md, "Export choices"). The fused ops are ONNX Runtime contrib ops,
    which is what serves the artifact. Returns the count of each fused op.
    """
    optimized = optimize_model(
        str(onnx_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size
    )
    optimized.save_model_to_file(str(fused_path))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    *,
    quantize_embeddings: bool = True,
    per_channel: bool = True,
    exclude_nodes: Sequence[str] = (),
) -> None:
    """Dynamic int8 quantization of MatMul weights and, if asked, embedding tables (Gather).

    Per-channel weight scales are the default: they lose less F1 than one scale per tensor,
    for the same size. They come with 7-bit weights (``reduce_range``) because x86 AVX2
    kernels without VNNI can saturate u8 x s8 products, which per-channel scales hit
    (docs/ARCHITECTURE.md, "Export choices", has the measurements).

    The model is pre-processed first (symbolic shape inference and graph optimisation), as
    ONNX Runtime recommends. ``exclude_nodes`` names nodes of that pre-processed graph to
    keep in fp32; a name that is not there raises ``ValueError`` instead of being ignored.
    """
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        _pre_process(fp32_path, prepared, Path(tmp))
        missing = sorted(
            set(exclude_nodes) - {node.name for node in onnx.load(prepared).graph.node}
        )
        if missing:
            raise ValueError(f"exclude_nodes not in the graph: {missing}")
        quantize_dynamic(
            prepared,
            int8_path,
            op_types_to_quantize=[
                "MatMul",
                "Attention",
                *(["Gather"] if quantize_embeddings else []),
            ],
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=per_channel,
            nodes_to_exclude=list(exclude_nodes),
            # Fused contrib ops carry no inferred output types; their tensors are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def build_artifact(
    out_dir: Path,
    *,
    onnx_path: Path,
    tokenizer_json: Path,
    manifest: dict[str, Any],
    extra_files: Sequence[Path] = (),
    optimize: bool = False,
) -> dict[str, Any]:
    """Copy the model, tokenizer and ``extra_files`` (e.g. the model card) into ``out_dir``
    and write its manifest with checksums; return the manifest.

    ``optimize`` stores ONNX Runtime's optimized graph instead of the model (``optimize_graph``):
    for the artifact that will be served, whose graph no tool processes any further (the
    optimized graph holds ONNX Runtime's own operators, which quantization cannot read).
    Every regular file already in ``out_dir`` becomes part of the artifact.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy(onnx_path, out_dir / "model.onnx")
    _copy(tokenizer_json, out_dir / "tokenizer.json")
    for path in extra_files:
        _copy(path, out_dir / path.name)
    if optimize:
        manifest = {**manifest, OPTIMIZED_GRAPH: optimize_graph(out_dir / "model.onnx")}
    return write_manifest(out_dir, manifest)


def optimize_graph(onnx_path: Path) -> dict[str, str]:
    """Replace ``onnx_path`` by ONNX Runtime's optimized form of it, so that serving starts
    its session without optimizing (``nerkit.engine.graph_optimization_level``); return the
    manifest entry that says so.

    The extended level: every fusion that does not depend on the CPU (ONNX Runtime warns
    that the layout transforms above it only suit the machine that made them). Serving's
    results are bit-identical to optimizing at load.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "model.onnx"
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        shutil.move(optimized, onnx_path)
    return {"onnxruntime": ort.__version__, "level": "extended"}


def _probe_inputs(
    batch: int, length: int, with_casing: bool, *, seed: int
) -> tuple[torch.Tensor, ...]:
    """Random ids with right padding in every row but the first (the longest)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, _PROBE_VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.int64)
    for row in range(1, batch):
        attention_mask[row, length - row :] = 0
    input_ids = input_ids * attention_mask
    if not with_casing:
        return input_ids, attention_mask
    casing_ids = torch.randint(1, CASING_VOCAB_SIZE, (batch, length), generator=generator)
    return input_ids, attention_mask, casing_ids * attention_mask


def _trace_to_onnx(
    wrapper: _LogitsOnly, inputs: tuple[torch.Tensor, ...], onnx_path: Path, opset: int
) -> None:
    dynamic = {0: "batch", 1: "sequence"}
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Known and harmless here: the exporter's own deprecation notices, tracer notes on
        # shape-only Python conditions in transformers' masking code, and a note on index
        # ops (our indices are never negative). _check_export catches a bad trace.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            wrapper,
            inputs,
            str(onnx_path),
            dynamo=False,
            input_names=list(wrapper.input_names),
            output_names=["logits"],
            dynamic_axes={name: dynamic for name in [*wrapper.input_names, "logits"]},
            opset_version=opset,
        )


def _check_export(wrapper: _LogitsOnly, onnx_path: Path, inputs: tuple[torch.Tensor, ...]) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    declared = {node.name for node in session.get_inputs()}
    feeds = {
        name: tensor.numpy()
        for name, tensor in zip(wrapper.input_names, inputs, strict=True)
        if name in declared  # the exporter drops inputs the model ignores
    }
    exported = session.run(["logits"], feeds)[0]
    expected = wrapper(*inputs).numpy()
    if exported.shape != expected.shape or not np.allclose(
        exported, expected, rtol=_EXPORT_RTOL, atol=_EXPORT_ATOL
    ):
        raise RuntimeError(f"exported ONNX model disagrees with torch: {onnx_path}")


def _pre_process(fp32_path: Path, prepared: Path, scratch: Path) -> None:
    # auto_merge: the symbolic shapes of a BERT graph (Min(512, sequence) from slicing the
    # position ids vs sequence) do not unify without it. Shape inference writes a temp file
    # into the working directory when it fails, so run it from the scratch directory.
    source, target = fp32_path.resolve(), prepared.resolve()
    with contextlib.chdir(scratch):
        quant_pre_process(source, target, auto_merge=True)


def _copy(source: Path, destination: Path) -> None:
    if source.resolve() != destination.resolve():
        shutil.copyfile(source, destination)
