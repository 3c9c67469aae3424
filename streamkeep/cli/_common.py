"""What the ``streamkeep checkpoint`` commands share: opening a checkpoint, formatting, options.

None of the commands but `repair` claims the checkpoint or writes to it, so they are safe to run
next to a live driver (a file that retention deletes while they read is reported as
gone, not as damage). Loading state never runs code: files written with the pickle
codec are checked for framing and checksum but not decoded.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from streamkeep.checkpoint import Checkpoint, CommitRecord, log_path
from streamkeep.checkpoint._format import VERIFY_HINT
from streamkeep.checkpoint._layout import looks_like_checkpoint
from streamkeep.errors import CheckpointError, ConfigError


def no_checkpoint(url: str) -> str:
    """The message for a URL that holds no checkpoint."""
    return (
        f"there is no streamkeep checkpoint at {url} (no CHECKPOINT file, commit log or plans): pass the directory or "
        f"URL the job was given as its checkpoint"
    )


def open_checkpoint(url: str, storage_options: dict[str, Any] | None) -> Checkpoint:
    """The checkpoint at `url`, read-only use (never claimed).

    Raises:
        CheckpointError: `url` holds no checkpoint.
    """
    ckpt = Checkpoint(url, storage_options=storage_options)
    if not looks_like_checkpoint(ckpt) or (ckpt.is_empty() and not ckpt.storage.list("plans")):
        raise CheckpointError(no_checkpoint(url))
    return ckpt


def read_records(ckpt: Checkpoint) -> tuple[list[CommitRecord], list[str]]:
    """Readable log records (newest first) and a message per unreadable one."""
    records, bad = ckpt.read_records(newest_first=True)
    return records, [f"{log_path(seq)}: {text(exc)}" for seq, exc in bad.items()]


def text(exc: BaseException) -> str:
    """An error's message without the advice to run `verify` (the verify output itself)."""
    return str(exc).replace(f" {VERIFY_HINT}", "").replace(VERIFY_HINT, "")


def iso(ms: int | None) -> str | None:
    """A time in ms as an ISO UTC time (None stays None)."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


def size(ckpt: Checkpoint, rel: str | dict[str, Any]) -> int | None:
    """Bytes of a checkpoint file (or of a delta inline in a commit record); None if unknown."""
    if isinstance(rel, dict):  # a small delta inline in the commit record
        return len(rel["data"])
    try:
        return ckpt.storage.size(rel)
    except (OSError, CheckpointError):
        return None


def human(n: int | None) -> str:
    """Bytes for people (``"1.5 KiB"``)."""
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n_f = n / 1024
        if n_f < 1024 or unit == "TiB":
            return f"{n_f:.1f} {unit}"
        n = int(n_f)
    return f"{n} B"  # pragma: no cover


def short(value: Any, limit: int = 100) -> str:
    """`value` as JSON, cut to `limit` characters."""
    out = json.dumps(value, default=repr, sort_keys=True)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def storage_options(pairs: list[str]) -> dict[str, Any] | None:
    """``["key=value", ...]`` from ``--storage-option`` as fsspec options.

    ``true``/``false`` become bools and a value starting with ``{`` or ``[`` is read
    as JSON (``client_kwargs={"region_name": "us-east-1"}``); anything else stays a string.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            msg = f"--storage-option expects KEY=VALUE, got {pair!r}"
            raise ConfigError(msg)
        if value[:1] in ("{", "["):
            try:
                out[key] = json.loads(value)
            except ValueError as exc:
                msg = f"--storage-option {key}: {value!r} starts like JSON but is not valid JSON ({exc})"
                raise ConfigError(msg) from exc
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out or None
