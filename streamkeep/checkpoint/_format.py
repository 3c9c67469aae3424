"""The framing every checkpoint file carries: magic, version, kind, codec, identity, length, CRC.

Layout of one file (all integers big-endian)::

    b"SKCP"  u8 format_version  u8 len(kind) kind  u8 len(codec) codec
    u16 len(name) name                                  (format 2 and later; 3 frames files as 2 does)
    u64 len(payload)  payload  u32 crc32(everything before the crc)

`name` is the file's own path relative to the checkpoint root (``log/000000000007.rec``,
``state/totals/000000000005000.snap``): its identity, checked against the place it is
read from, so a valid file copied or renamed to another name is refused. Format 1
files (earlier 0.1.0 development builds; no name) are still read, without that check.

A plan log (format 6, ``plans/<T>.plog``) is the one file that holds several frames, one
after another, each naming the log itself; `read_frames` reads them.

A file that does not parse, or whose CRC does not match, is corrupt; the error
names the file. Imports only streamkeep.errors.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, NamedTuple

from streamkeep.errors import CorruptCheckpointError

MAGIC = b"SKCP"
#: The newest version this streamkeep writes (9: keyed state with moved keys, see `MOVED_VERSION`;
#: 8: commit records naming their graph, see `GRAPH_REF_VERSION`).
FORMAT_VERSION = 9
#: The key-partitioned layout, whose state files the partition owners write --
#: ``state/<op>/<T>.p<i>of<n>.e<epoch>.delta|snap`` -- and the commit records naming them; the frame is
#: the same as in 2 to 4.
PARTITIONED_VERSION = 5
#: The plan log's frames, and the commit records of a driver that writes plans to a plan log (so that a
#: streamkeep reading only 1 to 5, which would not see the pending plans in the log, refuses them).
PLAN_LOG_VERSION = 6
#: The state files of a `window` whose slices hold an *empty run* (``{"empty": partitions, "every": ms,
#: "until": T|None}``: consecutive parent batches without records), and the commit records inlining such
#: a delta: a streamkeep reading only 1 to 6 would take the run for a slice of partitions, so it must refuse
#: them. The frame is the same as in 2 to 6; state data holding a run says so with `EMPTY_RUNS`.
EMPTY_RUN_VERSION = 7
#: The key of state data (a window's delta or snapshot, as its runtime gives it and as merged) that is
#: true when its slices hold an empty run, so the writer frames it as `EMPTY_RUN_VERSION` without
#: walking it; also the key an inline delta's chain entry carries then (``"empty_runs": True``).
EMPTY_RUNS = "empty_runs"
#: The commit records that name the job's graph description by id (``graph_id``) instead of holding it
#: (``graph``), and the graph files they name (``graphs/<id>.graph``): a streamkeep reading only 1 to 7
#: would take such a record for one of a job without operators or sources, so it must refuse it.
GRAPH_REF_VERSION = 8
#: The state files of keyed state whose delta *moves* keys (``"moved": [key, ...]``: keys removed and set
#: again since the previous delta, which the run that wrote it holds last, so a restore takes them out before
#: it sets the delta's pairs, see `streamkeep.state.MemoryStateStore.take_changes`), and the commit records
#: inlining such a delta: a streamkeep reading only 1 to 8 would leave those keys in their old place (a
#: restored operator would then emit its keys in another order than the run that never stopped), so it must
#: refuse them. Partition owners' files holding such a delta are version 9 too. The frame is the same as in 2 to 8.
MOVED_VERSION = 9
#: The key of keyed state data listing its moved keys (see `MOVED_VERSION`); also the key an inline delta's
#: chain entry (or an inline part of a key-partitioned one) carries as ``"moved": True``.
MOVED = "moved"
#: The version of every other file (4: items payloads may be segmented, msgpack format 2 in
#: docs/codec-format.md; 3: snapshots may be columnar, see checkpoint/_compact.py). A checkpoint of
#: the local executor is all version 4.
PLAIN_VERSION = 4
#: The versions it reads (1: no identity in the frame; 2: snapshots hold (key, value) pairs only).
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
#: The advice at the end of errors about damaged files (the `verify` command leaves it out).
VERIFY_HINT = "Run `streamkeep checkpoint verify` on the checkpoint to see every damaged file."
_LEN = struct.Struct(">Q")
_NAME_LEN = struct.Struct(">H")
_CRC = struct.Struct(">I")


def state_version(data: dict[str, Any]) -> int:
    """The format version of a state file holding state data `data` written whole (not by partition owners)."""
    if data.get(MOVED):
        return MOVED_VERSION
    return EMPTY_RUN_VERSION if data.get(EMPTY_RUNS) else PLAIN_VERSION


class Frame(NamedTuple):
    """A checked file's header fields and payload."""

    version: int
    kind: str
    codec: str
    #: The path the file was written at (None in format 1 files).
    name: str | None
    payload: bytes


