"""Bad inputs: each refused with an error that names the bad value and a fix; non-zero exit and no
traceback from the real CLI. Config mistakes are checked in-process through Hydra's composition
and `validate_config` (what every stage runs first); file and upstream mistakes through the
library functions that read them; a dozen go through the real CLI for the exit code and output.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, sparsebert
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from robust_helpers import NO_SCALER, TINY, TINY_SEARCH, TINY_TASK, assert_clean_error
from safetensors.torch import save as safetensors_bytes

from sparsebert_cli import runs
from sparsebert_cli.config import ModelConfig, RunConfig, conf_dir
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import MASK_FILE, META_FILE, fit_to_length, load_mask, save_mask
from sparsebert_cli.training import checkpoint
from sparsebert_cli.validation import validate_config

# --- config mistakes caught at composition (schema: unknown keys, groups, options, types) ---------

COMPOSITION = [
    ("pretrain", ["trainer.lrr=1"], ["trainer.lrr", "+trainer.lrr=1"]),  # unknown key
    ("pretrain", ["mask=diagonal"], ["mask/diagonal", "Available options", "no_diag"]),  # option
    ("pretrain", ["optimizer=adam"], ["optimizer"]),  # unknown group
    ("finetune", ["task=squad_v3"], ["task/squad_v3", "Available options"]),  # unknown option
    ("pretrain", ["trainer.max_steps=abc"], ["abc", "trainer.max_steps"]),  # wrong type (int)
    ("search", ["mask.lam=high"], ["high", "mask.lam"]),  # wrong type (float)
]


@pytest.mark.parametrize(("stage", "overrides", "needles"), COMPOSITION)
def test_composition_refuses(stage, overrides, needles):
    with pytest.raises((HydraException, OmegaConfBaseException)) as info:
        compose_cfg(stage, *overrides)
    for needle in needles:
        assert needle in str(info.value)


# --- values that compose but cannot work: validate_config (ranges, choices, combinations) ---------

VALIDATION = [
    ("search", ["mask.lam=-1"], "mask.lam=-1.0 must be ≥ 0"),  # λ < 0
    ("search", ["mask.tau=0"], "mask.tau=0.0 must be > 0"),  # τ = 0
    ("search", ["mask.tau=-0.5"], "mask.tau=-0.5 must be > 0"),  # τ < 0
    ("search", ["mask.tau_final=0"], "mask.tau_final=0.0 must be > 0"),
    ("pretrain", ["mask=random", "mask.density=0"], "mask.density=0.0 must be in (0, 1]"),  # sparsity 1
    ("pretrain", ["mask=random", "mask.density=1.5"], "mask.density=1.5 must be in (0, 1]"),  # < 0
    ("pretrain", ["model.block_size=0"], "model.block_size=0 must be ≥ 1"),
    ("pretrain", ["data.seq_len=1024"], "data.seq_len=1024 is longer than model.max_position_embeddings=512"),
    ("pretrain", ["data.seq_len=600"], "data.seq_len=600 is longer than model.max_position_embeddings=512"),
    ("pretrain", ["data.seq_len=1"], "data.seq_len=1 must be ≥ 8"),
    ("pretrain", ["mask.seq_len=0"], "mask.seq_len=0 must be ≥ 1"),
    ("pretrain", ["model.hidden_size=33"], "model.hidden_size=33 is not divisible by model.num_heads=2"),
    ("pretrain", ["trainer.batch_size=10", "trainer.grad_accum=4"], "trainer.batch_size=10 (the global batch)"),
    ("pretrain", ["trainer.precision=fp16", "trainer.device=cpu"], "trainer.precision=fp16 needs a CUDA device"),
    ("pretrain", ["trainer.lr=0"], "trainer.lr=0.0 must be > 0"),
    ("pretrain", ["trainer.warmup=1.5"], "trainer.warmup=1.5 must be in [0, 1)"),
    ("pretrain", ["trainer.max_steps=0"], "set trainer.max_steps ≥ 1 or trainer.epochs ≥ 1"),
    ("pretrain", ["trainer.nproc_per_node=0"], "trainer.nproc_per_node=0 must be ≥ 1"),
    ("pretrain", ["data.mlm_probability=1.0"], "data.mlm_probability=1.0 must be in (0, 1)"),
    ("pretrain", ["mask.structure=diagonal"], "mask.structure=diagonal is not one of unstructured, structured"),
    ("pretrain", ["resume=maybe"], "resume=maybe is not one of auto, never"),
    ("pretrain", ["logger.mode=sometimes"], "logger.mode=sometimes is not one of online, offline, disabled"),
    ("pretrain", ["mask=from_run", "mask.from=null"], "mask=from_run needs the search run to load: add mask.from="),
    ("search", ["mask=strided"], "mask=strided is fixed; use mask=dam"),
    ("pretrain", ["mask=dam"], "trains with a fixed mask, but mask=dam learns one"),
    # a pattern's own parameter checks (validate said "config OK", the run refused them)
    ("pretrain", ["mask=strided", "mask.stride=0"], "mask.stride=0: the strided pattern needs l ≥ 1"),
    ("pretrain", ["mask=fixed", "mask.c=5"], "mask.c=5 must lie in [0, mask.stride=4]"),
    # a step's own overrides, refused before the pipeline runs its steps
    ("pipeline", ["pipeline.finetune=['trainer.bogus=1']"], "trainer.bogus is not a setting"),
    ("pipeline", ["pipeline.finetune=['model.num_layers=4']"], "weights come from the pipeline's pretrain step"),
    # a DAM learned at another length than its sequences: α never trained, or too short a mask
    ("search", ["mask=dam", "data.seq_len=64"], "α of positions ≥ 64 would never see a token"),
    ("finetune", ["mask=dam_s", "task.seq_len=256"], "set mask.seq_len=256 (or task.seq_len=128)"),
    ("search", ["mask=dam", "model.attention_backend=block_sparse"], "cannot learn a DAM mask"),
    # a task that could not be scored once trained: refused before training
    ("finetune", ["task=polarity", "task.name=mysent"], "Unknown task 'mysent'"),
    ("finetune", ["task=polarity", "task.num_labels=3"], "computes binary F1"),
    # accepted and ignored: the head's size comes from the task kind
    ("finetune", ["task=lee_sts", "task.num_labels=3"], "a regression task's head has 1 output(s)"),
    ("finetune", ["task=swag", "task.num_labels=2"], "a multiple_choice task's head has 4"),
    # found at the first optimiser step (a traceback), after validate said "config OK"
    ("pretrain", ["trainer.betas=[0.9,0.999,0.5]"], "must be two numbers (Adam's β1 and β2)"),
    ("pretrain", ["trainer.betas=[]"], "trainer.betas=[] must be two numbers"),
    ("pipeline", ["task=stsb", "task.kind=classification"], "task 'stsb' is scored as regression"),
]  # fmt: skip


@pytest.mark.parametrize(("stage", "overrides", "message"), VALIDATION)
def test_validation_refuses(stage, overrides, message):
    cfg = compose_cfg(stage, *overrides)
    with pytest.raises(SparseBertError) as info:
        validate_config(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # one paragraph


def test_a_block_size_that_does_not_divide_the_length_is_valid():
    """Not a mistake: the block-sparse kernels pad the last block (tested with the backends)."""
    validate_config(compose_cfg("pretrain", "model.block_size=48", "data.seq_len=100"))


# --- damaged or mismatched mask artifacts ------------------------------------------------------------


@pytest.fixture
def mask_dir(tmp_path) -> Path:
    mask = torch.ones(2, 2, 16, 16, dtype=torch.bool)
    save_mask(tmp_path / "artifacts", mask, {"kind": "dam_u"})
    return tmp_path / "artifacts"


def _refused(call, *needles: str) -> str:
    with pytest.raises(SparseBertError) as info:
        call()
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_truncated_mask_tensor_is_refused(mask_dir):
    data = (mask_dir / MASK_FILE).read_bytes()
    (mask_dir / MASK_FILE).write_bytes(data[: len(data) // 2])
    _refused(lambda: load_mask(mask_dir), str(mask_dir / MASK_FILE), "sha256 differs")


def test_truncated_mask_json_is_refused(mask_dir):
    text = (mask_dir / META_FILE).read_text()
    (mask_dir / META_FILE).write_text(text[: len(text) // 2])
    _refused(lambda: load_mask(mask_dir), str(mask_dir / META_FILE), "not valid JSON")


def test_non_utf8_mask_json_is_refused(mask_dir):
    (mask_dir / META_FILE).write_bytes(b'{"kind": "\xff\xfe"}')
    _refused(lambda: load_mask(mask_dir), str(mask_dir / META_FILE), "not valid JSON")


def test_mask_json_with_an_unknown_kind_is_refused(mask_dir):
    meta = json.loads((mask_dir / META_FILE).read_text())
    (mask_dir / META_FILE).write_text(json.dumps({**meta, "kind": "diagonal"}))
    _refused(lambda: load_mask(mask_dir), "has kind 'diagonal'")


def test_mask_tensor_of_the_wrong_shape_is_refused_even_with_a_matching_hash(mask_dir):
    import hashlib

    data = safetensors_bytes({"mask": torch.ones(2, 2, 8, 8, dtype=torch.bool)})
    (mask_dir / MASK_FILE).write_bytes(data)
    meta = json.loads((mask_dir / META_FILE).read_text())
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    (mask_dir / META_FILE).write_text(json.dumps(meta))
    _refused(lambda: load_mask(mask_dir), "bool [2, 2, 8, 8]", "'mask': bool [2, 2, 16, 16]")


def test_mask_with_other_heads_is_refused(mask_dir):
    _refused(
        lambda: load_mask(mask_dir, heads=4), "has 2 heads but the model has 4", "model.num_heads=2"
    )


def test_mask_with_other_layers_is_refused(mask_dir):
    _refused(
        lambda: load_mask(mask_dir, layers=3),
        "has 2 layers but the model has 3",
        "model.num_layers=2",
    )


def test_mask_shorter_than_the_sequences_is_refused(mask_dir):
    mask, _ = load_mask(mask_dir)
    _refused(
        lambda: fit_to_length(mask, 32),
        "at most n=16 tokens but got length 32",
        "length ≤ 16 (data.seq_len; task.seq_len when fine-tuning)",
    )


def test_mask_files_missing_are_refused(tmp_path):
    _refused(lambda: load_mask(tmp_path), "does not exist", "mask.safetensors + mask.json")


# --- damaged run folders and checkpoints -----------------------------------------------------------


def test_truncated_manifest_is_refused(tmp_path):
    (tmp_path / runs.MANIFEST).write_text('{"stage": "pretrain", "stat')
    _refused(lambda: runs.load_manifest(tmp_path), "corrupt or truncated", "delete the run folder")


def test_non_utf8_manifest_is_refused(tmp_path):
    (tmp_path / runs.MANIFEST).write_bytes(b'{"stage": "\xff"}')
    _refused(lambda: runs.load_manifest(tmp_path), "corrupt or truncated")


def test_truncated_checkpoint_weights_are_refused(tmp_path):
    model = torch.nn.Linear(4, 4)
    checkpoint.save_weights(model, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:-10])
    _refused(
        lambda: checkpoint.load_weights(model, tmp_path / "w.safetensors"),
        "not a readable safetensors file",
        "delete it and rerun",
    )


def test_truncated_optimiser_state_is_refused(tmp_path):
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    folder = checkpoint.save_checkpoint(tmp_path, 3, model, optimizer, scheduler, NO_SCALER, {})
    data = (folder / "training_state.pt").read_bytes()
    (folder / "training_state.pt").write_bytes(data[: len(data) // 2])
    _refused(
        lambda: checkpoint.load_checkpoint(folder, model, optimizer, scheduler, NO_SCALER),
        f"checkpoint {folder} cannot be read",
        "resume=never",
    )


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A real (tiny) fine-tuned checkpoint folder, as `save_checkpoint` writes it."""
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_task_model, save_checkpoint

    model_cfg = OmegaConf.structured(RunConfig).model
    model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers = 32, 64, 1
    model = build_task_model(model_cfg, MaskSource("dense"), 2, "classification", None, 100)
    save_checkpoint(model, tmp_path / "model", {})
    return tmp_path / "model"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_truncate, lambda p: p.write_bytes(b"\xff" * 64)])
