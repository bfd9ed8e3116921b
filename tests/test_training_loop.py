"""An in-process spec of the one training loop (training/loop.py) on a 1-layer model, in seconds:
the batch order is a function of (seed, step), gradient accumulation splits a batch without
changing the update, and a run stopped after a step, or during an evaluation, and resumed from
its checkpoint ends with the weights (and the best step) of the run that was never stopped. (The
subprocess tests kill real CLI runs; these pin the loop's own contract.)"""

import json
from collections.abc import Callable
from contextlib import contextmanager

import pytest
import torch
from conftest import compose_cfg, tiny_model

from sparsebert_cli import interrupt
from sparsebert_cli.data.pretraining import collate_pretraining
from sparsebert_cli.masks.source import MaskSource
from sparsebert_cli.modeling import build_pretraining_model
from sparsebert_cli.runs import Run
from sparsebert_cli.training import checkpoint as ckpt
from sparsebert_cli.training.loop import Hooks, batch_indices, train

VOCAB, N, EXAMPLES = 40, 12, 24


def examples() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(EXAMPLES):
        ids = torch.randint(5, VOCAB, (N,), generator=g).tolist()
        positions = sorted(torch.randperm(N - 2, generator=g)[:2].add(1).tolist())
        rows.append({
            "input_ids": ids, "token_type_ids": [0] * N, "attention_mask": [1] * N,
            "masked_lm_positions": positions, "masked_lm_ids": [ids[p] for p in positions],
            "masked_lm_weights": [1.0, 1.0], "next_sentence_label": -100,
        })  # fmt: skip
    return rows


