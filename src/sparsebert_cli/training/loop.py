"""The one training loop shared by `search`, `pretrain` and `finetune`.

Reads top to bottom: set up (device, DDP, optimiser, schedule, resume) → for each step, split the
global batch into this rank's micro-batches, forward (+ the stage's penalty, e.g. DAM's λ·‖M‖₁),
backward, clip, step → log, evaluate, checkpoint. Stages plug in through `Hooks`.

Checkpoints: every `trainer.ckpt_every` steps, or by default (0) every 10 % of the steps or
every 5 minutes, whichever comes first (the default ones are removed once the run completes).
Ctrl-C or SIGTERM stops after the current step with a checkpoint of it (`interrupt`).

Data order is a pure function of (seed, step): step s takes slice s of a per-epoch permutation,
and the random streams (dropout, Gumbel noise) are reseeded from (seed, rank, step) at every step.
So a resumed run sees exactly the batches and noise an uninterrupted run would, and a DDP run with
the same global batch and micro-batch size computes the same gradients as one process (dropout
aside: each rank draws its own noise).
"""

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparsebert_cli import interrupt, runs
from sparsebert_cli.errors import SparseBertError, refuse
from sparsebert_cli.masks.config import head_warmup_problem
from sparsebert_cli.progress import say
from sparsebert_cli.runs import Run
from sparsebert_cli.training import checkpoint as ckpt
from sparsebert_cli.training.distributed import (
    init_process_group,
    is_distributed,
    local_rank,
    world,
)
from sparsebert_cli.training.logging import MetricLogger
from sparsebert_cli.training.optim import (
    NO_EXTRA_RATES,
    GroupRates,
    build_optimizer,
    build_scheduler,
    clipped_parameters,
)

AUTO_CKPT_STEPS = 0.1  # default checkpoints: every 10 % of the steps ...
AUTO_CKPT_SECONDS = 300.0  # ... or every 5 minutes (single process), whichever comes first


def checkpoint_due(ckpt_every: int, done: int, total: int, seconds_since: float, solo: bool):
    """Whether step `done` ends with a checkpoint; time only counts in a single process, since
    DDP ranks must agree without talking."""
    if ckpt_every > 0:
        return done % ckpt_every == 0
    if done == total:  # the run completes next, and default checkpoints are then removed
        return False
    return done % max(1, int(total * AUTO_CKPT_STEPS)) == 0 or (
        solo and seconds_since >= AUTO_CKPT_SECONDS
    )


# An extra loss term and its metrics (`Hooks.penalty`).
Penalty = Callable[[], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class Hooks:
    """What a stage adds to the loop."""

    # Extra loss term and its metrics, computed once per micro-batch (DAM: λ·‖M‖₁).
    penalty: Penalty | None = None
    # Called before each optimiser step with its 0-based index (e.g. anneal τ).
    before_step: Callable[[int], None] | None = None
    # Called after each optimiser step with the number of steps done; returns metrics to log.
    after_step: Callable[[int], dict[str, float]] | None = None
    # Held-out metrics of the (unwrapped) model, flat keys "eval/...".
    evaluate: Callable[[], dict[str, float]] | None = None
    # Keep the weights of the best evaluation by this key (higher is better), e.g. "eval/headline".
    select: str | None = None
    # Metrics of the final (or best) model beside its evaluation, e.g. its mask sparsity: in the
    # returned metrics and the W&B summary alike.
    final: Callable[[], dict[str, float]] | None = None


def resolve_device(trainer_cfg) -> torch.device:
    if trainer_cfg.device == "cuda" and not torch.cuda.is_available():
        raise SparseBertError(
            "trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu or auto."
        )
    kind = trainer_cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and is_distributed():  # one GPU per rank, not all of them on cuda:0
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)  # the device NCCL's collectives use
        return device
    return torch.device(kind)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    spe = num_examples // batch_size
    if spe == 0:
        raise SparseBertError(
            f"the training set has {num_examples} examples, fewer than one batch (trainer.batch_size="
            f"{batch_size}); lower trainer.batch_size or use more data."
        )
    return spe


