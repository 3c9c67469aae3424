"""Tables: Arrow batches, vectorised keyed state, Parquet in and out (``pip install streamkeep[tables]``).

The table operators are DStream and Batch methods (``to_tables``, ``map_tables``,
``to_records``, ``aggregate_state``, ``Batch.to_arrow/to_pandas/to_polars``); this
module holds what goes with them. Importing it does not import pyarrow.
See docs/tables.md.
"""

from __future__ import annotations

from streamkeep.dstream._tables import Combine
from streamkeep.sinks.base import TableSink
from streamkeep.sinks.files import ParquetSink
from streamkeep.sources._kafka_tables import KafkaTables, kafka_json_tables
from streamkeep.sources.tables import JsonLinesTableSource, ParquetFileSource

__all__ = ["Combine", "JsonLinesTableSource", "KafkaTables", "ParquetFileSource", "ParquetSink", "TableSink", "kafka_json_tables"]

for _public in (Combine, KafkaTables, kafka_json_tables):
    _public.__module__ = __name__
del _public