def run_loop(
    run_dir,
    *overrides: str,
    hooks: Hooks | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    summary: dict | None = None,
) -> torch.nn.Module:
    """The trained model. evaluate(model): the evaluation, selecting the best by "eval/score";
    `summary`, when given, gets what `train` returned."""
    cfg = compose_cfg("pretrain", "debug=smoke", "data.nsp=false", "trainer.max_steps=6",
                      "trainer.batch_size=4", "trainer.eval_every=0", "trainer.log_every=1",
                      "trainer.ckpt_every=1", "trainer.lr=1e-2", *overrides)  # fmt: skip
    torch.manual_seed(0)
    model = build_pretraining_model(tiny_model(num_layers=1), MaskSource("dense"), VOCAB, nsp=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(run_dir, {"stage": "pretrain"}, writer=True)
    if evaluate is not None:
        hooks = Hooks(evaluate=lambda: evaluate(model), select="eval/score")
    found = train(model, examples(), collate_pretraining, cfg, run, hooks or Hooks())
    if summary is not None:
        summary.update(found)
    return model


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_batch_order_is_a_function_of_seed_and_step_and_covers_each_epoch():
    epoch = torch.cat([batch_indices(step, EXAMPLES, 4, seed=3) for step in range(6)])
    assert sorted(epoch.tolist()) == list(range(EXAMPLES))  # 6 steps of 4: every example once
    assert torch.equal(batch_indices(2, EXAMPLES, 4, seed=3), batch_indices(2, EXAMPLES, 4, seed=3))
    assert not torch.equal(batch_indices(2, EXAMPLES, 4, seed=3), batch_indices(2, EXAMPLES, 4, 4))


def test_two_runs_of_one_config_end_with_the_same_weights(tmp_path):
    first = weights(run_loop(tmp_path / "a"))
    second = weights(run_loop(tmp_path / "b"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_gradient_accumulation_splits_the_batch_without_changing_the_update(tmp_path):
    whole = weights(run_loop(tmp_path / "whole"))
    split = weights(run_loop(tmp_path / "split", "trainer.grad_accum=2"))
    for name in whole:  # equal masked-token counts per example: the mean of means is the mean
        torch.testing.assert_close(split[name], whole[name], atol=1e-5, rtol=1e-4)


def test_a_run_stopped_after_a_step_resumes_to_the_weights_of_an_unstopped_run(tmp_path, capsys):
    unstopped = weights(run_loop(tmp_path / "unstopped"))

    def stop_at_three(step: int) -> dict:
        if step == 3:
            raise interrupt.Interrupted(2)  # as the SIGINT handler's request surfaces in the loop
        return {}

    with pytest.raises(interrupt.Interrupted):
        run_loop(tmp_path / "stopped", hooks=Hooks(after_step=stop_at_three))
    resumed = weights(run_loop(tmp_path / "stopped"))
    assert "(step 2/6)" in capsys.readouterr().out  # from the checkpoint, not from scratch
    assert all(torch.equal(unstopped[k], resumed[k]) for k in unstopped)


def test_a_stop_request_handled_as_a_step_begins_saves_the_step_before(tmp_path, monkeypatch):
    """A signal's handler runs at the next bytecode: one noted just before the fourth step's
    deferred block raises there, and the weights of step 3 (whole) are saved on the way out."""
    entered: list[int] = []
    deferred = interrupt.deferred

    @contextmanager
    def signalled_as_the_fourth_step_begins():
        entered.append(1)
        if len(entered) == 4:
            raise interrupt.Interrupted(15)
        with deferred():
            yield

    monkeypatch.setattr(interrupt, "deferred", signalled_as_the_fourth_step_begins)
    with pytest.raises(interrupt.Interrupted):
        run_loop(tmp_path, "trainer.ckpt_every=100")  # no checkpoint but the one on the way out
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path / "checkpoints")] == [
        "step-00000003"
    ]


@pytest.mark.parametrize("where", ["evaluation", "best weights"])
def test_a_run_stopped_during_an_evaluation_redoes_it_and_keeps_the_same_best(
    tmp_path, monkeypatch, where
):
    """Selecting the best evaluation (finetune): a stop during the evaluation after step 4 (or
    while it writes step 4's weights as the new best) is checkpointed at step 4 without it; the
    resumed run evaluates step 4 before going on, so the best step and the weights kept are
    those of the run that was never stopped."""
    overrides = ("trainer.eval_every=2",)

    def bias_sum(model) -> float:
        return float(model.cls.predictions.bias.sum())

    seen: list[float] = []  # the bias sum at each evaluation (steps 2, 4, 6)

    def probe(model) -> dict:
        seen.append(bias_sum(model))
        return {"eval/score": 0.0}

    run_loop(tmp_path / "probe", *overrides, evaluate=probe)

    def score(model) -> dict:  # a function of the weights alone, best at step 4
        return {"eval/score": -abs(bias_sum(model) - seen[1])}

    calls: list[int] = []

    def stop_at_step_four(model) -> dict:
        calls.append(1)
        if len(calls) == 2:  # the evaluation after step 4
            raise interrupt.Interrupted(2)
        return score(model)

    save_weights = ckpt.save_weights

    def stop_writing_step_four(model, path) -> None:
        calls.append(1)
        if len(calls) == 2:  # the best weights of step 4 (step 2's came first)
            raise interrupt.Interrupted(2)
        save_weights(model, path)

    unstopped_summary, stopped_summary = {}, {}
    unstopped = weights(
        run_loop(tmp_path / "a", *overrides, evaluate=score, summary=unstopped_summary)
    )
    with pytest.raises(interrupt.Interrupted), monkeypatch.context() as patch:
        if where == "evaluation":
            run_loop(tmp_path / "b", *overrides, evaluate=stop_at_step_four)
        else:
            patch.setattr(ckpt, "save_weights", stop_writing_step_four)
            run_loop(tmp_path / "b", *overrides, evaluate=score)
    resumed = weights(run_loop(tmp_path / "b", *overrides, evaluate=score, summary=stopped_summary))
    assert unstopped_summary["eval/best_step"] == 4
    assert stopped_summary["eval/best_step"] == 4
    assert stopped_summary["eval/score"] == unstopped_summary["eval/score"]
    assert all(torch.equal(unstopped[k], resumed[k]) for k in unstopped)
    evaluated = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl")
                 .read_text().splitlines() if "eval/score" in line]  # fmt: skip
    assert evaluated == [2, 4, 6]  # step 4's evaluation logged once, after the resume