def frame(kind: str, codec: str, payload: bytes, name: str, version: int = PLAIN_VERSION) -> bytes:
    """Wrap `payload` with the header (naming the file's own path `name`) and checksum (format `version`)."""
    k = kind.encode()
    c = codec.encode()
    n = name.encode()
    head = b"".join(
        (MAGIC, bytes([version, len(k)]), k, bytes([len(c)]), c, _NAME_LEN.pack(len(n)), n, _LEN.pack(len(payload)))
    )
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((head, payload, _CRC.pack(crc)))


def framed_size(kind: str, codec: str, payload_len: int, name: str) -> int:
    """Bytes of the file `frame` makes of a payload of `payload_len` bytes (without building it)."""
    fixed = len(MAGIC) + 3 + _NAME_LEN.size + _LEN.size + _CRC.size  # + version and the two length bytes
    return fixed + len(kind.encode()) + len(codec.encode()) + len(name.encode()) + payload_len


def corrupt_message(path: str, why: str) -> str:
    """The message of a damaged file."""
    return (
        f"checkpoint file {path} is corrupt: {why}. It was truncated, altered, copied or renamed after it was "
        f"written, or it is not a streamkeep checkpoint file. {VERIFY_HINT}"
    )


def read_frame(path: str, data: bytes, kind: str | None = None, name: str | None = None) -> Frame:
    """Check and strip the framing of `data`, read from `path`.

    Args:
        path: where the file was read (for messages).
        data: its bytes.
        kind: the kind of file expected at that place, if known.
        name: the path relative to the root it was read from, checked against the
            identity the file carries (format 2 and later).

    Raises:
        CorruptCheckpointError: the file is truncated, altered, foreign, of another kind,
            or belongs at another place.
    """

    def bad(why: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(corrupt_message(path, why))

    if len(data) < 4 or data[:4] != MAGIC:
        raise bad("it does not start with the streamkeep magic bytes")
    try:
        version = data[4]
        if version not in READABLE_VERSIONS:
            msg = (
                f"checkpoint file {path} has format version {version}; this streamkeep reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Use the streamkeep release that wrote it, or start a fresh checkpoint."
            )
            raise CorruptCheckpointError(msg)
        pos = 5
        klen = data[pos]
        raw_kind = data[pos + 1 : pos + 1 + klen]
        pos += 1 + klen
        clen = data[pos]
        raw_codec = data[pos + 1 : pos + 1 + clen]
        pos += 1 + clen
        raw_name: bytes | None = None
        if version >= 2:
            (nlen,) = _NAME_LEN.unpack_from(data, pos)
            pos += _NAME_LEN.size
            raw_name = data[pos : pos + nlen]
            pos += nlen
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
    except (IndexError, struct.error) as exc:
        raise bad("its header is truncated") from exc
    end = pos + n
    if len(data) != end + _CRC.size:
        raise bad(f"it holds {len(data)} bytes where its header promises {end + _CRC.size}")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(memoryview(data)[:end]) != crc:
        raise bad("its checksum does not match its content")
    try:  # checked by the CRC: text unless written by something else
        file_kind, codec = raw_kind.decode(), raw_codec.decode()
        own = raw_name.decode() if raw_name is not None else None
    except UnicodeDecodeError as exc:
        raise bad("its header holds bytes that are not text where the kind, codec or name belong") from exc
    if kind is not None and file_kind != kind:
        raise bad(f"it is a {file_kind!r} file where a {kind!r} file was expected")
    if name is not None and own is not None and own != name:
        raise bad(f"it was written as {own!r}, not {name!r} (a valid file under the wrong name)")
    return Frame(version, file_kind, codec, own, data[pos:end])


def read_frames(path: str, data: bytes, kind: str, name: str) -> tuple[list[Frame], int]:
    """The frames of a file that holds several, one after another (a plan log), and where they end.

    The first frame must be sound (a plan log is created atomically with it); reading stops at
    the first bytes after it that are not a sound frame: the tail a crash in the middle of an
    append leaves (the append had not returned, so nothing relied on it). Returns the frames and
    the offset where the sound ones end (``len(data)`` when nothing follows them).

    Raises:
        CorruptCheckpointError: the first frame is not sound, or is of another kind or name; or
            unsound bytes are not a torn tail (`_torn_tail`).
    """
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        end = _frame_end(data, pos)
        if end is None:
            if not frames:
                read_frame(path, data, kind, name)  # raises, saying what is wrong with the first frame
                raise CorruptCheckpointError(corrupt_message(path, "its first frame is not sound"))  # pragma: no cover
            if not _torn_tail(data, pos):
                msg = corrupt_message(path, f"the bytes at offset {pos} are not a sound frame, and they are not what a crash in the middle of an append leaves (a whole frame whose checksum fails, or sound frames after them): it was altered")
                raise CorruptCheckpointError(msg)
            break
        frames.append(read_frame(path, data[pos:end], kind, name))
        pos = end
    return frames, pos


def first_frame_sound(data: bytes) -> bool:
    """Is the first frame of `data` whole and intact (its checksum holds), whatever its kind or name?"""
    return _frame_end(data, 0) is not None


def _torn_tail(data: bytes, pos: int) -> bool:
    """Could the unsound bytes from `pos` to the end be what a crash in the middle of an append left?

    Only a frame cut short is (an append writes one frame; a failed one is cut back): not a
    frame whose header says it is whole and whose checksum fails, and not bytes followed by
    a sound frame (damage in the middle of the log would otherwise hide the plans after it).
    """
    declared = _declared_end(data, pos)
    if declared is not None and declared + _CRC.size <= len(data):
        return False
    nxt = data.find(MAGIC, pos + 1)
    while nxt != -1:
        if _frame_end(data, nxt) is not None:
            return False
        nxt = data.find(MAGIC, nxt + 1)
    return True


def _declared_end(data: bytes, pos: int) -> int | None:
    """Where the payload of the frame whose header starts at `pos` ends, as the header says; None if no header is there."""
    try:
        if data[pos : pos + 4] != MAGIC or data[pos + 4] not in READABLE_VERSIONS or data[pos + 4] < 2:
            return None
        p = pos + 5
        p += 1 + data[p]
        p += 1 + data[p]
        (nlen,) = _NAME_LEN.unpack_from(data, p)
        p += _NAME_LEN.size + nlen
        (n,) = _LEN.unpack_from(data, p)
    except (IndexError, struct.error):
        return None
    return int(p + _LEN.size + n)


def _frame_end(data: bytes, pos: int) -> int | None:
    """The end of the sound frame at `pos` of `data`; None when none is there (truncated, damaged, foreign)."""
    end = _declared_end(data, pos)
    if end is None:
        return None
    try:
        (crc,) = _CRC.unpack_from(data, end)
    except struct.error:
        return None
    if zlib.crc32(memoryview(data)[pos:end]) != crc:
        return None
    return end + _CRC.size


def unframe(path: str, data: bytes, kind: str | None = None, name: str | None = None) -> tuple[str, bytes]:
    """Check and strip the framing; return (codec name, payload). See `read_frame`.

    Raises:
        CorruptCheckpointError: the file is truncated, altered, foreign, of another kind,
            or belongs at another place.
    """
    f = read_frame(path, data, kind, name)
    return f.codec, f.payload
