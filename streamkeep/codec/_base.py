"""The codec interface, the codec errors and the payload envelope shared by every codec.

Owns: the :class:`Codec` protocol, :class:`UnsupportedValueError`,
:class:`DecodeError`, the format-version byte values of each codec, and the
helpers that format a location inside a value (``value[2]['a']``).

Imports only ``streamkeep.errors`` and ``streamkeep._types``; it must not import
any other streamkeep module (codec is a layer-1 leaf).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from streamkeep.errors import StreamkeepError

__all__ = [
    "MSGPACK_SEGMENTS_VERSION",
    "MSGPACK_VERSION",
    "PICKLE_VERSION",
    "Codec",
    "DecodeError",
    "EncodeFailed",
    "Problem",
    "UnsupportedValueError",
    "check_version",
    "find_problem",
    "index_path",
    "short_repr",
    "type_name",
    "unsupported_error",
]

#: First byte of every payload written by the msgpack codec (format version 1).
MSGPACK_VERSION = 0x01
#: First byte of a segmented list payload of the msgpack codec (format version 2): written only by
#: ``encode_items`` (bulk state data), read by ``decode`` like version 1. See docs/codec-format.md.
MSGPACK_SEGMENTS_VERSION = 0x02
#: First byte of every payload written by the pickle codec (pickle format version 1).
#: The high bit marks a pickle payload, so the two codecs never mistake each other's data.
PICKLE_VERSION = 0x81

_WRITERS = {MSGPACK_VERSION: "msgpack", MSGPACK_SEGMENTS_VERSION: "msgpack", PICKLE_VERSION: "pickle"}
_REPR_LIMIT = 60


@runtime_checkable
class Codec(Protocol):
    """Turns a value into bytes and back, for state, plans and graph descriptions in checkpoints.

    Implementations are stateless and safe to share between threads. ``decode``
    must return a value equal to, and of the same types as, what was encoded.

    Attributes:
        name: the stable name stored in checkpoints (``"msgpack"``, ``"pickle"``).

    Example:
        >>> from streamkeep.codec import MSGPACK
        >>> MSGPACK.decode(MSGPACK.encode({"a": (1, 2)}))
        {'a': (1, 2)}
    """

    name: str

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` into a self-describing payload (version byte first).

        Raises:
            UnsupportedValueError: ``obj`` holds a value this codec cannot store.
        """
        ...

    def decode(self, data: bytes) -> Any:
        """Decode a payload written by :meth:`encode` of the same codec.

        Raises:
            DecodeError: the bytes are not a valid payload of this codec and version.
        """
        ...


class UnsupportedValueError(StreamkeepError, TypeError):
    """A value cannot be stored by the codec in use.

    Attributes:
        path: where the value sits inside what was being encoded, e.g. ``value[2]['a']``
            (``key`` instead of ``value`` when it is a state key).
        type_name: the (qualified) name of the offending type, e.g. ``__main__.Point``.
        key_repr: for :func:`~streamkeep.codec.encode_items`, the truncated ``repr`` of
            the key whose key or value is unsupported; otherwise ``None``.
    """

    def __init__(self, message: str, *, path: str, type_name: str, key_repr: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.type_name = type_name
        self.key_repr = key_repr

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_unsupported,
            (str(self), self.path, self.type_name, self.key_repr),
        )


def _rebuild_unsupported(message: str, path: str, type_name: str, key_repr: str | None) -> UnsupportedValueError:
    return UnsupportedValueError(message, path=path, type_name=type_name, key_repr=key_repr)


class DecodeError(StreamkeepError, ValueError):
    """Bytes are not a valid payload for the codec (corrupt, truncated, other codec or version)."""