def test_an_evaluation_redone_after_a_resume_sees_the_step_state_of_the_run_that_was_not_stopped(
    tmp_path,
):
    """A search's head warm-up sets the mask aside in its before_step hook: an evaluation redone
    on resume ran before any hook, on the binarised mask, where the stopped run evaluated the
    dense model (metrics.jsonl differed)."""
    state = {"step": None}
    calls: list[int] = []

    def before_step(step: int) -> None:
        state["step"] = step

    def evaluate(stop: bool) -> dict:
        calls.append(1)
        if stop and len(calls) == 2:  # the evaluation after step 4
            raise interrupt.Interrupted(2)
        return {"eval/under_step": float(state["step"])}

    def hooks(stop: bool) -> Hooks:
        return Hooks(before_step=before_step, evaluate=lambda: evaluate(stop))

    with pytest.raises(interrupt.Interrupted):
        run_loop(tmp_path, "trainer.eval_every=2", hooks=hooks(stop=True))
    state["step"] = None  # a new process
    run_loop(tmp_path, "trainer.eval_every=2", hooks=hooks(stop=False))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    seen = {row["step"]: row["eval/under_step"] for row in logged if "eval/under_step" in row}
    assert seen == {2: 1.0, 4: 3.0, 6: 5.0}


def test_a_checkpoint_without_the_evaluated_step_is_taken_as_evaluated(tmp_path):
    """Checkpoints written before the loop recorded its last evaluation: a resume does not redo
    (and log twice) the evaluation of the step it resumes from."""
    import json as json_

    def score(model) -> dict:
        return {"eval/score": float(model.cls.predictions.bias.sum())}

    def stop_after_four(step: int) -> dict:
        if step == 5:
            raise interrupt.Interrupted(2)
        return {}

    overrides = ("trainer.eval_every=2",)
    run_dir = tmp_path / "old"
    with pytest.raises(interrupt.Interrupted):
        run_loop(run_dir, *overrides, hooks=Hooks(evaluate=lambda: {"eval/score": 0.0},
                                                  after_step=stop_after_four))  # fmt: skip
    state_file = max((run_dir / "checkpoints").glob("step-*")) / "loop_state.json"
    state = json_.loads(state_file.read_text())
    assert state["step"] == 4 and state.pop("evaluated") == 4
    state_file.write_text(json_.dumps(state))  # as the code before wrote it
    run_loop(run_dir, *overrides, evaluate=score)
    evaluated = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl")
                 .read_text().splitlines() if "eval/score" in line]  # fmt: skip
    assert evaluated == [2, 4, 6]


def test_an_update_that_breaks_the_model_fails_the_run_before_it_saves_or_completes(tmp_path):
    """The loss check sees the loss before an update only: the last update of an lr = 1e30 run
    left weights too large for the forward pass (NaN MLM loss) or NaN, and the run completed."""
    from sparsebert_cli.errors import SparseBertError

    with pytest.raises(SparseBertError, match="the evaluation gave eval/mlm_loss=nan at step 1"):
        run_loop(tmp_path / "a", "trainer.max_steps=1", "trainer.lr=1e30",
                 evaluate=lambda model: {"eval/mlm_loss": float("nan"), "eval/score": 0.0})  # fmt: skip
    evaluated = []
    with pytest.raises(SparseBertError, match="weights became NaN or infinite in the update"):
        run_loop(tmp_path / "b", "trainer.max_steps=1", "trainer.lr=inf",
                 evaluate=lambda model: evaluated.append(1) or {"eval/score": 0.0})  # fmt: skip
    assert not evaluated and not (tmp_path / "b" / "checkpoints").exists()


def test_the_logged_rate_is_the_one_each_step_used(tmp_path):
    """Three warm-up steps then linear decay: the log showed each step the next one's rate
    (2/3, 1, 1, 2/3, 1/3, 0 × lr)."""
    run_loop(tmp_path, "trainer.warmup=0.5", "trainer.scheduler=linear")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rates = [row["train/lr"] for row in rows if "train/lr" in row]
    assert rates == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2, 2e-2 / 3, 1e-2 / 3])