def test_damaged_checkpoint_weights_are_refused(model_dir, damage):
    from sparsebert_cli.modeling import load_checkpoint

    damage(model_dir / "model.safetensors")
    _refused(
        lambda: load_checkpoint(model_dir, ModelConfig()),
        str(model_dir / "model.safetensors"),
        "Rerun the stage",
    )


def test_damaged_weights_of_an_init_model_are_refused(model_dir):
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_task_model

    _truncate(model_dir / "model.safetensors")
    model_cfg = OmegaConf.structured(RunConfig).model
    _refused(
        lambda: build_task_model(model_cfg, MaskSource("dense"), 2, "classification", model_dir),
        str(model_dir / "model.safetensors"),
        "Rerun the stage",
    )


@pytest.mark.parametrize("damage", [_truncate, lambda p: p.write_bytes(b'{"a": "\xff"}')])
def test_damaged_checkpoint_config_is_refused(model_dir, damage):
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import bert_config, build_task_model, load_checkpoint

    damage(model_dir / "config.json")
    model_cfg = OmegaConf.structured(RunConfig).model
    for call in (
        lambda: load_checkpoint(model_dir, ModelConfig()),
        lambda: bert_config(model_cfg, None, model_dir),
        lambda: build_task_model(model_cfg, MaskSource("dense"), 2, "classification", model_dir),
    ):
        _refused(call, str(model_dir / "config.json"), "Rerun the stage")


