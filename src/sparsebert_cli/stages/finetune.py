"""sparsebert finetune: fine-tune on a task (GLUE, embedded, SQuAD or SWAG) with the model's mask.

The model comes from `model.from=<pretrain run>` or a Hugging Face checkpoint (`model=minilm`,
`model=hf model.name_or_path=...`); its mask comes with it (`mask=checkpoint`) unless another is
given (`mask=no_diag` on a pre-trained model is allowed and recorded). `mask=dam` learns a DAM
jointly with the task (α in its own optimiser group at mask.lr, the λ·‖M‖₁ penalty, τ annealed as
in `search`); the binarised mask is saved with the model. Evaluates on dev after every epoch, keeps
the best evaluation's weights (`task.select=best`) or the last step's (`last`), and writes
`artifacts/model/` for `evaluate`.
"""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.empty_rows import check_keeps_attention
from sparsebert_cli.runs import Run, layout
from sparsebert_cli.stages.inputs import cache_dir, mask_sparsity, model_start, resolve_mask
from sparsebert_cli.training.dam import add_dam_hooks
from sparsebert_cli.training.evaluation import predict, to_predictions
from sparsebert_cli.training.loop import Hooks, total_steps, train
from sparsebert_cli.training.optim import NO_EXTRA_RATES, GroupRates


def load_task_data(task_cfg, tokenizer, cache: Path, seed: int, train: bool = True):
    """The task's tokenized splits and collate function, by task.kind: SQuAD
    (question_answering), SWAG (multiple_choice), else GLUE or embedded (`tasks.load_task`);
    `train`: the train split too."""
    from sparsebert_cli.progress import waiting

    with waiting(f"task data task={task_cfg.name}: load, tokenize, cache"):
        if task_cfg.kind == "question_answering":
            from sparsebert_cli.data.squad import load_squad

            return load_squad(task_cfg, tokenizer, cache, train)
        if task_cfg.kind == "multiple_choice":
            from sparsebert_cli.data.swag import load_swag

            return load_swag(task_cfg, tokenizer, cache, train)
        from sparsebert_cli.data.tasks import load_task

        return load_task(task_cfg, tokenizer, cache, seed, train)


def task_scores(task, split: str, logits, prefix: str = "eval/") -> dict[str, float]:
    """The task's metrics of `logits` on one labelled split, flat keys such as eval/accuracy.
    NaN or infinite logits are refused: their argmax would still score (at chance)."""
    import torch

    from sparsebert_cli.data.metrics import compute_metrics

    if not bool(torch.isfinite(logits).all()):
        raise SparseBertError(
            f"the model's {split} outputs are NaN or infinite, so its weights are broken (a "
            "fine-tuning that diverged: rerun it with a lower trainer.lr); no scores are written."
        )
    if task.kind == "question_answering":
        scores = task.evaluate(split, logits).metrics
    else:
        preds = to_predictions(logits, task.kind)
        scores = compute_metrics(task.name, preds.tolist(), task.splits[split]["labels"])
    return {f"{prefix}{k}": v for k, v in scores.items()}


def name_labels(config, task) -> None:
    """id2label/label2id in the model's config.json, as run_glue writes them: the task's labels
    as the source data writes them (entailment/neutral/contradiction for MNLI, not LABEL_0..2)."""
    names = [str(name) for name in task.label_names]
    if task.kind in ("classification", "multiple_choice") and len(names) == task.num_labels:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}


def check_stored_mask_covers(source, longest: int, task_cfg) -> None:
    """The mask stored with the model (mask=checkpoint) attends somewhere in every layer and
    covers the task's longest batch, refused before training rather than at the first longer
    batch: a mask is cropped for shorter sequences, never extended past the positions it was
    built or searched for. (A named pattern is built at task.seq_len; a searched mask is refused
    at load when shorter.)"""
    mask = source.binarized()
    if mask is None:
        return
    check_keeps_attention(mask)  # a mask to train with (evaluate of such a model is not refused)
    if mask.shape[-1] >= longest:
        return
    n = mask.shape[-1]
    raise SparseBertError(
        f"the mask stored with the model covers n={n} tokens, but task={task_cfg.name} feeds it "
        f"batches of up to {longest} (task.seq_len={task_cfg.seq_len}); a mask is cropped for "
        f"shorter sequences, never extended. Set task.seq_len={n} (longer inputs are truncated), "
        f"or pre-train the model at data.seq_len={task_cfg.seq_len} (a searched mask at "
        f"mask.seq_len={task_cfg.seq_len})."
    )


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    from sparsebert_cli.data.tokenizer import id_bound, save_tokenizer
    from sparsebert_cli.modeling import build_mask_source, build_task_model, save_checkpoint

    init_from, tokenizer = model_start(cfg, run)
    task = load_task_data(cfg.task, tokenizer, cache_dir(cfg), cfg.seed)
    source = build_mask_source(resolve_mask(cfg, run), cfg.model, cfg.task.seq_len, init_from)
    model = build_task_model(
        cfg.model, source, task.num_labels, task.kind, init_from, vocab_size=id_bound(tokenizer)
    )
    if cfg.mask.name == "checkpoint":
        check_stored_mask_covers(source, task.longest_batch(), cfg.task)
    name_labels(model.config, task)
    trainer = cfg.trainer

    def evaluate() -> dict[str, float]:
        logits, _ = predict(model, task.splits["dev"], task.collate, trainer.eval_batch_size)
        return task_scores(task, "dev", logits)

    hooks = Hooks(
        evaluate=evaluate,
        select=runs.HEADLINE if cfg.task.select == "best" else None,
        final=lambda: mask_sparsity(model),
    )
    rates = NO_EXTRA_RATES
    if source.dam is not None:
        add_dam_hooks(hooks, cfg.mask, source.dam, total_steps(trainer, len(task.splits["train"])))
        rates = GroupRates(alpha=cfg.mask.lr, multipliers=cfg.mask.lagrangian_lr)
    metrics = train(model, task.splits["train"], task.collate, cfg, run, hooks, rates)
    if run.writer:
        extra = {
            "stage": "finetune",
            "run_dir": str(run.dir),
            "task": OmegaConf.to_container(cfg.task, resolve=True),
            "seed": cfg.seed,  # deals an embedded task's folds: evaluate uses the same dev set
            "label_names": list(task.label_names),
        }
        save_checkpoint(model, layout(run.dir).model, extra)
        save_tokenizer(tokenizer, layout(run.dir).model)
    return metrics
