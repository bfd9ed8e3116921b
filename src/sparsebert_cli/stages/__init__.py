"""The stages and the config keys each one reads (torch-free: `validate` and the CLI consult it).

A key is read by a stage when it or a group above it is listed (`mask` covers `mask.lam`). A key
a stage does not read is refused on its command line (`validation.check_overrides`), left out of
its content hash (`hashed_config`) and of its checks; tests/test_config_keys.py proves
every key of every stage's composed config is listed or refused, and every listed key has a
reader.
"""

import glob

from sparsebert_cli.data.config import HELD_OUT_SEED, task_identity
from sparsebert_cli.masks.config import mask_identity
from sparsebert_cli.user_paths import user_path

# Read by the job machinery of every stage (launch.py, runs.py): where and how the job runs.
_JOB = ("stage", "seed", "offline", "run_id", "sweep_name", "paths", "trainer.nproc_per_node")
# Read by the training loop (training/loop.py, logging.py, checkpoint.py).
_TRAINING = (*_JOB, "resume", "logger", "trainer")
# The corpus that a tokenizer is trained on (data.tokenizer=train) and its settings.
_TOKENIZER = (
    "data.name",
    "data.hub_sources",
    "data.sentence_sources",
    "data.sentences_per_document",
    "data.files",
    "data.text_column",
    "data.max_documents",
    "data.num_proc",
    "data.tokenizer",
    "data.vocab_size",
)

READS: dict[str, tuple[str, ...]] = {
    "search": (*_TRAINING, "mask", "model", "data"),
    "pretrain": (*_TRAINING, "mask", "model", "data"),
    "finetune": (*_TRAINING, "mask", "model", "task", *_TOKENIZER),
    # one process: it does not shard the evaluation, so more would only repeat it
    "evaluate": (
        *(key for key in _JOB if key != "trainer.nproc_per_node"),
        "model.from_run",
        "model.attention_backend",
        "model.block_size",
        "task.glue_dir",
        "task.data_dir",
        "task.data_files",
        "trainer.eval_batch_size",
        "trainer.device",
    ),
    # The pipeline hands its whole config to its steps (each step checks what it reads).
    "pipeline": (*_TRAINING, "mask", "model", "data", "task", "pipeline"),
}

# The upstream runs a stage loads, by the key that names them, and the stage they must be.
UPSTREAM: dict[str, dict[str, str]] = {
    "search": {"model.from_run": "pretrain"},
    "pretrain": {"model.from_run": "pretrain", "mask.from_run": "search"},
    "finetune": {"model.from_run": "pretrain", "mask.from_run": "search"},
    "evaluate": {"model.from_run": "finetune"},
    # resolved once, before the pipeline is hashed, and handed to its steps as folders
    "pipeline": {"model.from_run": "pretrain", "mask.from_run": "search"},
}


def reads(stage: str, key: str) -> bool:
    """Whether `stage` reads `key` (dotted), or a key inside it when `key` is a group."""
    return any(key == k or key.startswith(f"{k}.") or k.startswith(f"{key}.") for k in READS[stage])


# Keys that do not change what a job computes, left out of its content hash (as are the keys
# the stage does not read; `hashed_config`) and of a sweep job's folder name
# (`config.unnamed_overrides`): resuming with another checkpoint interval or log rate is the
# same job. The pipeline's per-step overrides are hashed when there are any
# (`per_step_overrides`). The number of processes is hashed above 1: each rank draws its own
# Gumbel noise, and the loss is averaged per rank's micro-batch, so 2 ranks compute another run.
NOT_HASHED = ("run_id", "sweep_name", "logger", "paths", "offline", "resume", "pipeline")
NOT_HASHED_TRAINER = ("log_every", "device", "num_threads", "ckpt_every")
# ... and the trainer keys that name no sweep job's folder and no pipeline's inherited key: those,
# and the process count, whose value above 1 the hash carries (typed as 1, it changes nothing).
UNNAMED_TRAINER = (*NOT_HASHED_TRAINER, "nproc_per_node")