def test_truncated_checkpoint_record_is_refused(model_dir):
    from sparsebert_cli.modeling import CHECKPOINT_FILE, load_checkpoint

    _truncate(model_dir / CHECKPOINT_FILE)
    _refused(
        lambda: load_checkpoint(model_dir, ModelConfig()), str(model_dir / CHECKPOINT_FILE), "Rerun"
    )


def test_a_masked_model_without_its_mask_files_is_refused_not_run_dense(tmp_path):
    """Evaluate scored a window model whose mask.safetensors was gone as a dense one."""
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import (
        build_mask_source,
        build_task_model,
        load_checkpoint,
        save_checkpoint,
    )

    model_cfg = OmegaConf.structured(RunConfig).model
    model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers = 32, 64, 1
    window = torch.ones(1, model_cfg.num_heads, 16, 16, dtype=torch.bool).tril(2).triu(-2)
    source = MaskSource("fixed", mask=window, meta={"kind": "window"})
    save_checkpoint(build_task_model(model_cfg, source, 2, "classification", None, 100),
                    tmp_path / "model", {})  # fmt: skip
    checkpoint = OmegaConf.structured(RunConfig).mask
    checkpoint.name = "checkpoint"
    for missing in ([MASK_FILE], [MASK_FILE, META_FILE]):
        for name in missing:
            (tmp_path / "model" / name).unlink(missing_ok=True)
        needle = str(tmp_path / "model") if len(missing) == 2 else str(MASK_FILE)
        for call in (
            lambda: load_checkpoint(tmp_path / "model", ModelConfig()),
            lambda: build_mask_source(checkpoint, model_cfg, 16, tmp_path / "model"),
        ):
            _refused(call, needle)
    assert "trained with the window mask" in _refused(
        lambda: load_checkpoint(tmp_path / "model", ModelConfig()), "run that stage again"
    )


# --- upstream references: missing, failed, running, wrong kind -------------------------------------


def _run_folder(root: Path, stage: str, status: str, name: str = "r") -> Path:
    folder = root / stage / name
    folder.mkdir(parents=True)
    runs.atomic_write_json(folder / runs.MANIFEST, {"stage": stage, "status": status})
    return folder


