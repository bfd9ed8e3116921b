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

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.data.config import (
    SPLIT_NAMES,
    task_source_problem,
    unread_task_field_problem,
)
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.runs import Run, atomic_write_text
from sparsebert_cli.stages.finetune import load_task_data, task_scores
from sparsebert_cli.stages.inputs import cache_dir, mask_sparsity, upstream_model
from sparsebert_cli.training.evaluation import predict, to_predictions
from sparsebert_cli.training.loop import resolve_device

# Labelled dev splits and the metric prefix each gets (MNLI has a matched and a mismatched dev set).
DEV_SPLITS = {"dev": "eval/", "dev_mismatched": "eval/mismatched/"}
TEST_SPLITS = tuple(name for name in SPLIT_NAMES if name.startswith("test"))
# The task keys that name local data: a value given to evaluate replaces the recorded ones.
SOURCE_KEYS = {"glue_dir": None, "data_dir": None, "data_files": {}}


def recorded_task(recorded: dict, given: DictConfig, run_dir: Path) -> DictConfig:
    """The finetune run's task config; its local data source replaced by the one given to
    evaluate (task.glue_dir / task.data_dir / task.data_files), else checked to still exist."""
    task_cfg = OmegaConf.create(recorded)
    if any(given.get(key) for key in SOURCE_KEYS):
        for key, empty in SOURCE_KEYS.items():
            task_cfg[key] = given.get(key) or empty
        problem = task_source_problem(task_cfg)
        if problem is None and task_cfg.glue_dir:  # the run's task, which evaluate cannot change
            problem = unread_task_field_problem(task_cfg, "glue_dir")
        if problem is not None:
            raise SparseBertError(f"{problem} (the task of the finetune run {run_dir})")
        return task_cfg
    for key in SOURCE_KEYS:
        value = task_cfg.get(key)
        # evaluate reads no train split (its recorded train file may be gone)
        paths = (
            [path for split, path in value.items() if split != "train"]
            if key == "data_files" and value
            else [value]
        )
        missing = [path for path in paths if path and not Path(path).exists()]
        if missing:
            shown = dict(value) if key == "data_files" else value
            fix = (
                "'+task.data_files={dev: <file>}'"
                if key == "data_files"
                else f"task.{key}=<its new folder>"
            )
            raise SparseBertError(
                f"the finetune run {run_dir} read its task data from task.{key}={shown}, but "
                f"{missing[0]} does not exist here: the task data moved or was deleted, or the "
                "path is relative and evaluate runs in another folder (relative paths count from "
                f"the folder a command starts in). Point evaluate at it: sparsebert evaluate "
                f"model.from={run_dir} {fix}."
            )
    return task_cfg


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
    from sparsebert_cli.modeling import load_checkpoint, read_record

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
