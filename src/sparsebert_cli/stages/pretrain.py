"""sparsebert pretrain: MLM(+NSP) pre-training with a fixed mask (a named pattern or a searched one).

From scratch (a size preset), or continuing a checkpoint (`model.from=<pretrain run>` or a Hugging
Face model). Writes `artifacts/model/` (weights, mask, tokenizer, sparsebert.json) and held-out
MLM metrics.
"""

from omegaconf import DictConfig

from sparsebert_cli.runs import Run, layout
from sparsebert_cli.stages.inputs import (
    mask_sparsity,
    pretraining_model,
    pretraining_start,
    resolve_mask,
)
from sparsebert_cli.training.evaluation import HeldOutMLM
from sparsebert_cli.training.loop import Hooks, train


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    from sparsebert_cli.data.tokenizer import save_tokenizer
    from sparsebert_cli.modeling import build_mask_source, save_checkpoint

    mask_cfg = resolve_mask(cfg, run)
    init_from, tokenizer, splits, collate = pretraining_start(cfg, run)
    source = build_mask_source(mask_cfg, cfg.model, cfg.data.seq_len, init_from)
    model = pretraining_model(cfg, source, tokenizer, init_from)

    evaluate = HeldOutMLM(model, splits["eval"], collate, cfg.trainer.eval_batch_size)
    hooks = Hooks(evaluate=evaluate, final=lambda: mask_sparsity(model))
    metrics = train(model, splits["train"], collate, cfg, run, hooks)
    if run.writer:
        evaluate.write_profile(run.artifacts)
        save_checkpoint(
            model, layout(run.dir).model, {"stage": "pretrain", "run_dir": str(run.dir)}
        )
        save_tokenizer(tokenizer, layout(run.dir).model)
    return metrics
