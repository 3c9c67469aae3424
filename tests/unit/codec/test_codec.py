"""Unit tests for streamkeep.codec: every supported type, every error, the items helpers."""

from __future__ import annotations

import gc
import json
import math
import pickle
import random
import threading
from collections import OrderedDict, namedtuple
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from enum import IntEnum
from typing import Any

import msgpack
import pytest
from _strict import same

import streamkeep.codec as codec_pkg
from streamkeep.codec import (
    MSGPACK,
    Codec,
    DecodeError,
    UnsupportedValueError,
    decode_items,
    encode_items,
    get_codec,
)
from streamkeep.codec._msgpack import MAX_EXT_NESTING
from streamkeep.errors import ConfigError, StreamkeepError

PICKLE = get_codec("pickle")


# -- a type-strict equality (1 == 1.0 == True in Python; nan != nan) -------------------




def roundtrip(value: Any, codec: Codec = MSGPACK) -> Any:
    return codec.decode(codec.encode(value))


def test_same_is_strict() -> None:
    assert not same(1, True)
    assert not same(1, 1.0)
    assert not same((1,), [1])
    assert not same({1: "a"}, {True: "a"})
    assert not same(0.0, -0.0)
    assert not same(Decimal("1.0"), Decimal("1.00"))
    assert same(float("nan"), float("nan"))


# -- public API -----------------------------------------------------------------------


def test_public_api() -> None:
    assert sorted(codec_pkg.__all__) == sorted(
        ["MSGPACK", "Codec", "DecodeError", "UnsupportedValueError", "decode_items", "encode_items", "get_codec"]
    )
    for name in ("Codec", "DecodeError", "UnsupportedValueError", "decode_items", "encode_items", "get_codec"):
        assert getattr(codec_pkg, name).__module__ == "streamkeep.codec"


def test_codecs_satisfy_protocol() -> None:
    assert isinstance(MSGPACK, Codec)
    assert isinstance(PICKLE, Codec)
    assert MSGPACK.name == "msgpack"
    assert PICKLE.name == "pickle"


def test_get_codec() -> None:
    assert get_codec() is MSGPACK
    assert get_codec("msgpack") is MSGPACK
    assert get_codec("pickle") is PICKLE


