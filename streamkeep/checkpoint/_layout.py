"""What each file of a checkpoint is, and every file a checkpoint holds.

The layout itself (paths such as ``log/<seq>.rec``) is described in `_checkpoint`;
this module answers the reverse question for tools that walk a checkpoint
(``streamkeep checkpoint inspect|verify``): given a path relative to the root,
which kind of file is it, and how is it read. Knows storage only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from streamkeep.checkpoint._checkpoint import Checkpoint

#: Top-level names of the layout; a directory holding none of them is not a checkpoint.
LAYOUT_TOP = frozenset({"CHECKPOINT", "log", "plans", "state", "lease", "blobs", "graphs"})
#: Prefix of a write in progress (or interrupted by a crash): never part of a commit.
TEMP_PREFIX = ".tmp-"
#: The OS file lock of local drivers: empty by design, not framed.
LOCK = "lock"

#: Frame kinds of files, as `classify` returns them (a ``plan_log`` holds several ``plan`` frames).
FRAMED_KINDS = frozenset({"identity", "lease", "record", "plan", "plan_log", "delta", "snap", "blob", "graph"})


def classify(rel: str) -> str | None:
    """The kind of the checkpoint file at `rel` (a path relative to the checkpoint's root).

    Returns:
        The frame kind of a framed file (``"identity"``, ``"lease"``, ``"record"``,
        ``"plan"``, ``"delta"``, ``"snap"``, ``"blob"`` or ``"graph"``; ``"plan_log"`` for a plan log, which
        holds ``"plan"`` frames: see `FRAMED_KINDS`), ``"lock"``
        for the local drivers' lock file, ``"temp"`` for a leftover of an interrupted
        write, or None for a file that is not part of the layout.
    """
    parts = rel.split("/")
    name = parts[-1]
    if name.startswith(TEMP_PREFIX):
        return "temp"
    if rel == LOCK:
        return "lock"
    if rel == "CHECKPOINT":
        return "identity"
    if rel == "lease":
        return "lease"
    if parts[0] == "log" and len(parts) == 2 and name.endswith(".rec"):
        return "record"
    if parts[0] == "plans" and len(parts) == 2 and name.endswith(".plan"):
        return "plan"
    if parts[0] == "plans" and len(parts) == 2 and name.endswith(".plog"):
        return "plan_log"
    if parts[0] == "state" and len(parts) == 3 and name.endswith((".delta", ".snap")):
        return "delta" if name.endswith(".delta") else "snap"
    if parts[0] == "blobs" and len(parts) == 2:
        return "blob"
    if parts[0] == "graphs" and len(parts) == 2 and name.endswith(".graph"):
        return "graph"
    return None


def list_all(ckpt: Checkpoint, rel_dir: str) -> list[str]:
    """Names directly inside `rel_dir`, sorted, files in progress (``.tmp-*``) included on local disks."""
    st = ckpt.storage
    if st.local:
        try:
            return sorted(os.listdir(st.path(rel_dir) if rel_dir else st.root))
        except FileNotFoundError:
            return []
    return st.list(rel_dir)


def walk(ckpt: Checkpoint, rel_dir: str = "") -> Iterator[str]:
    """Every file under `rel_dir` of the checkpoint (relative paths; a directory's files, then its subdirectories)."""
    dirs = ckpt.storage.list_dirs(rel_dir)
    prefix = f"{rel_dir}/" if rel_dir else ""
    for n in list_all(ckpt, rel_dir):
        if n not in dirs:
            yield prefix + n
    for d in dirs:
        yield from walk(ckpt, prefix + d)


def looks_like_checkpoint(ckpt: Checkpoint) -> bool:
    """False for a file, a path under a file, or a directory with nothing of a checkpoint's layout."""
    if ckpt.storage.local and not os.path.isdir(ckpt.storage.root):
        return False
    return bool(LAYOUT_TOP & set(list_all(ckpt, "")))
