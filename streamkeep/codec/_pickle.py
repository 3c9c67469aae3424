"""The pickle codec: opt-in storage of arbitrary picklable objects.

Owns: the pickle payload format (version byte ``0x81``, then a protocol-5
pickle). Only used when a user sets ``codec="pickle"`` on an operator or
context: it stores what msgpack cannot, at the price of running code on
decode and of breaking when the pickled classes move or change. Imports only
``streamkeep.errors`` and ``streamkeep._types`` (through ``codec._base``) of
streamkeep and must not import any other streamkeep module.
"""

from __future__ import annotations

from typing import Any, Final

from streamkeep.codec._base import (
    PICKLE_VERSION,
    DecodeError,
    EncodeFailed,
    UnsupportedValueError,
    check_version,
    find_problem,
    unsupported_error,
)

__all__ = ["PICKLE", "PickleCodec"]

PROTOCOL: Final = 5
_VERSION_PREFIX: Final = bytes((PICKLE_VERSION,))
ADVICE: Final = (
    "make it picklable (define classes "
    "and functions at module top level, not lambdas or local functions; drop locks, "
    "sockets and open files) or convert it to plain data"
)


def _leaf_problem(obj: object) -> str | None:
    import pickle

    try:
        pickle.dumps(obj, protocol=PROTOCOL)
    except Exception as exc:  # pickling may run user __reduce__ code  # noqa: BLE001
        return f"pickle failed: {type(exc).__name__}: {exc}"
    return None


class PickleCodec:
    """Opt-in codec: plain ``pickle`` protocol 5 behind a version byte.

    Stores any picklable object exactly. Decoding imports modules and runs
    code named by the data, so only decode checkpoints you trust, and expect
    old payloads to fail after the pickled classes are renamed or moved.

    Example:
        >>> from streamkeep.codec import get_codec
        >>> codec = get_codec("pickle")
        >>> codec.decode(codec.encode(complex(1, 2)))
        (1+2j)
    """

    name: str = "pickle"

    def __repr__(self) -> str:
        return "get_codec('pickle')"

    def encode(self, obj: Any) -> bytes:
        """Encode ``obj`` as a pickle payload.

        Raises:
            UnsupportedValueError: ``obj`` (or a part at ``.path``) cannot be pickled.
        """
        try:
            return self.encode_raw(obj)
        except EncodeFailed as failed:
            raise self.explain(obj, "value", failed.cause) from failed.chained

    def encode_raw(self, obj: Any) -> bytes:
        """Internal fast path: like :meth:`encode`, but raises ``EncodeFailed`` unexplained."""
        import pickle  # here (a no-op once imported): most jobs never use this codec, so start-up does not import pickle

        try:
            return _VERSION_PREFIX + pickle.dumps(obj, protocol=PROTOCOL)
        except Exception as exc:  # pickling may run user __reduce__ code
            raise EncodeFailed(exc) from exc

    def explain(self, obj: object, root: str, cause: BaseException, key_repr: str | None = None) -> UnsupportedValueError:
        """Internal: the error saying where in ``obj`` (named ``root``) pickling fails."""
        problem = find_problem(obj, root, _leaf_problem, cycles_ok=True)
        if problem is None:
            problem = (root, obj, f"pickle failed: {type(cause).__name__}: {cause}")
        return unsupported_error(problem, advice=ADVICE, key_repr=key_repr)

    def decode(self, data: bytes) -> Any:
        """Decode a payload written by :meth:`encode` (runs code: trusted data only).

        Raises:
            DecodeError: empty or corrupt data, another codec's payload, an unknown
                format version, or a pickled class that can no longer be imported.
            TypeError: ``data`` is not bytes-like.
        """
        check_version(data, codec="pickle", version=PICKLE_VERSION)
        import pickle

        try:
            return pickle.loads(memoryview(data)[1:])  # the opt-in codec: trusted data only
        except MemoryError:
            raise
        except Exception as exc:  # unpickling may raise anything
            msg = f"cannot decode a pickle payload of {len(data)} bytes: {type(exc).__name__}: {exc}"
            raise DecodeError(msg) from exc


#: The pickle codec instance (stateless); reach it through ``get_codec("pickle")``.
PICKLE: Final = PickleCodec()
