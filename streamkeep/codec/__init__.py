"""Stable value codecs: how state, plans and graph descriptions are stored in checkpoints.

Owns the public codec API. ``MSGPACK`` (the default) stores plain data
exactly (types preserved, decoding never runs code); ``get_codec("pickle")``
is the opt-in for arbitrary picklable objects. Every payload starts with a
format version byte; the formats are specified in ``docs/codec-format.md``.

This package is a layer-1 leaf: it imports only ``streamkeep.errors`` and
``streamkeep._types`` of streamkeep, and nothing else of streamkeep may be
imported here. This module only re-exports.

Example:
    >>> from streamkeep.codec import MSGPACK, get_codec
    >>> MSGPACK.decode(MSGPACK.encode([1, (2, 3), {4.5}]))
    [1, (2, 3), {4.5}]
    >>> get_codec() is MSGPACK
    True
"""

from __future__ import annotations

from streamkeep.codec._base import Codec, DecodeError, UnsupportedValueError
from streamkeep.codec._items import decode_items, encode_items
from streamkeep.codec._msgpack import MSGPACK
from streamkeep.codec._registry import get_codec

__all__ = [
    "MSGPACK",
    "Codec",
    "DecodeError",
    "UnsupportedValueError",
    "decode_items",
    "encode_items",
    "get_codec",
]

for _public in (Codec, DecodeError, UnsupportedValueError, decode_items, encode_items, get_codec):
    _public.__module__ = __name__
del _public
