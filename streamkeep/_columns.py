"""`Columns`: keyed state as two aligned lists, optionally with a sorted index of the keys.

What a columnar snapshot decodes to (see `streamkeep.checkpoint._compact`), before (or
instead of) a dict of its keys is built. Building a dict of a million fresh keys costs
about half a second; the sorted index (`order`: the positions of the keys in sorted
order, written by the compaction in the background) lets a restarted job look up the
few keys its first batches touch without that dict (`Columns.find`), while the dict is
built out of the way (`streamkeep.state.memory.MemoryStateStore.load_lazy`).

A leaf: imports nothing of streamkeep.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from itertools import accumulate
from typing import Any, Final

#: Key types an index may sort: all keys of one of these exact types (their order and equality agree).
INDEXABLE: Final = (str, bytes, int)


class Columns:
    """Keyed state as ``keys`` and ``values`` (aligned, keys unique, in the state's order).

    Iterating yields (key, value) pairs, so code that takes pairs takes a `Columns` too.
    ``order``, when present, lists the positions of the keys sorted by key (every key of
    one exact type in `INDEXABLE`), so that `find` is a binary search.
    """

    __slots__ = ("keys", "order", "values")

    def __init__(self, keys: list[Any], values: list[Any], order: array[int] | None = None) -> None:
        self.keys = keys
        self.values = values
        self.order = order

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return zip(self.keys, self.values, strict=False)

    def to_dict(self) -> dict[Any, Any]:
        """The state as a fresh dict (key -> value), in order."""
        return dict(zip(self.keys, self.values, strict=False))

    @property
    def key_type(self) -> type | None:
        """The one type of every key when the columns have an index, else None."""
        return type(self.keys[0]) if self.order is not None and self.keys else None

    def find(self, key: Any) -> int:
        """The position of `key` in ``keys``, or -1; `key` must be of exactly `key_type` (the index's).

        Raises:
            IndexError: the index names a position past the keys (it is damaged).
        """
        order = self.order
        assert order is not None
        keys = self.keys
        i = bisect.bisect_left(order, key, key=keys.__getitem__)
        if i < len(order) and keys[order[i]] == key:
            return order[i]
        return -1


def sorted_order(keys: list[Any]) -> array[int] | None:
    """The index `Columns.order` of `keys`: None unless every key has one exact type of `INDEXABLE`."""
    if not keys:
        return None
    kt = type(keys[0])
    if kt not in INDEXABLE or set(map(type, keys)) != {kt} or len(keys) >= 2**32:
        return None
    return array("I", sorted(range(len(keys)), key=keys.__getitem__))


def order_without(order: array[int], keep: list[bool]) -> array[int]:
    """`order` of a key list after dropping the keys whose `keep` flag is False (positions renumbered)."""
    rank = list(accumulate(keep))  # kept keys up to and including each position: the new position + 1
    return array("I", [rank[p] - 1 for p in order if keep[p]])


def order_with(order: array[int], keys: list[Any], start: int) -> array[int] | None:
    """`order` of ``keys[:start]`` extended by the keys from `start` on (appended keys), or None when
    they are not all of the indexed key type (or too many to insert one by one: sort them all instead)."""
    n = len(keys) - start
    if not order:  # every earlier key went: the new keys alone
        return sorted_order(keys) if start == 0 else None
    if n > max(1024, start // 8):
        return None
    kt = type(keys[order[0]])
    if any(type(k) is not kt for k in keys[start:]):
        return None
    at = keys.__getitem__
    out: array[int] = array("I")
    prev = 0
    for p in sorted(range(start, len(keys)), key=at):
        i = bisect.bisect_left(order, keys[p], prev, key=at)
        out.extend(order[prev:i])
        out.append(p)
        prev = i
    out.extend(order[prev:])
    return out


def order_to_bytes(order: array[int]) -> bytes:
    """`order` as little-endian unsigned 32-bit integers (how a snapshot stores it)."""
    a = array("I", order) if order.typecode != "I" else order
    if a.itemsize != 4:  # pragma: no cover - every platform streamkeep runs on has 4-byte unsigned ints
        msg = "this platform's array('I') is not 4 bytes wide"
        raise ValueError(msg)
    if _BIG_ENDIAN:  # pragma: no cover
        a = array("I", a)
        a.byteswap()
    return a.tobytes()


def order_from_bytes(raw: bytes, n: int) -> array[int]:
    """The index stored by `order_to_bytes`, checked to hold `n` positions (each below `n`: see `Columns.find`).

    Raises:
        ValueError: it does not hold `n` positions.
    """
    a = array("I")
    if a.itemsize != 4:  # pragma: no cover
        msg = "this platform's array('I') is not 4 bytes wide"
        raise ValueError(msg)
    a.frombytes(raw)
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    if len(a) != n:
        msg = f"its key index holds {len(a)} positions for {n} keys"
        raise ValueError(msg)
    return a


_BIG_ENDIAN: Final = array("H", [1]).tobytes()[0] == 0
