"""Local data files read through a `datasets` builder, a malformed file refused in one paragraph."""

from pathlib import Path

from sparsebert_cli.data.cache import content_key, file_fingerprint
from sparsebert_cli.errors import SparseBertError, first_line

# Only an empty csv/tsv cell is a missing value: pandas' default also reads the words "NA",
# "null", "None", "nan" (which a sentence may be) as missing.
TEXT_AS_WRITTEN = {"keep_default_na": False, "na_values": [""]}


def read_utf8(path: Path, fix: str) -> str:
    """The text of `path` (a leading byte-order mark dropped), or one paragraph naming the byte
    that is not UTF-8, then `fix`."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise SparseBertError(
            f"{path} is not UTF-8 text (byte {error.start} cannot be decoded). {fix}"
        ) from None


def load_local_files(builder: str, data_files, cache_dir: Path, **options):
    """`datasets.load_dataset(builder, data_files=...)`; a file the builder cannot read (an
    unclosed quote, a ragged or truncated row, a split with no rows, an empty file) raises
    SparseBertError naming the files and the parser's own words, instead of datasets' traceback.

    `datasets` reuses what it built from a file while the file's modification time is unchanged,
    also when its content changed (`cp -p`, `tar x`, `rsync -t`); the cache folder is named by the
    files' size and time here (`cache.file_fingerprint`, the project's rule), so an edit that
    changes either is read again.
    """
    from datasets.exceptions import DatasetGenerationError

    if builder == "csv":
        options = {**TEXT_AS_WRITTEN, **options}
    try:
        return _load(builder, data_files, cache_dir, options)
    except (DatasetGenerationError, ValueError, StopIteration) as error:
        differ = _differing_columns(builder, data_files, cache_dir, options)
        if differ:
            raise SparseBertError(
                f"The files' columns differ ({differ}): give every split the same columns "
                "(task.text_fields and task.label_field name the ones read)."
            ) from None
        cause = error
        while cause.__cause__ is not None:  # datasets wraps the parser's error
            cause = cause.__cause__
        words = first_line(cause, "no rows (an empty file?)")[:300]
        raise SparseBertError(
            f"Could not read {data_files} as {builder} files: {type(cause).__name__}: {words}. "
            "Fix the file: every row needs the header's columns, quotes closed, each split at "
            "least one row, each column one type (a word such as NA in a number column: leave "
            "the cell empty for a missing label)."
        ) from None


def _load(builder: str, data_files, cache_dir: Path, options: dict):
    import datasets

    paths = data_files.values() if isinstance(data_files, dict) else data_files
    key = content_key({"files": file_fingerprint(paths)})
    return datasets.load_dataset(
        builder,
        data_files=data_files,
        cache_dir=str(cache_dir / "hf_datasets" / f"local-{key}"),
        **options,
    )


def _differing_columns(builder: str, data_files, cache_dir: Path, options: dict) -> str | None:
    """After a failed read of several splits' files: "<file> has [columns]; ..." when each file
    reads alone and their columns differ (datasets says only "Couldn't cast ... because column
    names don't match"), else None."""
    if not isinstance(data_files, dict) or len(data_files) < 2:
        return None
    columns = {}
    for split, path in data_files.items():
        try:
            columns[path] = _load(builder, {split: path}, cache_dir, options)[split].column_names
        except Exception:  # this file is itself unreadable: the parser's words say why
            return None
    if len({tuple(names) for names in columns.values()}) < 2:
        return None
    return "; ".join(f"{path} has {names}" for path, names in columns.items())
