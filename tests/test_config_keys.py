"""One home per fact in the config: every key of every stage is read by that stage or refused,
every number has its range in `config.RANGES`, choices come from one registry, and the content
hash holds only what a stage reads."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest
from conftest import ROOT, compose_cfg, sparsebert, tiny_model
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from sparsebert_cli.config import RANGES, STAGES, RunConfig, unnamed_overrides
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.stages import READS, hashed_config, reads
from sparsebert_cli.validation import (
    check_override_values,
    check_overrides,
    schema_keys,
    validate_config,
)

SRC = ROOT / "src" / "sparsebert_cli"
# Where keys are declared, ranged or hashed, not read: their mention proves no reader.
NOT_READERS = {"config.py", "validation.py", "stages/__init__.py"}


def leaves(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys of a composed config, down to the schema's leaves (a dict setting such as
    task.data_files is one leaf)."""
    _, open_keys = schema_keys()
    out = []
    for key in node:
        dotted = f"{prefix}{key}"
        value = node[key]
        if isinstance(value, DictConfig) and dotted not in open_keys:
            out += leaves(value, f"{dotted}.")
        else:
            out.append(dotted)
    return out


def schema_leaves() -> set[str]:
    """The dotted keys of `RunConfig` that are no group (a dict setting is one leaf)."""
    keys, _ = schema_keys()
    return {key for key in keys if not any(k.startswith(f"{key}.") for k in keys)}


def reader_sources() -> str:
    texts = [
        p.read_text(encoding="utf-8")
        for p in SRC.rglob("*.py")
        if p.relative_to(SRC).as_posix() not in NOT_READERS and not p.name == "config.py"
    ]
    texts += [p.read_text(encoding="utf-8") for p in (ROOT / "conf" / "hydra").rglob("*.yaml")]
    return "\n".join(texts)


def has_reader(key: str, sources: str) -> bool:
    """Whether some module reads the setting: `.name`, `["name"]`, a listed "name" (settings
    read by name) or `${name}` in the Hydra run-folder config."""
    name = re.escape(key.rsplit(".", 1)[-1])
    return bool(re.search(rf"\.{name}\b|\[\"{name}\"\]|\"{name}\"|\$\{{{name}\}}", sources))


@pytest.mark.parametrize("stage", STAGES)
def test_every_key_of_a_stage_is_read_by_it_or_refused(stage):
    """Every key of the schema: in the stage's config and read by some module, or refused on the
    stage's command line (evaluate's config leaves out what it refuses)."""
    sources = reader_sources()
    composed = set(leaves(compose_cfg(stage)))
    assert composed <= schema_leaves()
    for key in schema_leaves():
        if reads(stage, key):
            assert key in composed, f"{stage} reads {key} but its config lacks it"
            assert has_reader(key, sources), f"{stage} lists {key} as read but nothing reads it"
        else:
            with pytest.raises(SparseBertError, match=f"does not read {re.escape(key)}"):
                check_overrides(stage, [f"{key}=1"])


