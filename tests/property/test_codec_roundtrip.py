"""Property tests: random nested values round-trip exactly through the codecs, types included."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

from _strict import same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkeep.codec import MSGPACK, decode_items, encode_items, get_codec
from streamkeep.codec._items import PlainFirstPairs
from streamkeep.codec._msgpack import tuple_plain

PICKLE = get_codec("pickle")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])




# Fixed offsets strictly inside +-24 h, down to the microsecond (timezone() allows that).
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
tzinfos = st.one_of(st.none(), st.just(timezone.utc), offsets.map(timezone))

# Strings include lone surrogates, which strict UTF-8 cannot encode.
texts = st.one_of(st.text(max_size=20), st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3))

hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=20),
    st.datetimes(timezones=tzinfos, allow_imaginary=True),
    st.dates(),
    st.times(timezones=tzinfos),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=True),  # a signalling NaN is not hashable
)
scalars = st.one_of(hashable_scalars, st.decimals(allow_nan=True, allow_infinity=True))

hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.frozensets(inner, max_size=4),
    ),
    max_leaves=10,
)

values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=30,
)


@SETTINGS
@given(values)
def test_msgpack_roundtrip_is_exact(value: Any) -> None:
    data = MSGPACK.encode(value)
    assert data[0] == 0x01
    out = MSGPACK.decode(data)
    assert same(out, value), (value, out)


@SETTINGS
@given(values)
def test_pickle_roundtrip_is_exact(value: Any) -> None:
    assert same(PICKLE.decode(PICKLE.encode(value)), value)


@SETTINGS
@given(st.lists(st.tuples(hashables, values), max_size=20))
def test_items_roundtrip_is_exact(pairs: list[tuple[Any, Any]]) -> None:
    for codec in (MSGPACK, PICKLE):
        out = decode_items(codec, encode_items(codec, pairs))
        assert same(out, pairs), (pairs, out)


plain_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts, st.binary(max_size=20))
# Mostly tuples of scalars (segmented payloads), with now and then a value that is not (lists, sets, big ints).
tuple_trees = st.recursive(plain_scalars, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=12)


@SETTINGS
@given(st.lists(st.tuples(st.one_of(plain_scalars, tuple_trees, hashables), st.one_of(tuple_trees, values)), max_size=20))
def test_segmented_items_roundtrip_is_exact(pairs: list[tuple[Any, Any]]) -> None:
    out = decode_items(MSGPACK, encode_items(MSGPACK, pairs))
    assert same(out, pairs), (pairs, out)
    # a runtime's hint: the pairs it checked first
    checked = [kv for kv in pairs if tuple_plain(kv[0]) and tuple_plain(kv[1])]
    hinted = PlainFirstPairs(checked + [kv for kv in pairs if not (tuple_plain(kv[0]) and tuple_plain(kv[1]))], len(checked))
    out = decode_items(MSGPACK, encode_items(MSGPACK, hinted))
    assert same(out, list(hinted)), (hinted, out)
