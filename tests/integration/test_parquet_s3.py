"""parquet_file_stream and ParquetSink on s3:// URLs (moto S3 on 127.0.0.1), with the checkpoint on S3 too (issue 15)."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import streamkeep as sk
from streamkeep.sinks import ParquetSink
from streamkeep.testing import ManualClock

pytestmark = pytest.mark.integration


def _parquet(table: Any) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_parquet_objects_in_aggregate_state_out_to_parquet_objects_across_a_restart(s3_server: Any, s3_url: str) -> None:
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    opts = s3_server.storage_options
    inp, out, ckpt = f"{s3_url}/in", f"{s3_url}/out", f"{s3_url}/ckpt"

    def setup() -> sk.StreamingContext:
        ssc = sk.StreamingContext(1.0, checkpoint=ckpt, clock=ManualClock(), storage_options=opts)
        rows = ssc.parquet_file_stream(inp, name="pq", storage_options=opts, new_files_only=False)
        totals = rows.aggregate_state(by="k", aggs={"s": ("v", "sum")}, name="totals").map_tables(lambda t: t.sort_by("k"))
        totals.write_to(ParquetSink(out, name="totals", storage_options=opts))
        return ssc

    def run(n: int) -> None:
        ssc = sk.StreamingContext.get_or_create(ckpt, setup, storage_options=opts)
        try:
            ssc.run(max_batches=n)
        finally:
            ssc.stop()

    fs.pipe(f"{inp}/a.parquet".removeprefix("s3://"), _parquet(pa.table({"k": ["x", "y", "x"], "v": [1, 2, 3]})))
    run(1)
    fs.pipe(f"{inp}/b.parquet".removeprefix("s3://"), _parquet(pa.table({"k": ["y"], "v": [10]})))
    run(1)  # restored from the S3 checkpoint: reads only the new object

    def read(t: int) -> list[dict[str, Any]]:
        return pq.read_table(io.BytesIO(fs.cat_file(f"{out}/batch-{t:013d}.parquet".removeprefix("s3://")))).to_pylist()

    assert read(1000) == [{"k": "x", "s": 4}, {"k": "y", "s": 2}]
    assert read(2000) == [{"k": "x", "s": 4}, {"k": "y", "s": 12}]
