"""Property tests: random nested values round-trip exactly through the codecs, types included."""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamkeep.codec import MSGPACK, decode_items, encode_items, get_codec

PICKLE = get_codec("pickle")
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """True if ``a`` and ``b`` are equal *and* of the same types all the way down.

    Python's ``==`` is too lenient here: ``1 == 1.0 == True``, ``(1,) != [1]`` only by
    type, ``0.0 == -0.0``, ``Decimal("1.0") == Decimal("1.00")``, and ``nan != nan``.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal):
        return a.compare_total(b) == 0
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, (datetime, time)):
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and (a.tzinfo is None) == (b.tzinfo is None)
            and a.utcoffset() == b.utcoffset()
        )
    return bool(a == b)


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
