"""sparsebert evaluate: dev metrics, test predictions and GLUE submission files, mask statistics
and inference speed of a fine-tuned run (`model.from=<finetune run>`, default the latest).

The task is the one the model was fine-tuned on (read from its checkpoint).
"""

import json

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli.runs import Run, atomic_write_text, read_json
from sparsebert_cli.stages.finetune import task_metrics
from sparsebert_cli.stages.inputs import cache_dir, mask_sparsity, upstream_model
from sparsebert_cli.training.evaluation import predict, to_predictions
from sparsebert_cli.training.loop import resolve_device

# Labelled dev splits and the metric prefix each gets (MNLI has a matched and a mismatched dev set).
DEV_SPLITS = {"dev": "eval/", "dev_mismatched": "eval/mismatched/"}
TEST_SPLITS = ("test", "test_mismatched")


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    from sparsebert_cli.data.metrics import write_submission
    from sparsebert_cli.data.tasks import load_task
    from sparsebert_cli.data.tokenizer import load_tokenizer
    from sparsebert_cli.masks.stats import sparsity_per_head
    from sparsebert_cli.modeling import CHECKPOINT_FILE, load_checkpoint

    model_dir = upstream_model(cfg, run, "finetune")
    model = load_checkpoint(model_dir)
    info = read_json(model_dir / CHECKPOINT_FILE)
    model.to(resolve_device(cfg.trainer))
    tokenizer = load_tokenizer(cfg.data, cache_dir(cfg), source=model_dir)
    task_cfg = OmegaConf.create(info["task"])
    task = load_task(task_cfg, tokenizer, cache_dir(cfg), cfg.seed)
    batch = cfg.trainer.eval_batch_size

    metrics: dict[str, float] = {}
    for split, prefix in DEV_SPLITS.items():
        if split in task.splits:
            metrics.update(task_metrics(model, task, split, batch, prefix))
    predictions = run.dir / "predictions"
    for split in (s for s in (*DEV_SPLITS, *TEST_SPLITS) if s in task.splits):
        logits, speed = predict(model, task.splits[split], task.collate, batch)
        preds = to_predictions(logits, task.problem_type).tolist()
        rows = [
            {"idx": i, "prediction": p}
            for i, p in zip(task.splits[split]["idx"], preds, strict=True)
        ]
        atomic_write_text(
            predictions / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
        )
        if split in TEST_SPLITS and run.writer:
            write_submission(
                task.name,
                preds,
                task.splits[split]["idx"],
                task.label_names,
                predictions / "submission",
                split=split,
            )
        metrics.update(speed)
    mask = model.sparse_mask.binarized()
    metrics["mask/sparsity"] = mask_sparsity(model)
    if mask is not None:
        atomic_write_text(
            run.dir / "mask_stats.json", json.dumps({"per_head": sparsity_per_head(mask)}, indent=2)
        )
    return metrics
