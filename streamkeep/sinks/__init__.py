"""Sinks: outputs that make a replayed batch time harmless.

`RedisSink` and `KafkaSink` import their client libraries only when used.
"""

from __future__ import annotations

from streamkeep.sinks.base import Sink
from streamkeep.sinks.files import FileSink, ParquetSink
from streamkeep.sinks.kafka import KafkaSink
from streamkeep.sinks.print import PrintSink
from streamkeep.sinks.redis import RedisSink
from streamkeep.sinks.text import PPrintSink, TextFilesSink

__all__ = ["FileSink", "KafkaSink", "PPrintSink", "ParquetSink", "PrintSink", "RedisSink", "Sink", "TextFilesSink"]