def hashed_config(resolved: dict) -> dict:
    """The part of a resolved config that determines a job's result (its identity for reuse):
    the keys its stage reads, less those that only say where or how fast it runs."""

    def kept(node: dict, prefix: str) -> dict:
        out = {}
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if not reads(resolved["stage"], dotted):
                continue
            out[key] = (
                kept(value, f"{dotted}.") if isinstance(value, dict) and not prefix else value
            )
        return out

    hashed = kept({k: v for k, v in resolved.items() if k not in NOT_HASHED}, "")
    if "trainer" in hashed:
        hashed["trainer"] = {
            k: v for k, v in hashed["trainer"].items() if k not in NOT_HASHED_TRAINER
        }
        if hashed["trainer"].get("nproc_per_node") == 1:  # absent: one-process runs keep hashes
            del hashed["trainer"]["nproc_per_node"]
    if "mask" in hashed:
        hashed["mask"] = mask_identity(resolved["mask"])
    if "task" in hashed:
        hashed["task"] = task_identity(hashed["task"])
    pipeline = pipeline_identity(resolved)
    if pipeline:  # absent otherwise, so pipelines without them keep their hashes
        hashed["pipeline"] = pipeline
    # Other seeds' held-out documents changed (02ef264): their runs of before are not reused.
    # Seed 0's documents did not (only their order, which its gate and occlusion read), so its
    # runs of before are.
    held_out = reads(resolved["stage"], "data.eval_fraction")  # the stage builds MLM examples
    if held_out and resolved.get("seed") != HELD_OUT_SEED:
        hashed["held_out_seed"] = HELD_OUT_SEED
    files = _input_files(resolved)
    if files:  # absent otherwise, so configs without local files keep their hashes
        from sparsebert_cli.data.cache import file_fingerprint

        hashed["input_files"] = file_fingerprint(files)
    return hashed


INHERITED = "inherited"  # pipeline.inherited: the keys the command line sets (config.py)


def per_step_overrides(config: dict) -> dict[str, list[str]]:
    """A pipeline's per-step overrides (`pipeline.finetune=[...]`), the steps that have any:
    they change what its steps compute. None for the other stages, whose configs may carry a
    preset's (experiment=demo) without reading them."""
    if config.get("stage") != "pipeline":
        return {}
    lists = config.get("pipeline") or {}
    return {step: list(o) for step, o in lists.items() if step != INHERITED and o}


def pipeline_identity(config: dict) -> dict[str, list[str]]:
    """What a pipeline's config alone does not say about its steps: the per-step overrides and
    the keys its command line sets (`pipeline.inherited`); empty for the other stages."""
    if config.get("stage") != "pipeline":
        return {}
    inherited = sorted((config.get("pipeline") or {}).get(INHERITED) or [])
    return {**per_step_overrides(config), **({INHERITED: inherited} if inherited else {})}


def _input_files(resolved: dict) -> list[str]:
    """The local data files a job reads (data.files; the task's data_files, glue_dir, data_dir):
    they enter the hash by size and modification time, so an edited file is a new job."""
    stage = resolved["stage"]
    files = []
    if reads(stage, "data.files"):
        files += [p for pattern in resolved["data"]["files"] for p in glob.glob(pattern)]
    task = resolved["task"]
    if reads(stage, "task.data_files"):
        files += [p for p in task["data_files"].values() if user_path(p).is_file()]
    for key in ("glue_dir", "data_dir"):
        folder = task[key]
        if reads(stage, f"task.{key}") and folder and user_path(folder).is_dir():
            root = user_path(folder)
            if key == "glue_dir":  # only the task's own folder: another task's files are not read
                from sparsebert_cli.data.glue import GLUE_TASKS

                layout = GLUE_TASKS.get(task.get("name"))
                if layout is None:  # not a GLUE task: the folder is not read at all
                    continue
                root = root / layout.folder
            files += [str(p) for p in root.rglob("*") if p.is_file()]
    return files
