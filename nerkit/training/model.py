"""The token classifier: a pretrained encoder, an optional casing embedding, a linear head."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from nerkit.features import CASING_VOCAB_SIZE

log = logging.getLogger(__name__)


class TokenClassifier(nn.Module):
    """Encoder + casing embedding + classifier.

    The casing embedding is added to the word embeddings so an uncased encoder can see
    capitalisation (``nerkit.features``). It starts at zero: step 0 is exactly the
    pretrained encoder and the model learns how much casing to use.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, *, casing: bool, dropout: float):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.casing = nn.Embedding(CASING_VOCAB_SIZE, hidden, padding_idx=0) if casing else None
        if self.casing is not None:
            nn.init.zeros_(self.casing.weight)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        casing_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        embeddings = self.encoder.get_input_embeddings()(input_ids)
        if self.casing is not None:
            if casing_ids is None:
                raise ValueError("this model was built with casing features: pass casing_ids")
            embeddings = embeddings + self.casing(casing_ids)
        hidden = self.encoder(inputs_embeds=embeddings, attention_mask=attention_mask)
        return self.classifier(self.dropout(hidden.last_hidden_state))

    @classmethod
    def from_pretrained(
        cls, base_model: str | Path, num_labels: int, *, casing: bool, dropout: float = 0.1
    ) -> TokenClassifier:
        # add_pooling_layer=False: the pooler is unused for token classification, so its
        # weights in the checkpoint are expected leftovers. transformers reports them in a
        # colour-coded table on every load (with a "not sharded" list and a progress bar of a
        # sub-second load); it is quieted here and only surprises are logged.
        with _transformers_quiet():
            encoder, info = AutoModel.from_pretrained(
                str(base_model), add_pooling_layer=False, output_loading_info=True
            )
        unexpected = sorted(k for k in info["unexpected_keys"] if not k.startswith("pooler."))
        if unexpected or info["missing_keys"]:
            log.warning(
                "base model %s: weights not used: %s; weights not in the checkpoint "
                "(initialised at random): %s",
                base_model,
                unexpected or "none",
                sorted(info["missing_keys"]) or "none",
            )
        return cls(encoder, num_labels, casing=casing, dropout=dropout)

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "encoder_config": self.encoder.config.to_dict(),
            "num_labels": self.classifier.out_features,
            "casing": self.casing is not None,
            "dropout": self.dropout.p,
            "weights": self.state_dict(),
        }


@contextmanager
def _transformers_quiet() -> Iterator[None]:
    library = logging.getLogger("transformers")
    level = library.level
    bars = hf_logging.is_progress_bar_enabled()
    library.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        library.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
