"""sparsebert search: learn the attention mask M(α) (DAM) jointly with MLM(+NSP) pre-training.

Objective (docs/paper.md §4): L_pretrain(w; M(α)) + λ·‖M(α)‖₁, with α in its own optimiser group.
On a trained model (`model.from=<pretrain run>`, `model=minilm`) the search can first warm up a
new MLM head on the dense model (`mask.head_warmup` steps), then learn α with the encoder frozen
(`mask.encoder_lr=0`) or on its own rate, and with `mask.objective=distill` keep the dense
model's final hidden states instead of predicting masked tokens (training/distill.py).
With `mask.target_sparsity` the Lagrangian N·[λ₁(s − t) + λ₂(s − t)²] in place of λ·‖M‖₁
(`masks.dam.SparsityTarget`; mask.json then records the target beside the achieved sparsity).
Writes the binarised mask M = 1[α > 0] (with a target: thresholded to meet it, `DAM.binarize`;
`artifacts/mask.safetensors`, `mask.json`, heat map) and
the importance trace: σ(α) every `mask.trace_every` steps (`artifacts/importance_trace.safetensors`);
after an MLM head warm-up on a frozen encoder also that model with its trained heads
(`artifacts/model/`).

`mask=attention_topk` is the control for a searched mask: no training, the entries a trained
dense model attends to most on the first TOPK_EXAMPLES training examples (not the held-out ones
the masks are then compared on), at `mask.target_sparsity` (masks/attention_topk.py), written as
the same artifacts.
"""

from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from sparsebert_cli import runs
from sparsebert_cli.attention.profile import AttentionMap
from sparsebert_cli.masks import attention_topk
from sparsebert_cli.masks.artifact import save_mask
from sparsebert_cli.masks.config import ATTENTION_TOPK, DAM_FIELDS, read_fields
from sparsebert_cli.masks.empty_rows import searched_mask_warning
from sparsebert_cli.masks.stats import sparsity_metrics
from sparsebert_cli.masks.trace import stacked_snapshots, write_snapshot
from sparsebert_cli.progress import say
from sparsebert_cli.runs import Run, atomic_write, layout
from sparsebert_cli.stages.inputs import pretraining_model, pretraining_start
from sparsebert_cli.training.dam import add_dam_hooks
from sparsebert_cli.training.evaluation import HeldOutMLM, held_out_batches
from sparsebert_cli.training.loop import Hooks, resolve_device, total_steps, train
from sparsebert_cli.training.optim import GroupRates

TOPK_EXAMPLES = 8192  # training examples whose attention the attention_topk mask is read from


def _write_trace(trace_dir: Path, out: Path) -> None:
    """Stack the per-step snapshots into one [T, L, H, n, n] tensor with its `steps`."""
    tensors = stacked_snapshots(trace_dir)
    atomic_write(out, lambda tmp: save_file(tensors, tmp))


@torch.no_grad()
def _attention_topk(cfg: DictConfig, run: Run) -> dict[str, float]:
    """The attention-mass top-k mask of the (dense) starting model, saved as the search's mask."""
    from sparsebert_cli.masks.source import MaskSource

    init_from, tokenizer, splits, collate = pretraining_start(cfg, run)
    model = pretraining_model(cfg, MaskSource("dense"), tokenizer, init_from)
    model.to(resolve_device(cfg.trainer))
    attention = AttentionMap(cfg.data.seq_len)
    train = splits["train"]  # not the held-out split the masks are compared on afterwards
    examples = train.select(range(min(TOPK_EXAMPLES, len(train))))
    batches = held_out_batches(model, examples, collate, cfg.trainer.eval_batch_size, "attention")
    for batch in batches:
        model(**batch, attention_profile=attention)
    mask = attention_topk.top_mass_mask(
        attention.mean(), cfg.mask.target_sparsity, cfg.mask.share_layers
    )
    if run.writer:
        params = {k: cfg.mask[k] for k in read_fields(cfg.mask)}
        meta = {"kind": ATTENTION_TOPK, "params": params, "source_run": str(run.dir)}
        meta["target_sparsity"] = 100.0 * cfg.mask.target_sparsity
        save_mask(run.artifacts, mask, meta)
    return sparsity_metrics(mask)