def total_steps(trainer_cfg, num_examples: int) -> int:
    """trainer.epochs when set (fine-tuning), else trainer.max_steps."""
    if trainer_cfg.epochs > 0:
        return trainer_cfg.epochs * steps_per_epoch(num_examples, trainer_cfg.batch_size)
    return trainer_cfg.max_steps


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the global batch of optimiser step `step` (0-based); drop-last per epoch."""
    epoch, k = divmod(step, steps_per_epoch(num_examples, batch_size))
    perm = torch.randperm(
        num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    )
    return perm[k * batch_size : (k + 1) * batch_size]


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _all_ranks_finite(value: torch.Tensor) -> bool:
    flag = torch.tensor([float(torch.isfinite(value).all())])
    if world()[1] > 1:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item())


def _mean_over_ranks(value: float) -> float:
    """The mean of `value` over the ranks (each holds its share of the global batch)."""
    if world()[1] == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(total)
    return total.item() / world()[1]


def diverged(what: str, step: int, tc) -> SparseBertError:
    """The error of a run whose loss, weights or evaluation became NaN or infinite."""
    return SparseBertError(
        f"{what} at step {step} (trainer.lr={tc.lr}, trainer.precision={tc.precision}); lower "
        f"trainer.lr, keep trainer.clip_grad > 0{'' if tc.precision == 'fp32' else ' or train in fp32'}"
        ". The run is marked failed; earlier checkpoints are kept."
    )


def _check_weights(model: nn.Module, step: int, tc) -> None:
    """The loss check sees the loss before an update only: weights that the update made NaN or
    infinite are refused before anything evaluates, saves or completes with them."""
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise diverged("the weights became NaN or infinite in the update", step, tc)


def _stop_if_requested() -> None:
    """`interrupt.check`, agreed across ranks: a request any rank noted before this exchange
    stops every rank here (ranks hold their requests: `interrupt.install(hold=True)`); one noted
    during it waits for the next step's exchange."""
    if world()[1] == 1:
        interrupt.check()
        return
    signum = torch.tensor([interrupt.pending() or 0])
    torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
    if signum.item():
        raise interrupt.Interrupted(int(signum.item()))


def _finite_evaluation(result: dict[str, float], step: int, tc) -> dict[str, float]:
    """`result`, refused when a metric is NaN or infinite: weights finite but too large for the
    forward pass (an lr of 1e30) pass the weight check."""
    broken = [f"{k}={v}" for k, v in result.items() if not math.isfinite(v)]
    if broken:
        more = f" and {len(broken) - 2} more" if len(broken) > 2 else ""
        raise diverged(f"the evaluation gave {', '.join(broken[:2])}{more}", step, tc)
    return result


def _barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