def test_each_ddp_rank_trains_on_its_own_gpu(monkeypatch):
    """Every rank took plain `cuda` (cuda:0) on an 8-GPU node. No GPU here: CUDA is faked."""
    from omegaconf import OmegaConf

    from sparsebert_cli.training.loop import resolve_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "3")
    for device in ("cuda", "auto"):
        assert resolve_device(OmegaConf.create({"device": device})) == torch.device("cuda", 3)
    assert chosen == [torch.device("cuda", 3)] * 2
    assert resolve_device(OmegaConf.create({"device": "cpu"})) == torch.device("cpu")


def test_the_cuda_process_group_also_reduces_the_loops_cpu_tensors():
    """With nccl alone the CPU all-reduces (finite-loss flag, logged loss, stop request) fail
    on GPUs: "No backend type associated with device type cpu"."""
    import torch.distributed as dist

    from sparsebert_cli.training.distributed import process_group_backend

    backends = dist.BackendConfig(dist.Backend(process_group_backend("cuda")))
    assert backends.get_device_backend_map() == {"cpu": "gloo", "cuda": "nccl"}
    assert process_group_backend("cpu") == "gloo"


def test_more_ranks_than_gpus_are_refused_up_front(monkeypatch):
    """Rank 2 of 4 on a 2-GPU machine failed with CUDA's "invalid device ordinal"."""
    from conftest import compose_cfg

    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.validation import preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    preflight(compose_cfg("pretrain", "trainer.device=cuda", "trainer.nproc_per_node=2"))
    with pytest.raises(SparseBertError, match="nproc_per_node=4 runs one rank per GPU, but 2"):
        preflight(compose_cfg("pretrain", "trainer.device=cuda", "trainer.nproc_per_node=4"))


def test_a_checkpoint_keeps_the_fp16_loss_scale(tmp_path):
    """A resumed fp16 run began again at 2¹⁶ with no growth count: steps that the uninterrupted
    run took at its backed-off scale overflowed and were skipped."""
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", growth_interval=3)

    def step(new_scale: float | None = None) -> None:
        scaler.scale(model(torch.ones(4)).sum()).backward()
        scaler.step(optimizer)
        scaler.update(new_scale)

    step(1024.0)  # backed off to 1024
    step()  # one finite step towards growing again
    saved = ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler, scaler, {})
    resumed = torch.amp.GradScaler("cpu", growth_interval=3)
    ckpt.load_checkpoint(saved, model, optimizer, scheduler, resumed)
    assert resumed.state_dict() == scaler.state_dict()
    assert (resumed.get_scale(), resumed.state_dict()["_growth_tracker"]) == (1024.0, 1)


def test_a_fresh_start_with_resume_never_removes_the_earlier_attempts_checkpoints(tmp_path, capsys):
    """They outranked the new ones (the newest two step numbers are kept): the new attempt's were
    pruned as written, and a stopped run would have resumed the attempt it had abandoned."""
    run_loop(tmp_path)
    run_loop(tmp_path, "resume=never", "trainer.max_steps=3")
    kept = [p.name for p in ckpt.complete_checkpoints(tmp_path / "checkpoints")]
    assert kept == ["step-00000002", "step-00000003"]
    assert "resume=never: removed the earlier checkpoints" in capsys.readouterr().out


def test_the_progress_lines_show_a_pre_training_evaluation(tmp_path, capsys):
    """The lines listed eval/loss, which no stage logs: a search's or pre-training's evaluation
    never reached the screen."""
    hooks = Hooks(evaluate=lambda: {"eval/mlm_loss": 1.25, "eval/mlm_accuracy": 0.5})
    run_loop(tmp_path, "trainer.eval_every=2", hooks=hooks)
    assert "mlm_loss=1.25" in capsys.readouterr().out


def test_a_loss_that_is_not_finite_on_another_rank_is_not_reported_as_this_ranks(
    tmp_path, monkeypatch
):
    """The rank whose loss was finite said 'the loss became 11.03', and that message became the
    run's error."""
    from sparsebert_cli.errors import SparseBertError
    from sparsebert_cli.training import loop

    monkeypatch.setattr(loop, "_all_ranks_finite", lambda loss: False)  # another rank's NaN
    with pytest.raises(SparseBertError, match="the loss is not finite on a rank at step 1"):
        run_loop(tmp_path)
