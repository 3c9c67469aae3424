"""Sources: inputs that plan each batch's input as data and replay a plan exactly."""

from __future__ import annotations

from streamkeep.sources.base import BlobStore, Source
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
