"""Every config in the tree composes against the schema and passes validation."""

import copy
import functools
import re

import pytest
from conftest import compose_cfg
from hydra.errors import ConfigCompositionException, MissingConfigException

from sparsebert_cli.config import STAGES, conf_dir
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.validation import check_overrides, validate_config

GROUPS = ("mask", "model", "data", "task", "trainer", "logger", "debug", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


# Two tests read each (stage, option) composition: composed once (~0.3 s each, ~200 of them).
_composed = functools.cache(compose_cfg)

CASES = [
    (stage, f"{group}={option}")
    for stage in STAGES
    if stage != "evaluate"  # it composes none of these groups (the finetune run sets them)
    for group in GROUPS
    for option in _options(group)
]


@pytest.mark.parametrize(("stage", "override"), CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_every_config_composes_and_validates(stage, override):
    cfg = copy.deepcopy(_composed(stage, override))
    assert cfg.stage == stage
    if override == "mask=attention_topk":  # made by search, from a model
        with pytest.raises(SparseBertError, match="model.from=<pretrain run>|made by `sparsebert"):
            validate_config(cfg)
    elif stage == "search" and override.startswith("mask=") and not override.startswith("mask=dam"):
        with pytest.raises(SparseBertError, match="learns a mask"):
            validate_config(cfg)
    elif stage == "pretrain" and cfg.mask.name == "dam":  # a DAM preset: searched, not pre-trained
        with pytest.raises(SparseBertError, match="trains with a fixed mask, but mask=dam"):
            validate_config(cfg)
    elif cfg.mask.name == "checkpoint" and not (cfg.model.from_run or cfg.model.name_or_path):
        with pytest.raises(SparseBertError, match="mask=checkpoint means the mask stored"):
            validate_config(cfg)
    else:
        validate_config(cfg)


def _leaves(node, prefix: str = "") -> dict:
    """Dotted key → value of every leaf of a nested dict."""
    if not isinstance(node, dict):
        return {prefix: node}
    dot = "." if prefix else ""
    return {
        k: v
        for key, value in node.items()
        for k, v in _leaves(value, f"{prefix}{dot}{key}").items()
    }


CHOSEN = [(stage, override) for stage, override in CASES if override.split("=")[0] in GROUPS[:6]]


@pytest.mark.parametrize(("stage", "override"), CHOSEN, ids=[f"{s}-{o}" for s, o in CHOSEN])
def test_a_chosen_group_option_is_what_the_stage_composes(stage, override):
    """Every value an option's file sets survives composition: the stage's own config must not
    overwrite it (`pretrain trainer=lamb` trained at the stage's lr 1e-3, not LAMB's 6e-3)."""
    from omegaconf import OmegaConf

    group, option = override.split("=")
    own = OmegaConf.to_container(OmegaConf.load(conf_dir() / group / f"{option}.yaml"))
    own.pop("defaults", None)
    composed = _leaves(OmegaConf.to_container(_composed(stage, override)[group]))
    for key, value in _leaves(own).items():
        assert composed[key] == value, (key, value)


@pytest.mark.parametrize("group", GROUPS)
def test_evaluate_refuses_every_group_option_before_composing(group):
    for option in _options(group):
        with pytest.raises(
            SparseBertError, match=r"`sparsebert evaluate` (does not read|takes no preset \()"
        ):
            check_overrides("evaluate", [f"{group}={option}"])


def test_each_stage_has_a_primary_config():
    assert all((conf_dir() / f"{stage}.yaml").exists() for stage in STAGES)


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="lamm"):
        compose_cfg("search", "mask.lamm=1e-3")


def test_wrong_type_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="seq_len"):
        compose_cfg("pretrain", "data.seq_len=long")


def test_unknown_group_option_names_the_group():
    with pytest.raises(MissingConfigException, match="task/nope"):
        compose_cfg("finetune", "task=nope")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mask.lam=-1", "mask.lam=-1"),
        ("mask.tau=0", "mask.tau=0"),
        ("mask.density=1.5", "mask.density=1.5"),
        ("trainer.batch_size=10", "trainer.batch_size=10"),
        ("trainer.optimizer=sgd", "trainer.optimizer=sgd"),
        ("data.seq_len=4096", "data.seq_len=4096"),
        ("model.num_heads=3", "model.hidden_size=128"),
        ("trainer.warmup=1.5", "trainer.warmup=1.5"),
    ],
)
def test_bad_values_are_refused_with_the_value_named(override, message):
    overrides = [override, "trainer.grad_accum=4"] if "batch_size" in override else [override]
    cfg = compose_cfg("search", *overrides)
    with pytest.raises(SparseBertError, match=message.replace(".", r"\.").replace("+", r"\+")):
        validate_config(cfg)


def test_more_masked_predictions_than_tokens_are_refused():
    """data.max_predictions_per_seq=1e9 passed validate and the run was killed for memory."""
    cfg = compose_cfg("pretrain", "data.seq_len=64", "data.max_predictions_per_seq=65")
    with pytest.raises(SparseBertError, match=r"max_predictions_per_seq=65 is more than the "
                       r"data.seq_len=64 .* set data.max_predictions_per_seq=10 "):  # fmt: skip
        validate_config(cfg)
    validate_config(compose_cfg("pretrain", "data.seq_len=64", "data.max_predictions_per_seq=64"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.num_threads=100000", r"trainer.num_threads=100000 is more than the \d+ CPUs"),
        ("model.max_position_embeddings=1000000000", r"make at least 128.0 G parameters: .* GiB"),
        ("model.num_layers=1000000", r"model.num_layers=1000000.* more than this machine's"),
    ],
)
def test_what_the_machine_cannot_give_is_refused_before_the_run(override, message):
    """20000 threads: libgomp's thread creation failed; 100000: a segmentation fault; sizes of
    a terabyte: killed for memory, or a bare allocator error (found by a bad-input review)."""
    from sparsebert_cli.validation import preflight

    with pytest.raises(SparseBertError, match=message):
        preflight(compose_cfg("pretrain", "mask=dense", override))


