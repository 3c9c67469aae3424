"""The codec registry: codec names, as stored in checkpoints, to codec instances.

Owns: :func:`get_codec`. Imports only ``streamkeep.errors`` and
``streamkeep._types`` of streamkeep (plus sibling codec modules); must not
import any other streamkeep module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from streamkeep.codec._base import Codec
from streamkeep.codec._msgpack import MSGPACK
from streamkeep.codec._pickle import PICKLE
from streamkeep.errors import CheckpointError, ConfigError

__all__ = ["get_codec"]

_CODECS: Final[Mapping[str, Codec]] = {"msgpack": MSGPACK, "pickle": PICKLE}


def get_codec(name: str = "msgpack") -> Codec:
    """Return the codec registered under ``name``.

    ``"msgpack"`` (the default) stores plain data exactly and never runs code on
    decode. ``"pickle"`` is the opt-in for arbitrary objects; its payloads run
    code when decoded, so use it only for checkpoints you trust.

    Args:
        name: the codec name, as stored in checkpoints and given as ``codec=`` to
            operators and contexts.

    Returns:
        The shared, stateless codec instance.

    Raises:
        ConfigError: ``name`` is not a known codec (the message lists the known ones).

    Example:
        >>> from streamkeep.codec import get_codec
        >>> get_codec("msgpack").name
        'msgpack'
    """
    codec = _CODECS.get(name) if isinstance(name, str) else None
    if codec is None:
        msg = (
            f"unknown codec {name!r}; known codecs are 'msgpack' (the default: plain data, "
            f"never runs code) and 'pickle' (opt-in: any picklable object, runs code on decode)"
        )
        raise ConfigError(msg)
    return codec


def refuse_pickle(codec_name: str, allow_pickle: bool, where: str) -> None:
    """CheckpointError when `where` (e.g. "checkpoint file PATH") was written with pickle and the caller did not opt in.

    Decoding pickle runs code stored in the checkpoint: only an operator declared with
    ``codec='pickle'`` may load its own pickled state.
    """
    if codec_name == "pickle" and not allow_pickle:
        msg = (
            f"{where} was written with the pickle codec, and loading it would execute code from the checkpoint. "
            f"Opt in with codec='pickle' on the operator that owns it."
        )
        raise CheckpointError(msg)