@pytest.mark.parametrize("name", ["json", "MSGPACK", "", "cloudpickle"])
def test_get_codec_unknown_lists_known(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        get_codec(name)
    message = str(info.value)
    assert repr(name) in message
    assert "'msgpack'" in message
    assert "'pickle'" in message
    assert isinstance(info.value, ValueError)


def test_error_classes() -> None:
    assert issubclass(UnsupportedValueError, TypeError)
    assert issubclass(UnsupportedValueError, StreamkeepError)
    assert issubclass(DecodeError, ValueError)
    assert issubclass(DecodeError, StreamkeepError)


# -- msgpack: every supported type round-trips exactly ---------------------------------

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,  # first int past msgpack's uint64
    -(2**63) - 1,  # first int past msgpack's int64
    10**100,
    -(10**100),
    0.0,
    -0.0,
    1.5,
    1e308,
    5e-324,
    float("inf"),
    float("-inf"),
    "",
    "text",
    "ünïcødé ✓ 🚀",
    "\ud800 lone surrogate",
    "\udfff",
    b"",
    b"\x00\xff bytes",
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalars_roundtrip(value: Any) -> None:
    assert same(roundtrip(value), value)


def test_nan_roundtrips() -> None:
    out = roundtrip(float("nan"))
    assert type(out) is float
    assert math.isnan(out)


def test_bool_stays_bool() -> None:
    out = roundtrip([True, 1, False, 0, {True: 1}, {1: True}])
    assert [type(x) for x in out[:4]] == [bool, int, bool, int]
    assert type(next(iter(out[4]))) is bool
    assert type(next(iter(out[5]))) is int
    assert type(out[5][1]) is bool


@pytest.mark.parametrize("value", [bytearray(b"abc"), memoryview(b"abc")], ids=repr)
def test_bytes_like_decode_as_bytes(value: Any) -> None:
    out = roundtrip(value)
    assert type(out) is bytes
    assert out == b"abc"


CONTAINERS = [
    [],
    (),
    {},
    set(),
    frozenset(),
    [1, "a", None],
    (1,),
    (1, (2, (3, ())), [4, (5,)]),
    [(1, 2), [(3,)]],
    {"a": 1, "b": [1, 2], "c": {"d": (1, 2)}},
    {1: "int key", -5: "negative", 2**70: "bigint key", 1.5: "float key", None: "none key", b"k": "bytes key"},
    {(1, "a"): "tuple key", ((1, 2), (3,)): "nested tuple key", (): "empty tuple key"},
    {frozenset({1, 2}): "frozenset key", date(2024, 1, 1): "date key", Decimal("1.5"): "decimal key"},
    {1, 2, 3},
    {"a", (1, 2), frozenset({3})},
    frozenset({1, (2, 3)}),
    [{1, 2}, frozenset({3})],
    {"z": 1, "a": 2, "m": 3},  # insertion order is kept
]


@pytest.mark.parametrize("value", CONTAINERS, ids=repr)
def test_containers_roundtrip(value: Any) -> None:
    out = roundtrip(value)
    assert same(out, value)
    if isinstance(value, dict):
        assert list(out) == list(value)


def test_tuple_dict_keys_are_tuples() -> None:
    out = roundtrip({("user", 1): 10})
    (key,) = out
    assert type(key) is tuple
    assert out[("user", 1)] == 10


UTC = timezone.utc
IST = timezone(timedelta(hours=5, minutes=30))
WEIRD = timezone(timedelta(hours=-3, seconds=7, microseconds=11))

TIMES = [
    datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=IST),
    datetime(2024, 1, 2, 3, 4, 5, tzinfo=WEIRD),
    datetime(2024, 11, 3, 1, 30, fold=1),
    date(2024, 1, 2),
    date(1, 1, 1),
    date(9999, 12, 31),
    time(),
    time(23, 59, 59, 999999),
    time(1, 2, 3, tzinfo=UTC),
    time(1, 2, 3, 4, tzinfo=WEIRD),
    time(1, 30, fold=1),
    timedelta(),
    timedelta(days=-1),
    timedelta(days=3, seconds=4, microseconds=5),
    timedelta.max,
    timedelta.min,
    timedelta(microseconds=-1),
]


@pytest.mark.parametrize("value", TIMES, ids=repr)
def test_times_roundtrip(value: Any) -> None:
    assert same(roundtrip(value), value)


def test_utc_decodes_to_the_utc_singleton() -> None:
    assert roundtrip(datetime(2024, 1, 1, tzinfo=UTC)).tzinfo is UTC


def test_tzinfo_becomes_fixed_offset() -> None:
    named = timezone(timedelta(hours=1), "CET")
    out = roundtrip(datetime(2024, 1, 1, 12, tzinfo=named))
    assert out.utcoffset() == timedelta(hours=1)
    assert out.tzinfo == timezone(timedelta(hours=1))  # the name is not kept