def test_a_searched_mask_that_does_not_fit_is_refused_before_the_run(tmp_path):
    """validate said "config OK" for a mask of other heads, a shorter one, or a damaged one."""
    from sparsebert_cli.validation import preflight

    search = _run_folder(tmp_path / "runs", "search", "completed")
    save_mask(runs.layout(search).artifacts, torch.ones(1, 2, 64, 64, dtype=torch.bool),
              {"kind": "dam_u"})  # fmt: skip
    base = (
        "debug=smoke",
        "mask=from_run",
        f"mask.from={search}",
        f"paths.runs_dir={tmp_path}/runs",
    )
    preflight(compose_cfg("pretrain", *base))  # 2 heads, n = 64: fits
    for extra, needle in (
        ("model.num_heads=4", "has 2 heads but the model has 4"),
        ("data.seq_len=128", "at most n=64 tokens but got length 128"),
    ):
        _refused(lambda extra=extra: preflight(compose_cfg("pretrain", *base, extra)), needle)
    _truncate(runs.layout(search).artifacts / MASK_FILE)
    _refused(lambda: preflight(compose_cfg("pretrain", *base)), "sha256 differs")
    # a mask that keeps nothing: the error names the run `latest` or mask.from named
    save_mask(runs.layout(search).artifacts, torch.zeros(1, 2, 64, 64, dtype=torch.bool),
              {"kind": "dam_u"})  # fmt: skip
    needle = f"the searched mask of mask.from={search}: the attention mask allows no entry"
    _refused(lambda: preflight(compose_cfg("pretrain", *base)), needle)


@pytest.mark.parametrize(
    ("stage", "status", "problem"),
    [
        ("search", "failed", "is not completed (status: failed; `sparsebert ls --show"),
        # no live job holds its lock: killed (SIGKILL), as `sparsebert ls` shows it
        ("search", "running", "is not completed (status: interrupted; `sparsebert ls --show"),
        ("finetune", "completed", "is a 'finetune' run, not a 'search' run"),
    ],
)
def test_unusable_upstream_runs_are_refused(tmp_path, stage, status, problem):
    folder = _run_folder(tmp_path, stage, status)
    _refused(lambda: runs.resolve("search", str(folder), tmp_path), problem, "Pass one of them")


def test_a_running_upstream_run_held_by_its_job_is_refused_as_running(tmp_path):
    folder = _run_folder(tmp_path, "search", "running")
    with runs.hold(folder):
        _refused(lambda: runs.resolve("search", str(folder), tmp_path), "(status: running)")


def test_missing_upstream_run_is_refused(tmp_path):
    done = _run_folder(tmp_path, "search", "completed", "good")
    message = _refused(
        lambda: runs.resolve("search", str(tmp_path / "nope"), tmp_path), "not a sparsebert run"
    )
    assert str(done) in message  # the candidates are listed


def test_latest_without_any_run_is_refused(tmp_path):
    _refused(lambda: runs.resolve("pretrain", "latest", tmp_path), "no completed 'pretrain' run")


# --- data: GLUE files, text files, hub ---------------------------------------------------------------

MRPC_HEADER = "Quality\t#ID1\t#ID2\t#1 String\t#2 String\n"


def _glue_task(tmp_path: Path, train: bytes, dev: bytes):
    folder = tmp_path / "glue" / "MRPC"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_bytes(train)
    (folder / "dev.tsv").write_bytes(dev)
    base = OmegaConf.structured(RunConfig).task
    return OmegaConf.merge(
        base,
        OmegaConf.load(conf_dir() / "task" / "mrpc.yaml"),
        {"glue_dir": str(tmp_path / "glue")},
    )


GOOD_ROWS = (MRPC_HEADER + "1\t1\t2\ta b\tc d\n" * 4).encode()


def _load(task_cfg, tokenizer, tmp_path):
    from sparsebert_cli.data.tasks import load_task

    return load_task(task_cfg, tokenizer, tmp_path / "cache", 0)


def test_glue_file_without_a_column_is_refused(tmp_path, tokenizer):
    dev = b"Quality\t#1 String\n1\ta b\n"
    task = _glue_task(tmp_path, GOOD_ROWS, dev)
    _refused(
        lambda: _load(task, tokenizer, tmp_path),
        "lacks the column(s) ['#2 String']",
        "task.data_files",
    )


def test_glue_folder_without_dev_is_refused(tmp_path, tokenizer):
    task = _glue_task(tmp_path, GOOD_ROWS, b"")
    (tmp_path / "glue" / "MRPC" / "dev.tsv").unlink()
    _refused(lambda: _load(task, tokenizer, tmp_path), "dev.tsv", "point task.glue_dir")


def test_glue_file_with_only_unknown_labels_is_refused(tmp_path, tokenizer):
    dev = (MRPC_HEADER + "2\t1\t2\ta b\tc d\n" * 4).encode()
    task = _glue_task(tmp_path, GOOD_ROWS, dev)
    _refused(lambda: _load(task, tokenizer, tmp_path), "'2'", "task.label_names")


def test_non_utf8_glue_file_is_refused(tmp_path, tokenizer):
    dev = MRPC_HEADER.encode() + b"1\t1\t2\ta \xff b\tc d\n"
    task = _glue_task(tmp_path, GOOD_ROWS, dev)
    _refused(lambda: _load(task, tokenizer, tmp_path), "dev.tsv", "UTF-8")


def test_empty_glue_file_is_refused(tmp_path, tokenizer):
    task = _glue_task(tmp_path, GOOD_ROWS, b"")
    _refused(lambda: _load(task, tokenizer, tmp_path), "dev.tsv", "empty")


def _text_files_cfg(*files: str):
    base = OmegaConf.structured(RunConfig).data
    return OmegaConf.merge(
        base, OmegaConf.load(conf_dir() / "data" / "text_files.yaml"), {"files": list(files)}
    )


def test_text_files_glob_matching_nothing_is_refused(tmp_path):
    from sparsebert_cli.data.corpus import load_corpus

    pattern = str(tmp_path / "corpus" / "*.txt")
    _refused(
        lambda: load_corpus(_text_files_cfg(pattern), tmp_path / "cache"),
        pattern,
        "matches no file",
    )


