"""Reader for Hugging Face datasets saved with ``datasets.save_to_disk`` (``--format hf-disk``).

``--input`` is the directory given to ``save_to_disk``: a ``Dataset``, or a
``DatasetDict`` (pick one split with ``--split``; a dict with a single split needs
none). Rows are read as Arrow, so ``Image`` features arrive undecoded as
``{"bytes", "path"}`` and are validated by the packer like any other image. Columns
and cells follow :mod:`data_prep.sources.tables`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from data_prep.items import Rejected, SourceItem
from data_prep.packed import PrepError
from data_prep.sources import SourceOptions, SourceSpec, stem_of
from data_prep.sources.tables import guarded_row_batches, resolve_columns, row_to_item

BATCH_ROWS = 64


def _load(spec: SourceSpec, options: SourceOptions) -> Any:
    from datasets import DatasetDict, load_from_disk

    path = spec.input
    if path is None or not path.exists():
        raise PrepError(f"input {path} not found; --format hf-disk needs the save_to_disk directory", reason="missing_input")
    try:
        dataset = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged folder fails in many ways (KeyError in state.json ...)
        raise PrepError(
            f"{path}: not a dataset saved with datasets.save_to_disk ({type(exc).__name__}: {exc})",
            reason="malformed_input",
        ) from None
    if isinstance(dataset, DatasetDict):
        splits = list(dataset)
        name = options.split or (splits[0] if len(splits) == 1 else None)
        if name not in dataset:
            raise PrepError(
                f"{path}: choose a split with --split (available: {', '.join(splits)})", reason="missing_input"
            )
        dataset = dataset[name]
    elif options.split:
        raise PrepError(f"{path}: holds a single Dataset, not a DatasetDict; drop --split", reason="missing_input")
    return dataset


def _row_batches(dataset: Any, label: str) -> Iterator[list[dict[str, Any]]]:
    """The dataset's rows in batches; a damaged Arrow file raises PrepError naming the dataset."""
    return guarded_row_batches(
        iter(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS)),
        (Exception,),  # pyarrow raises several types on damaged data
        lambda exc: f"{label}: cannot read its Arrow data ({type(exc).__name__}: {exc})",
    )


def read(spec: SourceSpec, options: SourceOptions) -> Iterator[SourceItem | Rejected]:
    """Yield one item per row; a bad row becomes :class:`Rejected`, a bad dataset raises."""
    dataset = _load(spec, options)
    label = str(spec.input) + (f"[{options.split}]" if options.split else "")
    columns = resolve_columns(list(dataset.column_names), options, label)
    root = spec.image_root or spec.input
    stem = stem_of(spec.input)
    index = 0
    for rows in _row_batches(dataset, label):
        for row in rows:
            where = f"{label} row {index}"
            try:
                yield row_to_item(row, index=index, columns=columns, stem=stem, where=where, root=root, options=options)
            except PrepError as err:
                yield Rejected(origin=where, reason=err.reason, message=str(err))
            index += 1
