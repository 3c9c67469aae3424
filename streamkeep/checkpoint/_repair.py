"""Rewriting a damaged ``CHECKPOINT`` (identity) file: `repair_identity`, behind ``streamkeep checkpoint repair``.

The identity file holds no committed state (that is the commit log and the state files,
which this does not touch): the format version the checkpoint was created with, the engine
version, the creation time and the checkpoint id that fenced sinks store next to their data.
Only a file whose frame checksum fails (or whose frame cannot be read) is damaged: one whose
checksum holds was written whole, by another streamkeep build or program, and is refused.
The repair first tries each single-bit flip of the file: when exactly one makes the checksum
hold, those exact bytes are restored. Otherwise it salvages the fields it can read in the
payload (a flipped bit inside the payload leaves it decodable but unverified; a torn tail
leaves the fields before the cut, read one by one), takes the given id when there is one, and
otherwise makes a new id. It refuses while a driver owns the checkpoint (the local lock, or a
live lease) and keeps the damaged bytes as ``CHECKPOINT.damaged-<ms>`` beside it.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from streamkeep._util import random_id
from streamkeep._version import __version__
from streamkeep.checkpoint._format import MAGIC, PLAIN_VERSION, READABLE_VERSIONS
from streamkeep.errors import CheckpointError, CorruptCheckpointError

if TYPE_CHECKING:
    from streamkeep.checkpoint._checkpoint import Checkpoint

IDENTITY = "CHECKPOINT"
#: Files up to this size get the single-bit-flip search (an identity file is about 100 bytes).
_FLIP_LIMIT = 4096
#: Offsets scanned for the payload when the header cannot say where it starts.
_SCAN_LIMIT = 4096
_MAP_HEADS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def checksum_holds(data: bytes) -> bool:
    """Does the trailing CRC of the single-frame file `data` match everything before it (whatever its version)?"""
    if len(data) < 9 or data[:4] != MAGIC:
        return False
    (crc,) = struct.unpack_from(">I", data, len(data) - 4)
    return bool(zlib.crc32(memoryview(data)[:-4]) == crc)


@dataclass(frozen=True)
class IdentityRepair:
    """What `repair_identity` did (``damage`` None: the file was sound and left alone)."""

    damage: str | None
    #: the identity record as written (empty when nothing was written)
    record: dict[str, Any] = field(default_factory=dict)
    #: True when one flipped bit was found and the exact original bytes were restored
    restored: bool = False
    #: fields read from the damaged payload, unverified (the checksum fails)
    salvaged: dict[str, Any] = field(default_factory=dict)
    #: the id given by the caller, if any
    given_id: str | None = None
    #: the name the damaged bytes are kept under (None: there were none)
    kept_as: str | None = None


def repair_identity(ckpt: Checkpoint, checkpoint_id: str | None) -> IdentityRepair:
    """Rewrite the damaged CHECKPOINT of `ckpt` (see the module docstring).

    Raises:
        CheckpointInUseError: a driver owns the checkpoint.
        CheckpointError: the checkpoint directory cannot be locked, or the file is not damaged but
            written by another build (its checksum holds).
    """
    st = ckpt.storage
    lock = _hold(ckpt)
    try:
        raw = st.read(IDENTITY) if st.exists(IDENTITY) else b""
        if raw:
            try:
                ckpt.identity()
            except CorruptCheckpointError as exc:
                if checksum_holds(raw):
                    msg = (
                        f"{st.path(IDENTITY)} is not damaged (its frame checksum holds) but cannot be read by this "
                        f"streamkeep {__version__}: {exc.__cause__ or exc} It was written by another streamkeep build or "
                        f"program; `streamkeep checkpoint repair` rewrites only damaged files, so it was left alone."
                    )
                    raise CheckpointError(msg) from exc
                damage = str(exc.__cause__ or exc)
            else:
                return IdentityRepair(damage=None)
        else:
            damage = "it is missing"
        now = int(time.time() * 1000)
        kept_as = f"{IDENTITY}.damaged-{now}" if raw else None
        restored = _unflip(raw)
        found: dict[str, Any] = {}
        if restored is not None and checkpoint_id is None:
            new = restored
            record: dict[str, Any] = {}
            try:
                record = dict(ckpt.decode(IDENTITY, restored, "identity"))
            except (CorruptCheckpointError, TypeError, ValueError):
                restored = None
        if restored is None or checkpoint_id is not None:
            restored = None
            found = _salvage(raw)
            record = {
                "format_version": found.get("format_version", PLAIN_VERSION),
                "engine_version": found.get("engine_version", __version__),
                "created_ms": found.get("created_ms", now),
                "id": checkpoint_id or found.get("id") or random_id(),
            }
            new = ckpt.encode("identity", record, rel=IDENTITY)
        if kept_as is not None:
            st.write(kept_as, raw)  # kept for a closer look; not part of the layout
            st.write(IDENTITY, new)
        elif not st.create(IDENTITY, new):  # a driver that started meanwhile created it: leave its file alone
            msg = (
                f"{st.path(IDENTITY)} appeared while the repair ran (a driver started?): left alone; run the repair again if it is damaged"
            )
            raise CheckpointError(msg)
    finally:
        if lock is not None:
            os.close(lock)
    return IdentityRepair(damage, record, restored is not None, found, checkpoint_id, kept_as)


def _hold(ckpt: Checkpoint) -> int | None:
    """Refuse while a driver owns the checkpoint; on local disks, take its lock (returned) for the repair."""
    if not ckpt.storage.local:
        ckpt._check_lease()
        return None
    try:
        return ckpt._take_local_lock()
    except CheckpointError:
        raise
    except OSError as exc:
        msg = (
            f"cannot lock {ckpt.storage.root} to repair it: {exc.strerror or exc} ({ckpt.storage.path('lock')}). "
            f"The repair needs to create and lock that file: run it as a user who may write in that directory."
        )
        raise CheckpointError(msg) from exc


def _unflip(raw: bytes) -> bytes | None:
    """The bytes `raw` was before one bit flipped: when exactly one single-bit flip makes its checksum hold."""
    if not raw or len(raw) > _FLIP_LIMIT:
        return None
    hits = []
    buf = bytearray(raw)
    for i in range(len(buf)):
        for bit in range(8):
            buf[i] ^= 1 << bit
            if checksum_holds(bytes(buf)) and buf[4] in READABLE_VERSIONS:
                hits.append(bytes(buf))
            buf[i] ^= 1 << bit
    return hits[0] if len(hits) == 1 else None


def _payload_start(raw: bytes) -> int | None:
    """Where the payload starts, as the (version 2+) header says; None when it cannot be read."""
    try:
        if raw[:4] != MAGIC or raw[4] < 2:
            return None
        p = 5
        p += 1 + raw[p]
        p += 1 + raw[p]
        (nlen,) = struct.unpack_from(">H", raw, p)
        return int(p + 2 + nlen + 8)
    except (IndexError, struct.error):
        return None


def _salvage(raw: bytes) -> dict[str, Any]:
    """The identity fields the damaged bytes still hold, read pair by pair (a torn map keeps its first ones)."""
    start = _payload_start(raw)  # the msgpack codec's payload opens with its own version byte, then the map
    starts = [start, start + 1] if start is not None else [i for i in range(min(len(raw), _SCAN_LIMIT)) if raw[i] in _MAP_HEADS]
    for s in starts:
        value = _leading_pairs(raw[s:])
        if "id" in value or "format_version" in value:
            return _checked(value)
    return {}


def _leading_pairs(data: bytes) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    try:
        n = unpacker.read_map_header()
        for _ in range(min(n, 16)):
            key = unpacker.unpack()
            out[key] = unpacker.unpack()
    except Exception:  # noqa: BLE001 - the pairs before the damage are what is kept
        pass
    return {k: v for k, v in out.items() if isinstance(k, str)}


def _checked(value: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ident = value.get("id")
    if isinstance(ident, str) and ident.isalnum() and ident.isascii():
        out["id"] = ident
    version = value.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and 1 <= version <= PLAIN_VERSION:
        out["format_version"] = version
    engine = value.get("engine_version")
    if isinstance(engine, str) and engine.isprintable():
        out["engine_version"] = engine
    created = value.get("created_ms")
    if isinstance(created, int) and not isinstance(created, bool) and 0 < created <= time.time() * 1000:
        out["created_ms"] = created
    return out
