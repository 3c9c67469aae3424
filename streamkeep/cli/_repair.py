"""`streamkeep checkpoint repair URL`: rewrite a damaged ``CHECKPOINT`` (identity) file.

The identity file holds no committed state (that is the commit log and the state
files, which this command does not touch): the format version the checkpoint was
created with, the engine version, the creation time and the checkpoint id that
fenced sinks store next to their data. The repair keeps every field it can still
read in the damaged bytes (a flipped bit or a torn tail usually leaves the payload
readable), takes ``--id`` when given, and otherwise makes a new id and says so. It
refuses while a driver owns the checkpoint (the local lock, or a live lease), keeps
the damaged bytes as ``CHECKPOINT.damaged-<ms>`` beside it, and does nothing to a
sound identity file. Unlike the other ``checkpoint`` commands it writes.
"""

from __future__ import annotations

import os
import time
from typing import Any

from streamkeep._util import random_id
from streamkeep._version import __version__
from streamkeep.checkpoint import Checkpoint
from streamkeep.checkpoint._format import PLAIN_VERSION
from streamkeep.cli._common import no_checkpoint, text
from streamkeep.codec import get_codec
from streamkeep.errors import CheckpointError, ConfigError, CorruptCheckpointError

_IDENTITY = "CHECKPOINT"


def _salvage(raw: bytes) -> dict[str, Any]:
    """The identity fields that the damaged bytes still hold, each checked for its type (may be empty)."""
    codec = get_codec("msgpack")
    for start in range(len(raw)):
        for end in (len(raw) - 4, len(raw)):  # without and with the checksum's 4 bytes (a truncated file has none)
            if end <= start:
                continue
            try:
                value = codec.decode(raw[start:end])
            except Exception:  # noqa: BLE001 - any failure means: not the payload's start
                continue
            if isinstance(value, dict) and ("id" in value or "format_version" in value):
                return _checked(value)
    return {}


def _checked(value: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ident = value.get("id")
    if isinstance(ident, str) and ident.isalnum():
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


def _hold(ckpt: Checkpoint) -> int | None:
    """Refuse while a driver owns the checkpoint; on local disks, take its lock (returned) for the repair."""
    if ckpt.storage.local:
        return ckpt._take_local_lock()
    ckpt._check_lease()
    return None


def repair(url: str, *, checkpoint_id: str | None = None, storage_options: dict[str, Any] | None = None) -> int:
    """Rewrite a damaged CHECKPOINT file at `url`; print what was kept; 0 when sound or repaired."""
    if checkpoint_id is not None and not (checkpoint_id.isalnum() and checkpoint_id.isascii()):
        msg = f"--id {checkpoint_id!r}: a checkpoint id is letters and digits (as the first word of a FileSink's .streamkeep-fence file)"
        raise ConfigError(msg)
    ckpt = Checkpoint(url, storage_options=storage_options)
    st = ckpt.storage
    if not st.exists(_IDENTITY) and not (st.list("log") or st.list("plans")):
        raise CheckpointError(no_checkpoint(url))
    lock = _hold(ckpt)
    try:
        try:
            ckpt.identity()
        except CorruptCheckpointError as exc:
            damage = text(exc.__cause__ or exc)
        else:
            if st.exists(_IDENTITY):
                print(f"{url}: CHECKPOINT is sound; nothing to repair")
                return 0
            damage = "it is missing"
        raw = st.read(_IDENTITY) if st.exists(_IDENTITY) else b""
        found = _salvage(raw)
        now = int(time.time() * 1000)
        record = {
            "format_version": found.get("format_version", PLAIN_VERSION),
            "engine_version": found.get("engine_version", __version__),
            "created_ms": found.get("created_ms", now),
            "id": checkpoint_id or found.get("id") or random_id(),
        }
        if raw:
            st.write(f"{_IDENTITY}.damaged-{now}", raw)  # kept for a closer look; not part of the layout
        st.write(_IDENTITY, ckpt.encode("identity", record, rel=_IDENTITY))
    finally:
        if lock is not None:
            os.close(lock)
    print(f"{url}: CHECKPOINT rewritten ({damage})")
    if raw:
        print(f"  the damaged file is kept as {_IDENTITY}.damaged-{now}")
    for key in ("format_version", "engine_version", "created_ms"):
        how = "kept from the damaged file" if key in found else "not readable in the damaged file: set anew"
        print(f"  {key}: {record[key]} ({how})")
    if checkpoint_id:
        print(f"  id: {record['id']} (given with --id)")
    elif "id" in found:
        print(f"  id: {record['id']} (kept from the damaged file)")
    else:
        print(
            f"  id: {record['id']} (NEW: the old one was not readable. Fenced sinks (FileSink, RedisSink, KafkaSink) "
            f"store the id with their data; if the job writes to one, run this again with --id set to the id it "
            f"stored, e.g. the first word of a FileSink's .streamkeep-fence file. A new id is safe while no other driver of this "
            f"checkpoint runs.)"
        )
    print("  the commit log and the state files were not touched")
    return 0