class Penalised(nn.Module):
    """The model's loss plus the stage's penalty, in one forward: what DDP wraps. DDP takes a
    parameter reached only outside the forward (a DAM's target multipliers, its α while the head
    warm-up holds the mask aside) for unused, and stops at its gradient ("marked ready twice")."""

    def __init__(self, model: nn.Module, penalty: Penalty | None = None) -> None:
        super().__init__()
        self.model = model
        self.penalty = penalty

    def forward(self, **batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.model(**batch)["loss"].float()
        if self.penalty is None:
            return loss, {}
        extra, metrics = self.penalty()
        return loss + extra, metrics


def optimizer_step(
    objective: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    tc,
    step: int = 0,
) -> tuple[float, dict[str, float]]:
    """One optimiser step over this rank's micro-batches (already on the device).

    `objective`: a `Penalised` model, or DDP of one. Forward (+ penalty) and backward per
    micro-batch (DDP syncs gradients on the last one only), a finite-loss check across ranks,
    clipping, optimiser, scaler and schedule step. Returns the step's mean loss and the penalty's
    metrics. The benchmarks time exactly this function.
    """
    device = next(iter(batches[0].values())).device
    ddp = isinstance(objective, nn.parallel.DistributedDataParallel)
    step_loss, penalty_metrics = 0.0, {}
    for i, batch in enumerate(batches):
        sync = objective.no_sync() if ddp and i < len(batches) - 1 else contextlib.nullcontext()
        with sync:
            with _autocast(device, tc.precision):
                loss, penalty_metrics = objective(**batch)
            if not _all_ranks_finite(loss.detach()):
                value = loss.item()  # this rank's: finite when another rank's was not
                what = f"became {value}" if not math.isfinite(value) else "is not finite on a rank"
                raise diverged(f"the loss {what}", step + 1, tc)
            scaler.scale(loss / len(batches)).backward()
        step_loss += loss.item() / len(batches)
    scaler.unscale_(optimizer)
    if tc.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(clipped_parameters(optimizer), tc.clip_grad)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, penalty_metrics


def train(
    model: nn.Module,
    dataset,
    collate: Callable[[list[dict]], dict[str, torch.Tensor]],
    cfg,
    run: Run,
    hooks: Hooks,
    rates: GroupRates = NO_EXTRA_RATES,
) -> dict[str, float]:
    """Train `model` on `dataset` with `cfg.trainer`; returns the final (or best) metrics.

    rates: learning rates beside trainer.lr (a DAM's α, its target-sparsity multipliers, the
    encoder's own rate and a head warm-up; `optim.GroupRates`).
    """
    tc = cfg.trainer
    rank, world_size = world()
    device = resolve_device(tc)
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)
    init_process_group(device.type)
    model.to(device)
    wrapped = Penalised(model, hooks.penalty)
    if world_size > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            wrapped,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    n = len(dataset)
    total = total_steps(tc, n)
    refuse(head_warmup_problem(rates.head_warmup, total))
    # trainer.eval_every=0: after every epoch when training by epochs, else at the end only.
    eval_every = tc.eval_every or (steps_per_epoch(n, tc.batch_size) if tc.epochs > 0 else 0)
    micro = tc.batch_size // (world_size * tc.grad_accum)
    optimizer = build_optimizer(model, tc, rates)
    scheduler = build_scheduler(optimizer, tc, total, rates.head_warmup)
    scaler = torch.amp.GradScaler(enabled=tc.precision == "fp16")
    from omegaconf import OmegaConf

    ckpt_dir = runs.layout(run.dir).checkpoints
    found = ckpt.complete_checkpoints(ckpt_dir) if cfg.resume == "auto" else []
    if cfg.resume == "never" and rank == 0 and ckpt.complete_checkpoints(ckpt_dir):
        # A fresh start in a folder an earlier attempt checkpointed: its later steps would outrank
        # this attempt's (only the newest are kept) and be what a stopped run resumes from.
        ckpt.discard_all(ckpt_dir)
        say(f"resume=never: removed the earlier checkpoints in {ckpt_dir}")
    # evaluated: the step of the last finished evaluation (a checkpoint saved while one ran,
    # by a stop request, has an older one); wandb_id: the W&B run the checkpoints belong to
    state = {"best": None, "best_step": None, "best_metrics": None, "evaluated": None}
    if found:
        state = ckpt.load_checkpoint(found[-1], model, optimizer, scheduler, scaler)
        # a checkpoint of the code before `evaluated` was recorded: taken as evaluated
        state.setdefault("evaluated", state["step"])
        say(f"resumed from {found[-1]} (step {state['step']}/{total})")
    start = state.get("step", 0)
    logger = MetricLogger(
        run.dir, cfg.logger, OmegaConf.to_container(cfg, resolve=True), total,
        enabled=rank == 0, wandb_id=state.get("wandb_id"),
    )  # fmt: skip
    state["wandb_id"] = logger.wandb_id

    try:  # W&B hears how the run ended: a failed or stopped one is not "finished"
        # Drop what an earlier, killed attempt logged after `start` (also when it left no checkpoint).
        logger.truncate_after(start)

        def evaluation_due(done: int) -> bool:
            return hooks.evaluate is not None and (
                (eval_every and done % eval_every == 0) or done == total
            )

        def evaluate(done: int) -> dict[str, float]:
            """Evaluate after step `done` on rank 0: log it, keep the best weights when selecting."""
            result = _finite_evaluation(hooks.evaluate(), done, tc)
            if hooks.select and (state["best"] is None or result[hooks.select] > state["best"]):
                # the weights first: a stop while they are written leaves the old best in both,
                # and the evaluation unlogged, to be redone by the resumed run
                ckpt.save_weights(model, run.dir / runs.BEST_WEIGHTS)
                state.update(best=result[hooks.select], best_step=done, best_metrics=result)
            logger.log(done, result, show=True)
            state["evaluated"] = done
            return result

        metrics: dict[str, float] = {}
        if start and hooks.before_step is not None:
            # the per-step state step `start` ran under (a search's head warm-up, τ), which an
            # evaluation redone below, or the final one after the last step, reads
            hooks.before_step(start - 1)
        if found and start and evaluation_due(start) and state.get("evaluated") != start:
            # Stopped during the evaluation after step `start`: redo it, so that the best step and
            # weights are those of an uninterrupted run.
            if rank == 0:
                metrics = evaluate(start)
            _barrier()
        tokens, training_s = 0, 0.0  # the steps' own time: not evaluations nor checkpoints
        saved_at, last_save = start, time.monotonic()
        done, whole = start, True  # whole: the weights are those after step `done` (not mid-step)
        try:
            for step in range(start, total):
                with interrupt.deferred():  # a stop request waits for the end of this step
                    # only here, where a first stop request cannot raise: one handled just before
                    # (between two steps) leaves the weights of step `done`, saved on the way out
                    whole = False
                    began = time.perf_counter()
                    wrapped.train()
                    seed_everything(cfg.seed * 1_000_003 + 7919 * rank + step)
                    if hooks.before_step is not None:
                        hooks.before_step(step)
                    idx = batch_indices(step, n, tc.batch_size, cfg.seed)
                    local = idx[rank * micro * tc.grad_accum : (rank + 1) * micro * tc.grad_accum]
                    batches = [
                        {
                            k: v.to(device)
                            for k, v in collate([dataset[int(j)] for j in part]).items()
                        }
                        for part in local.split(micro)
                    ]
                    tokens += sum(int(b["attention_mask"].sum()) for b in batches) * world_size
                    lr = scheduler.get_last_lr()[0]  # the rate this step's update uses
                    step_loss, penalty_metrics = optimizer_step(
                        wrapped, batches, optimizer, scheduler, scaler, tc, step
                    )
                    extra = hooks.after_step(step + 1) if hooks.after_step is not None else {}
                    done, whole = step + 1, True
                    training_s += time.perf_counter() - began
                    if done % tc.log_every == 0 or done == total:
                        step_loss = _mean_over_ranks(step_loss)  # a collective: every rank
                        logger.log(
                            done,
                            {
                                "train/loss": step_loss,
                                "train/lr": lr,
                                "train/tokens_per_s": tokens / max(training_s, 1e-9),
                                **penalty_metrics,
                                **extra,
                            },
                        )
                    else:
                        logger.advance(done)
                due = checkpoint_due(tc.ckpt_every, done, total, time.monotonic() - last_save,
                                     world_size == 1)  # fmt: skip
                if evaluation_due(done) or due or done == total:
                    _check_weights(model, done, tc)
                if evaluation_due(done):
                    if rank == 0:
                        metrics = evaluate(done)
                    _barrier()
                if due:
                    if rank == 0:
                        ckpt.save_checkpoint(
                            ckpt_dir, done, model, optimizer, scheduler, scaler, state
                        )
                    saved_at, last_save = done, time.monotonic()
                    _barrier()
                _stop_if_requested()
        except interrupt.Interrupted:
            # Stopped between steps (or during an evaluation): keep the finished step for the rerun.
            if whole and done > saved_at and rank == 0:
                _check_weights(model, done, tc)  # a resume would load broken weights for good
                ckpt.save_checkpoint(ckpt_dir, done, model, optimizer, scheduler, scaler, state)
            raise

        if start == total and hooks.evaluate is not None and rank == 0 and not metrics:
            # resumed after the last step: recompute the final metrics
            metrics = _finite_evaluation(hooks.evaluate(), total, tc)
        if hooks.select and state["best_step"] is not None:
            ckpt.load_weights(model, run.dir / runs.BEST_WEIGHTS)
            metrics = {**state["best_metrics"], "eval/best_step": state["best_step"]}
        summary = {**metrics, "train/steps": total}
        if start < total:
            summary["train/tokens_per_s"] = tokens / max(training_s, 1e-9)
        if hooks.final is not None:
            summary.update(hooks.final())
        logger.finish(summary)
    except BaseException as error:
        logger.finish({}, exit_code=getattr(error, "exit_code", 1))
        raise
    return summary