def run(cfg: DictConfig, run: Run) -> dict[str, float]:
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_mask_source
    from sparsebert_cli.training.distill import DistillationObjective

    if cfg.mask.name == ATTENTION_TOPK:
        return _attention_topk(cfg, run)
    init_from, tokenizer, splits, collate = pretraining_start(cfg, run)
    source = build_mask_source(cfg.mask, cfg.model, cfg.data.seq_len, init_from)
    model = pretraining_model(cfg, source, tokenizer, init_from)
    dam = source.dam
    total = total_steps(cfg.trainer, len(splits["train"]))
    trace_dir = layout(run.dir).trace
    warmup = cfg.mask.head_warmup
    objective = model
    if cfg.mask.objective == "distill":
        teacher = pretraining_model(cfg, MaskSource("dense"), tokenizer, init_from)
        objective = DistillationObjective(model, teacher)

    def after_step(step: int) -> dict[str, float]:
        if run.writer and (step % cfg.mask.trace_every == 0 or step == total):
            write_snapshot(trace_dir, step, dam.probs().detach().cpu())
        return {  # counted per α: no n × n mask each step
            runs.MASK_SPARSITY: dam.binarized_sparsity(),
            "mask/keep_probability": 1.0 - dam.expected_sparsity().item(),
            "mask/tau": dam.tau,
        }

    held_out = HeldOutMLM(model, splits["eval"], collate, cfg.trainer.eval_batch_size)

    def evaluate() -> dict[str, float]:
        metrics = held_out()
        if objective is not model:
            metrics |= objective.evaluate(splits["eval"], collate, cfg.trainer.eval_batch_size)
        return metrics

    def before_step(step: int) -> None:
        source.dam_active = step >= warmup  # the head warm-up runs on the dense model

    def final() -> dict[str, float]:  # the handed-on mask's, over its n × n entries
        return sparsity_metrics(dam.binarize().cpu())

    hooks = add_dam_hooks(
        Hooks(after_step=after_step, evaluate=evaluate, final=final), cfg.mask, dam, total, warmup
    )
    anneal = hooks.before_step
    hooks.before_step = lambda step: (before_step(step), anneal(step))
    rates = GroupRates(
        alpha=cfg.mask.lr,
        encoder=cfg.mask.encoder_lr,
        head_warmup=warmup,
        multipliers=cfg.mask.lagrangian_lr,
    )
    metrics = train(objective, splits["train"], collate, cfg, run, hooks, rates)
    mask = dam.binarize().cpu()
    if run.writer:
        held_out.write_profile(run.artifacts)
        # what shaped the mask (lr, seq_len and trace_every say how the search ran; the block
        # settings follow for a block DAM only)
        left_out = ("lr", "seq_len", "trace_every", "keep_diagonal_blocks")
        params = {k: cfg.mask[k] for k in DAM_FIELDS if k not in left_out}
        if dam.structure == "block":
            params["block_size"] = cfg.model.block_size
            params["keep_diagonal_blocks"] = cfg.mask.keep_diagonal_blocks
        meta = {"kind": dam.kind, "params": params, "source_run": str(run.dir)}
        if dam.target is not None:  # percent, as mask.json's sparsity (the achieved one)
            meta["target_sparsity"] = 100.0 * dam.target.target
            meta["expected_sparsity"] = 100.0 * dam.expected_sparsity().item()
            meta["sign_sparsity"] = dam.sign_sparsity()
        warning = searched_mask_warning(mask, meta)
        if warning:
            say(f"warning: {warning}", to_stderr=True)
        save_mask(run.artifacts, mask, meta)
        _write_trace(trace_dir, layout(run.dir).importance_trace)
        if warmup > 0 and cfg.mask.encoder_lr == 0 and cfg.mask.objective == "mlm":
            _save_warmed_model(model, tokenizer, run)
    return metrics


def _save_warmed_model(model, tokenizer, run: Run) -> None:
    """The frozen starting encoder with the heads the search trained (artifacts/model): the dense
    model `report --occlusion` measures, whose new MLM head is otherwise lost."""
    from sparsebert_cli.data.tokenizer import save_tokenizer
    from sparsebert_cli.modeling import save_checkpoint

    folder = layout(run.dir).model
    save_checkpoint(model, folder, {"stage": "search", "run_dir": str(run.dir)})
    save_tokenizer(tokenizer, folder)