def test_text_file_of_an_unsupported_kind_is_refused(tmp_path):
    from sparsebert_cli.data.corpus import load_corpus

    (tmp_path / "corpus.docx").write_bytes(b"PK\x03\x04")
    _refused(
        lambda: load_corpus(_text_files_cfg(str(tmp_path / "corpus.docx")), tmp_path / "cache"),
        "corpus.docx",
        "supported extensions",
    )


def test_empty_text_file_is_refused(tmp_path):
    from sparsebert_cli.data.corpus import load_corpus

    (tmp_path / "empty.txt").write_text("")
    _refused(
        lambda: load_corpus(_text_files_cfg(str(tmp_path / "empty.txt")), tmp_path / "cache"),
        "empty.txt",
        "corpus is empty",
    )


def test_text_file_of_blank_lines_only_is_refused(tmp_path):
    from sparsebert_cli.data.corpus import load_corpus

    (tmp_path / "blank.txt").write_text("\n  \n\n")
    _refused(
        lambda: load_corpus(_text_files_cfg(str(tmp_path / "blank.txt")), tmp_path / "cache"),
        "blank.txt",
        "corpus is empty",
    )


def test_non_utf8_text_file_is_refused(tmp_path):
    from sparsebert_cli.data.corpus import load_corpus

    (tmp_path / "bad.txt").write_bytes(b"hello \xff\xfe world.\n\nmore text.\n")
    _refused(
        lambda: load_corpus(_text_files_cfg(str(tmp_path / "bad.txt")), tmp_path / "cache"),
        "bad.txt",
        "UTF-8",
    )


def _finetune_run(tmp_path: Path, tokenizer, task: dict) -> Path:
    """A completed finetune run (tiny MRPC model, embedded tokenizer) that recorded `task`."""
    from sparsebert_cli.data.tokenizer import save_tokenizer
    from sparsebert_cli.masks.source import MaskSource
    from sparsebert_cli.modeling import build_task_model, save_checkpoint

    model_cfg = OmegaConf.structured(RunConfig).model
    model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers = 32, 64, 1
    model = build_task_model(
        model_cfg, MaskSource("dense"), 2, "classification", None, len(tokenizer)
    )
    folder = _run_folder(tmp_path / "runs", "finetune", "completed", "ft")
    save_checkpoint(model, folder / "artifacts" / "model", {"task": task})
    save_tokenizer(tokenizer, folder / "artifacts" / "model")
    return folder


def _evaluate(tmp_path: Path, finetune: Path, *overrides: str) -> dict:
    from sparsebert_cli.stages import evaluate

    cfg = compose_cfg(
        "evaluate",
        f"model.from_run={finetune}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.device=cpu",
        *overrides,
    )
    run = runs.Run.start(tmp_path / "runs" / "evaluate" / "ev", "evaluate", {}, "h", "evaluate")
    return evaluate.run(cfg, run)


def test_evaluate_refuses_task_data_that_moved_since_finetune(tmp_path, tokenizer):
    task = _glue_task(tmp_path, GOOD_ROWS, GOOD_ROWS)
    finetune = _finetune_run(tmp_path, tokenizer, OmegaConf.to_container(task))
    shutil.move(tmp_path / "glue", tmp_path / "moved")
    _refused(
        lambda: _evaluate(tmp_path, finetune),
        f"task.glue_dir={tmp_path / 'glue'}",
        "does not exist here",
        f"sparsebert evaluate model.from={finetune} task.glue_dir=",
    )


def test_evaluate_names_a_fix_for_missing_data_files_that_hydra_accepts(tmp_path, tokenizer):
    """Relative data_files of a finetune launched elsewhere: the fix it prints composes."""
    task = {**OmegaConf.to_container(_glue_task(tmp_path, GOOD_ROWS, GOOD_ROWS)), "glue_dir": None}
    task["data_files"] = {"train": "train.csv", "dev": "dev.csv"}
    finetune = _finetune_run(tmp_path, tokenizer, task)
    message = _refused(lambda: _evaluate(tmp_path, finetune), "relative paths count from")
    fix = message.split(f"model.from={finetune} ")[1].rstrip(".").strip("'")
    assert fix.startswith("+task.data_files=")
    cfg = compose_cfg("evaluate", fix.replace("<file>", "a.csv"))
    assert dict(cfg.task.data_files) == {"dev": "a.csv"}


@pytest.mark.parametrize("stage", ["finetune", "evaluate"])
def test_a_misspelt_split_of_the_data_files_is_refused_not_ignored(tmp_path, stage):
    """`tset:` beside train and dev trained and evaluated without a word, and no test
    predictions were written."""
    from sparsebert_cli.validation import check_local_inputs

    files = {name: tmp_path / f"{name}.csv" for name in ("train", "dev", "tset")}
    for path in files.values():
        path.write_text("sentence,label\na b,1\n")
    given = ", ".join(f"{name}: {path}" for name, path in files.items())
    task = ["task=sst2"] if stage == "finetune" else []  # evaluate: the checkpoint's task
    cfg = compose_cfg(stage, *task, f"task.data_files={{{given}}}")
    _refused(
        lambda: check_local_inputs(cfg, device_here=False),
        "task.data_files names a split 'tset', which no stage reads",
        "train, dev, dev_mismatched, test, test_mismatched",
    )