def test_a_task_without_data_is_refused_by_validate_not_once_it_runs():
    """A new task from docs/extending.md without data files: `validate` said config OK."""
    from sparsebert_cli.validation import preflight

    with pytest.raises(SparseBertError, match="task=mrpc has no data source: set task.glue_dir"):
        preflight(compose_cfg("finetune", "task=mrpc", "task.hub_path=null"))


def test_search_refuses_a_fixed_mask():
    cfg = compose_cfg("search", "mask=dense")
    with pytest.raises(SparseBertError, match="mask=dam"):
        validate_config(cfg)


def test_evaluate_without_a_run_to_evaluate_is_refused():
    with pytest.raises(SparseBertError, match="model.from is not set; add model.from=<finetune"):
        validate_config(compose_cfg("evaluate", "model.from=null"))


def test_the_slurm_launcher_asks_for_one_gpu_per_ddp_rank():
    """gpus_per_node was fixed at 1 while the comment said to combine it with nproc_per_node."""
    from hydra import compose, initialize_config_dir

    from sparsebert_cli.config import register_hydra_extensions

    register_hydra_extensions()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="pipeline", return_hydra_config=True,
                      overrides=["hydra/launcher=slurm", "trainer.nproc_per_node=4"])  # fmt: skip
        # evaluate's schema has no nproc_per_node: an InterpolationKeyError when composed
        evaluate = compose(config_name="evaluate", return_hydra_config=True,
                           overrides=["hydra/launcher=slurm"])  # fmt: skip
    assert (cfg.hydra.launcher.gpus_per_node, cfg.hydra.launcher.tasks_per_node) == (4, 1)
    assert evaluate.hydra.launcher.gpus_per_node == 1


def test_smoke_drops_a_presets_per_step_settings_but_not_the_command_lines():
    """experiment=pattern_table debug=smoke searched for 300 steps (its pipeline.search)."""
    cfg = compose_cfg("pipeline", "experiment=pattern_table", "debug=smoke")
    assert cfg.trainer.max_steps == 4 and list(cfg.pipeline.search) == []
    assert list(compose_cfg("pipeline", "experiment=demo", "debug=smoke").pipeline.finetune) == []
    mine = compose_cfg("pipeline", "debug=smoke", "pipeline.search=['trainer.max_steps=2']")
    assert list(mine.pipeline.search) == ["trainer.max_steps=2"]


@pytest.mark.parametrize(
    ("stage", "overrides", "message"),
    [
        # the GLUE folder won and the data files went unread
        (
            "finetune",
            ["task=mnli", "task.glue_dir=/g", "++task.data_files={train: t.csv, dev: d.csv}"],
            "two local sources, task.glue_dir and task.data_files",
        ),
        # SQuAD's and SWAG's folder key: a GLUE task ignored it and went to the hub
        ("finetune", ["task=mrpc", "task.data_dir=/g"], "task.data_dir is not read by task=mrpc"),
        ("pipeline", ["task=squad", "task.glue_dir=/g"], "task.glue_dir is not read by task=squad"),
        # an entry naming no hub source grouped nothing (every sentence became a document)
        (
            "pretrain",
            ["data=bookcorpus", "data.sentence_sources=[bookcorpus/bookcorpus_v2]"],
            "lists 'bookcorpus/bookcorpus_v2', which is none of data.hub_sources",
        ),
    ],
)
def test_a_data_source_that_would_go_unread_is_refused(stage, overrides, message):
    cfg = compose_cfg(stage, *overrides)
    with pytest.raises(SparseBertError, match=message.replace(".", r"\.")):
        validate_config(cfg)


def test_a_pinned_revision_still_matches_its_sentence_source():
    validate_config(
        compose_cfg("pretrain", "data=bookcorpus", "data.hub_sources=[bookcorpus/bookcorpus@r1]")
    )


@pytest.mark.parametrize(
    "override, hint",
    [
        ("mask.target_sparsity=80", "(a fraction: mask.target_sparsity=0.8 for 80 %)"),
        ("data.mlm_probability=15", "(a fraction: data.mlm_probability=0.15 for 15 %)"),
    ],
)
def test_a_percentage_given_for_a_fraction_is_refused_with_the_fraction(override, hint):
    """Reported sparsities are percentages; the settings are fractions: 80 was refused as out of
    [0, 1) without saying so."""
    stage = "search" if override.startswith("mask") else "pretrain"
    extra = ["mask.lam=0"] if stage == "search" else []
    with pytest.raises(SparseBertError, match=re.escape(hint)):
        validate_config(compose_cfg(stage, *extra, override))


def test_a_fraction_out_of_range_that_is_no_whole_percentage_gets_no_hint():
    with pytest.raises(SparseBertError) as error:
        validate_config(compose_cfg("pretrain", "trainer.warmup=1.5"))
    assert "must be in [0, 1)" in str(error.value) and "a fraction" not in str(error.value)
