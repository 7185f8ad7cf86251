"""Converters from the sources users have to the packed dataset format.

Public API (see each module for details):

* :mod:`data_prep.packed`: the format. ``FORMAT_VERSION``, :class:`Record`,
  :func:`validate_record`, :class:`PrepError`, :func:`load_packed` ->
  :class:`PackedDataset`.
* :mod:`data_prep.packing`: :func:`pack` (items -> packed dataset, also `data_prep.pack`) and
  :class:`PackOptions`.
* :mod:`data_prep.writer`: :func:`atomic_output_dir`, :func:`write_records_and_manifest`.
* :mod:`data_prep.items`: :class:`SourceItem`, :class:`Rejected` (reader -> packer).
* :mod:`data_prep.sources`: readers per format (``vlm-r1``, ``rec-json``, ``parquet``,
  ``hf-disk``, ``synthetic``), :func:`read_sources`.
* :mod:`data_prep.synthetic`: :func:`generate` for the ``rec``, ``count`` and ``math`` tasks.
* :mod:`data_prep.cli`: ``vlm-grpo prep`` (:func:`add_arguments`, :func:`run`, :func:`main`).

Importing this package does no work and loads neither pyarrow nor ``datasets``.
"""

from data_prep.items import Rejected, SourceItem
from data_prep.packing import PackOptions, pack
from data_prep.packed import (
    FORMAT_VERSION,
    PackedDataset,
    PrepError,
    Record,
    load_packed,
    validate_record,
)
from data_prep.summary import PackSummary

__all__ = [
    "FORMAT_VERSION",
    "PackOptions",
    "PackSummary",
    "PackedDataset",
    "PrepError",
    "Record",
    "Rejected",
    "SourceItem",
    "load_packed",
    "pack",
    "validate_record",
]