def _csv_task(tmp_path: Path) -> dict:
    """MRPC from csv data files (absolute paths)."""
    task = {**OmegaConf.to_container(_glue_task(tmp_path, GOOD_ROWS, GOOD_ROWS)), "glue_dir": None}
    rows = "sentence1,sentence2,label\n" + "a b,c d,1\n" * 2 + "a b,e f,0\n" * 2
    for split in ("train", "dev"):
        (tmp_path / f"{split}.csv").write_text(rows)
    task["data_files"] = {split: str(tmp_path / f"{split}.csv") for split in ("train", "dev")}
    return task


@pytest.mark.parametrize(
    ("header", "row", "found"),
    [
        ("sentence1,sentence2,target", "a b,c d,1", "has no label column 'label'"),
        ("sentence1,label", "a b,1", "task.text_fields=['sentence1', 'sentence2'] must name"),
        ("sentence1,sentence2,label", "a b,c d,maybe", "has the label 'maybe', not among"),
    ],
    ids=["label column", "text columns", "label name"],
)
def test_evaluate_says_what_the_data_must_hold_not_a_setting_it_refuses(
    tmp_path, tokenizer, header, row, found
):
    """The fixes said "set task.label_field" / "task.text_fields", which evaluate refuses."""
    finetune = _finetune_run(tmp_path, tokenizer, _csv_task(tmp_path))
    (tmp_path / "other.csv").write_text(f"{header}\n{row}\n")
    message = _refused(
        lambda: _evaluate(tmp_path, finetune, f"task.data_files={{dev: {tmp_path / 'other.csv'}}}"),
        found,
        "evaluate reads the fine-tuning's columns (text ['sentence1', 'sentence2'], label "
        "'label', labels among ['0', '1']): give the file those.",
    )
    assert "set task." not in message.lower()


def test_evaluate_needs_no_recorded_train_file(tmp_path, tokenizer):
    """A machine holding only the dev file could not evaluate: the recorded train file (which
    evaluate never reads) had to exist."""
    finetune = _finetune_run(tmp_path, tokenizer, _csv_task(tmp_path))
    (tmp_path / "train.csv").unlink()
    assert "eval/accuracy" in _evaluate(tmp_path, finetune)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["task.glue_dir=/g", "+task.data_files={dev: d.csv}"], "two local sources"),
        (["task.data_dir=/g"], "task.data_dir is not read by task=mrpc"),
    ],
)
def test_evaluate_refuses_a_data_source_it_would_not_read(tmp_path, tokenizer, given, message):
    finetune = _finetune_run(tmp_path, tokenizer, _csv_task(tmp_path))
    _refused(lambda: _evaluate(tmp_path, finetune, *given), message)


def _validate_evaluate(tmp_path: Path, finetune: Path, *overrides: str) -> None:
    """What a single evaluate run checks of its command line and inputs before it starts."""
    from sparsebert_cli.validation import check_command, preflight, validate_config

    given = [f"model.from_run={finetune}", f"paths.runs_dir={tmp_path / 'runs'}", *overrides]
    cfg = compose_cfg("evaluate", *given)
    validate_config(cfg)
    check_command(cfg, given, single_run=True)
    preflight(cfg)


def test_evaluate_task_glue_dir_replaces_the_recorded_one(tmp_path, tokenizer):
    """The fix evaluate names for moved GLUE data, task.glue_dir=<its new folder>, was refused in a
    single run as "Key 'name' not in 'EvaluateTaskConfig'" (the unread-setting check read the
    task's name from evaluate's own task, which has none: the task is the finetune run's)."""
    task = _glue_task(tmp_path, GOOD_ROWS, GOOD_ROWS)
    finetune = _finetune_run(tmp_path, tokenizer, OmegaConf.to_container(task))
    shutil.move(tmp_path / "glue", tmp_path / "moved")
    moved = f"task.glue_dir={tmp_path / 'moved'}"
    _refused(lambda: _validate_evaluate(tmp_path, finetune), "does not exist here", moved[:13])
    _validate_evaluate(tmp_path, finetune, moved)
    metrics = _evaluate(tmp_path, finetune, moved)
    assert "eval/accuracy" in metrics
    assert (tmp_path / "runs" / "evaluate" / "ev" / "predictions" / "dev.jsonl").is_file()


def test_evaluate_refuses_a_finetune_run_whose_tokenizer_is_gone(tmp_path, tokenizer):
    task = _glue_task(tmp_path, GOOD_ROWS, GOOD_ROWS)
    finetune = _finetune_run(tmp_path, tokenizer, OmegaConf.to_container(task))
    model = finetune / "artifacts" / "model"
    for name in ("tokenizer.json", "vocab.txt"):
        (model / name).unlink(missing_ok=True)
    _refused(lambda: _evaluate(tmp_path, finetune), str(model), "holds no tokenizer", "Rerun")


def test_unreachable_hub_model_is_refused():
    from sparsebert_cli.pretrained import resolve_pretrained

    _refused(
        lambda: resolve_pretrained("no-such-org/no-such-model"),
        "'no-such-org/no-such-model'",
        "model=minilm",
    )


def test_a_model_name_too_long_for_the_file_system_is_taken_for_a_hub_name():
    """model.name_or_path of 300 characters: validate ended in 'OSError: File name too long'
    (found by the config fuzz)."""
    from sparsebert_cli.pretrained import local_pretrained

    assert local_pretrained("x" * 300) is None


def test_unreachable_hub_dataset_is_refused(tmp_path, tokenizer):
    base = OmegaConf.structured(RunConfig).task
    task = OmegaConf.merge(base, OmegaConf.load(conf_dir() / "task" / "mrpc.yaml"))
    _refused(lambda: _load(task, tokenizer, tmp_path), "nyu-mll/glue", "task.glue_dir=")


