"""Held-out evaluation: masked-LM metrics for pre-training, predictions for tasks."""

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sparsebert_cli import runs
from sparsebert_cli.attention.profile import (
    GATE_MLM_ACCURACY,
    GATE_NEIGHBOUR_RATIO,
    AttentionProfile,
)
from sparsebert_cli.progress import track
from sparsebert_cli.runs import atomic_write_json

PROFILE_EXAMPLES = 256  # held-out examples whose attention the gate reads
PROFILE_FILE = "attention_profile.json"


def held_out_batches(
    model: nn.Module, dataset, collate: Callable, batch_size: int, description: str
):
    """The dataset's batches on `model`'s device, in order, with a progress bar
    (`progress.track`), while `model` is in eval mode (its mode is restored afterwards)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(dataset), batch_size)
        for start in track(starts, len(starts), f"{description} ({len(dataset)} examples)"):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            yield {k: v.to(device) for k, v in collate(rows).items()}
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_mlm(
    model: nn.Module,
    dataset,
    collate: Callable,
    batch_size: int,
    profile: AttentionProfile | None = None,
) -> dict[str, float]:
    """MLM loss (per masked token), accuracy and perplexity, NSP accuracy when the model has NSP,
    and, with `profile`, where the heads attend on the first `PROFILE_EXAMPLES` examples and the
    "uses attention" gate (attention/profile.py)."""
    loss_sum = correct = count = nsp_correct = nsp_count = 0.0
    batches = held_out_batches(model, dataset, collate, batch_size, "MLM evaluation")
    for index, batch in enumerate(batches):
        profiled = (
            profile if profile is not None and index * batch_size < PROFILE_EXAMPLES else None
        )
        out = model(**batch, attention_profile=profiled)
        masked = float(out["mlm_count"])
        loss_sum += float(out["mlm_loss"]) * masked
        correct += float(out["mlm_correct"])
        count += masked
        if out.get("nsp_logits") is not None:
            labels = batch["next_sentence_label"]
            scored = labels >= 0  # -100: single-segment examples (data.nsp=false)
            nsp_correct += float((out["nsp_logits"].argmax(-1) == labels)[scored].sum())
            nsp_count += float(scored.sum())
    loss = loss_sum / max(count, 1.0)
    metrics = {
        runs.MLM_LOSS: loss,
        runs.MLM_ACCURACY: correct / max(count, 1.0),
        "eval/perplexity": math.exp(min(loss, 50.0)),
    }
    if nsp_count:
        metrics["eval/nsp_accuracy"] = nsp_correct / nsp_count
    if profile is not None:
        metrics.update(profile.metrics(metrics[runs.MLM_ACCURACY]))
    return metrics


class HeldOutMLM:
    """A pre-training stage's held-out evaluation (the loop's `evaluate` hook); keeps the attention
    profile of the latest call, which the stage writes as `artifacts/attention_profile.json`."""

    def __init__(self, model: nn.Module, dataset, collate: Callable, batch_size: int) -> None:
        self.model, self.dataset, self.collate, self.batch_size = (
            model,
            dataset,
            collate,
            batch_size,
        )
        self.profile = AttentionProfile()
        self.metrics: dict[str, float] = {}

    def __call__(self) -> dict[str, float]:
        self.profile = AttentionProfile()
        self.metrics = evaluate_mlm(
            self.model, self.dataset, self.collate, self.batch_size, self.profile
        )
        return self.metrics

    def write_profile(self, directory: Path) -> None:
        """The per-head attention profile and the gate's verdict, as JSON in `directory`."""
        record = {
            "gate": {
                "neighbour_ratio_min": GATE_NEIGHBOUR_RATIO,
                "mlm_accuracy_min": GATE_MLM_ACCURACY,
                "passed": bool(self.metrics.get(runs.USES_ATTENTION, 0.0)),
            },
            "metrics": self.metrics,
            "heads": self.profile.heads(),
        }
        atomic_write_json(directory / PROFILE_FILE, record)


@torch.no_grad()
def predict(
    model: nn.Module, dataset, collate: Callable, batch_size: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Logits (or regression outputs) for every example, and the inference speed in tokens/s.

    Question answering gives start and end logits, returned stacked as [N, n, 2] (its batches
    are all padded to the same n)."""
    outputs, tokens = [], 0
    start = time.perf_counter()
    for batch in held_out_batches(model, dataset, collate, batch_size, "prediction"):
        for name in ("labels", "start_positions", "end_positions"):
            batch.pop(name, None)
        tokens += int(batch["attention_mask"].sum())
        out = model(**batch)
        logits = (
            out.logits if "logits" in out else torch.stack((out.start_logits, out.end_logits), -1)
        )
        outputs.append(logits.float().cpu())
    elapsed = time.perf_counter() - start
    return torch.cat(outputs), {"inference/tokens_per_s": tokens / max(elapsed, 1e-9)}


def to_predictions(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Class ids for classification, the scalar score for regression."""
    return logits.squeeze(-1) if kind == "regression" else logits.argmax(-1)
