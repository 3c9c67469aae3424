"""Sources: inputs that plan each batch's input as data and replay a plan exactly.

Each source's module is imported when its name is first used (``import streamkeep``
does not import Kafka's, the file sources' or the socket source's code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamkeep._util import lazy_exports
from streamkeep.sources.base import BlobStore, Source

if TYPE_CHECKING:
    from streamkeep.sources.files import TextFileSource
    from streamkeep.sources.kafka import KafkaRecord, KafkaSource
    from streamkeep.sources.queue import ConstantSource, QueueSource
    from streamkeep.sources.rate import RateSource
    from streamkeep.sources.socket import SocketTextSource

__all__ = [
    "BlobStore",
    "ConstantSource",
    "KafkaRecord",
    "KafkaSource",
    "QueueSource",
    "RateSource",
    "SocketTextSource",
    "Source",
    "TextFileSource",
]

if not TYPE_CHECKING:  # type checkers read the imports above: a module __getattr__ would make every other name Any
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "TextFileSource": "streamkeep.sources.files",
            "KafkaRecord": "streamkeep.sources.kafka",
            "KafkaSource": "streamkeep.sources.kafka",
            "ConstantSource": "streamkeep.sources.queue",
            "QueueSource": "streamkeep.sources.queue",
            "RateSource": "streamkeep.sources.rate",
            "SocketTextSource": "streamkeep.sources.socket",
        },
    )