def test_model_folder_without_config_is_refused(tmp_path):
    from sparsebert_cli.pretrained import resolve_pretrained

    _refused(
        lambda: resolve_pretrained(tmp_path), f"the model folder {tmp_path} has no config.json"
    )


def test_tokenizer_folder_without_tokenizer_is_refused(tmp_path):
    from sparsebert_cli.data.tokenizer import tokenizer_from_folder

    _refused(
        lambda: tokenizer_from_folder(tmp_path), "holds no tokenizer", "data.tokenizer=embedded"
    )


def test_tokenizer_that_does_not_match_the_checkpoint_is_refused(tmp_path):
    from transformers import BertConfig

    from sparsebert_cli.modeling import bert_config

    BertConfig(
        vocab_size=1000, hidden_size=32, num_attention_heads=2, num_hidden_layers=1
    ).save_pretrained(tmp_path)
    model_cfg = OmegaConf.structured(RunConfig).model
    _refused(
        lambda: bert_config(model_cfg, 30522, tmp_path),
        "vocabulary of 1000 tokens but the tokenizer hands out ids 0 to 30521; the folder holds "
        "no tokenizer, so data.tokenizer's was used",
        "point data.tokenizer at the folder of the tokenizer the model was trained with",
    )


def _bert_folder(folder: Path, vocab: list[str], vocab_size: int) -> Path:
    """A model folder in Google's BERT layout, without weights: config.json (a BertConfig of
    `vocab_size` rows) and vocab.txt (`vocab`, one token a line)."""
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_attention_heads=2)
    config.num_hidden_layers = 1
    config.save_pretrained(folder)
    return folder


def test_a_vocab_with_a_repeated_line_needs_a_row_per_id_and_a_padded_vocabulary_loads(tmp_path):
    """A repeated vocab.txt line gives the token its last line's id: ids run past len(tokenizer),
    and a model of len(tokenizer) rows would fail with an IndexError mid-run. A model with more
    rows than its own tokenizer's ids (a vocabulary padded to a round size) is fine."""
    from sparsebert_cli.data.tokenizer import id_bound, tokenizer_from_folder
    from sparsebert_cli.modeling import bert_config

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "the", "sat"]
    repeated = _bert_folder(tmp_path / "repeated", words, vocab_size=8)
    tokenizer = tokenizer_from_folder(repeated)
    assert (len(tokenizer), id_bound(tokenizer)) == (8, 9)
    model_cfg = OmegaConf.structured(RunConfig).model
    _refused(
        lambda: bert_config(model_cfg, id_bound(tokenizer), repeated),
        "vocabulary of 8 tokens but the tokenizer hands out ids 0 to 8",
        "its own tokenizer disagrees with its config.json",
    )
    padded = _bert_folder(tmp_path / "padded", words[:7], vocab_size=64)
    assert bert_config(model_cfg, id_bound(tokenizer_from_folder(padded)), padded).vocab_size == 64
    assert bert_config(model_cfg, id_bound(tokenizer), None).vocab_size == 9  # a new model


def test_a_model_folder_without_weights_is_refused_naming_the_missing_file(tmp_path):
    """Found when the folder is resolved (so `validate` says it), not as a "truncated or
    corrupt" file when the weights are loaded."""
    from sparsebert_cli.pretrained import local_pretrained

    folder = _bert_folder(tmp_path / "config_only", ["[PAD]", "[UNK]", "a"], vocab_size=3)
    _refused(
        lambda: local_pretrained(str(folder)),
        f"the model folder {folder} has no weights file (model.safetensors,",
        "Rerun the stage that wrote it",
    )


# --- NaN / inf loss --------------------------------------------------------------------------------