class _Summer(tzinfo):
    """A user tzinfo with a DST-like rule: only the offset at that instant is kept."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=2)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def tzname(self, dt: datetime | None) -> str:
        return "SUMMER"


def test_custom_tzinfo_kept_as_its_offset() -> None:
    value = datetime(2024, 7, 1, 12, tzinfo=_Summer())
    out = roundtrip(value)
    assert type(out.tzinfo) is timezone
    assert out == value  # same instant
    assert out.utcoffset() == timedelta(hours=2)


class _NoOffset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> None:
        return None


@pytest.mark.parametrize("value", [datetime(2024, 1, 1, tzinfo=_NoOffset()), time(1, tzinfo=_NoOffset())], ids=repr)
def test_tzinfo_without_offset_is_unsupported(value: Any) -> None:
    with pytest.raises(UnsupportedValueError) as info:
        MSGPACK.encode({"t": value})
    assert info.value.path == "value['t']"
    assert "UTC offset" in str(info.value)


DECIMALS = ["0", "-0", "1.00", "1E+5", "1.00E+5", "-123.456e-30", "NaN", "-NaN", "sNaN", "NaN123", "Infinity", "-Infinity", "1" * 80]


@pytest.mark.parametrize("text", DECIMALS)
def test_decimal_roundtrip_exact(text: str) -> None:
    value = Decimal(text)
    out = roundtrip(value)
    assert type(out) is Decimal
    assert out.compare_total(value) == 0
    assert str(out) == str(value)


def nest_plain(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


def test_plain_nesting_up_to_msgpacks_limit_roundtrips() -> None:
    data = MSGPACK.encode(nest_plain(1024))
    assert MSGPACK.encode(MSGPACK.decode(data)) == data  # == itself would hit Python's recursion limit


@pytest.mark.parametrize("value", [nest_plain(1025), (nest_plain(1024),), nest_plain(20_000)], ids=["1025", "1024-in-tuple", "20000"])
def test_plain_nesting_past_msgpacks_limit_is_refused_on_encode(value: Any) -> None:
    """Whatever encodes must decode: msgpack's unpacker stops at 1,024 levels."""
    with pytest.raises(UnsupportedValueError, match="nested too deeply"):
        MSGPACK.encode(value)


def nest_ext(levels: int) -> Any:
    """``levels`` extension values inside each other: tuples, frozensets, then a date."""
    value: Any = date(2024, 1, 1)
    for i in range(levels - 1):
        value = (value, i) if i % 3 else frozenset({value})
    return value


def test_extension_nesting_up_to_the_limit_roundtrips() -> None:
    value = {"deep": [nest_ext(MAX_EXT_NESTING)]}
    assert same(roundtrip(value), value)


def test_extension_nesting_past_the_limit_is_unsupported() -> None:
    with pytest.raises(UnsupportedValueError, match=f"more than {MAX_EXT_NESTING} levels"):
        MSGPACK.encode([nest_ext(MAX_EXT_NESTING + 1)])


def test_extension_nesting_limit_decodes_on_a_small_thread_stack() -> None:
    value = [nest_ext(MAX_EXT_NESTING)]
    data = MSGPACK.encode(value)
    results: list[Any] = []
    old_size = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=lambda: results.append(MSGPACK.decode(data)))
        thread.start()
    finally:
        threading.stack_size(old_size)
    thread.join()
    assert same(results, [value])


@pytest.mark.parametrize("levels", [MAX_EXT_NESTING + 1, 10_000])
def test_decode_deeply_nested_extensions_fails_cleanly(levels: int) -> None:
    """A crafted payload must not overflow the C stack (msgpack.unpackb keeps ~40 KB there)."""
    body = msgpack.packb(None)
    for _ in range(levels):
        body = msgpack.packb(msgpack.ExtType(2, b"\x91" + body))
    with pytest.raises(DecodeError, match=f"more than {MAX_EXT_NESTING} levels"):
        MSGPACK.decode(b"\x01" + body)


def test_payload_starts_with_version_byte() -> None:
    assert MSGPACK.encode(None)[0] == 0x01
    assert MSGPACK.encode({"a": [1, 2]})[0] == 0x01
    assert PICKLE.encode(None)[0] == 0x81


