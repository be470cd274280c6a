"""Fine-tuning: the training loop, per-epoch evaluation, checkpoints."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from nerkit.decoding import TransitionPrior, best_path, softmax, transition_prior
from nerkit.labels import Span, tags_to_spans
from nerkit.metrics import entity_scores
from nerkit.training.data import Example
from nerkit.training.device import training_device
from nerkit.training.encode import (
    IGNORE_INDEX,
    EncodedSentence,
    Window,
    document_windows,
    encode_examples,
    label_transitions,
    length_batches,
    special_ids,
)
from nerkit.training.hyperparameters import Hyperparameters
from nerkit.training.model import TokenClassifier
from nerkit.training.progress import progress
from nerkit.training.recasing import augment_casing

log = logging.getLogger(__name__)

# Batches the running loss of a progress line averages over.
LOSS_WINDOW = 50


@dataclass
class EpochRecord:
    epoch: int
    step: int
    train_loss: float
    validation: dict[str, Any]
    seconds: float


@dataclass
class TrainResult:
    model: TokenClassifier
    labels: list[str]
    transitions: dict[str, Any] | None = None  # the manifest's, see label_transitions
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    train_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_tensors(
    batch: Sequence[Window], pad_id: int, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    width = max(len(w.input_ids) for w in batch)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([row + [value] * (width - len(row)) for row in rows])

    tensors = {
        "input_ids": pad([w.input_ids for w in batch], pad_id),
        "attention_mask": pad([[1] * len(w.input_ids) for w in batch], 0),
        "casing_ids": pad([w.casing_ids for w in batch], 0),
        "labels": pad([w.label_ids for w in batch], IGNORE_INDEX),
    }
    return {name: t.to(device) for name, t in tensors.items()} if device else tensors


def predict_spans(
    model: TokenClassifier,
    examples: Sequence[Example],
    sentences: Sequence[EncodedSentence],
    tokenizer: Any,
    labels: Sequence[str],
    *,
    max_seq_length: int,
    batch_size: int,
    prior: TransitionPrior | None = None,
) -> list[list[Span]]:
    """Sentence-by-sentence predictions of the torch model, as BIO spans.

    Labels are chosen as the serving engine's default ``viterbi`` decoding chooses them
    (valid BIO, with ``prior`` when given), so the epoch kept is the best one as served.
    """
    windows = document_windows(examples, sentences, tokenizer, max_seq_length, context=False)
    _, _, pad_id = special_ids(tokenizer)
    window_probs: list[np.ndarray] = []
    model.eval()
    with torch.inference_mode():
        starts = range(0, len(windows), batch_size)
        for start in progress(starts, len(starts), "validation (torch)"):
            batch = windows[start : start + batch_size]
            tensors = to_tensors(batch, pad_id, next(model.parameters()).device)
            logits = model(tensors["input_ids"], tensors["attention_mask"], tensors["casing_ids"])
            probs = softmax(logits.cpu().numpy())
            window_probs += [
                row[1 : len(w.input_ids) - 1] for row, w in zip(probs, batch, strict=True)
            ]
    # Without context each sentence is max(1, ceil(n / budget)) consecutive windows.
    budget = max_seq_length - 2
    predictions: list[list[Span]] = []
    cursor = 0
    for sentence in sentences:
        n_windows = max(1, math.ceil(len(sentence.input_ids) / budget))
        probs = np.concatenate(window_probs[cursor : cursor + n_windows])
        cursor += n_windows
        path = best_path(probs, labels, prior)
        predictions.append(tags_to_spans([labels[i] for i in path], sentence.offsets))
    return predictions


def evaluate(
    model: TokenClassifier,
    examples: Sequence[Example],
    sentences: Sequence[EncodedSentence],
    tokenizer: Any,
    labels: Sequence[str],
    hp: Hyperparameters,
    prior: TransitionPrior | None = None,
) -> dict[str, Any]:
    predicted = predict_spans(
        model,
        examples,
        sentences,
        tokenizer,
        labels,
        max_seq_length=hp.max_seq_length,
        batch_size=hp.eval_batch_size,
        prior=prior,
    )
    return entity_scores([ex.spans for ex in examples], predicted)


def train(
    hp: Hyperparameters,
    base_model_dir: Path,
    tokenizer: Any,
    labels: list[str],
    train_examples: Sequence[Example],
    validation_examples: Sequence[Example],
    *,
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Fine-tune, evaluate on validation after each epoch, keep the best epoch's weights.

    When ``hp`` trains on validation too (``train_examples`` then hold it), no epoch is
    selected: the schedule is fixed and the last epoch's weights are kept.

    With ``checkpoint_dir`` the run saves its full state after every epoch and resumes from
    it when restarted (a SageMaker spot interruption restarts the job in the same place).
    Restarted with more ``epochs``, a finished run goes on for the difference: the learning
    rate schedule is re-sized to the new total, so it rises again (to where the longer
    schedule would be) and decays to zero over the added epochs.
    """
    seed_everything(hp.seed)
    if hp.threads:
        torch.set_num_threads(hp.threads)
    label_to_id = {label: i for i, label in enumerate(labels)}
    train_sentences = encode_examples(tokenizer, train_examples, label_to_id)
    val_sentences = encode_examples(tokenizer, validation_examples, label_to_id)
    _, _, pad_id = special_ids(tokenizer)

    device = training_device()
    model = TokenClassifier.from_pretrained(
        base_model_dir, len(labels), casing=hp.casing, dropout=hp.dropout
    ).to(device)
    log.info("training on %s", device)
    rng = random.Random(hp.seed)
    windows_per_epoch = len(
        document_windows(
            train_examples,
            train_sentences,
            tokenizer,
            hp.max_seq_length,
            context=hp.context,
            rng=random.Random(hp.seed),
            single_sentence_prob=hp.single_sentence_prob,
        )
    )
    # Random packing varies the batch count per epoch a little: the schedule is sized on one
    # sample, and steps past its end run at learning rate 0.
    steps_per_epoch = math.ceil(windows_per_epoch / hp.batch_size)
    total_steps = math.ceil(steps_per_epoch * hp.epochs)
    if hp.max_steps > 0:
        total_steps = min(total_steps, hp.max_steps)
    optimizer = _optimizer(model, hp)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(hp.warmup_ratio * total_steps), total_steps
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=hp.label_smoothing)

    result = TrainResult(model=model, labels=labels)
    prior = None
    if hp.transition_weight > 0:
        result.transitions = label_transitions(train_sentences, len(labels), hp.transition_weight)
        prior = transition_prior(result.transitions, len(labels))
    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_weights": None}
    checkpointed = _Checkpointed(model, optimizer, scheduler, rng, state, result)
    if checkpoint_dir is not None:
        checkpointed.restore(checkpoint_dir)

    epoch = int(state["epoch"])
    step = int(state["step"])
    n_epochs = math.ceil(hp.epochs)
    while epoch < n_epochs and not (hp.max_steps > 0 and step >= hp.max_steps):
        epoch += 1
        epoch_started = time.perf_counter()
        windows = document_windows(
            train_examples,
            _epoch_sentences(hp, tokenizer, train_examples, train_sentences, label_to_id, epoch),
            tokenizer,
            hp.max_seq_length,
            context=hp.context,
            rng=rng,
            single_sentence_prob=hp.single_sentence_prob,
        )
        batches = length_batches(windows, hp.batch_size, rng)
        if epoch == n_epochs and hp.epochs % 1:  # a fractional last epoch
            batches = batches[: math.ceil(len(batches) * (hp.epochs % 1))]
        if hp.max_steps > 0:
            batches = batches[: hp.max_steps - step]
        model.train()
        losses: list[float] = []
        batches_shown = progress(
            batches,
            len(batches),
            f"epoch {epoch}/{n_epochs} training",
            detail=functools.partial(_running_loss, losses),
        )
        for batch in batches_shown:
            tensors = to_tensors(batch, pad_id, device)
            logits = model(tensors["input_ids"], tensors["attention_mask"], tensors["casing_ids"])
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]), tensors["labels"].reshape(-1))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
        scores = evaluate(model, validation_examples, val_sentences, tokenizer, labels, hp, prior)
        record = EpochRecord(
            epoch=epoch,
            step=step,
            train_loss=float(np.mean(losses)) if losses else 0.0,
            validation=scores,
            seconds=time.perf_counter() - epoch_started,
        )
        result.history.append(record)
        log.info(
            "epoch %d step %d loss %.4f validation F1 %.4f (%.0f s)",
            epoch,
            step,
            record.train_loss,
            scores["f1"],
            record.seconds,
        )
        if hp.trains_on_validation:  # its F1 there selects nothing: the last epoch is kept
            result.best_epoch = epoch
        elif scores["f1"] > state["best_f1"]:
            state["best_f1"] = scores["f1"]
            state["best_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            result.best_epoch = epoch
        state.update(epoch=epoch, step=step)
        if checkpoint_dir is not None:
            checkpointed.save(checkpoint_dir)
        if on_epoch is not None:
            on_epoch(record)

    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    # Export and the serving-engine checks run on the CPU.
    model.to("cpu").eval()
    # Summed over epochs, so a run resumed from a checkpoint reports its whole cost.
    result.train_seconds = sum(record.seconds for record in result.history)
    return result


def _running_loss(losses: list[float]) -> str:
    return f"loss {np.mean(losses[-LOSS_WINDOW:]):.4f}" if losses else "loss -"


def _epoch_sentences(
    hp: Hyperparameters,
    tokenizer: Any,
    examples: Sequence[Example],
    sentences: list[EncodedSentence],
    label_to_id: dict[str, int],
    epoch: int,
) -> list[EncodedSentence]:
    """One epoch's training sentences: with casing augmentation, a fresh share re-cased.

    The draw is seeded by ``seed`` and the epoch (not the run's shuffling generator), so
    every epoch sees other sentences re-cased, a resumed run draws what the uninterrupted
    one would have, and without augmentation the run is exactly as before. Re-cased text is
    tokenized again: the casing features (and a cased vocabulary's ids) come from it.
    """
    if not (hp.lowercase_share or hp.uppercase_share):
        return sentences
    recased = augment_casing(
        examples,
        lowercase_share=hp.lowercase_share,
        uppercase_share=hp.uppercase_share,
        seed=f"{hp.seed}:casing:{epoch}",
    )
    return encode_examples(tokenizer, recased, label_to_id)


def _optimizer(model: TokenClassifier, hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdamW; no decay on biases/LayerNorm; the fresh casing embedding learns faster."""
    groups: dict[str, list[nn.Parameter]] = {"decay": [], "no_decay": [], "casing": []}
    for name, param in model.named_parameters():
        if name.startswith("casing."):
            groups["casing"].append(param)
        elif param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name:
            groups["no_decay"].append(param)
        else:
            groups["decay"].append(param)
    return torch.optim.AdamW(
        [
            {"params": groups["decay"], "weight_decay": hp.weight_decay},
            {"params": groups["no_decay"], "weight_decay": 0.0},
            {"params": groups["casing"], "weight_decay": 0.0, "lr": hp.casing_learning_rate},
        ],
        lr=hp.learning_rate,
    )


CHECKPOINT = "checkpoint.pt"


@dataclass
class _Checkpointed:
    """Everything a restarted run needs to continue exactly where it stopped."""

    model: TokenClassifier
    optimizer: torch.optim.Optimizer
    scheduler: Any
    rng: random.Random
    progress: dict[str, Any]  # epoch, step, best_f1, best_weights
    result: TrainResult

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": self.model.checkpoint_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": self.rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "state": self.progress,
            "history": [dataclasses.asdict(r) for r in self.result.history],
            "best_epoch": self.result.best_epoch,
        }
        # Write then rename: an interruption mid-write never leaves a corrupt checkpoint.
        partial = directory / (CHECKPOINT + ".partial")
        torch.save(payload, partial)
        partial.replace(directory / CHECKPOINT)

    def restore(self, directory: Path) -> None:
        path = directory / CHECKPOINT
        if not path.is_file():
            return
        payload = torch.load(path, weights_only=False, map_location=training_device())
        self.model.load_state_dict(payload["model"]["weights"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.rng.setstate(payload["rng"])
        # map_location moved every tensor to the training device; the CPU generator state
        # must stay a CPU tensor (a spot restart on a GPU instance would fail otherwise).
        torch.set_rng_state(payload["torch_rng"].cpu())
        self.progress.update(payload["state"])
        self.result.history = [EpochRecord(**r) for r in payload["history"]]
        self.result.best_epoch = payload["best_epoch"]
        log.info(
            "resumed from %s at epoch %d step %d",
            path,
            self.progress["epoch"],
            self.progress["step"],
        )
