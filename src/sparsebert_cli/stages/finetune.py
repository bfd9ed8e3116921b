"""sparsebert finetune: fine-tune on a task (GLUE or embedded) with the model's mask.

The model comes from `model.from=<pretrain run>` or a Hugging Face checkpoint (`model=minilm`,
`model=hf model.name_or_path=...`); its mask comes with it (`mask=checkpoint`) unless another is
given (`mask=no_diag` on a pre-trained model is allowed and recorded). Evaluates on dev after every
epoch, keeps the best epoch, and writes `artifacts/model/` for `evaluate`.
"""

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli.runs import Run
from sparsebert_cli.stages.inputs import (
    MODEL_DIR,
    cache_dir,
    mask_sparsity,
    resolve_mask,
    upstream_model,
    weights_folder,
)
from sparsebert_cli.training.evaluation import predict, to_predictions
from sparsebert_cli.training.loop import Hooks, steps_per_epoch, train


def task_metrics(
    model, task, split: str, batch_size: int, prefix: str = "eval/"
) -> dict[str, float]:
    """The task's metrics on one labelled split, with flat keys such as eval/accuracy."""
    from sparsebert_cli.data.metrics import compute_metrics

    logits, _ = predict(model, task.splits[split], task.collate, batch_size)
    preds = to_predictions(logits, task.problem_type)
    scores = compute_metrics(task.name, preds.tolist(), task.splits[split]["labels"])
    return {f"{prefix}{k}": v for k, v in scores.items()}


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    from sparsebert_cli.data.tasks import load_task
    from sparsebert_cli.data.tokenizer import load_tokenizer, save_tokenizer
    from sparsebert_cli.modeling import build_mask_source, build_task_model, save_checkpoint

    init_from = upstream_model(cfg, run, "pretrain")
    tokenizer = load_tokenizer(cfg.data, cache_dir(cfg), source=weights_folder(cfg, init_from))
    task = load_task(cfg.task, tokenizer, cache_dir(cfg), cfg.seed)
    source = build_mask_source(resolve_mask(cfg, run), cfg.model, cfg.task.seq_len, init_from)
    model = build_task_model(
        cfg.model, source, task.num_labels, task.problem_type, init_from, vocab_size=len(tokenizer)
    )
    trainer = cfg.trainer
    if trainer.eval_every == 0 and trainer.epochs > 0:  # evaluate after every epoch
        trainer.eval_every = steps_per_epoch(len(task.splits["train"]), trainer.batch_size)

    def evaluate() -> dict[str, float]:
        return task_metrics(model, task, "dev", trainer.eval_batch_size)

    hooks = Hooks(evaluate=evaluate, select="eval/headline")
    metrics = train(model, task.splits["train"], task.collate, cfg, run, hooks)
    if run.writer:
        extra = {
            "stage": "finetune",
            "run_dir": str(run.dir),
            "task": OmegaConf.to_container(cfg.task, resolve=True),
            "label_names": task.label_names,
        }
        save_checkpoint(model, run.artifacts / MODEL_DIR, extra)
        save_tokenizer(tokenizer, run.artifacts / MODEL_DIR)
    return {**metrics, "mask/sparsity": mask_sparsity(model)}
