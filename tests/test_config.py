"""Every config in the tree composes against the schema and passes validation."""

import pytest
from conftest import compose_cfg
from hydra.errors import ConfigCompositionException, MissingConfigException

from sparsebert_cli.config import STAGES, conf_dir
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.validation import check_overrides, validate_config

GROUPS = ("mask", "model", "data", "task", "trainer", "logger", "debug", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


CASES = [
    (stage, f"{group}={option}")
    for stage in STAGES
    if stage != "evaluate"  # it composes none of these groups (the finetune run sets them)
    for group in GROUPS
    for option in _options(group)
]


@pytest.mark.parametrize(("stage", "override"), CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_every_config_composes_and_validates(stage, override):
    cfg = compose_cfg(stage, override)
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


def test_search_refuses_a_fixed_mask():
    cfg = compose_cfg("search", "mask=dense")
    with pytest.raises(SparseBertError, match="mask=dam"):
        validate_config(cfg)


def test_evaluate_without_a_run_to_evaluate_is_refused():
    with pytest.raises(SparseBertError, match="model.from is not set; add model.from=<finetune"):
        validate_config(compose_cfg("evaluate", "model.from=null"))
