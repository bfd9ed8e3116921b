"""Held-out evaluation: masked-LM metrics for pre-training, predictions for tasks."""

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from sparsebert_cli.progress import track


def _batches(dataset, collate: Callable, batch_size: int, device: torch.device, description: str):
    """The dataset's batches on `device`, in order, with a progress bar (`progress.track`)."""
    starts = range(0, len(dataset), batch_size)
    for start in track(starts, len(starts), f"{description} ({len(dataset)} examples)"):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield {k: v.to(device) for k, v in collate(rows).items()}


@torch.no_grad()
def evaluate_mlm(model: nn.Module, dataset, collate: Callable, batch_size: int) -> dict[str, float]:
    """MLM loss (per masked token), accuracy and perplexity, and NSP accuracy when the model has NSP."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = correct = count = nsp_correct = nsp_count = 0.0
    for batch in _batches(dataset, collate, batch_size, device, "MLM evaluation"):
        out = model(**batch)
        masked = float(out["mlm_count"])
        loss_sum += float(out["mlm_loss"]) * masked
        correct += float(out["mlm_correct"])
        count += masked
        if out.get("nsp_logits") is not None:
            labels = batch["next_sentence_label"]
            scored = labels >= 0  # -100: single-segment examples (data.nsp=false)
            nsp_correct += float((out["nsp_logits"].argmax(-1) == labels)[scored].sum())
            nsp_count += float(scored.sum())
    model.train(was_training)
    loss = loss_sum / max(count, 1.0)
    metrics = {
        "eval/mlm_loss": loss,
        "eval/mlm_accuracy": correct / max(count, 1.0),
        "eval/perplexity": math.exp(min(loss, 50.0)),
    }
    if nsp_count:
        metrics["eval/nsp_accuracy"] = nsp_correct / nsp_count
    return metrics


@torch.no_grad()
def predict(
    model: nn.Module, dataset, collate: Callable, batch_size: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Logits (or regression outputs) for every example, and the inference speed in tokens/s.

    Question answering gives start and end logits, returned stacked as [N, n, 2] (its batches
    are all padded to the same n)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs, tokens = [], 0
    start = time.perf_counter()
    for batch in _batches(dataset, collate, batch_size, device, "prediction"):
        for name in ("labels", "start_positions", "end_positions"):
            batch.pop(name, None)
        tokens += int(batch["attention_mask"].sum())
        out = model(**batch)
        logits = (
            out.logits if "logits" in out else torch.stack((out.start_logits, out.end_logits), -1)
        )
        outputs.append(logits.float().cpu())
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return torch.cat(outputs), {"inference/tokens_per_s": tokens / max(elapsed, 1e-9)}


def to_predictions(logits: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Class ids for classification, the scalar score for regression."""
    return logits.squeeze(-1) if problem_type == "regression" else logits.argmax(-1)
