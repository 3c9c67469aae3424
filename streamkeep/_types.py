"""Type aliases shared by every layer. Imports nothing from streamkeep."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, TypeAlias

#: A batch time: milliseconds since the Unix epoch (UTC). The identity of a batch.
BatchTime: TypeAlias = int
#: A key of keyed state. Must be hashable; stored with the operator's codec.
Key: TypeAlias = Hashable
#: Plain data as stored in checkpoints (msgpack-representable).
Data: TypeAlias = Any
#: One partition of a batch's records.
Partition: TypeAlias = list[Any]
