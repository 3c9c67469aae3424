"""The msgpack codec: the default, stable, type-preserving codec for checkpoint data.

Owns: the msgpack payload format version 1 (a version byte, then one msgpack
object) and its extension types, documented in ``docs/codec-format.md``.
Decoding never executes code: it only builds builtins, datetime and Decimal
values (and Arrow tables, through pyarrow, imported only when a payload holds one).
Depends on the ``msgpack`` library; of streamkeep it imports only
``streamkeep.errors``, ``streamkeep._types`` (through ``codec._base``) and the leaf
``streamkeep._arrow``, and must not import any other streamkeep module.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import msgpack

from streamkeep._arrow import ipc_bytes, ipc_table, is_table
from streamkeep.codec._base import (
    MSGPACK_SEGMENTS_VERSION,
    MSGPACK_VERSION,
    DecodeError,
    EncodeFailed,
    UnsupportedValueError,
    check_version,
    find_problem,
    short_repr,
    type_name,
    unsupported_error,
)
from streamkeep.errors import ConfigError

__all__ = ["MSGPACK", "MsgpackCodec"]

# Extension type codes of format version 1. Never renumber: checkpoints hold them.
EXT_BIGINT: Final = 1  # int outside [-2**63, 2**64 - 1]: big-endian two's complement
EXT_TUPLE: Final = 2  # tuple: a msgpack array of the items
EXT_SET: Final = 3  # set: a msgpack array of the elements
EXT_FROZENSET: Final = 4  # frozenset: a msgpack array of the elements
EXT_DATETIME: Final = 5  # [year, month, day, hour, minute, second, us, fold, offset_us|nil]
EXT_DATE: Final = 6  # [year, month, day]
EXT_TIME: Final = 7  # [hour, minute, second, us, fold, offset_us|nil]
EXT_TIMEDELTA: Final = 8  # [days, seconds, microseconds]
EXT_DECIMAL: Final = 9  # str(decimal) as ASCII
EXT_ARROW: Final = 10  # pyarrow.Table / RecordBatch: Arrow IPC stream bytes (decodes as a Table; needs pyarrow)

#: Extension values (tuple, set, frozenset, datetime, ...) nest at most this deep.
#: Checked on encode and decode; it also bounds the C stack a payload can make decode use.
MAX_EXT_NESTING: Final = 64
# Nested extension payloads up to this depth (a tuple in a tuple key) are decoded with
# msgpack.unpackb, which keeps a ~40 KB parse stack on the C stack; deeper ones use a
# heap-allocated Unpacker. Measured: a 64-level payload then decodes in a thread with a
# 256 KB stack (192 KB with depth 1, 384 KB with depth 4).
_FAST_UNPACK_DEPTH: Final = 2

_VERSION_PREFIX: Final = bytes((MSGPACK_VERSION,))
_SEGMENTS_PREFIX: Final = bytes((MSGPACK_SEGMENTS_VERSION,))
#: Segment kinds of a segmented list payload (format version 2); never renumber.
SEGMENT_EXT: Final = 1  # a version-1 body (extension types allowed): an array of items
SEGMENT_TUPLES: Final = 2  # plain msgpack, no extension types: an array of items, every nested array a tuple
# Exact types a tuple segment holds besides tuples (msgpack packs them natively).
_TUPLE_SEGMENT_SCALARS: Final[frozenset[type]] = frozenset({str, int, float, bytes, bool, type(None)})
_ONE_US: Final = timedelta(microseconds=1)

ADVICE: Final = "convert it to plain data, or opt in to codec='pickle' on the operator or context"
_SUPPORTED: Final = (
    "None, bool, int, float, str, bytes, bytearray, list, tuple, dict, set, frozenset, datetime, date, time, timedelta and Decimal"
)
# Exact types the msgpack library packs natively (strict_types=True) or our hook handles.
_NATIVE: Final[frozenset[type]] = frozenset({type(None), bool, int, float, str, bytes, bytearray, memoryview})
_EXTENDED: Final[frozenset[type]] = frozenset({tuple, set, frozenset, datetime, date, time, timedelta, Decimal})


def _offset_us(value: datetime | time) -> int | None:
    offset = value.utcoffset()
    if offset is None:
        if value.tzinfo is not None:
            raise _Unsupported(value)
        return None
    return offset // _ONE_US


class _Unsupported(Exception):  # internal signal raised from the pack hook
    def __init__(self, obj: object) -> None:
        super().__init__(type_name(type(obj)))
        self.obj = obj


class _TooDeep(Exception):  # internal signal: more than MAX_EXT_NESTING extension levels
    pass


class _HasTuple(Exception):  # internal signal: a probing encoder met a tuple
    pass


_new_tuple = tuple.__new__
_ExtType: Final = msgpack.ExtType


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    # ExtType(code, data) validates in Python (~0.5 us); our codes and data are valid.
    return _new_tuple(_ExtType, (code, data))


class _Encoder:
    """Packs one value with streamkeep's extension types; one instance per ``encode`` call.

    A ``msgpack.Packer`` is not reentrant, so each nesting level of extension
    values (a tuple inside a tuple) gets its own, reused for all values at that
    level: 1M tuple keys cost ~0.4 s instead of ~1 s with a Packer per tuple.
    Call :meth:`close` when done (it breaks the encoder <-> packer cycle).
    """

    __slots__ = ("_depth", "_packers", "_probe", "_unicode_errors")

    def __init__(self, unicode_errors: str | None, probe: bool = False) -> None:
        self._unicode_errors = unicode_errors
        self._packers: list[Any] = []
        self._depth = 0
        self._probe = probe  # raise _HasTuple at the first tuple

    def close(self) -> None:
        self._packers.clear()

    def pack(self, obj: object) -> bytes:
        depth = self._depth
        if depth > MAX_EXT_NESTING:
            raise _TooDeep
        if depth == len(self._packers):
            self._packers.append(
                msgpack.Packer(
                    default=self._default,
                    use_bin_type=True,
                    # exact types only: subclasses (IntEnum, namedtuple, OrderedDict) reach _default
                    strict_types=True,
                    datetime=False,
                    unicode_errors=self._unicode_errors,
                )
            )
        self._depth = depth + 1
        try:
            return self._packers[depth].pack(obj)  # type: ignore[no-any-return]
        finally:
            self._depth = depth

    def _default(self, obj: Any) -> msgpack.ExtType:
        tp = type(obj)
        if tp is tuple:
            if self._probe:
                raise _HasTuple
            return _ext(EXT_TUPLE, self.pack(list(obj)))
        if tp is int:  # only ints msgpack cannot hold natively get here
            return _ext(EXT_BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
        if tp is datetime:
            fields = [
                obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second,
                obj.microsecond, obj.fold, _offset_us(obj),
            ]  # fmt: skip
            return _ext(EXT_DATETIME, self.pack(fields))
        if tp is set:
            return _ext(EXT_SET, self.pack(list(obj)))
        if tp is frozenset:
            return _ext(EXT_FROZENSET, self.pack(list(obj)))
        if tp is date:
            return _ext(EXT_DATE, self.pack([obj.year, obj.month, obj.day]))
        if tp is time:
            fields = [obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, _offset_us(obj)]
            return _ext(EXT_TIME, self.pack(fields))
        if tp is timedelta:
            return _ext(EXT_TIMEDELTA, self.pack([obj.days, obj.seconds, obj.microseconds]))
        if tp is Decimal:
            return _ext(EXT_DECIMAL, str(obj).encode("ascii"))
        if is_table(obj):
            return _ext(EXT_ARROW, ipc_bytes(obj))
        raise _Unsupported(obj)


def _pack(obj: object, unicode_errors: str | None, probe: bool = False) -> bytes:
    encoder = _Encoder(unicode_errors, probe)
    try:
        return encoder.pack(obj)
    finally:
        encoder.close()


_unpackb = msgpack.unpackb


class _Decoder:
    """Unpacks one payload; one instance per ``decode`` call (it counts nesting depth).

    Extension payloads (a tuple's items) are unpacked by a nested call from the
    ext hook. ``msgpack.unpackb`` keeps its parse stack on the C stack (~40 KB),
    so deeply nested payloads, even corrupt ones, could overflow it: depth is
    capped at MAX_EXT_NESTING and levels past _FAST_UNPACK_DEPTH use a
    heap-allocated ``msgpack.Unpacker`` (~0.8 us instead of ~0.1 us).
    """

    __slots__ = ("_depth",)

    def __init__(self) -> None:
        self._depth = 0

    def unpack(self, data: bytes | memoryview) -> Any:
        depth = self._depth
        if depth > MAX_EXT_NESTING:
            msg = f"extension values are nested more than {MAX_EXT_NESTING} levels deep"
            raise DecodeError(msg)
        self._depth = depth + 1
        try:
            if depth <= _FAST_UNPACK_DEPTH:
                # Keywords spelled out: a **options dict costs more than unpacking a small tuple.
                return _unpackb(
                    data,
                    ext_hook=self._hook,
                    raw=False,
                    strict_map_key=False,  # keys may be ints, tuples, ...
                    timestamp=3,  # a foreign ext -1 (msgpack timestamp) -> aware UTC datetime
                    unicode_errors="surrogatepass",
                    use_list=True,
                )
            unpacker = msgpack.Unpacker(
                None,
                ext_hook=self._hook,
                raw=False,
                strict_map_key=False,
                timestamp=3,
                unicode_errors="surrogatepass",
                use_list=True,
                max_buffer_size=max(len(data), 1),
            )
            unpacker.feed(data)
            value = unpacker.unpack()
            if unpacker.tell() != len(data):
                raise msgpack.ExtraData(value, b"")
            return value
        finally:
            self._depth = depth

    def _array(self, data: bytes, code: int) -> list[Any]:
        items = self.unpack(data)
        if type(items) is not list:
            msg = f"extension type {code} must hold an array, found {type_name(type(items))}"
            raise DecodeError(msg)
        return items

    def _fields(self, data: bytes, code: int, count: int) -> list[Any]:
        fields = self._array(data, code)
        if len(fields) != count:
            msg = f"extension type {code} must hold {count} fields, found {short_repr(fields)}"
            raise DecodeError(msg)
        return fields

    def _hook(self, code: int, data: bytes) -> Any:
        # Ordered by how common each type is in state keys and values.
        if code == EXT_TUPLE:  # the hot case (tuple keys): unpack() inlined for shallow levels
            depth = self._depth
            if depth > _FAST_UNPACK_DEPTH:
                return tuple(self._array(data, code))
            self._depth = depth + 1
            try:
                items = _unpackb(
                    data,
                    ext_hook=self._hook,
                    raw=False,
                    strict_map_key=False,
                    timestamp=3,
                    unicode_errors="surrogatepass",
                    use_list=True,
                )
            finally:
                self._depth = depth
            if type(items) is list:
                return tuple(items)
            msg = f"extension type {code} must hold an array, found {type_name(type(items))}"
            raise DecodeError(msg)
        if code == EXT_BIGINT:
            return int.from_bytes(data, "big", signed=True)
        if code == EXT_DATETIME:
            year, month, day, hour, minute, second, micro, fold, offset = self._fields(data, code, 9)
            return datetime(year, month, day, hour, minute, second, micro, _tz(offset), fold=fold)
        if code == EXT_SET:
            return set(self._array(data, code))
        if code == EXT_FROZENSET:
            return frozenset(self._array(data, code))
        if code == EXT_DATE:
            year, month, day = self._fields(data, code, 3)
            return date(year, month, day)
        if code == EXT_TIME:
            hour, minute, second, micro, fold, offset = self._fields(data, code, 6)
            return time(hour, minute, second, micro, _tz(offset), fold=fold)
        if code == EXT_TIMEDELTA:
            days, seconds, micro = self._fields(data, code, 3)
            return timedelta(days=days, seconds=seconds, microseconds=micro)
        if code == EXT_DECIMAL:
            return Decimal(data.decode("ascii"))
        if code == EXT_ARROW:
            return _arrow_table(data)
        msg = (
            f"unknown msgpack extension type {code} (format version {MSGPACK_VERSION} knows "
            f"1-10); the data may come from a newer streamkeep or another writer"
        )
        raise DecodeError(msg)


def _arrow_table(data: bytes) -> Any:
    """An Arrow table from its IPC bytes; DecodeError naming the extra when pyarrow is missing."""
    try:
        return ipc_table(bytes(data))
    except ConfigError as exc:  # pyarrow missing
        raise DecodeError(str(exc)) from exc
    except Exception as exc:
        msg = f"extension type {EXT_ARROW} does not hold a readable Arrow IPC stream: {exc}"
        raise DecodeError(msg) from exc


def _tz(offset_us: object) -> timezone | None:
    if offset_us is None:
        return None
    if type(offset_us) is not int:
        msg = f"expected a UTC offset in microseconds, found {short_repr(offset_us)}"
        raise DecodeError(msg)
    return timezone(timedelta(microseconds=offset_us))


def tuple_plain(obj: object, depth: int = 0) -> bool:
    """True when `obj` is only exact tuples (nested at most MAX_EXT_NESTING deep) of exact str, int, float, bytes, bool and None.

    Such a value packs natively (every array a tuple) in a tuple segment, with no
    Python call per tuple; anything else (a list, a namedtuple, a set) is not.
    """
    if obj.__class__ is not tuple:
        return obj.__class__ in _TUPLE_SEGMENT_SCALARS
    if depth >= MAX_EXT_NESTING:
        return False
    # A loop, not all(generator): it runs for every tuple of every state value a delta holds.
    for v in obj:
        c = v.__class__
        if c is tuple:
            if not tuple_plain(v, depth + 1):
                return False
        elif c not in _TUPLE_SEGMENT_SCALARS:
            return False
    return True


def _plain_pairs(flat: list[Any], known: int) -> tuple[list[bool], bool]:
    """Per pair of `flat` ([k0, v0, k1, v1, ...]): do key and value fit a tuple segment (the first `known` do)?

    Also: does a pair that fits hold a tuple (else a version-1 payload is as fast)?
    """
    scalars = _TUPLE_SEGMENT_SCALARS
    known = min(known, len(flat) // 2)
    out = [True] * known
    tuples = known > 0
    append = out.append
    for i in range(2 * known, len(flat), 2):
        k, v = flat[i], flat[i + 1]
        kc, vc = k.__class__, v.__class__
        if kc in scalars:
            if vc in scalars:
                append(True)
                continue
            ok = vc is tuple and tuple_plain(v)
        else:
            ok = kc is tuple and tuple_plain(k) and (vc in scalars or (vc is tuple and tuple_plain(v)))
        append(ok)
        tuples = tuples or ok
    return out, tuples


def _segments(flat: list[Any], known: int) -> list[tuple[int, int, int]] | None:
    """(kind, start, end) runs of `flat` by pair, or None when no pair of tuples fits a tuple segment (version 1 is as fast)."""
    plain, tuples = _plain_pairs(flat, known)
    if not tuples:
        return None
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(plain) + 1):
        if i == len(plain) or plain[i] != plain[start]:
            runs.append((SEGMENT_TUPLES if plain[start] else SEGMENT_EXT, 2 * start, 2 * i))
            start = i
    return runs


_packb = msgpack.packb


def _pack_segments(flat: list[Any], runs: list[tuple[int, int, int]], unicode_errors: str | None) -> bytes:
    body: list[Any] = []
    for kind, start, end in runs:
        part = flat[start:end]
        if kind == SEGMENT_TUPLES:
            # Every value is exact tuples and scalars: msgpack packs the tuples as arrays in C.
            data = _packb(part, use_bin_type=True, strict_types=False, datetime=False, unicode_errors=unicode_errors)
        else:
            data = _pack(part, unicode_errors)
        body.append(kind)
        body.append(data)
    packed: bytes = _packb(body, use_bin_type=True)
    return _SEGMENTS_PREFIX + packed


def _no_ext(code: int, data: bytes) -> Any:
    msg = f"a tuple segment holds extension type {code}; it may hold plain msgpack values only"
    raise DecodeError(msg)


def _unpack_segments(body: memoryview) -> list[Any]:
    """The list a segmented payload's body (after the version byte) holds: its segments' items in order."""
    parts = _unpackb(body, raw=False, use_list=True)
    if type(parts) is not list or len(parts) % 2:
        msg = "a segmented list payload must hold an array [kind, data, kind, data, ...]"
        raise DecodeError(msg)
    out: list[Any] = []
    for i in range(0, len(parts), 2):
        kind, data = parts[i], parts[i + 1]
        if type(data) is not bytes:
            msg = f"segment {i // 2} of a segmented list payload holds {type_name(type(data))}, not bytes"
            raise DecodeError(msg)
        if kind == SEGMENT_TUPLES:
            items = _unpackb(
                data,
                ext_hook=_no_ext,
                raw=False,
                strict_map_key=False,
                timestamp=3,
                unicode_errors="surrogatepass",
                use_list=False,
            )
            if type(items) is not tuple:
                msg = f"segment {i // 2} of a segmented list payload is not an array"
                raise DecodeError(msg)
        elif kind == SEGMENT_EXT:
            items = _Decoder().unpack(data)
            if type(items) is not list:
                msg = f"segment {i // 2} of a segmented list payload is not an array"
                raise DecodeError(msg)
        else:
            msg = f"unknown segment kind {kind!r} in a segmented list payload (this streamkeep knows {SEGMENT_EXT} and {SEGMENT_TUPLES})"
            raise DecodeError(msg)
        out.extend(items)
    return out


def _leaf_problem(obj: object) -> str | None:
    tp = type(obj)
    if is_table(obj):
        return None
    if tp in _NATIVE or tp in _EXTENDED:
        if isinstance(obj, (datetime, time)) and obj.tzinfo and obj.utcoffset() is None:
            return "its tzinfo gives no UTC offset, so it cannot be kept as a fixed offset"
        return None
    for base in tp.__mro__[1:]:
        if base in _NATIVE or base in _EXTENDED or base in (list, dict):
            return (
                f"it is a subclass of {type_name(base)}, which would decode as a plain "
                f"{type_name(base)}; convert it with {type_name(base)}(x) if that is what you want"
            )
    return f"the msgpack codec stores only {_SUPPORTED}"


class MsgpackCodec:
    """The default codec: msgpack with streamkeep extension types, exact and code-free.

    Round-trips, preserving types exactly: ``None``, ``bool``, ``int`` (any size),
    ``float`` (incl. nan, inf, -0.0), ``str``, ``bytes``, ``list``, ``tuple``,
    ``dict`` (any supported hashable keys), ``set``, ``frozenset``, ``datetime``,
    ``date``, ``time``, ``timedelta`` and ``Decimal``. ``bytearray`` and
    ``memoryview`` decode as ``bytes``; a ``tzinfo`` decodes as a fixed-offset
    ``datetime.timezone``. Subclasses (``IntEnum``, namedtuples, ``OrderedDict``)
    and other objects raise :class:`UnsupportedValueError`. Decoding never runs code.

    Example:
        >>> from datetime import date
        >>> from streamkeep.codec import MSGPACK
        >>> MSGPACK.decode(MSGPACK.encode({("a", 1): {date(2024, 1, 2)}}))
        {('a', 1): {datetime.date(2024, 1, 2)}}
    """

    name: str = "msgpack"

    def __repr__(self) -> str:
        return "MSGPACK"

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` as a version-1 msgpack payload.

        Raises:
            UnsupportedValueError: ``obj`` holds a value of a type listed nowhere above;
                ``.path`` says where (``value[2]['a']``), ``.type_name`` what.
        """
        try:
            return self.encode_raw(obj)
        except EncodeFailed as failed:
            raise self.explain(obj, "value", failed.cause) from failed.chained

    def encode_raw(self, obj: Any) -> bytes:
        """Internal fast path: like :meth:`encode`, but raises ``EncodeFailed`` unexplained."""
        try:
            return _VERSION_PREFIX + _pack(obj, None)
        except UnicodeEncodeError:
            pass  # a str with lone surrogates: retry below
        except (_Unsupported, _TooDeep, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise EncodeFailed(exc, internal=isinstance(exc, (_Unsupported, _TooDeep))) from None
        try:  # lone surrogates ("\ud800") are kept with UTF-8 "surrogatepass"
            return _VERSION_PREFIX + _pack(obj, "surrogatepass")
        except (_Unsupported, _TooDeep, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise EncodeFailed(exc, internal=isinstance(exc, (_Unsupported, _TooDeep))) from None

    def encode_list_raw(self, flat: list[Any], known_plain: int = 0) -> bytes:
        """Internal: encode the list `flat` of (key, value) items ``[k0, v0, k1, v1, ...]`` for bulk state data.

        Pairs whose key and value are only exact tuples and scalars (`tuple_plain`) go to
        tuple segments, packed natively (no Python call per tuple): a segmented payload,
        format version 2. The first `known_plain` pairs are promised to be such pairs (the
        caller checked them with `tuple_plain`). Without such pairs, or when packing them
        natively fails (a big int, a lone surrogate), this is :meth:`encode_raw`.
        Decodes with :meth:`decode` to an equal list of the same types.
        """
        if not known_plain:  # most states hold no tuple (str -> int): then this is version 1 at no extra cost
            try:
                return _VERSION_PREFIX + _pack(flat, None, probe=True)
            except _HasTuple:
                pass
            except (_Unsupported, _TooDeep, ValueError, TypeError, OverflowError, RecursionError):
                return self.encode_raw(flat)  # says what fails, or handles lone surrogates
        runs = _segments(flat, known_plain)
        if runs is not None:
            try:
                return _pack_segments(flat, runs, None)
            except (_Unsupported, _TooDeep, ValueError, TypeError, OverflowError, RecursionError):
                pass  # the version-1 path below says what fails, or handles lone surrogates and big ints
        return self.encode_raw(flat)

    def explain(self, obj: object, root: str, cause: BaseException, key_repr: str | None = None) -> UnsupportedValueError:
        """Internal: the error saying where in ``obj`` (named ``root``) encoding fails."""
        problem = find_problem(obj, root, _leaf_problem, cycles_ok=False)
        if problem is None:
            if isinstance(cause, _TooDeep):
                reason = f"it nests tuples, sets or other extension values more than {MAX_EXT_NESTING} levels deep"
            elif isinstance(cause, (ValueError, RecursionError)) and "recursion" in str(cause):
                reason = "it is nested too deeply (the msgpack codec allows about 1,000 levels)"
            else:
                reason = f"msgpack failed: {cause}"
            problem = (root, obj, reason)
        return unsupported_error(problem, advice=ADVICE, key_repr=key_repr)

    def decode(self, data: bytes) -> Any:
        """Decode a payload written by :meth:`encode`.

        Raises:
            DecodeError: empty, truncated or corrupt data, trailing bytes, another
                codec's payload, or an unknown format version or extension type.
            TypeError: ``data`` is not bytes-like.
        """
        check_version(data, codec="msgpack", version=MSGPACK_VERSION, also=(MSGPACK_SEGMENTS_VERSION,))
        try:
            if data[0] == MSGPACK_SEGMENTS_VERSION:
                return _unpack_segments(memoryview(data)[1:])
            return _Decoder().unpack(memoryview(data)[1:])
        except DecodeError as exc:
            msg = f"cannot decode a msgpack payload of {len(data)} bytes: {exc}"
            raise DecodeError(msg) from exc
        except MemoryError:
            raise
        except Exception as exc:  # any msgpack or builder failure: corrupt data
            reason = _describe_unpack_failure(exc)
            msg = f"cannot decode a msgpack payload of {len(data)} bytes: {reason}"
            raise DecodeError(msg) from exc


def _describe_unpack_failure(exc: Exception) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return "trailing bytes after the value (the payload is not a single value)"
    if isinstance(exc, msgpack.StackError):
        return "the value is nested too deeply to decode"
    if isinstance(exc, RecursionError):
        return "the value is nested too deeply to decode"
    if isinstance(exc, msgpack.FormatError):
        return "invalid msgpack data"
    if isinstance(exc, msgpack.OutOfData):
        return "the payload is truncated"
    text = str(exc) or type(exc).__name__
    if "incomplete input" in text:
        return "the payload is truncated"
    return f"{type(exc).__name__}: {text}"


#: The default codec instance (stateless, shared).
MSGPACK: Final = MsgpackCodec()
