"""Local data files read through a `datasets` builder, a malformed file refused in one paragraph."""

from pathlib import Path

from sparsebert_cli.data.cache import content_key, file_fingerprint
from sparsebert_cli.errors import SparseBertError, first_line

# Only an empty csv/tsv cell is a missing value: pandas' default also reads the words "NA",
# "null", "None", "nan" (which a sentence may be) as missing.
TEXT_AS_WRITTEN = {"keep_default_na": False, "na_values": [""]}


def load_local_files(builder: str, data_files, cache_dir: Path, **options):
    """`datasets.load_dataset(builder, data_files=...)`; a file the builder cannot read (an
    unclosed quote, a ragged or truncated row, a split with no rows, an empty file) raises
    SparseBertError naming the files and the parser's own words, instead of datasets' traceback.

    `datasets` reuses what it built from a file while the file's modification time is unchanged,
    also when its content changed (`cp -p`, `tar x`, `rsync -t`); the cache folder is named by the
    files' size and time here (`cache.file_fingerprint`, the project's rule), so an edit that
    changes either is read again.
    """
    import datasets
    from datasets.exceptions import DatasetGenerationError

    paths = data_files.values() if isinstance(data_files, dict) else data_files
    key = content_key({"files": file_fingerprint(paths)})
    if builder == "csv":
        options = {**TEXT_AS_WRITTEN, **options}
    try:
        return datasets.load_dataset(
            builder,
            data_files=data_files,
            cache_dir=str(cache_dir / "hf_datasets" / f"local-{key}"),
            **options,
        )
    except (DatasetGenerationError, ValueError, StopIteration) as error:
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