def test_format_is_stable() -> None:
    """Golden bytes (see docs/codec-format.md): a change here breaks every existing checkpoint."""
    value = [None, True, 1, 2**64, 1.5, "s", b"b", (1,), {2}, frozenset({3}), {"k": 4}]
    value += [datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=IST), date(2024, 1, 2), time(3, 4), timedelta(1, 2, 3), Decimal("1.50")]
    golden = (
        "01"  # format version 1
        "dc0010"  # array of 16
        "c0" "c3" "01"  # None, True, 1
        "c709" "01" "010000000000000000"  # ext 1 (bigint), 9 bytes: 2**64
        "cb3ff8000000000000"  # 1.5
        "a173" "c40162"  # "s", b"b"
        "d502" "9101"  # ext 2 (tuple): [1]
        "d503" "9102"  # ext 3 (set): [2]
        "d504" "9103"  # ext 4 (frozenset): [3]
        "81a16b04"  # {"k": 4}
        "c714" "05" "99cd07e8010203040506" "00" "cf000000049c2c0600"  # ext 5 (datetime), offset 19800 s in us
        "c706" "06" "93cd07e80102"  # ext 6 (date)
        "c707" "07" "960304000000c0"  # ext 7 (time), naive
        "d608" "93010203"  # ext 8 (timedelta)
        "d609" "312e3530"  # ext 9 (Decimal): "1.50"
    )  # fmt: skip
    assert MSGPACK.encode(value).hex() == golden
    assert same(MSGPACK.decode(bytes.fromhex(golden)), value)


# -- msgpack: unsupported values ---------------------------------------------------------


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __repr__(self) -> str:
        return f"Point({self.x})"


class Color(IntEnum):
    RED = 1


Pair = namedtuple("Pair", "a b")


