"""Sinks: outputs that make a replayed batch time harmless.

Each sink's module is imported when its name is first used (``import streamkeep``
does not import them); `RedisSink` and `KafkaSink` import their client libraries
only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkeep._util import lazy_exports
from streamkeep.sinks.base import Sink

if TYPE_CHECKING:
    from streamkeep.sinks.files import FileSink, ParquetSink
    from streamkeep.sinks.kafka import KafkaSink
    from streamkeep.sinks.print import PrintSink
    from streamkeep.sinks.redis import RedisSink
    from streamkeep.sinks.text import PPrintSink, TextFilesSink

__all__ = ["FileSink", "KafkaSink", "PPrintSink", "ParquetSink", "PrintSink", "RedisSink", "Sink", "TextFilesSink"]

if not TYPE_CHECKING:  # type checkers read the imports above: a module __getattr__ would make every other name Any
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "FileSink": "streamkeep.sinks.files",
            "ParquetSink": "streamkeep.sinks.files",
            "KafkaSink": "streamkeep.sinks.kafka",
            "PrintSink": "streamkeep.sinks.print",
            "RedisSink": "streamkeep.sinks.redis",
            "PPrintSink": "streamkeep.sinks.text",
            "TextFilesSink": "streamkeep.sinks.text",
        },
    )