def test_evaluate_composes_exactly_the_keys_it_reads_typed_by_the_schema():
    cfg = compose_cfg("evaluate")
    assert not {"mask", "data", "logger", "pipeline", "resume"} & set(cfg)
    assert set(leaves(cfg)) == {key for key in schema_leaves() if reads("evaluate", key)}
    full = OmegaConf.structured(RunConfig)
    for key in ("model.attention_backend", "model.block_size", "trainer.eval_batch_size"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(full, key)  # the same defaults
    with pytest.raises(ConfigCompositionException, match="eval_batch_size"):
        compose_cfg("evaluate", "trainer.eval_batch_size=many")


@pytest.mark.parametrize("preset", ["debug=smoke", "experiment=demo", "+debug=smoke"])
def test_evaluate_refuses_a_preset_naming_it_and_the_fix(preset):
    with pytest.raises(
        SparseBertError, match=rf"takes no preset \({re.escape(preset)}\).*--cfg job"
    ):
        check_overrides("evaluate", [preset])
    if preset.startswith("+"):  # a stage that composes the group: Hydra's "Multiple values"
        with pytest.raises(SparseBertError, match=r"drop the \+: debug=smoke"):
            check_overrides("finetune", [preset])
    else:
        check_overrides("finetune", [preset])


def test_every_presets_step_overrides_are_read_by_their_step():
    """A preset's `pipeline.<step>` overrides (experiment=base: finetune's nproc_per_node) are
    checked when the step starts, after the steps before it: a key the step refuses would fail
    the pipeline hours in."""
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        cfg = compose_cfg("pipeline", f"experiment={path.stem}")
        for step in ("search", "pretrain", "finetune", "evaluate"):
            check_overrides(step, list(cfg.pipeline[step]))


def test_a_key_added_to_the_schema_without_a_reader_fails_the_walk():
    """The walk catches a new setting nobody reads (what trainer.dataloader_workers was)."""
    sources = reader_sources()
    assert has_reader("trainer.grad_accum", sources)
    assert not has_reader("trainer.dataloader_workers", sources)
    assert not has_reader("trainer.prefetch_factor", sources)


def test_the_listed_keys_exist_in_the_schema():
    keys, _ = schema_keys()
    for stage, listed in READS.items():
        assert set(listed) <= keys, (stage, set(listed) - keys)


def numeric_keys(node: type = RunConfig, prefix: str = "") -> set[str]:
    """The schema's settings typed int or float (optional, or a tuple of them, included)."""
    out = set()
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out |= numeric_keys(kind, f"{prefix}{f.name}.")
            continue
        args = {a for a in typing.get_args(kind) if a is not type(None)} or {kind}
        if args and args <= {int, float}:
            out.add(f"{prefix}{f.name}")
    return out


def test_every_number_of_the_schema_has_one_range():
    assert numeric_keys() == set(RANGES)


@pytest.mark.parametrize("key", sorted(RANGES))
def test_a_value_outside_a_range_is_refused_by_validation(key):
    allowed = RANGES[key]
    bad = "nan" if allowed.low is None else str(allowed.low - 1)
    if isinstance(OmegaConf.select(OmegaConf.structured(RunConfig), key), int):
        bad = str(int(float(bad))) if bad != "nan" else "nan"
    stage = next(s for s in ("search", "pretrain", "finetune") if reads(s, key))
    value = f"[{bad},{bad}]" if key == "trainer.betas" else bad
    extra = ["mask=dam"] if stage == "search" else []
    extra += ["model=tiny", "mask=dense"] if stage == "finetune" else []
    try:
        cfg = compose_cfg(stage, *extra, f"{key}={value}")
    except Exception:  # an int setting given NaN is refused by the schema's type
        return
    with pytest.raises(SparseBertError, match=re.escape(f"{key}=")):
        validate_config(cfg)


def test_sdpa_is_a_backend_validate_accepts():
    validate_config(compose_cfg("pretrain", "model.attention_backend=sdpa"))


def test_a_typo_and_a_plus_key_are_refused_with_a_did_you_mean():
    with pytest.raises(SparseBertError, match="did you mean mask.lam"):
        check_overrides("search", ["mask.lamda=1e-3"])
    with pytest.raises(SparseBertError, match=r"`\+` adds a key.*did you mean trainer.lr"):
        check_overrides("pretrain", ["+trainer.lrr=1"])
    check_overrides("finetune", ["task.data_files.train=a.csv", "+task.data_files.dev=b.csv"])


def test_a_missing_group_option_and_a_value_of_the_wrong_type_are_refused_before_hydra():
    """`mask=dam_x` and `mask.lam=abc` got Hydra's multi-line composition error (the config
    search path, HYDRA_FULL_ERROR) instead of one line with the choices or the type."""
    from sparsebert_cli.validation import check_override_values

    for args, said in (
        (["mask=dam_x"], r"no mask option 'dam_x'\. Did you mean mask=dam_s\? .* window"),
        (["-m", "mask=dense,dam_x"], "no mask option 'dam_x'"),
        (["mask.lam=abc"], r"mask.lam takes a number, not 'abc'; write e.g. mask.lam=1e-3"),
        (["trainer.max_steps=1.5"], "trainer.max_steps takes a whole number, not 1.5"),
        (["mask.hard=maybe"], "mask.hard takes true or false"),
        (["-m", "seed=0,x"], "seed takes a whole number, not 'x'"),
        (["pipeline.search=['mask.lam=abc']"], r"pipeline.search=.*: mask.lam=abc: mask.lam takes"),
        (["pipeline.search=['mask.lam=[']"], r"mask.lam=\[ is not an override Hydra can read"),
        (["-m", "trainer.num_threads=1,2"], "would all be one job in one folder"),
        (["pipeline.finetune=['task=nope']"], "no task option 'nope'"),
    ):
        with pytest.raises(SparseBertError, match=said):
            check_override_values(args)
    check_override_values(
        ["-m", "mask=dense,dam_s", "mask.lam=1e-3", "mask.target_sparsity=null", "seed=0,1",
         "mask.tau=2", "~mask.tau_final", "data.seq_len=range(8,16,4)", "mask.lam=${mask.tau}",
         "mask.hard=yes", "trainer.max_steps='4'", "mask.lam='1e-3'", "mask.lam=1${x}",
         "data.files=[a.txt,b.txt]"]  # what OmegaConf itself accepts passes
    )  # fmt: skip


def test_what_hydra_refuses_in_its_own_words_is_refused_with_the_fix():
    """Hydra's multi-line merge errors (or `Error merging override` alone, from `validate`)
    for a list or mapping given one value, a deleted setting and a `+` on what exists."""
    from sparsebert_cli.validation import check_command_line

    for stage, args, said in (
        ("pretrain", ["data.files=c.jsonl"], r"takes a list, .* write \"data.files=\[c.jsonl\]\""),
        ("finetune", ["task.text_fields=text"], r"write \"task.text_fields=\[text\]\""),
        ("finetune", ["++task.data_files=a.csv"], r"takes a mapping, .*\{train: train.csv"),
        ("pipeline", ["pipeline.finetune=trainer.lr=1e-4"],
         r"\"pipeline.finetune=\['trainer.lr=1e-4'\]\""),
        ("pretrain", ["~trainer.lr"], "a setting cannot be deleted"),
        ("pretrain", ["~mask"], "every stage needs a mask"),
        ("pretrain", ["+experiment=demo"], r"experiment is already a config group .* experiment=demo"),
        ("pretrain", ["+trainer.lr=1e-3"], r"already a setting .*drop the \+: trainer.lr=1e-3"),
        ("pretrain", ["-m", "run_id=same", "seed=0,1"], "run_id names one run's folder"),
        ("pretrain", ["run_id=latest"], "run_id=latest is a word sparsebert reads otherwise"),
        ("pretrain", ["run_id=multirun"], "run_id=multirun is a word"),
    ):  # fmt: skip
        with pytest.raises(SparseBertError, match=said):
            check_command_line(stage, args)
    for stage, args in (  # what Hydra takes stays taken
        ("pretrain", ["+logger.tags=[a]", "++trainer.lr=1e-3", "~debug", "data.files=[a,b]"]),
        ("finetune", ["task.data_files={train: a.csv, dev: b.csv}", "+task.data_files.dev=b"]),
        ("pipeline", ["pipeline.finetune=['trainer.lr=1e-4']"]),
    ):
        check_command_line(stage, args)


def test_evaluate_refuses_what_it_does_not_read_and_does_not_hash_it():
    for override in ("mask=no_diag", "model.hidden_size=64", "data.seq_len=64", "task=mrpc"):
        with pytest.raises(SparseBertError, match="`sparsebert evaluate` does not read"):
            check_overrides("evaluate", [override])
    check_overrides("evaluate", ["model.from_run=runs/x", "task.glue_dir=/data"])
    base = OmegaConf.to_container(compose_cfg("evaluate"))
    assert set(hashed_config(base)) <= {"stage", "seed", "model", "task", "trainer"}
    assert set(hashed_config(base)["trainer"]) == {"eval_batch_size"}


def test_the_checkpoint_interval_is_not_part_of_a_jobs_identity():
    """Resuming with another trainer.ckpt_every is the same job (not 'a different config')."""
    a = OmegaConf.to_container(compose_cfg("pretrain", "trainer.ckpt_every=0"))
    b = OmegaConf.to_container(compose_cfg("pretrain", "trainer.ckpt_every=5"))
    assert hashed_config(a) == hashed_config(b)
    c = OmegaConf.to_container(compose_cfg("pretrain", "trainer.lr=2e-3"))
    assert hashed_config(a) != hashed_config(c)


def test_a_run_folder_of_another_config_is_refused_naming_the_settings_that_differ(tmp_path):
    """ "already holds a 'pretrain' run of a different config (hash …, this job …)" left the user to
    guess which of the typed settings to undo (found by a training review)."""
    from sparsebert_cli import runs
    from sparsebert_cli.launch import existing_run, identity

    run_dir = tmp_path / "pretrain" / "x1"
    before = compose_cfg("pretrain", "debug=smoke", "trainer.eval_every=500")
    resolved, chash = identity(before)
    runs.Run.start(run_dir, "pretrain", resolved, chash, "sparsebert pretrain")
    runs.write_job_record(run_dir, "sparsebert pretrain debug=smoke", resolved)
    assert existing_run(run_dir, resolved, chash)["config_hash"] == chash
    with pytest.raises(runs.FolderRefused) as refused:
        existing_run(
            run_dir, *identity(compose_cfg("pretrain", "debug=smoke", "trainer.eval_every=3"))
        )
    assert "): it differs in trainer.eval_every: 500 | 3 (that run | this job); choose" in str(
        refused.value
    )


def test_a_size_set_beside_loaded_weights_is_refused_not_ignored():
    """The weights' config.json fixes the model's sizes: model.num_layers=3 beside model=minilm
    was silently a 6-layer model (a preset's sizes, as debug=smoke's, are for new models)."""
    from sparsebert_cli.validation import check_command

    args = ["model=minilm", "model.num_layers=3"]
    with pytest.raises(SparseBertError, match="model.num_layers sets up a new model, but the "
                       "weights come from embedded:minilm"):  # fmt: skip
        check_command(compose_cfg("finetune", *args), args, single_run=False)
    check_command(compose_cfg("pretrain", "model.num_layers=3"), ["model.num_layers=3"], False)
    check_command(compose_cfg("finetune", "debug=smoke"), ["debug=smoke"], False)


def test_max_steps_beside_epochs_is_refused_not_ignored():
    """finetune trains by epochs (3): `finetune trainer.max_steps=2` ran 30 steps."""
    from sparsebert_cli.validation import check_command

    for single_run in (True, False):
        with pytest.raises(
            SparseBertError, match="trainer.max_steps=2 is not used: finetune trains"
        ):
            check_command(compose_cfg("finetune", "trainer.max_steps=2"), ["trainer.max_steps=2"],
                          single_run)  # fmt: skip
    by_steps = ["trainer.max_steps=2", "trainer.epochs=0"]
    check_command(compose_cfg("finetune", *by_steps), by_steps, True)
    check_command(compose_cfg("pretrain", "trainer.max_steps=2"), ["trainer.max_steps=2"], True)


def test_mask_from_beside_another_mask_is_refused_in_a_single_run():
    """`pretrain mask.from=latest` without mask=from_run trained dense; a sweep over masks sets
    mask.from for its from_run jobs and leaves it unread in the others, so only a single run
    (and `validate`) refuses it."""
    from sparsebert_cli.validation import check_command

    with pytest.raises(SparseBertError, match="mask=dense does not read it; add mask=from_run"):
        check_command(compose_cfg("pretrain", "mask.from_run=latest"), [], single_run=True)
    check_command(compose_cfg("pretrain", "mask.from_run=latest"), [], single_run=False)  # a sweep
    check_command(compose_cfg("pretrain", "mask=from_run", "mask.from_run=latest"), [], True)
    check_command(compose_cfg("evaluate"), [], True)


@pytest.mark.parametrize(
    "stage, overrides, unread",
    [
        ("search", ["mask=dam", "mask.window=5"], "mask.window"),  # forked the search's hash
        ("search", ["mask=attention_topk", "mask.seed=3"], "mask.seed"),
        ("search", ["mask=attention_topk", "mask.tau=2"], "mask.tau"),  # a DAM's only
        ("search", ["mask=dam", "mask.lagrangian_lr=0.1"], "mask.lagrangian_lr"),  # no target
        ("search", ["mask=dam_s", "mask.target_warmup=5"], "mask.target_warmup"),
        ("pretrain", ["mask=window", "mask.lam=1"], "mask.lam"),  # silently dropped
        ("pretrain", ["mask=window", "mask.seq_len=64"], "mask.seq_len"),
        ("pretrain", ["mask=strided", "mask.window=2"], "mask.window"),
        ("pretrain", ["mask=from_run", "mask.density=0.2"], "mask.density"),
        ("finetune", ["mask=checkpoint", "mask.stride=4"], "mask.stride"),
        ("pipeline", ["mask=dam_s", "mask.stride=4"], "mask.stride"),
        ("pipeline", ["mask=dense", "pipeline.search=['trainer.max_steps=3']"], "pipeline.search"),
    ],
)
def test_a_mask_setting_the_chosen_mask_does_not_read_is_refused_in_a_single_run(
    stage, overrides, unread
):
    """Each is refused naming the setting and the masks that read it; a sweep over masks sets
    it for the jobs whose mask reads it and leaves it unread in the others."""
    from sparsebert_cli.validation import check_command

    cfg = compose_cfg(stage, *overrides)
    with pytest.raises(SparseBertError, match=f"{unread} (is set|sets the search).*mask=.* not"):
        check_command(cfg, overrides, single_run=True)
    check_command(compose_cfg(stage, *overrides), overrides, single_run=False)


@pytest.mark.parametrize(
    "overrides, refused",
    [
        (["task=squad", "task.fold=3"], "task.fold is set, but task=squad takes its dev split"),
        (["task=mrpc", "task.num_folds=3"], "task.num_folds is set, but task=mrpc"),
        (["task=mrpc", "task.doc_stride=64"], "task.doc_stride is set, but task=mrpc is a"),
        (["task=swag", "task.n_best=5"], "task.n_best is set, but task=swag is a multiple"),
        (["task=polarity", "task.glue_dir=/tmp", "task.fold=1"], "task.glue_dir is set, but"),
        # refused once the data were loaded (validate said OK), in a sweep over tasks too
        (["task=polarity", "task.glue_dir=/tmp"], "task=polarity is not a GLUE task"),
        # the embedded tasks' columns are fixed: these finished "completed", unread
        (["task=polarity", "task.text_fields=[]"], "task.text_fields is set, but task=polarity"),
        (["task=lee_sts", "task.label_field=y"], "task.label_field is set, but task=lee_sts"),
        (["task=mrpc", "task.label_field=y"], None),  # its hub dataset's column
        (["task=polarity", "+task.data_files={train: t.csv}", "task.label_field=y"], None),
        (["task=polarity", "task.fold=1"], None),
        (["task=lee_sts", "task.num_folds=4"], None),
        (["task=squad_v2", "task.null_score_threshold=0.5"], None),
    ],
)
def test_a_task_setting_the_task_does_not_read_is_refused_in_a_single_run(overrides, refused):
    """task.fold beside SQuAD changed the content hash and nothing else; the QA settings
    beside a classification task were ignored."""
    refused_in_a_single_run_only("finetune", overrides, refused)  # a sweep over tasks passes


def refused_in_a_single_run_only(stage: str, overrides: list[str], refused: str | None) -> None:
    """`overrides` pass in a sweep (its jobs may leave a setting unread) and, in a single run,
    are refused matching `refused` (None: pass too)."""
    from sparsebert_cli.validation import check_command

    cfg = compose_cfg(stage, *overrides)
    check_command(cfg, overrides, single_run=False)
    if refused is None:
        check_command(cfg, overrides, single_run=True)
        return
    with pytest.raises(SparseBertError, match=refused):
        check_command(cfg, overrides, single_run=True)


def test_a_logger_setting_without_a_logger_is_refused_in_a_single_run():
    """`logger.tags=[a]` with the default logger=none was accepted and went nowhere."""
    from sparsebert_cli.validation import check_command

    with pytest.raises(SparseBertError, match="logger.tags is set, but logger=none logs to"):
        check_command(compose_cfg("pretrain", "logger.tags=[a]"), ["logger.tags=[a]"], True)
    overrides = ["logger=wandb", "logger.tags=[a]"]
    check_command(compose_cfg("pretrain", *overrides), overrides, single_run=True)


@pytest.mark.parametrize(
    "overrides, refused",
    [
        (["data.files=[corpus.txt]"], "data.files is set, but data=wiki_sample is an embedded"),
        (["data=wiki_sotu", "data.text_column=body"], "data.text_column is set, but data=wiki_so"),
        (["data.vocab_size=500"], "data.vocab_size is set, but data.tokenizer=embedded"),
        (["data=text_files", "data.files=[corpus.txt]"], None),
        (["data=wikipedia", "data.files=[corpus.txt]"], None),  # the hub's and local files
        (["data.tokenizer=train", "data.vocab_size=500"], None),
    ],
)
def test_a_data_setting_the_corpus_does_not_read_is_refused_in_a_single_run(overrides, refused):
    """`pretrain data.files=[corpus.txt]` pre-trained on the embedded corpus alone, with the
    files in its config and its hash."""
    refused_in_a_single_run_only("pretrain", overrides, refused)  # a sweep over corpora passes


@pytest.mark.parametrize(
    "stage, overrides",
    [
        ("search", ["mask=dam_s", "mask.lam=1e-3", "mask.seq_len=64", "mask.hard=false"]),
        ("search", ["mask=dam", "mask.lam=0", "mask.target_sparsity=0.9", "mask.target_warmup=5"]),
        ("search", ["mask=dam_block", "mask.keep_diagonal_blocks=true"]),
        ("search", ["mask=attention_topk", "mask.target_sparsity=0.5", "mask.share_layers=false"]),
        ("pretrain", ["mask=bigbird", "mask.window=2", "mask.random_keys=3", "mask.seed=1"]),
        ("pretrain", ["mask=from_run", "mask.from_run=latest"]),
        ("pretrain", ["mask=random", "mask.density=0.2"]),
        ("pipeline", ["mask=dam_s", "pipeline.search=['trainer.max_steps=3']"]),
        ("pipeline", ["experiment=pattern_table", "mask=window"]),  # its preset's pipeline.search
    ],
)
def test_the_settings_a_mask_reads_pass(stage, overrides):
    from sparsebert_cli.validation import check_command

    check_command(compose_cfg(stage, *overrides), overrides, single_run=True)


def test_sequences_longer_than_a_loaded_models_positions_are_refused(tmp_path):
    """Its config.json, not model.max_position_embeddings (the preset's), fixes a loaded model's
    positions: a 64-position model fine-tuned at task.seq_len = 128 failed with a traceback in
    the embeddings (on data longer than 64 tokens)."""
    import json

    from transformers import BertConfig

    from sparsebert_cli.validation import preflight

    run = tmp_path / "runs" / "pretrain" / "p64"
    BertConfig(max_position_embeddings=64).save_pretrained(run / "artifacts" / "model")
    manifest = {"stage": "pretrain", "status": "completed", "config_hash": "x", "finished_at": 1.0}
    (run / "manifest.json").write_text(json.dumps(manifest))
    common = (f"model.from_run={run}", f"paths.runs_dir={tmp_path / 'runs'}")
    with pytest.raises(SparseBertError, match="task.seq_len=128 is longer than the 64 positions"):
        preflight(compose_cfg("finetune", *common, "task.seq_len=128"))
    preflight(compose_cfg("finetune", *common, "task.seq_len=64"))
    preflight(compose_cfg("pretrain", *common, "data.seq_len=64"))  # task.seq_len: not read


def _window_pretrain_run(workdir):
    """A completed pretrain run folder whose model carries a window mask (half-width 2, n = 16)."""
    import json

    from omegaconf import OmegaConf

    from sparsebert_cli.config import MaskConfig
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_pretraining_model, save_checkpoint

    run = workdir / "runs" / "pretrain" / "w16"
    window = OmegaConf.structured(MaskConfig(name="window", window=2))
    model = build_pretraining_model(
        tiny_model(), MaskSource.from_config(window, heads=2, layers=2, n=16), 30522, True
    )
    save_checkpoint(model, run / "artifacts" / "model", {})
    manifest = {"stage": "pretrain", "status": "completed", "config_hash": "x", "finished_at": 1.0}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.parametrize(
    ("stage", "data", "warned"),
    [
        ("pretrain", [], False),
        ("search", ["mask=dam_s", "mask.seq_len=16"], False),
        ("pretrain", ["data.eval_fraction=0.1"], True),
        ("search", ["mask=dam_s", "mask.seq_len=16", "data.max_documents=50"], True),
    ],
)
def test_a_continuation_on_other_held_out_documents_says_so(workdir, caplog, stage, data, warned):
    """The held-out documents follow the corpus and data.eval_fraction: continuing a checkpoint
    under others may evaluate on documents it trained on."""
    from sparsebert_cli.validation import preflight

    run = _window_pretrain_run(workdir)
    OmegaConf.save(compose_cfg("pretrain", "mask=window", "data.seq_len=16"), run / "config.yaml")
    preflight(compose_cfg(stage, f"model.from={run}", "data.seq_len=16", *data))
    said = "held-out documents of this run are not those of" in caplog.text
    assert said is warned
    if warned:
        assert f"({data[-1].split('=')[0]} differ)" in caplog.text


def test_a_continuation_of_a_seed_1_checkpoint_of_before_the_fixed_split_says_so(workdir, caplog):
    """Until 02ef264 a run's seed drew its held-out documents: a seed-1 checkpoint of then
    trained on most of the documents every run now holds out (seed 0's)."""
    import json

    from sparsebert_cli.runs import config_hash
    from sparsebert_cli.validation import preflight

    run = _window_pretrain_run(workdir)
    upstream = compose_cfg("pretrain", "mask=window", "data.seq_len=16", "seed=1")
    OmegaConf.save(upstream, run / "config.yaml")
    hashed = hashed_config(OmegaConf.to_container(upstream, resolve=True))
    manifest = json.loads((run / "manifest.json").read_text())
    continuation = compose_cfg("pretrain", f"model.from={run}", "data.seq_len=16")
    older = {k: v for k, v in hashed.items() if k != "held_out_seed"}
    for recorded, warned in ((config_hash(older), True), (config_hash(hashed), False)):
        (run / "manifest.json").write_text(json.dumps({**manifest, "config_hash": recorded}))
        caplog.clear()
        preflight(continuation)
        assert ("was pre-trained before 02ef264, with seed 1" in caplog.text) is warned


def test_a_model_saved_with_a_shorter_mask_is_refused_before_fine_tuning(workdir):
    """A model pre-trained with a 16-token mask fine-tuned at task.seq_len = 64 failed at its
    first batch longer than 16 tokens ("got length 42", with advice for a searched mask); it is
    refused once the data is tokenized, naming the longest batch, before any training; validate
    (which passed it) says so."""
    run = _window_pretrain_run(workdir)
    args = ("finetune", f"model.from={run}", "task=polarity", "debug=smoke", "run_id=short")
    checked = sparsebert("validate", *args[:-1], cwd=workdir)  # OK, with the run's condition
    assert "covers n=16 tokens but task.seq_len=64" in checked.stderr
    assert "set task.seq_len=16 to truncate" in checked.stderr
    quiet = sparsebert("validate", *args[:-1], "task.seq_len=16", cwd=workdir)
    assert "covers n=" not in quiet.stderr and "config OK" in quiet.stdout
    proc = sparsebert(*args, cwd=workdir, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "covers n=16 tokens, but task=polarity feeds it batches of up to" in proc.stderr
    assert "Set task.seq_len=16" in proc.stderr
    assert not list((workdir / "runs" / "finetune" / "short").glob("checkpoints/*"))


def test_a_loaded_models_positions_not_the_presets_allow_longer_sequences(tmp_path):
    """A model pre-trained with 1024 positions fine-tunes at task.seq_len = 600: the preset's
    max_position_embeddings (512) refused it, and overriding it beside loaded weights is refused
    too (a dead end). A model.name_or_path folder is checked by its own config.json."""
    import json

    from transformers import BertConfig, BertModel

    from sparsebert_cli.validation import preflight, validate_config

    def save_model(folder, positions: int) -> None:
        sizes = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)
        config = BertConfig(max_position_embeddings=positions, intermediate_size=32, **sizes)
        BertModel(config).save_pretrained(folder)

    run = tmp_path / "runs" / "pretrain" / "p1024"
    save_model(run / "artifacts" / "model", 1024)
    manifest = {"stage": "pretrain", "status": "completed", "config_hash": "x", "finished_at": 1.0}
    (run / "manifest.json").write_text(json.dumps(manifest))
    runs_dir = f"paths.runs_dir={tmp_path / 'runs'}"
    cfg = compose_cfg("finetune", f"model.from_run={run}", runs_dir, "task.seq_len=600")
    validate_config(cfg)
    preflight(cfg)
    folder = tmp_path / "hf64"
    save_model(folder, 64)
    cfg = compose_cfg("finetune", "model=hf", f"model.name_or_path={folder}", "task.seq_len=128")
    validate_config(cfg)
    with pytest.raises(
        SparseBertError, match=f"128 is longer than the 64 positions of the model in {folder}"
    ):
        preflight(cfg)
    with pytest.raises(SparseBertError, match="data.seq_len=600 is longer than model.max_position"):
        validate_config(compose_cfg("pretrain", "data.seq_len=600"))  # a new model: the preset's


def test_flex_training_on_cpu_is_refused_up_front_unless_the_mask_is_dense():
    """A dense mask runs SDPA whatever the backend: only a sparse one reaches flex's missing
    CPU backward."""
    from sparsebert_cli.validation import preflight

    flex = ("model.attention_backend=flex", "trainer.device=cpu")
    preflight(compose_cfg("pretrain", *flex))
    with pytest.raises(SparseBertError, match="flex has no backward pass on CPU"):
        preflight(compose_cfg("pretrain", "mask=window", *flex))


def test_a_pipelines_per_step_overrides_are_part_of_its_identity():
    """Another `pipeline.finetune=[...]` is another job (it was 'already completed: skipped'),
    and a report does not pool it; none at all keeps the hash of a pipeline before this rule."""
    from sparsebert_cli.reporting.records import experiment_config

    plain = OmegaConf.to_container(compose_cfg("pipeline"))
    low, high = (
        OmegaConf.to_container(compose_cfg("pipeline", f"pipeline.finetune=['trainer.lr={lr}']"))
        for lr in ("1e-5", "1e-1")
    )
    assert hashed_config(low) != hashed_config(high) != hashed_config(plain)
    assert "pipeline" not in hashed_config(plain)
    assert experiment_config(low) != experiment_config(high)
    assert "pipeline" not in experiment_config(plain)
    # another stage's config carries a preset's per-step lists (experiment=demo) without reading
    # them: its identity, and the pipeline's steps' folders, do not change with them
    search = OmegaConf.to_container(compose_cfg("search", "experiment=demo"))
    assert search["pipeline"]["finetune"]
    assert "pipeline" not in hashed_config(search) and "pipeline" not in experiment_config(search)


def _pipeline_hash(workdir, *overrides: str) -> str:
    """The content hash of the pipeline job `sparsebert pipeline <overrides>`, prepared as a
    launched job (or `--dry-run`) prepares it: with Hydra's record of its overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from sparsebert_cli.config import conf_dir, register_hydra_extensions
    from sparsebert_cli.launch import identity, prepare

    register_hydra_extensions()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("pipeline", overrides=list(overrides), return_hydra_config=True)
    hydra_config = HydraConfig.instance()
    before, hydra_config.cfg = hydra_config.cfg, None
    try:
        hydra_config.set_config(cfg)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        prepare(job, workdir / "runs" / "pipeline" / "x")
        return identity(job)[1]
    finally:
        hydra_config.cfg = before


def test_a_key_the_pipeline_command_line_sets_is_part_of_its_identity(workdir):
    """Its steps are composed from the command line: `trainer.lr=1e-3`, the pipeline's own
    default, gives the finetune step lr 1e-3 instead of finetune's, so it is another pipeline
    (it was 'already completed with this config: skipped', and a report's duplicate)."""
    plain = _pipeline_hash(workdir, "debug=smoke")
    assert _pipeline_hash(workdir, "debug=smoke", "trainer.lr=1e-3") != plain
    assert _pipeline_hash(workdir, "debug=smoke", "trainer.lr=1e-3") == _pipeline_hash(
        workdir, "debug=smoke", "trainer.lr=0.001"
    )  # the key is recorded, its value is the config's
    assert _pipeline_hash(workdir, "debug=smoke", "run_id=x") == plain
    with pytest.raises(SparseBertError, match="pipeline.inherited is set by sparsebert"):
        check_override_values(["pipeline.inherited=[trainer.lr]"])


def test_the_smoke_preset_keeps_a_pre_trained_model_so_mask_checkpoint_works():
    cfg = compose_cfg("finetune", "task=polarity", "debug=smoke")
    assert cfg.model.name_or_path == "embedded:minilm" and cfg.mask.name == "checkpoint"
    validate_config(cfg)


def test_the_task_metrics_have_one_home():
    """task.metrics / task.headline are gone: data/metrics.py's TASK_METRICS is the one list."""
    from sparsebert_cli.data.config import TaskConfig

    assert not {"metrics", "headline"} & set(TaskConfig.__dataclass_fields__)
    for path in (ROOT / "conf" / "task").glob("*.yaml"):
        text = Path(path).read_text(encoding="utf-8")
        assert not re.search(r"^(metrics|headline):", text, flags=re.MULTILINE), path


def test_evaluate_runs_in_one_process():
    """evaluate does not shard its evaluation: with trainer.nproc_per_node=2 each rank repeated
    all of it and wrote the prediction files; refused now, and a pipeline's ranks do not reach
    its evaluate step."""
    with pytest.raises(SparseBertError, match="does not read trainer.nproc_per_node"):
        check_overrides("evaluate", ["trainer.nproc_per_node=2"])
    cfg = compose_cfg("pipeline", "experiment=base")
    assert cfg.trainer.nproc_per_node == 8 and not cfg.pipeline.evaluate


def test_a_glue_folder_enters_the_hash_by_the_tasks_own_files(tmp_path):
    """The whole task.glue_dir was fingerprinted: downloading RTE changed the hash of an MRPC
    fine-tune, so its interrupted run was refused as another config."""
    glue = tmp_path / "glue"
    (glue / "MRPC").mkdir(parents=True)
    (glue / "MRPC" / "train.tsv").write_text("a\n")
    cfg = OmegaConf.to_container(compose_cfg("finetune", "task=mrpc", f"task.glue_dir={glue}"))
    before = hashed_config(cfg)
    (glue / "RTE").mkdir()
    (glue / "RTE" / "train.tsv").write_text("b\n")
    assert hashed_config(cfg) == before
    (glue / "MRPC" / "dev.tsv").write_text("c\n")
    assert hashed_config(cfg) != before


@pytest.mark.parametrize(
    ("stage", "seed", "changed"),
    [("pretrain", 1, True), ("search", 2, True), ("pipeline", 1, True), ("pretrain", 0, False),
     ("finetune", 1, False)],
)  # fmt: skip
def test_runs_whose_held_out_documents_changed_get_another_hash(stage, seed, changed):
    """Until 2026-12-06 the run's seed drew the held-out documents: a completed seed-1
    pre-training of then (other documents) would be reused by a pipeline, or resumed on the new
    split. Seed 0's documents did not change, nor did a fine-tuning's: their hashes stay."""
    cfg = OmegaConf.to_container(compose_cfg(stage, f"seed={seed}"), resolve=True)
    assert ("held_out_seed" in hashed_config(cfg)) is changed


@pytest.mark.parametrize("stage", ["search", "pretrain", "finetune", "pipeline"])
def test_a_run_on_two_processes_is_another_job_and_one_process_keeps_its_hash(stage):
    """Left out of the hash, a 2-rank search (its own Gumbel noise per rank, sparsity 69.7 %
    against 72.6 %) was reused by a 1-process pipeline, and a 2-rank run resumed on 1 process
    (found by a launcher review)."""
    from sparsebert_cli.reporting.records import experiment_config

    def hashed(*overrides):
        return hashed_config(OmegaConf.to_container(compose_cfg(stage, *overrides), resolve=True))

    one = hashed()
    assert "nproc_per_node" not in one["trainer"]  # as recorded before: their runs are reused
    two = hashed("trainer.nproc_per_node=2")
    assert one != two and two["trainer"]["nproc_per_node"] == 2
    configs = [OmegaConf.to_container(compose_cfg(stage, o), resolve=True)
               for o in ("trainer.nproc_per_node=1", "trainer.nproc_per_node=2")]  # fmt: skip
    assert experiment_config(configs[0]) != experiment_config(configs[1])  # not one report cell
    # typed as 1 it names no sweep folder and no pipeline's inherited key: it changes nothing
    assert "trainer.nproc_per_node" in unnamed_overrides()


@pytest.mark.parametrize("stage", ["finetune", "pipeline", "pretrain"])
def test_a_config_recorded_before_task_select_keeps_its_hash_and_pools(stage):
    """task.select joined the task group later: runs recorded without it (the default, best)
    keep their content hash (reused, resumed) and their experiment (pooled in the report)."""
    from sparsebert_cli.reporting.records import experiment_config

    cfg = OmegaConf.to_container(compose_cfg(stage, "task=polarity"), resolve=True)
    older = {**cfg, "task": {k: v for k, v in cfg["task"].items() if k != "select"}}
    assert hashed_config(older) == hashed_config(cfg)
    assert experiment_config(older) == experiment_config(cfg)
    if stage != "pretrain":  # which reads no task
        last = compose_cfg(stage, "task=polarity", "task.select=last")
        assert hashed_config(OmegaConf.to_container(last, resolve=True)) != hashed_config(cfg)


def test_a_steps_own_overrides_take_the_command_lines_spelling_of_from():
    """`model.from` is what every message and help text says, but inside pipeline.<step>=[...]
    it was refused as 'not a setting of sparsebert'."""
    from sparsebert_cli.validation import validate_config

    validate_config(
        compose_cfg("pipeline", "mask=window", "pipeline.pretrain=['model.from=runs/x']")
    )


@pytest.mark.parametrize(
    "step_override, key",
    [
        ("pipeline.finetune=['model.from=runs/x']", "model.from_run of its finetune step"),
        ("pipeline.pretrain=['mask=dense']", "mask of its pretrain step"),
        ("pipeline.pretrain=['mask.window=2']", "mask.window of its pretrain step"),
        ("pipeline.finetune=['task=mrpc']", "task of its finetune step"),
        ("pipeline.evaluate=['model.from=runs/x']", "model.from_run of its evaluate step"),
        ("pipeline.search=['mask=dense']", "mask of its search step"),
    ],
)
def test_a_steps_override_of_what_the_pipeline_wires_is_refused(step_override, key, capsys):
    """pipeline.finetune=['model.from=<a DAM pre-training>'] fine-tuned that model, and the report
    showed its results as the pipeline's mask=window row (with the DAM's sparsity)."""
    from sparsebert_cli.tools import validate_main

    mask = "mask=dam_s" if "search" in step_override else "mask=window"
    assert validate_main(["pipeline", mask, step_override, "debug=smoke"]) == 1
    assert f"the pipeline sets {key} itself" in capsys.readouterr().err


def test_task_data_files_is_set_as_every_task_comment_writes_it():
    """conf/task/*.yaml and the data errors say `task.data_files={train: ..., dev: ...}`, which
    Hydra refused ("Key 'train' is not in struct"); only `+task.data_files=` worked."""
    for given in ("task.data_files", "+task.data_files"):
        cfg = compose_cfg("finetune", "task=sst2", f"{given}={{train: a.csv, dev: b.csv}}")
        assert dict(cfg.task.data_files) == {"train": "a.csv", "dev": "b.csv"}


@pytest.mark.parametrize(
    ("mask", "warned"),
    [
        (["mask=dense"], True),
        (["mask=window", "mask.window=3"], True),
        (["mask=window", "mask.window=2"], False),  # the stored one, named
        (["mask=checkpoint"], False),
    ],
)
def test_pre_training_a_sparse_model_under_another_mask_says_so(workdir, caplog, mask, warned):
    """`pretrain model.from=<a window run>` trained and saved it dense without a word (pretrain's
    default is mask=dense; finetune's mask=checkpoint keeps the stored one)."""
    from sparsebert_cli.validation import preflight

    run = _window_pretrain_run(workdir)
    cfg = compose_cfg("pretrain", f"model.from={run}", *mask, "data.seq_len=16")
    preflight(cfg)
    assert ("trained with the window mask stored beside it" in caplog.text) is warned


def test_a_glue_folder_without_the_tasks_files_and_a_glob_of_nothing_are_refused_before_a_run(
    tmp_path,
):
    """validate and --dry-run said OK; a pipeline then searched and pre-trained before its
    finetune step found no <glue_dir>/MRPC/train.tsv (a folder one level too deep), and a
    pre-training found that data.files matched nothing."""
    from sparsebert_cli.validation import check_local_inputs

    (tmp_path / "MRPC").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "MRPC" / name).write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
    too_deep = compose_cfg("finetune", "task=mrpc", f"task.glue_dir={tmp_path / 'MRPC'}")
    with pytest.raises(SparseBertError, match=r"has no .*MRPC/MRPC/train\.tsv"):
        check_local_inputs(too_deep, device_here=False)
    check_local_inputs(
        compose_cfg("finetune", "task=mrpc", f"task.glue_dir={tmp_path}"), device_here=False
    )
    nothing = compose_cfg("pretrain", "data=text_files", f"data.files=[{tmp_path}/*.txt]")
    with pytest.raises(SparseBertError, match=r"data.files entry .*\*\.txt' matches no file"):
        check_local_inputs(nothing, device_here=False)
    (tmp_path / "a.txt").write_text("Some text.\n")
    check_local_inputs(nothing, device_here=False)


@pytest.mark.parametrize(
    ("task", "given", "words"),
    [
        ("sst2", "+task.data_files={train: %s/a.csv}", "needs a train and a dev file"),
        ("swag", "task.data_dir=%s", "needs a train and a dev CSV"),
        ("squad", "task.data_dir=%s", "train-v1.1.json of task=squad does not exist"),
        ("squad", "+task.data_files={train: %s/a.csv}", "must name exactly a train and a dev"),
    ],
)
def test_a_tasks_local_files_are_checked_before_a_run_as_its_reader_takes_them(
    tmp_path, task, given, words
):
    """validate said OK to task data a fine-tuning then refused once it read them (a dev file not
    named, a SQuAD or SWAG folder without the official files): a pipeline had searched and
    pre-trained first (found by a data review)."""
    from sparsebert_cli.validation import check_local_inputs

    (tmp_path / "a.csv").write_text("sentence,label\nfine,1\n")
    cfg = compose_cfg("finetune", f"task={task}", given % tmp_path)
    with pytest.raises(SparseBertError, match=words):
        check_local_inputs(cfg, device_here=False)