class _Diverging(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.value = value

    def forward(self, **batch):
        return {"loss": self.w.sum() * self.value}


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_stops_the_run_and_keeps_the_checkpoints(tmp_path, value):
    from sparsebert_cli.training.loop import Hooks, train

    cfg = OmegaConf.structured(RunConfig)
    cfg.trainer.max_steps, cfg.trainer.batch_size, cfg.trainer.device = 2, 2, "cpu"
    cfg.run_id = "diverging"  # the default's ${now:} resolver exists only once Hydra is imported
    run = runs.Run.start(tmp_path, "pretrain", {}, "h", "sparsebert pretrain")
    data = [{"attention_mask": torch.ones(3, dtype=torch.long)} for _ in range(4)]

    def collate(rows):
        return {"attention_mask": torch.stack([r["attention_mask"] for r in rows])}

    _refused(
        lambda: train(_Diverging(value), data, collate, cfg, run, Hooks()),
        f"the loss became {value} at step 1",
        "lower trainer.lr",
    )


# --- the real CLI: exit status, no traceback, the message --------------------------------------------


def _plant_search_run(root: Path, name: str, mask: torch.Tensor) -> Path:
    folder = root / "search" / name
    save_mask(folder / "artifacts", mask, {"kind": "dam_u"})
    runs.atomic_write_json(
        folder / runs.MANIFEST, {"stage": "search", "status": "completed", "finished_at": 1.0}
    )
    return folder


CLI = {
    "unknown command": (["pretrian"], ["unknown command 'pretrian'", "Did you mean 'pretrain'?"]),
    "unknown key": (["pretrain", "trainer.lrr=1"], ["trainer.lrr", "did you mean trainer.lr?"]),
    "added key": (["search", "+mask.lamda=1"], ["mask.lamda", "did you mean mask.lam?"]),
    "unknown option": (["pretrain", "mask=diagonal"], ["no mask option 'diagonal'", "no_diag"]),
    "wrong type": (
        ["pretrain", "trainer.max_steps=abc"],
        ["trainer.max_steps takes a whole number, not 'abc'"],
    ),
    "negative lambda": (["search", "mask.lam=-1"], ["error: mask.lam=-1.0 must be ≥ 0"]),
    "too long": (["pretrain", "data.seq_len=1024"], ["error: data.seq_len=1024 is longer than"]),
    "validate tool": (["validate", "search", "mask.tau=0"], ["error: mask.tau=0.0 must be > 0"]),
    "validate a mistyped stage": (["validate", "finetun"], ["did you mean 'finetune'?"]),
    "a group set to null": (["validate", "pretrain", "mask=null"], ["every stage needs a mask"]),
    # a traceback from `datasets` once the data were read
    "folds with an empty dev split": (
        ["finetune", "debug=smoke", "task.num_folds=200", "task.fold=150"],
        ["task.num_folds=200 task.fold=150 leaves task=polarity no dev examples"],
    ),
    "no documents left to train on": (
        ["pretrain", "debug=smoke", "data.eval_fraction=0.999"],
        ["data.eval_fraction=0.999 holds out 40 of the 40 documents"],
    ),
    # found when the job reaches them, after the data is loaded, unless checked up front
    "no cuda": (["validate", "pretrain", "trainer.device=cuda"], ["no CUDA device is visible"]),
    "flex training on cpu": (
        [
            "validate",
            "pretrain",
            "mask=window",
            "model.attention_backend=flex",
            "trainer.device=cpu",
        ],
        ["flex has no backward pass on CPU"],
    ),
    "missing upstream": (
        ["pretrain", "mask=from_run", "mask.from=missing-run"],
        ["error: missing-run is not a sparsebert run folder"],
    ),
    "failed upstream": (
        ["finetune", "model.from=runs/pretrain/broken"],
        ["is not completed (status: failed;"],
    ),
    "corrupt mask": (
        ["pretrain", "mask=from_run", "mask.from=runs/search/corrupt"],
        ["mask.safetensors does not match mask.json"],
    ),
    "heads mismatch": (
        ["pretrain", "mask=from_run", "mask.from=runs/search/heads4"],
        ["has 4 heads but the model has 2"],
    ),
    "hub unreachable": (
        ["finetune", "model=hf", "model.name_or_path=no-such-org/no-such-model"],
        ["cannot get the model 'no-such-org/no-such-model'", "model=minilm"],
    ),
    # an interpolation in an override ended in Hydra's traceback as the job read its overrides
    "unknown interpolation": (
        ["pretrain", "data=text_files", "data.files=[${D}/corpus.txt]"],
        ["Interpolation key 'D' not found", "an environment variable is $NAME"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CLI))
def test_cli_refuses(workdir, case):
    root = workdir / "runs"
    _run_folder(root, "pretrain", "failed", "broken")
    corrupt = _plant_search_run(root, "corrupt", torch.ones(1, 2, 32, 32, dtype=torch.bool))
    data = (corrupt / "artifacts" / MASK_FILE).read_bytes()
    (corrupt / "artifacts" / MASK_FILE).write_bytes(data[:-7])
    _plant_search_run(root, "heads4", torch.ones(1, 4, 32, 32, dtype=torch.bool))
    args, needles = CLI[case]
    if case == "no cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    # finetune loads its weights (model=minilm, model.from): sizes are theirs, not TINY's
    finetune = [a for a in TINY_TASK if not a.startswith("model.")]
    extra = {"search": TINY_SEARCH, "pretrain": TINY, "finetune": finetune}.get(args[0], [])
    proc = sparsebert(args[0], *extra, *args[1:], "run_id=bad", cwd=workdir, check=False)
    out = assert_clean_error(proc, *needles)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, out  # one paragraph
    # refused before Hydra makes a run folder
    if case in ("unknown key", "added key", "unknown option", "wrong type"):
        assert not (root / args[0] / "bad").exists()
    elif args[0] in ("search", "pretrain", "finetune") and errors:
        manifest = runs.load_manifest(root / args[0] / "bad")
        assert manifest["status"] == "failed" and manifest["error"] == errors[0][len("error: ") :]
        assert manifest["started_at"] > 0  # `ls --show latest` sorts by it


# --- defined behaviour rather than an error: a query with nothing to attend to -----------------------


@pytest.mark.slow
def test_a_mask_with_an_empty_query_row_trains_with_a_warning_and_no_nan(workdir):
    mask = torch.ones(1, 2, 32, 32, dtype=torch.bool)
    mask[0, :, 5, :] = False  # query 5 may attend to nothing, in every head
    search = _plant_search_run(workdir / "runs", "empty-row", mask)
    proc = sparsebert(
        "pretrain", *TINY, "mask=from_run", f"mask.from={search}", "model.attention_backend=masked",
        "run_id=empty", cwd=workdir,
    )  # fmt: skip
    assert "some attention query rows have no allowed key" in proc.stdout + proc.stderr
    metrics = json.loads((workdir / "runs/pretrain/empty/metrics.json").read_text())
    assert all(math.isfinite(v) for v in metrics.values())
    losses = [
        json.loads(line)["train/loss"]
        for line in (workdir / "runs/pretrain/empty/metrics.jsonl").read_text().splitlines()
        if "train/loss" in line
    ]
    assert losses and all(math.isfinite(v) for v in losses)
    shutil.rmtree(search)
