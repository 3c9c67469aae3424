"""Unit tests for segmented items payloads (msgpack format version 2): tuples packed natively, exactly."""

from __future__ import annotations

import pickle
from collections import namedtuple
from typing import Any

import msgpack
import pytest
from _strict import same

from streamkeep.codec import MSGPACK, DecodeError, UnsupportedValueError, decode_items, encode_items
from streamkeep.codec._items import PlainFirstPairs
from streamkeep.codec._msgpack import MAX_EXT_NESTING, tuple_plain

Pair = namedtuple("Pair", "a b")

#: a typical running state per user: (events, last action, totals, this batch's counts)
STATE = (17, "click", (("buy", 3), ("view", 6)), (("buy", 1),))


def roundtrip(pairs: list[tuple[Any, Any]], **kw: Any) -> tuple[bytes, list[tuple[Any, Any]]]:
    data = encode_items(MSGPACK, pairs, **kw)
    return data, decode_items(MSGPACK, data)


def test_tuple_state_is_a_segmented_payload_and_decodes_exactly() -> None:
    pairs = [(f"u{i}", STATE) for i in range(100)] + [(("k", 1), (1.5, None, b"x", True, -(2**63), 2**64 - 1))]
    data, out = roundtrip(pairs)
    assert data[0] == 0x02  # version 1 (0x01) would hold one extension value per tuple
    assert same(out, pairs)


def test_golden_bytes() -> None:
    data = encode_items(MSGPACK, [("a", (1, "x"))])
    assert data.hex() == "029202c40792a1619201a178"  # see docs/codec-format.md
    assert same(decode_items(MSGPACK, data), [("a", (1, "x"))])


def test_runs_keep_the_order_of_mixed_pairs() -> None:
    pairs: list[tuple[Any, Any]] = [
        ("a", (1, 2)),
        ("b", [1, (2, 3)]),  # a list: version-1 segment
        ("c", ((1,), "x")),
        ("d", {"k": (1,)}),
        ("e", {4, 5}),
        ("f", 7),  # scalars fit either kind
        ("g", ()),
    ]
    data, out = roundtrip(pairs)
    assert data[0] == 0x02
    assert same(out, pairs)
    body = msgpack.unpackb(data[1:])
    assert body[0::2] == [2, 1, 2, 1, 2]  # runs: a | b | c | d, e | f, g (scalars pack natively)
    assert same(MSGPACK.decode(data), [x for kv in pairs for x in kv])


def test_no_tuples_stays_version_1() -> None:
    pairs: list[tuple[Any, Any]] = [("a", 1), ("b", [1, 2]), ("c", {"x": 1.5})]
    data, out = roundtrip(pairs)
    assert data[0] == 0x01
    assert same(out, pairs)


@pytest.mark.parametrize(
    "value",
    [
        (1, 2**64),  # a big int msgpack cannot pack natively
        ("\ud800", 1),  # a lone surrogate
        (1.0, -0.0, float("inf")),
    ],
    ids=["bigint", "surrogate", "floats"],
)
def test_values_msgpack_cannot_pack_natively_still_roundtrip(value: Any) -> None:
    pairs = [("a", value), ("b", (1, 2))]
    _, out = roundtrip(pairs)
    assert same(out, pairs)


def test_subclasses_are_refused_as_in_version_1() -> None:
    assert not tuple_plain((1, Pair(1, 2)))
    with pytest.raises(UnsupportedValueError) as info:
        encode_items(MSGPACK, [("ok", (1, 2)), ("bad", (1, Pair(1, 2)))])
    assert info.value.key_repr == "'bad'"
    assert info.value.path == "value[1]"


def test_tuple_plain() -> None:
    assert tuple_plain(STATE)
    assert tuple_plain("s") and tuple_plain(None) and tuple_plain(())
    assert not tuple_plain((1, [2]))
    assert not tuple_plain((1, frozenset({2})))
    assert not tuple_plain(1j)
    deep: Any = 1
    for _ in range(MAX_EXT_NESTING + 1):
        deep = (deep,)
    assert not tuple_plain(deep)  # too deep for version 1 too: that path gives the error


def test_too_deep_tuples_are_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_EXT_NESTING + 2):
        deep = (deep,)
    with pytest.raises(UnsupportedValueError, match="levels deep"):
        encode_items(MSGPACK, [("a", deep)])


def test_known_plain_pairs_are_not_walked_again() -> None:
    pairs = PlainFirstPairs([("a", STATE), ("b", STATE), ("c", [1, 2])], known_plain=2)
    data, out = roundtrip(pairs)
    assert data[0] == 0x02
    assert same(out, list(pairs))
    # known_plain is trusted: the first pairs are packed natively without a look
    data = encode_items(MSGPACK, [("x", (1,)), ("y", (2,))], known_plain=99)
    assert same(decode_items(MSGPACK, data), [("x", (1,)), ("y", (2,))])


def test_plain_first_pairs_keep_their_hint_through_pickle() -> None:
    pairs = PlainFirstPairs([("a", STATE)], known_plain=1)
    back = pickle.loads(pickle.dumps(pairs))
    assert type(back) is PlainFirstPairs
    assert back == pairs
    assert back.known_plain == 1


def test_version_1_items_of_tuples_still_decode() -> None:
    pairs = [("u1", STATE), (("k", 2), (1,))]
    old = MSGPACK.encode([x for kv in pairs for x in kv])  # what earlier builds wrote
    assert old[0] == 0x01
    assert same(decode_items(MSGPACK, old), pairs)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (msgpack.packb(1), "must hold an array"),
        (msgpack.packb([2]), "must hold an array"),
        (msgpack.packb([2, "x"]), "holds str, not bytes"),
        (msgpack.packb([9, msgpack.packb([1, 2])]), "unknown segment kind 9"),
        (msgpack.packb([2, msgpack.packb(1)]), "is not an array"),
        (msgpack.packb([1, msgpack.packb(1)]), "is not an array"),
        (msgpack.packb([2, msgpack.packb([msgpack.ExtType(2, msgpack.packb([1]))])]), "holds extension type 2"),
        (msgpack.packb([2, msgpack.packb([1, 2])])[:-1], "truncated|cannot decode"),
    ],
    ids=["not-array", "odd", "not-bytes", "unknown-kind", "tuple-not-array", "ext-not-array", "ext-in-tuples", "truncated"],
)
def test_corrupt_segmented_payloads_are_decode_errors(body: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        MSGPACK.decode(b"\x02" + body)
