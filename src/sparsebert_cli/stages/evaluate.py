"""sparsebert evaluate: dev metrics, test predictions and GLUE submission files, mask statistics
and inference speed of a fine-tuned run (`model.from=<finetune run>`, default the latest).

The task is the one the model was fine-tuned on (read from its checkpoint), with the data the
finetune run read. When that data has moved, point evaluate at it: a `task.glue_dir`,
`task.data_dir` or `task.data_files` given to evaluate replaces the recorded data source (e.g.
`sparsebert evaluate model.from=<run> task.glue_dir=<folder>`); the other task settings stay the
recorded ones. SQuAD writes the
official prediction files instead: predictions/predictions.json (question id → answer text) and,
for v2.0, predictions/null_odds.json (question id → null odds), as the official evaluation
scripts read them.
"""

import json
from pathlib import Path

from omegaconf import DictConfig

from sparsebert_cli import runs
from sparsebert_cli.data.config import SPLIT_NAMES, recorded_task
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.runs import Run, atomic_write_text
from sparsebert_cli.stages.finetune import load_task_data, task_scores
from sparsebert_cli.stages.inputs import cache_dir, mask_sparsity, upstream_model
from sparsebert_cli.training.evaluation import predict, to_predictions
from sparsebert_cli.training.loop import resolve_device

# Labelled dev splits and the metric prefix each gets (MNLI has a matched and a mismatched dev set).
DEV_SPLITS = {"dev": "eval/", "dev_mismatched": "eval/mismatched/"}
TEST_SPLITS = tuple(name for name in SPLIT_NAMES if name.startswith("test"))


def question_answering_outputs(model, task, batch_size: int, directory: Path) -> dict:
    """Dev metrics and inference speed of SQuAD, and its official prediction files."""
    logits, speed = predict(model, task.splits["dev"], task.collate, batch_size)
    result = task.evaluate("dev", logits)
    atomic_write_text(directory / "predictions.json", json.dumps(result.predictions, indent=2))
    if task.version_2_with_negative:
        atomic_write_text(directory / "null_odds.json", json.dumps(result.null_odds, indent=2))
    return {**{f"eval/{k}": v for k, v in result.metrics.items()}, **speed}


def labelled_outputs(model, task, batch_size: int, out: runs.Layout) -> dict:
    """Dev metrics, predictions/<split>.jsonl for every split and GLUE submission files (each
    split predicted once)."""
    from sparsebert_cli.data.metrics import write_submission

    metrics: dict[str, float] = {}
    for split in (s for s in (*DEV_SPLITS, *TEST_SPLITS) if s in task.splits):
        logits, speed = predict(model, task.splits[split], task.collate, batch_size)
        if split in DEV_SPLITS:
            metrics.update(task_scores(task, split, logits, DEV_SPLITS[split]))
        preds = to_predictions(logits, task.kind).tolist()
        rows = [
            {"idx": i, "prediction": p}
            for i, p in zip(task.splits[split]["idx"], preds, strict=True)
        ]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write_text(out.predictions / f"{split}.jsonl", text)
        if split in TEST_SPLITS:
            idx = task.splits[split]["idx"]
            write_submission(task.name, preds, idx, task.label_names, out.submission, split=split)
        metrics.update(speed)
    return metrics


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    from sparsebert_cli.data.tokenizer import tokenizer_from_folder
    from sparsebert_cli.masks.stats import sparsity_per_head
    from sparsebert_cli.modeling import load_checkpoint
    from sparsebert_cli.pretrained import read_record

    model_dir = upstream_model(cfg, run, "finetune")
    model = load_checkpoint(model_dir, cfg.model)
    info = read_record(model_dir)
    if "task" not in info:
        raise SparseBertError(
            f"{model_dir} holds no fine-tuned task (a pre-trained model); evaluate takes a "
            "finetune run: model.from=<finetune run folder> or model.from=latest."
        )
    task_cfg = recorded_task(info["task"], cfg.task, model_dir.parents[1])
    model.to(resolve_device(cfg.trainer))
    tokenizer = tokenizer_from_folder(  # a finetune run stores its tokenizer beside the model
        model_dir,
        fix=f"Its finetune run {model_dir.parents[1]} wrote one there: the folder is incomplete. "
        "Rerun that finetune, or point model.from at another finetune run.",
    )
    # An embedded task's folds are dealt with the finetune run's seed: its dev set, not ours
    # (a checkpoint from before the seed was recorded: this run's).
    task = load_task_data(
        task_cfg, tokenizer, cache_dir(cfg), info.get("seed", cfg.seed), train=False
    )
    batch = cfg.trainer.eval_batch_size

    out = runs.layout(run.dir)
    if task.kind == "question_answering":
        metrics = question_answering_outputs(model, task, batch, out.predictions)
    else:
        metrics = labelled_outputs(model, task, batch, out)
    mask = model.sparse_mask.binarized()
    metrics |= mask_sparsity(model)
    if mask is not None:
        stats = json.dumps({"per_head": sparsity_per_head(mask)}, indent=2)
        atomic_write_text(out.mask_stats, stats)
    return metrics
