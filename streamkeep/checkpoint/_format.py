"""The framing every checkpoint file carries: magic, version, kind, codec, length, CRC.

Layout of one file (all integers big-endian)::

    b"SKCP"  u8 format_version  u8 len(kind) kind  u8 len(codec) codec
    u64 len(payload)  payload  u32 crc32(everything before the crc)

A file that does not parse, or whose CRC does not match, is corrupt; the error
names the file. Imports only streamkeep.errors.
"""

from __future__ import annotations

import struct
import zlib

from streamkeep.errors import CorruptCheckpointError

MAGIC = b"SKCP"
FORMAT_VERSION = 1
_LEN = struct.Struct(">Q")
_CRC = struct.Struct(">I")


def frame(kind: str, codec: str, payload: bytes) -> bytes:
    """Wrap `payload` with the header and checksum."""
    k = kind.encode()
    c = codec.encode()
    head = MAGIC + bytes([FORMAT_VERSION, len(k)]) + k + bytes([len(c)]) + c + _LEN.pack(len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((head, payload, _CRC.pack(crc)))


def unframe(path: str, data: bytes, kind: str | None = None) -> tuple[str, bytes]:
    """Check and strip the framing; return (codec name, payload).

    Raises:
        CorruptCheckpointError: the file is truncated, altered, foreign or of another kind.
    """
    def bad(why: str) -> CorruptCheckpointError:
        msg = (
            f"checkpoint file {path} is corrupt: {why}. It was truncated or altered after it was written, "
            f"or it is not a streamkeep checkpoint file. Run `streamkeep checkpoint verify` on the checkpoint "
            f"to see every damaged file."
        )
        return CorruptCheckpointError(msg)

    if len(data) < 4 or data[:4] != MAGIC:
        raise bad("it does not start with the streamkeep magic bytes")
    try:
        version = data[4]
        if version != FORMAT_VERSION:
            msg = (
                f"checkpoint file {path} has format version {version}; this streamkeep reads version "
                f"{FORMAT_VERSION}. Use the streamkeep release that wrote it, or start a fresh checkpoint."
            )
            raise CorruptCheckpointError(msg)
        pos = 5
        klen = data[pos]
        file_kind = data[pos + 1 : pos + 1 + klen].decode()
        pos += 1 + klen
        clen = data[pos]
        codec = data[pos + 1 : pos + 1 + clen].decode()
        pos += 1 + clen
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise bad("its header is truncated") from exc
    end = pos + n
    if len(data) != end + _CRC.size:
        raise bad(f"it holds {len(data)} bytes where its header promises {end + _CRC.size}")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(memoryview(data)[:end]) != crc:
        raise bad("its checksum does not match its content")
    if kind is not None and file_kind != kind:
        raise bad(f"it is a {file_kind!r} file where a {kind!r} file was expected")
    return codec, data[pos:end]
