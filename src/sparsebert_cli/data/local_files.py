"""Local data files read through a `datasets` builder, a malformed file refused in one paragraph."""

from pathlib import Path

from sparsebert_cli.errors import SparseBertError


def load_local_files(builder: str, data_files, cache_dir: Path, **options):
    """`datasets.load_dataset(builder, data_files=...)`; a file the builder cannot read (an
    unclosed quote, a ragged or truncated row, a split with no rows) raises SparseBertError naming
    the files and the parser's own words, instead of datasets' traceback."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    try:
        return datasets.load_dataset(
            builder, data_files=data_files, cache_dir=str(cache_dir / "hf_datasets"), **options
        )
    except (DatasetGenerationError, ValueError) as error:
        cause = error
        while cause.__cause__ is not None:  # datasets wraps the parser's error
            cause = cause.__cause__
        words = (str(cause).strip().splitlines() or [""])[0][:300]
        raise SparseBertError(
            f"Could not read {data_files} as {builder} files: {type(cause).__name__}: {words}. "
            "Fix the file: every row needs the header's columns, quotes closed, each split at "
            "least one row."
        ) from None