@pytest.mark.parametrize(
    ("value", "path", "type_name"),
    [
        (Point(1), "value", "test_codec.Point"),
        ([1, 2, Point(1)], "value[2]", "test_codec.Point"),
        ({"a": [1, {"b": Point(1)}]}, "value['a'][1]['b']", "test_codec.Point"),
        ((1, (2, Point(1))), "value[1][1]", "test_codec.Point"),
        ({"a": {Point(1): 1}}, "list(value['a'].keys())[0]", "test_codec.Point"),
        ({"s": frozenset({Point(1)})}, "list(value['s'])[0]", "test_codec.Point"),
        ({1: lambda: 1}, "value[1]", "function"),
        ([len], "value[0]", "builtin_function_or_method"),
        ([object()], "value[0]", "object"),
        ([1 + 2j], "value[0]", "complex"),
        ([Color.RED], "value[0]", "test_codec.Color"),
        ([Pair(1, 2)], "value[0]", "test_codec.Pair"),
        ([OrderedDict(a=1)], "value[0]", "collections.OrderedDict"),
        ({"r": range(3)}, "value['r']", "range"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_unsupported_names_path_and_type(value: Any, path: str, type_name: str) -> None:
    with pytest.raises(UnsupportedValueError) as info:
        MSGPACK.encode(value)
    err = info.value
    assert err.path == path
    assert err.type_name.endswith(type_name)
    assert err.key_repr is None
    message = str(err)
    assert path in message
    assert "convert it to plain data, or opt in to codec='pickle' on the operator or context" in message


def test_unsupported_subclass_explains_conversion() -> None:
    with pytest.raises(UnsupportedValueError, match=r"subclass of int.*int\(x\)"):
        MSGPACK.encode([Color.RED])
    with pytest.raises(UnsupportedValueError, match="subclass of tuple"):
        MSGPACK.encode(Pair(1, 2))


def test_unsupported_user_repr_that_raises() -> None:
    class Bad:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(UnsupportedValueError, match="repr failed"):
        MSGPACK.encode([Bad()])


def test_reference_cycle_is_unsupported() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(UnsupportedValueError, match="reference cycle") as info:
        MSGPACK.encode({"x": cyclic})
    assert info.value.path == "value['x'][1]"


def test_unsupported_error_pickles() -> None:
    with pytest.raises(UnsupportedValueError) as info:
        MSGPACK.encode([Point(1)])
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is UnsupportedValueError
    assert (copy.path, copy.type_name, str(copy)) == (info.value.path, info.value.type_name, str(info.value))


# -- msgpack: decoding errors --------------------------------------------------------------


def test_decode_empty() -> None:
    with pytest.raises(DecodeError, match="empty payload"):
        MSGPACK.decode(b"")


@pytest.mark.parametrize("version", [0x00, 0x03, 0x7F, 0xFF])
def test_decode_unknown_version(version: int) -> None:
    data = bytes([version]) + msgpack.packb(1)
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(data)
    message = str(info.value)
    assert f"version {version}" in message
    assert "reads versions 1 (0x01), 2 (0x02) only" in message


def test_decode_other_codecs_payload() -> None:
    with pytest.raises(DecodeError, match=r"written by the pickle codec.*get_codec\('pickle'\)"):
        MSGPACK.decode(PICKLE.encode([1]))
    with pytest.raises(DecodeError, match=r"written by the msgpack codec.*get_codec\('msgpack'\)"):
        PICKLE.decode(MSGPACK.encode([1]))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01", "truncated"),
        (b"\x01\x92\x01", "truncated"),
        (b"\x01\x01\x02", "trailing bytes"),
        (b"\x01\xc1", "invalid msgpack"),
        (b"\x01\xd4\x63\x00", "unknown msgpack extension type 99"),
        (b"\x01\xd4\xfe\x00", "unknown msgpack extension type -2"),
        (b"\x01\xd4\x02\x01", "extension type 2 must hold an array"),
        (b"\x01\xd4\x05\x90", "extension type 5 must hold 9 fields"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(6, msgpack.packb([2024, 13, 1]))), "month must be in 1..12"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(9, b"not a number")), "InvalidOperation"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(9, b"\xff")), "UnicodeDecodeError"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(3, msgpack.packb([[1]]))), "unhashable"),
        (b"\x01\x81\x91\x01\x02", "unhashable"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(5, msgpack.packb([2024, 1, 1, 0, 0, 0, 0, 0, "x"]))), "UTC offset"),
        (b"\x01" + msgpack.packb(msgpack.ExtType(5, msgpack.packb([2024, 1, 1, 0, 0, 0, 0, 0, 86400 * 10**6]))), "ValueError"),
    ],
    ids=repr,
)
def test_decode_corrupt(data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as info:
        MSGPACK.decode(data)
    assert f"payload of {len(data)} bytes" in str(info.value)


def test_decode_too_deep() -> None:
    data = b"\x01" + b"\x91" * 5000 + b"\xc0"
    with pytest.raises(DecodeError, match="nested too deeply"):
        MSGPACK.decode(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="only decode bytes"):
        MSGPACK.decode("\x01\xc0")  # type: ignore[arg-type]


def test_decode_accepts_bytes_like() -> None:
    data = MSGPACK.encode({"a": (1, 2)})
    assert MSGPACK.decode(bytearray(data)) == {"a": (1, 2)}
    assert MSGPACK.decode(memoryview(data)) == {"a": (1, 2)}


def test_decode_foreign_timestamp_is_utc_datetime() -> None:
    data = b"\x01" + msgpack.packb(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), datetime=True)
    assert same(MSGPACK.decode(data), datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_decode_fuzz_raises_only_decode_error() -> None:
    """Random corruption of valid payloads never lets a raw msgpack/builtin error escape."""
    rng = random.Random(1234)
    sample = [1, -(2**70), "s", b"b", (1, (2,)), {3}, frozenset({4}), {"k": [1.5, None]}, {(1, 2): True}]
    sample += [datetime(2024, 1, 2, tzinfo=IST), date(2024, 1, 2), time(1, 2), timedelta(3), Decimal("2.5")]
    good = MSGPACK.encode(sample)
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            if len(data) < 2:
                break
            op = rng.random()
            pos = rng.randrange(1, len(data))
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.75:
                del data[pos:]
            else:
                data.insert(pos, rng.randrange(256))
        if len(data) <= 1:
            continue
        try:
            MSGPACK.decode(bytes(data))
        except DecodeError:
            pass


def test_decoding_never_runs_code() -> None:
    calls: list[str] = []

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (calls.append, ("ran",))

    evil = b"\x01" + pickle.dumps(Evil(), protocol=5)
    with pytest.raises(DecodeError):
        MSGPACK.decode(evil)
    assert calls == []


# -- pickle codec --------------------------------------------------------------------------


def test_pickle_roundtrips_arbitrary_objects() -> None:
    value = {"p": Point(3), "c": 1 + 2j, "o": OrderedDict(a=1), "e": Color.RED, "n": Pair(1, 2)}
    out = roundtrip(value, PICKLE)
    assert out["p"].x == 3
    assert type(out["o"]) is OrderedDict
    assert out["e"] is Color.RED
    assert type(out["n"]) is Pair


@pytest.mark.parametrize("value", SCALARS + CONTAINERS + TIMES, ids=repr)
def test_pickle_roundtrips_plain_data(value: Any) -> None:
    assert same(roundtrip(value, PICKLE), value)


def test_pickle_unsupported_names_path() -> None:
    with pytest.raises(UnsupportedValueError) as info:
        PICKLE.encode({"a": [1, lambda: 1]})
    assert info.value.path == "value['a'][1]"
    assert info.value.type_name == "function"
    assert "picklable" in str(info.value)


def test_pickle_decode_errors() -> None:
    with pytest.raises(DecodeError, match="empty payload"):
        PICKLE.decode(b"")
    with pytest.raises(DecodeError, match="version 3"):
        PICKLE.decode(b"\x03abc")
    with pytest.raises(DecodeError, match=r"written by the msgpack codec \(version byte 0x02\)"):
        PICKLE.decode(b"\x02abc")
    with pytest.raises(DecodeError, match="cannot decode a pickle payload"):
        PICKLE.decode(b"\x81garbage")
    with pytest.raises(DecodeError, match="cannot decode a pickle payload"):
        PICKLE.decode(PICKLE.encode([1, 2])[:-3])


def test_pickle_decode_missing_class() -> None:
    data = PICKLE.encode(Point(1)).replace(b"Point", b"Pxint")
    with pytest.raises(DecodeError, match="Pxint"):
        PICKLE.decode(data)


# -- encode_items / decode_items -------------------------------------------------------------


@pytest.mark.parametrize("codec", [MSGPACK, PICKLE], ids=lambda c: c.name)
def test_items_roundtrip(codec: Codec) -> None:
    pairs = [("a", 1), (("b", 2), [3, (4,)]), (5, {"x": None}), (frozenset({1}), {2}), (True, 1.5), (1, True)]
    out = decode_items(codec, encode_items(codec, pairs))
    assert same(out, pairs)


@pytest.mark.parametrize("codec", [MSGPACK, PICKLE], ids=lambda c: c.name)
def test_items_empty(codec: Codec) -> None:
    assert decode_items(codec, encode_items(codec, [])) == []


def test_items_accepts_iterables() -> None:
    state = {"a": 1, "b": 2}
    expected = [("a", 1), ("b", 2)]
    assert decode_items(MSGPACK, encode_items(MSGPACK, state.items())) == expected
    assert decode_items(MSGPACK, encode_items(MSGPACK, (p for p in expected))) == expected
    assert decode_items(MSGPACK, encode_items(MSGPACK, [["a", 1], ["b", 2]])) == expected


def test_items_payload_is_a_flat_list() -> None:
    data = encode_items(MSGPACK, [("a", 1), ("b", (2,))])
    assert MSGPACK.decode(data) == ["a", 1, "b", (2,)]


def test_items_rejects_mapping() -> None:
    with pytest.raises(TypeError, match=r"mapping.items\(\)"):
        encode_items(MSGPACK, {"ab": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [("a", 1, 2), ("a",), "ab", 5, None, {"a", 1}])
def test_items_rejects_non_pairs(bad: Any) -> None:
    with pytest.raises(TypeError, match="item 1 is"):
        encode_items(MSGPACK, [("ok", 1), bad, ("ok", 2)])


@pytest.mark.parametrize("codec", [MSGPACK, PICKLE], ids=lambda c: c.name)
@pytest.mark.parametrize("position", [0, 1, 31, 32, 33, 999, 4999])
def test_items_unsupported_value_names_key(codec: Codec, position: int) -> None:
    pairs: list[tuple[Any, Any]] = [(f"key-{i}", {"n": i}) for i in range(5000)]
    pairs[position] = (f"key-{position}", {"n": [1, lambda: 0]})
    pairs[-1] = ("later", lambda: 0)  # only the first bad pair is reported
    if position == 4999:
        pairs[-1] = (f"key-{position}", {"n": [1, lambda: 0]})
    with pytest.raises(UnsupportedValueError) as info:
        encode_items(codec, pairs)
    err = info.value
    assert err.key_repr == repr(f"key-{position}")
    assert err.path == "value['n'][1]"
    assert err.type_name == "function"
    assert f"for key 'key-{position}'" in str(err)


def test_items_unsupported_key() -> None:
    with pytest.raises(UnsupportedValueError) as info:
        encode_items(MSGPACK, [("a", 1), (("t", Point(2)), 2)])
    assert info.value.path == "key[1]"
    assert info.value.key_repr == "('t', Point(2))"


def test_items_key_repr_is_truncated() -> None:
    key = "k" * 500
    with pytest.raises(UnsupportedValueError) as info:
        encode_items(MSGPACK, [(key, Point(1))])
    assert info.value.key_repr is not None
    assert len(info.value.key_repr) <= 60
    assert info.value.key_repr.endswith("...")
    assert key not in str(info.value)


class JsonCodec:
    """A third-party codec: encode_items works with any Codec."""

    name = "json"

    def encode(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj).encode()
        except TypeError as exc:
            raise UnsupportedValueError(str(exc), path="value", type_name="?") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc


def test_items_with_third_party_codec() -> None:
    codec = JsonCodec()
    assert isinstance(codec, Codec)
    assert decode_items(codec, encode_items(codec, [("a", 1), ("b", [2])])) == [("a", 1), ("b", [2])]
    with pytest.raises(UnsupportedValueError) as info:
        encode_items(codec, [("a", 1), ("b", Point(1))])
    assert info.value.key_repr == "'b'"
    assert info.value.path == "value"


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2, 3], "x", None])
def test_decode_items_rejects_other_payloads(value: Any) -> None:
    with pytest.raises(DecodeError, match="not an items payload"):
        decode_items(MSGPACK, MSGPACK.encode(value))


def test_decode_items_corrupt() -> None:
    with pytest.raises(DecodeError):
        decode_items(MSGPACK, b"\x01\x92\x01")


@pytest.mark.parametrize("was_enabled", [True, False])
def test_decode_items_restores_gc_state(was_enabled: bool) -> None:
    data = encode_items(MSGPACK, [(f"k{i}", i) for i in range(20_000)])  # large enough to pause the GC
    assert len(data) > 64 * 1024
    initially = gc.isenabled()
    try:
        if was_enabled:
            gc.enable()
        else:
            gc.disable()
        decode_items(MSGPACK, data)
        assert gc.isenabled() is was_enabled
        with pytest.raises(DecodeError):
            decode_items(MSGPACK, data[:-1])
        assert gc.isenabled() is was_enabled
    finally:
        if initially:
            gc.enable()
        else:
            gc.disable()


def test_internal_signals_are_not_chained() -> None:
    with pytest.raises(UnsupportedValueError) as info:
        MSGPACK.encode([Point(1)])
    assert info.value.__cause__ is None
    with pytest.raises(UnsupportedValueError) as info:
        encode_items(MSGPACK, [("k", Point(1))])
    assert info.value.__cause__ is None
