"""Reader for Parquet tables (``--format parquet``), e.g. math-vision datasets as shipped.

``--input`` is a ``.parquet`` file or a directory (all ``*.parquet`` files below it, in
sorted order). Columns and image cells are handled as described in
:mod:`data_prep.sources.tables`; relative image paths resolve against
``--image-root``, default the Parquet file's directory. Rows are read in batches, so
large files are streamed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError
from data_prep.sources import SourceOptions, SourceSpec, stem_of
from data_prep.sources.tables import guarded_row_batches, resolve_columns, row_to_item

BATCH_ROWS = 64


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files an input names (a file, or every ``*.parquet`` under a directory)."""
    if path.is_dir():
        files = sorted(path.rglob("*.parquet"))
        if not files:
            raise PrepError(f"input {path} is a directory without .parquet files; check --input", reason="missing_input")
        return files
    if not path.is_file():
        raise PrepError(f"input {path} not found; check --input", reason="missing_input")
    return [path]


def _row_batches(table: Any, file: Path) -> Iterator[list[dict[str, Any]]]:
    """The file's rows in batches; a file damaged past its footer raises PrepError naming it."""
    import pyarrow as pa

    return guarded_row_batches(
        iter(table.iter_batches(batch_size=BATCH_ROWS)),
        (pa.ArrowException, OSError, ValueError),
        lambda exc: f"{file}: not a readable Parquet file ({exc})",
    )


def read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]:
    """Yield one item per row; a bad row becomes :class:`Rejected`, a bad file raises."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if spec.input is None:
        raise PrepError("--format parquet needs --input FILE.parquet (or a directory)", reason="missing_input")
    for file in parquet_files(spec.input):
        try:
            table = pq.ParquetFile(file)
            names = table.schema_arrow.names
        except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: undecodable column names
            raise PrepError(f"{file}: not a readable Parquet file ({exc})", reason="malformed_input") from None
        columns = resolve_columns(names, options, str(file))
        root = spec.image_root or file.parent
        index = 0
        for rows in _row_batches(table, file):
            for row in rows:
                where = f"{file} row {index}"
                try:
                    yield row_to_item(
                        row, index=index, columns=columns, stem=stem_of(file), where=where, root=root, options=options
                    )
                except PrepError as err:
                    yield Rejected(origin=where, reason=err.reason, message=str(err))
                index += 1