def check_version(data: bytes, *, codec: str, version: int, also: tuple[int, ...] = ()) -> None:
    """Raise :class:`DecodeError` unless ``data`` starts with ``codec``'s ``version`` byte (or one of `also`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        msg = f"{codec} codec can only decode bytes, got {type_name(type(data))}"
        raise TypeError(msg)
    if len(data) == 0:
        msg = (
            f"cannot decode an empty payload with the {codec} codec: every payload "
            f"starts with a format version byte (expected {version:#04x})"
        )
        raise DecodeError(msg)
    found = data[0]
    if found == version or found in also:
        return
    writer = _WRITERS.get(found)
    if writer is not None:
        msg = (
            f"payload was written by the {writer} codec (version byte {found:#04x}), "
            f"not the {codec} codec; decode it with get_codec({writer!r}), i.e. set "
            f"codec={writer!r} on the operator or context that wrote it"
        )
    else:
        reads = f"version {version} ({version:#04x}) only" if not also else (
            "versions " + ", ".join(f"{v} ({v:#04x})" for v in (version, *also)) + " only"
        )
        msg = (
            f"unsupported {codec} codec format version {found} ({found:#04x}); this "
            f"streamkeep reads {reads}. The data may come "
            f"from a newer streamkeep (upgrade) or not be a streamkeep payload at all"
        )
    raise DecodeError(msg)


def type_name(tp: type) -> str:
    """``int`` for builtins, ``module.Qualname`` for everything else."""
    module = getattr(tp, "__module__", None)
    qualname = getattr(tp, "__qualname__", repr(tp))
    if module in (None, "builtins"):
        return str(qualname)
    return f"{module}.{qualname}"


def short_repr(obj: object, limit: int = _REPR_LIMIT) -> str:
    """``repr(obj)`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(obj)
    except Exception:  # a user __repr__ may raise anything  # noqa: BLE001
        return f"<{type_name(type(obj))} object (repr failed)>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def index_path(path: str, key: object) -> str:
    """``path[key]`` with ``key`` shown by its (truncated) repr."""
    return f"{path}[{short_repr(key)}]"


class EncodeFailed(Exception):  # an internal signal, never escapes the codec
    """Internal: a codec's fast path failed; the caller explains where and why.

    Attributes:
        cause: what the fast path raised.
        chained: ``cause``, or ``None`` when it is itself an internal signal that
            would only add noise as the ``__cause__`` of the user-facing error.
    """

    def __init__(self, cause: BaseException, *, internal: bool = False) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.chained: BaseException | None = None if internal else cause


#: A problem found inside a value: (path, offending object, reason).
Problem = tuple[str, object, str]

_CONTAINERS = (list, tuple, dict, set, frozenset)

# A location inside a value, built lazily (paths of deep values would cost O(depth**2)):
# (parent, kind, arg) with kind "root" (arg: name), "index" (arg: int), "key" (arg: the
# dict key), "dict-key" (arg: position among the keys) or "element" (arg: position in a set).
_Loc = tuple[Any, str, Any]


def _render(loc: _Loc) -> str:
    steps: list[_Loc] = []
    node: _Loc | None = loc
    while node is not None:
        steps.append(node)
        node = node[0]
    path = ""
    for _, kind, arg in reversed(steps):
        if kind == "root":
            path = str(arg)
        elif kind == "index":
            path = f"{path}[{arg}]"
        elif kind == "key":
            path = index_path(path, arg)
        elif kind == "dict-key":
            path = f"list({path}.keys())[{arg}]"
        else:
            path = f"list({path})[{arg}]"
    return path


def find_problem(
    obj: object,
    root: str,
    leaf_problem: Callable[[object], str | None],
    *,
    cycles_ok: bool,
) -> Problem | None:
    """Find the first part of ``obj`` (in encoding order) that ``leaf_problem`` rejects.

    Walks exact ``list``/``tuple``/``dict``/``set``/``frozenset`` containers
    iteratively (no recursion limit) and asks ``leaf_problem`` about every other
    object. A reference cycle is a problem unless ``cycles_ok``. Only used once a
    codec's fast path has failed; linear in the size of ``obj``.
    """
    active: set[int] = set()  # ids of the containers on the current path
    # (object, its location, leaving): ``leaving`` entries pop a container off ``active``.
    stack: list[tuple[Any, _Loc, bool]] = [(obj, (None, "root", root), False)]
    while stack:
        item, loc, leaving = stack.pop()
        if leaving:
            active.discard(id(item))
            continue
        tp = type(item)
        if tp not in _CONTAINERS:
            reason = leaf_problem(item)
            if reason is not None:
                return (_render(loc), item, reason)
            continue
        if id(item) in active:
            if cycles_ok:
                continue
            return (_render(loc), item, "it contains itself (a reference cycle)")
        active.add(id(item))
        stack.append((item, loc, True))
        children: list[tuple[Any, _Loc, bool]] = []
        if tp is dict:
            for i, (key, value) in enumerate(item.items()):
                children.append((key, (loc, "dict-key", i), False))
                children.append((value, (loc, "key", key), False))
        elif tp is list or tp is tuple:
            children.extend((child, (loc, "index", i), False) for i, child in enumerate(item))
        else:
            children.extend((child, (loc, "element", i), False) for i, child in enumerate(item))
        stack.extend(reversed(children))
    return None


def unsupported_error(problem: Problem, *, advice: str, key_repr: str | None = None) -> UnsupportedValueError:
    """Build the :class:`UnsupportedValueError` for ``problem`` (what, where, what to do)."""
    path, obj, reason = problem
    name = type_name(type(obj))
    for_key = "" if key_repr is None else f" for key {key_repr}"
    msg = f"cannot encode {short_repr(obj)} of type {name} at {path}{for_key}: {reason}; {advice}"
    return UnsupportedValueError(msg, path=path, type_name=name, key_repr=key_repr)
