"""`streamkeep checkpoint repair URL`: rewrite a damaged ``CHECKPOINT`` (identity) file.

The work (what counts as damage, the lock, the lease, the file names) is `Checkpoint.repair_identity`
(streamkeep/checkpoint/_repair.py); this prints its report. Unlike the other ``checkpoint`` commands it writes.
"""

from __future__ import annotations

from typing import Any

from streamkeep.cli._common import open_checkpoint, text
from streamkeep.errors import ConfigError

_NEW_ID = (
    "Fenced sinks (FileSink, RedisSink, KafkaSink) store the id with their data; if the job writes to one, run this "
    "again with --id set to the id it stored, e.g. the first word of a FileSink's .streamkeep-fence file. A new id is "
    "safe while no other driver of this checkpoint runs."
)


def repair(url: str, *, checkpoint_id: str | None = None, storage_options: dict[str, Any] | None = None) -> int:
    """Rewrite a damaged CHECKPOINT file at `url`; print what was kept; 0 when sound or repaired."""
    if checkpoint_id is not None and not (checkpoint_id.isalnum() and checkpoint_id.isascii()):
        msg = f"--id {checkpoint_id!r}: a checkpoint id is letters and digits (as the first word of a FileSink's .streamkeep-fence file)"
        raise ConfigError(msg)
    report = open_checkpoint(url, storage_options).repair_identity(checkpoint_id)
    if report.damage is None:
        print(f"{url}: CHECKPOINT is sound; nothing to repair")
        return 0
    print(f"{url}: CHECKPOINT rewritten ({text(Exception(report.damage))})")
    if report.kept_as:
        print(f"  the damaged file is kept as {report.kept_as}")
    record, found = report.record, report.salvaged
    if report.restored:
        print("  restored: one flipped bit (the file's exact bytes before it flipped; its checksum holds again)")
        for key in ("format_version", "engine_version", "created_ms", "id"):
            print(f"  {key}: {record.get(key)}")
    else:
        for key in ("format_version", "engine_version", "created_ms"):
            how = "read in the damaged file, unverified" if key in found else "not readable in the damaged file: set anew"
            print(f"  {key}: {record[key]} ({how})")
        if report.given_id:
            print(f"  id: {record['id']} (given with --id)")
            if found.get("id") not in (None, report.given_id):
                print(f"  the damaged file holds the id {found['id']} (unverified: its checksum fails); --id replaced it")
        elif "id" in found:
            print(
                f"  id: {record['id']} (read in the damaged file, but the checksum fails, so this id is unverified: "
                f"compare with the id a fenced sink stores, or pass --id)"
            )
        else:
            print(f"  id: {record['id']} (NEW: the old one was not readable. {_NEW_ID})")
    print("  the commit log and the state files were not touched")
    return 0
